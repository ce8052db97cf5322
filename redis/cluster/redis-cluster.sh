#!/bin/sh
# Redis Cluster: starts one node, or makes the Cluster of the nodes, the same way in Kubernetes
# (k8s/components/redis-cluster, from the ConfigMap redis-cluster that
# redis/cluster/kustomization.yaml makes of this file) and in docker compose
# (docker-compose.cluster.yml mounts it).
#
#   sh redis-cluster.sh redis      a node (cluster-enabled; its Cluster state in DATA_DIR/nodes.conf)
#   sh redis-cluster.sh create     (the Job, compose's one-shot service) make the Cluster of NODES
#                                  if it is not made yet, add back a node that lost its volume,
#                                  then wait until every node says the Cluster is ok
#   sh redis-cluster.sh ready      (readiness probe) this node is in a Cluster that is ok, and,
#                                  if it is a replica, its link to its primary is up
#   sh redis-cluster.sh pre-stop   (a node's preStop hook) a primary hands its slots to its
#                                  replica before it stops
#
# Names, not addresses.  Each node announces its name (cluster-announce-hostname, and
# cluster-preferred-endpoint-type hostname), so clients are sent to names that keep working when
# a pod or a container comes back with a new address.  The Cluster bus knows only addresses: each
# node keeps the others' in its nodes.conf, so a restart of every node at once on new addresses
# (a namespace restarted, `docker compose down` then `up`) would leave them all calling addresses
# nobody has any more.  So a node, before it starts, puts each node's current address (its name
# resolved now; nodes.conf keeps the name beside the address) in its nodes.conf: one side of each
# pair knowing the other is enough for the Cluster to find itself again.  CLUSTER MEET takes only
# addresses too, so `create` resolves the names before it runs redis-cli --cluster create.
#
# `create` is safe to run at any time (every `kubectl apply` and every `docker compose up` runs
# it).  The Cluster is made when a node that answers knows other nodes and sees slots served:
#   - not made (a first start; or a creation cut short, whose nodes are reset): every node must
#     answer and hold no key (a volume with a single Redis' keys: that node even claims their
#     slots, alone); redis-cli --cluster create makes the Cluster, REPLICAS_PER_PRIMARY
#     replicas for each primary;
#   - made: nothing is created.  A node that answers but knows no other node, serves no slot
#     and holds no key (its volume was lost, or it was added) joins as a replica of the primary
#     with the fewest replicas, and the failed entry its name had before is forgotten by every
#     node.
#
# The password is read from a file (Kubernetes: the Secret webchat-redis mounted as a file) or,
# in compose, from REDIS_PASSWORD (which is then removed from the environment).  It reaches
# redis-server through a config file written with printf (a shell builtin) under umask 077 on a
# tmpfs or emptyDir, and redis-cli through REDISCLI_AUTH: never on a command line.  One
# password: the clients' (requirepass) and the replicas' to their primary (masterauth).
#
# Settings, from the environment (the defaults are the Kubernetes component's names):
#   NODES                 every node's name (StatefulSet redis-cluster behind the headless
#                         Service redis-cluster: stable per-pod DNS names)
#   ANNOUNCE_HOST         this node's own name among them; default: the entry of NODES whose
#                         index is the pod's ordinal (the number at the end of HOSTNAME)
#   REPLICAS_PER_PRIMARY  replicas of each primary when the Cluster is made (default 1: 6 nodes
#                         make 3 primaries and 3 replicas)
#   NODE_TIMEOUT          milliseconds without an answer before a node is failed and its replica
#                         promoted (cluster-node-timeout; default 5000)
#   START_WAIT            seconds a restarting node waits for every name to resolve (default 30)
#   CREATE_WAIT           seconds `create` waits for every node to answer, then for the Cluster
#                         to be ok (default 120)
#   REDIS_PORT, BUS_PORT, PASSWORD_FILE, CONF_DIR, DATA_DIR, BIND_ADDRESS
set -eu

ROLE=${1:?usage: redis-cluster.sh redis|create|ready|pre-stop}
NODES=${NODES:-redis-cluster-0.redis-cluster redis-cluster-1.redis-cluster redis-cluster-2.redis-cluster redis-cluster-3.redis-cluster redis-cluster-4.redis-cluster redis-cluster-5.redis-cluster}
REPLICAS_PER_PRIMARY=${REPLICAS_PER_PRIMARY:-1}
NODE_TIMEOUT=${NODE_TIMEOUT:-5000}
REDIS_PORT=${REDIS_PORT:-6379}
# The Cluster bus, where the nodes talk to each other (Redis' own default: REDIS_PORT + 10000).
BUS_PORT=${BUS_PORT:-16379}
PASSWORD_FILE=${PASSWORD_FILE:-/run/secrets/webchat-redis/password}
# Where the generated config goes: a tmpfs or emptyDir (the root filesystem is read-only).
CONF_DIR=${CONF_DIR:-/tmp}
# What must survive a restart, on the node's volume: the append-only file and nodes.conf.
DATA_DIR=${DATA_DIR:-/data}
START_WAIT=${START_WAIT:-30}
CREATE_WAIT=${CREATE_WAIT:-120}
# Every interface (Redis' own default); the tests bind each node to its own loopback address.
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

cli() {  # cli HOST COMMAND...: one command, 3 s at most, password through the environment
    host=$1
    shift
    REDISCLI_AUTH=$PASSWORD timeout 3 redis-cli --no-auth-warning -h "$host" -p "$REDIS_PORT" "$@" 2>/dev/null
}

field() {  # field NAME: the value of NAME:value in an INFO-style answer on stdin
    tr -d '\r' | sed -n "s/^$1://p"
}

resolve() {  # resolve NAME: its address now (empty if it does not resolve)
    getent hosts "$1" 2>/dev/null | awk 'NR == 1 { print $1 }'
}

ordinal() {
    n=${HOSTNAME##*-}
    case $n in
        ''|*[!0-9]*) echo "redis-cluster.sh: set ANNOUNCE_HOST (HOSTNAME $HOSTNAME ends with no ordinal)" >&2; exit 2 ;;
    esac
    printf '%s' "$n"
}

local_host() {  # where this node listens, seen from inside its pod or container
    case $BIND_ADDRESS in
        \**) printf '127.0.0.1' ;;
        *) printf '%s' "${BIND_ADDRESS%% *}" ;;
    esac
}

now() {
    date +%s
}

update_addresses() {  # nodes.conf: each node of NODES at the address its name has now
    conf=$DATA_DIR/nodes.conf
    [ -f "$conf" ] || return 0
    deadline=$(($(now) + START_WAIT))
    while :; do
        map=
        missing=
        for n in $NODES; do
            a=$(resolve "$n")
            if [ -n "$a" ]; then map="$map $n=$a"; else missing="$missing $n"; fi
        done
        [ -z "$missing" ] && break
        if [ "$(now)" -ge "$deadline" ]; then
            echo "redis-cluster.sh: no address for$missing in ${START_WAIT}s: their last ones kept"
            break
        fi
        sleep 1
    done
    # A node's line: "<id> <ip>:<port>@<bus port>,<name>[,key=value...] <flags> ..." (the
    # "vars" line has fewer fields).  The address is what comes before the last ":" of the part
    # before "@" (an IPv6 address has colons of its own).
    awk -v map="$map" '
        BEGIN {
            n = split(map, pairs, " ")
            for (i = 1; i <= n; i++) {
                eq = index(pairs[i], "=")
                addr[substr(pairs[i], 1, eq - 1)] = substr(pairs[i], eq + 1)
            }
        }
        NF >= 8 && (c = index($2, ",")) > 0 {
            name = substr($2, c + 1)
            if ((e = index(name, ",")) > 0) name = substr(name, 1, e - 1)
            if (name in addr) {
                at = index($2, "@")
                port = substr($2, 1, at - 1)
                while ((k = index(port, ":")) > 0) port = substr(port, k + 1)
                $2 = addr[name] ":" port substr($2, at)
            }
        }
        { print }' "$conf" > "$conf.new"
    mv "$conf.new" "$conf"
}

cluster_info() {  # cluster_info ADDRESS FIELD: a field of the node's CLUSTER INFO
    cli "$1" CLUSTER INFO | field "$2"
}

all_ok() {  # all_ok ADDRESS...: every one says cluster_state:ok
    for a in "$@"; do
        [ "$(cluster_info "$a" cluster_state)" = ok ] || return 1
    done
}

forget_failed() {  # forget_failed NAME NEW_ID ADDRESS...: every node forgets NAME's old, failed entries
    name=$1
    new=$2
    shift 2
    # Asked of every node: the one just added may not know the old entry (a failed node without
    # slots is not gossiped).
    ids=$(for a in "$@"; do
        cli "$a" CLUSTER NODES | awk -v name="$name" -v new="$new" '
            { split($2, parts, ","); split($3, flags, ",") }
            parts[2] == name && $1 != new { for (i in flags) if (flags[i] == "fail") print $1 }'
    done | sort -u)
    for id in $ids; do
        for a in "$@"; do
            cli "$a" CLUSTER FORGET "$id" > /dev/null || true
        done
        echo "redis-cluster.sh: forgot $name's failed entry $id"
    done
}

umask 077
case $ROLE in
    redis)
        ME=${ANNOUNCE_HOST:-$(nth "$(ordinal)" $NODES)}
        update_addresses
        CONF=$CONF_DIR/redis.conf
        {
            printf 'bind %s\n' "$BIND_ADDRESS"
            # A node bound to one address speaks from it too (the others take the address a
            # node's bus connection comes from as its own).
            case $BIND_ADDRESS in *' '*|\**) ;; *) printf 'bind-source-addr %s\n' "$BIND_ADDRESS" ;; esac
            printf 'port %s\n' "$REDIS_PORT"
            printf 'requirepass %s\n' "$PASSWORD"
            printf 'masterauth %s\n' "$PASSWORD"
            printf 'cluster-enabled yes\n'
            printf 'cluster-config-file %s\n' "$DATA_DIR/nodes.conf"
            printf 'cluster-port %s\n' "$BUS_PORT"
            printf 'cluster-node-timeout %s\n' "$NODE_TIMEOUT"
            printf 'cluster-announce-hostname %s\n' "$ME"
            printf 'cluster-preferred-endpoint-type hostname\n'
            # The other primaries go on serving their slots while one primary and its replicas
            # are all gone (docs/cluster.md, "Status").
            printf 'cluster-require-full-coverage no\n'
            # A replica's full sync (its first, or after it rejoins as the replica of its
            # successor) starts at once: waiting for more replicas to share it, Redis' default
            # 5 s, is for nothing with one replica per primary, and the shard's acks
            # (CHAT_ACK_REPLICAS) wait meanwhile.  As the local Cluster.
            printf 'repl-diskless-sync-delay 0\n'
        } > "$CONF"
        echo "redis-cluster.sh: node $ME starts"
        # Persistence as everywhere else (docs/durability.md): the append-only file, fsynced
        # once a second.
        exec redis-server "$CONF" --dir "$DATA_DIR" --appendonly yes --appendfsync everysec
        ;;
    create)
        deadline=$(($(now) + CREATE_WAIT))
        while :; do
            up=
            down=
            for n in $NODES; do
                a=$(resolve "$n")
                if [ -n "$a" ] && [ "$(cli "$a" PING)" = PONG ]; then up="$up $n=$a"; else down="$down $n"; fi
            done
            if [ -z "$down" ] || [ "$(now)" -ge "$deadline" ]; then break; fi
            sleep 2
        done
        addresses=
        made=
        for entry in $up; do
            a=${entry#*=}
            addresses="$addresses $a"
            if [ "$(cluster_info "$a" cluster_known_nodes)" != 1 ] && [ "$(cluster_info "$a" cluster_slots_assigned)" != 0 ]; then
                made=$a
            fi
        done
        if [ -z "$made" ]; then
            if [ -n "$down" ]; then
                echo "redis-cluster.sh: no Cluster yet, and no answer from$down in ${CREATE_WAIT}s" >&2
                exit 1
            fi
            for entry in $up; do
                a=${entry#*=}
                if [ "$(cli "$a" DBSIZE)" != 0 ]; then
                    echo "redis-cluster.sh: ${entry%%=*} holds keys: not a new node, no Cluster made of it" >&2
                    exit 1
                fi
                # A creation cut short: nodes that met, or took slots, start afresh (empty).
                if [ "$(cluster_info "$a" cluster_known_nodes)" != 1 ] || [ "$(cluster_info "$a" cluster_slots_assigned)" != 0 ]; then
                    cli "$a" CLUSTER RESET HARD > /dev/null
                fi
            done
            echo "redis-cluster.sh: making the Cluster of$up"
            set --
            for a in $addresses; do set -- "$@" "$a:$REDIS_PORT"; done
            REDISCLI_AUTH=$PASSWORD redis-cli --no-auth-warning --cluster create "$@" \
                --cluster-replicas "$REPLICAS_PER_PRIMARY" --cluster-yes < /dev/null
        else
            [ -z "$down" ] || echo "redis-cluster.sh: no answer from$down in ${CREATE_WAIT}s"
            for entry in $up; do
                name=${entry%%=*}
                a=${entry#*=}
                [ "$(cluster_info "$a" cluster_known_nodes)" = 1 ] || continue
                if [ "$(cluster_info "$a" cluster_slots_assigned)" != 0 ] || [ "$(cli "$a" DBSIZE)" != 0 ]; then
                    echo "redis-cluster.sh: $name is alone but holds keys: left as it is" >&2
                    continue
                fi
                echo "redis-cluster.sh: $name joins the Cluster as a replica"
                REDISCLI_AUTH=$PASSWORD redis-cli --no-auth-warning --cluster add-node \
                    "$a:$REDIS_PORT" "$made:$REDIS_PORT" --cluster-slave < /dev/null
                forget_failed "$name" "$(cli "$a" CLUSTER MYID)" $addresses
            done
        fi
        until all_ok $addresses; do
            if [ "$(now)" -ge "$deadline" ]; then
                echo "redis-cluster.sh: the Cluster is not ok after ${CREATE_WAIT}s" >&2
                exit 1
            fi
            sleep 1
        done
        echo "redis-cluster.sh: the Cluster is ok"
        ;;
    ready)
        me=$(local_host)
        [ "$(cluster_info "$me" cluster_state)" = ok ] || exit 1
        replication=$(cli "$me" INFO replication)
        [ "$(printf '%s\n' "$replication" | field role)" = master ] && exit 0
        [ "$(printf '%s\n' "$replication" | field master_link_status)" = up ]
        ;;
    pre-stop)
        # A primary that stops makes its slots wait NODE_TIMEOUT plus an election; a failover
        # asked of its replica now moves them in about a second, and loses no write (the
        # replica first catches up with the primary, which holds its clients meanwhile).
        me=$(local_host)
        role() { cli "$me" INFO replication | field role; }
        [ "$(role)" = master ] || exit 0
        replica=$(cli "$me" INFO replication | tr -d '\r' |
            sed -n 's/^slave[0-9]*:ip=\([^,]*\),.*state=online.*/\1/p' | head -n 1)
        [ -n "$replica" ] || exit 0
        cli "$replica" CLUSTER FAILOVER > /dev/null || exit 0
        i=0
        while [ $i -lt 20 ] && [ "$(role)" = master ]; do
            sleep 1
            i=$((i + 1))
        done
        ;;
    *)
        echo "usage: redis-cluster.sh redis|create|ready|pre-stop" >&2
        exit 2
        ;;
esac
