#!/bin/sh
# Redis with Sentinel: starts one Redis server or one Sentinel, the same way in Kubernetes
# (k8s/components/redis-sentinel, from the ConfigMap redis-ha that redis/kustomization.yaml makes
# of this file) and in docker compose (docker-compose.sentinel.yml mounts it).
#
#   sh redis-ha.sh redis       a Redis server: the primary, or a replica of the current primary
#   sh redis-ha.sh sentinel    a Sentinel that monitors the current primary
#   sh redis-ha.sh pre-stop    (a Redis server's preStop hook) if this server is the primary,
#                              hand the role to a replica before it stops
#
# The current primary is whatever the running Sentinels say (SENTINEL get-master-addr-by-name),
# else the Redis server that says role:master, else the first of REDIS_HOSTS (a first start:
# redis-0 begins as the primary).  So a pod that restarts after a failover follows the new
# primary instead of coming back as a second one.
#
# A full restart (every server and Sentinel stopped at once: a namespace or compose restart, a
# node pool replaced) after a failover must not bring the old primary back with older data:
#   - a Sentinel keeps its config file in DATA_DIR (a volume of its own) and, when the file of
#     an earlier run is there, starts from it: the current primary, the replicas and Sentinels
#     it knows, its id and the epochs.  The script only brings its own lines up to date (the
#     password, names, port, timeouts);
#   - a Redis server waits up to START_WAIT seconds for a Sentinel to answer (the Sentinels may
#     start after it) before guessing, then up to START_WAIT seconds for the primary they name
#     to answer: a server that is not running is no candidate for a failover, so the Sentinels
#     cannot promote it (it may be the stale old primary) while the real primary is still
#     starting (a failover they try then finds no replica, and is tried again only after twice
#     the failover timeout, 120 s).  Past these bounds the script goes on as before.
#
# The password is read from a file (Kubernetes: the Secret webchat-redis mounted as a file) or,
# in compose, from REDIS_PASSWORD (which is then removed from the environment).  It reaches
# redis-server through a config file written with printf (a shell builtin) under umask 077 (a
# Redis server's on a tmpfs or emptyDir; a Sentinel's on its volume, since it holds its state:
# the password is then also stored there, replaced from the current one at each start), and
# redis-cli through REDISCLI_AUTH: never on a command line.  One password for
# everything: clients authenticate to the Redis servers and to the Sentinels with it (the
# services' redis+sentinel:// URL carries one password), replicas to their primary (masterauth),
# Sentinels to the Redis servers (auth-pass) and to each other (a Sentinel's own password, requirepass,
# is also the one it gives the other Sentinels).
#
# Settings, from the environment (the defaults are the Kubernetes component's names):
#   REDIS_HOSTS       the Redis servers' names, first = the first primary (StatefulSet redis
#                     behind the headless Service redis: stable per-pod DNS names)
#   SENTINEL_HOSTS    the Sentinels' names (StatefulSet redis-sentinel, headless Service redis-sentinel)
#   ANNOUNCE_HOST     this server's own name among them; default: the entry of its list whose
#                     index is the pod's ordinal (the number at the end of HOSTNAME)
#   START_WAIT        seconds a starting Redis server waits for a Sentinel to answer, and then
#                     for the primary they name (default 30; each wait ends as soon as it is answered)
#   MASTER_NAME, QUORUM, REDIS_PORT, SENTINEL_PORT, PASSWORD_FILE, CONF_DIR, DATA_DIR, BIND_ADDRESS
set -eu

ROLE=${1:?usage: redis-ha.sh redis|sentinel|pre-stop}
REDIS_HOSTS=${REDIS_HOSTS:-redis-0.redis redis-1.redis redis-2.redis}
SENTINEL_HOSTS=${SENTINEL_HOSTS:-redis-sentinel-0.redis-sentinel redis-sentinel-1.redis-sentinel redis-sentinel-2.redis-sentinel}
# The name the services' URL ends with: redis+sentinel://...@<sentinels>/webchat/0.
MASTER_NAME=${MASTER_NAME:-webchat}
# Sentinels that must agree that the primary is down before a failover: a majority of three.
QUORUM=${QUORUM:-2}
# A primary accepts writes only while this many replicas copy it with at most 10 s of lag.  A
# primary cut off from its replicas (and so from the Sentinels, which promote one of them) stops
# taking writes within 10 s, instead of taking writes that the failover then throws away.  The
# price: with fewer replicas up, writes stop.  With three servers (Kubernetes, compose) one
# replica may be down and writes go on.  It also guards a server that starts as the primary by
# mistake (no Sentinel answered in time, it was the first of REDIS_HOSTS or the last to say
# role:master): the other servers follow the Sentinels' primary, so it has no replica and
# refuses writes (NOREPLICAS) until the Sentinels, which know it as a replica, demote it.
MIN_REPLICAS_TO_WRITE=1
REDIS_PORT=${REDIS_PORT:-6379}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
PASSWORD_FILE=${PASSWORD_FILE:-/run/secrets/webchat-redis/password}
# Where a Redis server's generated config goes: a tmpfs or emptyDir (the root filesystem is
# read-only); it is written anew at each start.
CONF_DIR=${CONF_DIR:-/tmp}
# What must survive a restart, on a volume of the pod or container: a Redis server's data (the
# append-only file), a Sentinel's config file (it rewrites it with what it learns: the current
# primary, replicas, other Sentinels, epochs), so the folder must be writable.
DATA_DIR=${DATA_DIR:-/data}
START_WAIT=${START_WAIT:-30}
# Every interface (Redis' own default); the tests bind each server to its own loopback address.
BIND_ADDRESS=${BIND_ADDRESS:-* -::*}

if [ -n "${REDIS_PASSWORD:-}" ]; then
    PASSWORD=$REDIS_PASSWORD
else
    PASSWORD=$(cat "$PASSWORD_FILE")
fi
unset REDIS_PASSWORD

nth() {  # nth INDEX WORD...: the word at INDEX (from 0)
    i=$1
    shift
    shift "$i"
    printf '%s' "$1"
}

cli() {  # cli HOST PORT COMMAND...: one command, 3 s at most, password through the environment
    host=$1
    port=$2
    shift 2
    REDISCLI_AUTH=$PASSWORD timeout 3 redis-cli --no-auth-warning -h "$host" -p "$port" "$@" 2>/dev/null
}

ordinal() {
    n=${HOSTNAME##*-}
    case $n in
        ''|*[!0-9]*) echo "redis-ha.sh: set ANNOUNCE_HOST (HOSTNAME $HOSTNAME ends with no ordinal)" >&2; exit 2 ;;
    esac
    printf '%s' "$n"
}

sentinel_primary() {  # sentinel_primary SELF: the primary the first Sentinel that answers names (not SELF)
    for s in $SENTINEL_HOSTS; do
        [ "$s" = "$1" ] && continue
        answer=$(cli "$s" "$SENTINEL_PORT" SENTINEL get-master-addr-by-name "$MASTER_NAME") || answer=
        # A host and a port; not an error (a Sentinel still loading, a wrong password) nor nil.
        host=$(printf '%s\n' "$answer" | sed -n 1p)
        port=$(printf '%s\n' "$answer" | sed -n 2p)
        case $host in ''|*[!A-Za-z0-9.:_-]*) continue ;; esac
        case $port in ''|*[!0-9]*) continue ;; esac
        printf '%s' "$host"
        return
    done
}

guessed_primary() {  # guessed_primary SELF: no Sentinel answers: the server that says role:master, else the first
    for r in $REDIS_HOSTS; do
        [ "$r" = "$1" ] && continue
        if cli "$r" "$REDIS_PORT" INFO replication | grep -q '^role:master'; then
            printf '%s' "$r"
            return
        fi
    done
    nth 0 $REDIS_HOSTS
}

current_primary() {  # current_primary SELF: the primary's name, asking everyone but SELF
    addr=$(sentinel_primary "$1")
    if [ -n "$addr" ]; then
        printf '%s' "$addr"
    else
        guessed_primary "$1"
    fi
}

answers() {  # answers HOST: a Redis server listens there (any reply: PONG, LOADING, ...)
    [ -n "$(cli "$1" "$REDIS_PORT" PING)" ]
}

umask 077
case $ROLE in
    redis)
        ME=${ANNOUNCE_HOST:-$(nth "$(ordinal)" $REDIS_HOSTS)}
        # The Sentinels may start after this server (a full restart: their StatefulSet starts
        # in parallel): ask them for up to START_WAIT seconds before guessing, since a guess
        # after a failover names the old primary, whose data is older.
        deadline=$(($(date +%s) + START_WAIT))
        PRIMARY=$(sentinel_primary "$ME")
        while [ -z "$PRIMARY" ] && [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 1
            PRIMARY=$(sentinel_primary "$ME")
        done
        if [ -z "$PRIMARY" ]; then
            echo "redis-ha.sh: no Sentinel answered in ${START_WAIT}s"
            PRIMARY=$(guessed_primary "$ME")
        fi
        # The primary they name may still be starting (a StatefulSet starts its pods one after
        # the other).  Until it answers, this server stays down: a running replica whose primary
        # is down is what the Sentinels promote, and this one may be the stale old primary.
        deadline=$(($(date +%s) + START_WAIT))
        while [ "$PRIMARY" != "$ME" ] && ! answers "$PRIMARY" && [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 1
            named=$(sentinel_primary "$ME")
            PRIMARY=${named:-$PRIMARY}
        done
        CONF=$CONF_DIR/redis.conf
        {
            printf 'bind %s\n' "$BIND_ADDRESS"
            printf 'port %s\n' "$REDIS_PORT"
            printf 'requirepass %s\n' "$PASSWORD"
            printf 'masterauth %s\n' "$PASSWORD"
            # Replicas are known to the Sentinels, and through them to the clients, by this
            # name (resolved again at every connection: a pod's address changes, its name does not).
            printf 'replica-announce-ip %s\n' "$ME"
            printf 'min-replicas-to-write %s\n' "$MIN_REPLICAS_TO_WRITE"
            printf 'min-replicas-max-lag 10\n'
            if [ "$PRIMARY" != "$ME" ]; then
                printf 'replicaof %s %s\n' "$PRIMARY" "$REDIS_PORT"
            fi
        } > "$CONF"
        echo "redis-ha.sh: $ME starts as $([ "$PRIMARY" = "$ME" ] && echo primary || echo "a replica of $PRIMARY")"
        # Persistence as everywhere else (docs/durability.md): the append-only file, fsynced
        # once a second.
        exec redis-server "$CONF" --dir "$DATA_DIR" --appendonly yes --appendfsync everysec
        ;;
    sentinel)
        ME=${ANNOUNCE_HOST:-$(nth "$(ordinal)" $SENTINEL_HOSTS)}
        # On the volume: what this Sentinel learned survives a restart of every pod at once.
        CONF=$DATA_DIR/sentinel.conf
        owned() {  # the lines this script writes (password, names, port, timeouts)
            printf 'bind %s\n' "$BIND_ADDRESS"
            printf 'port %s\n' "$SENTINEL_PORT"
            printf 'dir %s\n' "$DATA_DIR"
            printf 'requirepass %s\n' "$PASSWORD"
            # Names, not addresses: pods get new addresses when they restart.  resolve-hostnames
            # must come before the monitor line that names the primary.
            printf 'sentinel resolve-hostnames yes\n'
            printf 'sentinel announce-hostnames yes\n'
            printf 'sentinel announce-ip %s\n' "$ME"
            printf 'sentinel announce-port %s\n' "$SENTINEL_PORT"
        }
        owned_master() {  # ... and those about the primary, after its monitor line
            printf 'sentinel auth-pass %s %s\n' "$MASTER_NAME" "$PASSWORD"
            # Down after 5 s without an answer; a failover that has not finished in 60 s may be
            # tried again; replicas re-sync to a new primary one at a time.
            printf 'sentinel down-after-milliseconds %s 5000\n' "$MASTER_NAME"
            printf 'sentinel failover-timeout %s 60000\n' "$MASTER_NAME"
            printf 'sentinel parallel-syncs %s 1\n' "$MASTER_NAME"
        }
        if [ -f "$CONF" ] && grep -q "^sentinel monitor $MASTER_NAME " "$CONF"; then
            # The file of an earlier run: the Sentinel's own record (rewritten by it at every
            # change) of the current primary ("sentinel monitor"), its replicas and the other
            # Sentinels ("known-replica", "known-sentinel"), its id ("myid") and the epochs
            # ("current-epoch", "config-epoch", "leader-epoch"), which the Sentinels compare to
            # agree on the newest primary.  Kept as it is, in its order; only the script's lines
            # are replaced (a new password, a changed setting) and the quorum set.  The
            # password lines go, "user default" too (the password's hash: it would override
            # requirepass).  No password on a command line: grep and awk see the file, and the
            # new lines come from printf, a builtin.
            PRIMARY=$(awk -v m="$MASTER_NAME" '$1 == "sentinel" && $2 == "monitor" && $3 == m { print $4; exit }' "$CONF")
            {
                owned
                grep -v -E '^[[:space:]]*(#|$|(bind|port|dir|requirepass|masterauth|masteruser|user)[[:space:]]|sentinel[[:space:]]+(resolve-hostnames|announce-hostnames|announce-ip|announce-port|auth-pass|auth-user|sentinel-user|sentinel-pass|down-after-milliseconds|failover-timeout|parallel-syncs)[[:space:]])' "$CONF" |
                    awk -v m="$MASTER_NAME" -v q="$QUORUM" '$1 == "sentinel" && $2 == "monitor" && $3 == m { $6 = q } { print }'
                owned_master
            } > "$CONF.new"
            mv "$CONF.new" "$CONF"
            echo "redis-ha.sh: sentinel $ME monitors $PRIMARY (its config of an earlier run)"
        else
            # A first start (or a master name changed): the current primary from the others.
            PRIMARY=$(current_primary "$ME")
            {
                owned
                printf 'sentinel monitor %s %s %s %s\n' "$MASTER_NAME" "$PRIMARY" "$REDIS_PORT" "$QUORUM"
                owned_master
            } > "$CONF.new"
            mv "$CONF.new" "$CONF"
            echo "redis-ha.sh: sentinel $ME monitors $PRIMARY"
        fi
        exec redis-server "$CONF" --sentinel
        ;;
    pre-stop)
        # A primary that stops makes the services wait down-after-milliseconds (5 s) plus the
        # election for a new one; a failover asked for now moves the role in about a second.
        ME=${ANNOUNCE_HOST:-$(nth "$(ordinal)" $REDIS_HOSTS)}
        cli "$ME" "$REDIS_PORT" INFO replication | grep -q '^role:master' || exit 0
        for s in $SENTINEL_HOSTS; do
            if cli "$s" "$SENTINEL_PORT" SENTINEL failover "$MASTER_NAME" | grep -q OK; then
                break
            fi
        done
        i=0
        while [ $i -lt 20 ] && cli "$ME" "$REDIS_PORT" INFO replication | grep -q '^role:master'; do
            sleep 1
            i=$((i + 1))
        done
        ;;
    *)
        echo "usage: redis-ha.sh redis|sentinel|pre-stop" >&2
        exit 2
        ;;
esac
