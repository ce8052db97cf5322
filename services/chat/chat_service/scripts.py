"""The Lua scripts chat runs in Redis: each is one round trip and atomic.

Message ids
    Every stored message gets an id ``<ms>-<seq>`` made here, not by XADD: ``ms`` is Redis'
    clock (never going back: ``chat:clock`` keeps the highest ms used) and ``seq`` one counter
    for the whole system.  So ids are unique *across* streams and increase in the order Redis
    executed the sends.  Because a script stores (XADD) and publishes (PUBLISH) atomically, and
    each chat process reads every channel over one pub/sub connection, a process sees
    messages in id order whatever stream they belong to: one id is a complete resume cursor
    for a user's inbox *and* rooms.

Scripts compute a few key and channel names from their arguments (``chat:conn:<user>`` in the
sweep, ``user:<name>`` in the presence read, ``chat:p:<user>`` where presence is published):
fine on one Redis (or a primary with replicas), not on Redis Cluster.
"""

# Shared prelude: a new id in ``id``, ``ms`` (string) from chat:clock (KEYS[1]).
_NEW_ID = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[1], 'ms') or '0')
if ms < last then ms = last else redis.call('HSET', KEYS[1], 'ms', string.format('%d', ms)) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local msstr = string.format('%d', ms)
local id = msstr .. '-' .. seq
"""

# Shared prelude: announce(prefix, user, state) publishes a presence frame on the user's
# presence channel (prefix .. lower(user)); state is 'true' or 'false'.
_ANNOUNCE = """
local function announce(prefix, user, state)
  redis.call('PUBLISH', prefix .. string.lower(user),
             '{"type":"presence","user":' .. cjson.encode(user) .. ',"online":' .. state .. '}')
end
"""

def _dedup(key, duplicate):
    """De-duplication by the sender's ``cid``: ``KEYS[key]``, when given, is
    ``chat:cid:<sender>:<target>:<cid>`` (ARGV[5]: its TTL, s).  If it exists the message was
    stored already (the client sent it again after a reconnect that lost the ack): nothing is
    stored, and the script returns ``duplicate`` built from the first message's ``sid``, ``sts``
    and ``sname``.  The caller stores the key after storing the message (see ``_DEDUP_SET``)."""
    return f"""
local dkey = KEYS[{key}]
if dkey then
  local seen = redis.call('GET', dkey)
  if seen then
    local sid, sts, sname = string.match(seen, '^(%S+) (%S+) (.*)$')
    return {duplicate}
  end
end
"""


_DEDUP_SET = """
if dkey then redis.call('SET', dkey, id .. ' ' .. msstr .. ' ' .. (name or ''), 'EX', ARGV[5]) end
"""

#: Private message.  KEYS: clock, user:<lower receiver> (auth's hash), chat:inbox:<receiver>,
#: chat:online, optionally the cid key.  ARGV: frame tail (JSON object without its "{",
#: carrying sender, data, cid), max length, age ms, the receiver's channel, the cid key's TTL.
#: Returns {id, ts, canonical receiver name, online 0/1, duplicate 0/1} or {false} for an
#: unknown receiver.
SEND_PRIVATE = _dedup(5, "{sid, sts, sname, 0, 1}") + _NEW_ID.replace("local t =", """
local name = redis.call('HGET', KEYS[2], 'name')
if not name then return {false} end
local t =""", 1) + """
local frame = '{"type":"message","id":"' .. id .. '","ts":' .. msstr .. ',"receiver":' .. cjson.encode(name) .. ',' .. ARGV[1]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], id, 'f', frame)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. frame)
local until_ms = redis.call('ZSCORE', KEYS[4], name)
local online = 0
if until_ms and tonumber(until_ms) > ms then online = 1 end""" + _DEDUP_SET + """
return {id, msstr, name, online, 0}
"""

#: Room message.  KEYS: clock, chat:room:<room>, optionally the cid key.  ARGV: frame tail
#: (with sender, room, data, cid), max length, age ms, the room's channel, the cid key's TTL.
#: Returns {id, ts, duplicate 0/1}.
SEND_ROOM = _dedup(3, "{sid, sts, 1}") + _NEW_ID + """
local frame = '{"type":"message","id":"' .. id .. '","ts":' .. msstr .. ',' .. ARGV[1]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'f', frame)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. frame)
local name""" + _DEDUP_SET + """
return {id, msstr, 0}
"""

#: Read what a user missed, atomically across all their streams (one snapshot, so nothing
#: published between two reads is lost or doubled).  KEYS: the streams.  ARGV[i]: exclusive
#: start id for KEYS[i] ("-" = read nothing from it); ARGV[#KEYS+1]: max entries per stream.
#: Returns, per stream, {boundary, {entries...}} and last: Redis' ms.  ``boundary`` is the
#: first kept entry when older ones were trimmed ("0-0" otherwise): a start id below it means
#: messages may have been lost (reported conservatively: also when the client missed exactly
#: the whole kept history).
SNAPSHOT = """
local out = {}
local n = #KEYS
local count = ARGV[n + 1]
for i = 1, n do
  local start = ARGV[i]
  if start == '-' or redis.call('EXISTS', KEYS[i]) == 0 then
    out[i] = {'0-0', {}}
  else
    -- Trimming (MAXLEN ~) removes the oldest entries: if any was removed, everything older
    -- than the first kept entry may be gone, so a cursor older than it may have missed some.
    -- (Redis 7.0 does not update max-deleted-entry-id on trimming, so it cannot be used.)
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    local f = {}
    for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
    local boundary = '0-0'
    if tonumber(f['entries-added']) > tonumber(f['length']) then boundary = f['recorded-first-entry-id'] end
    local rng
    if start == '0-0' then rng = '-' else rng = '(' .. start end
    out[i] = {boundary, redis.call('XRANGE', KEYS[i], rng, '+', 'COUNT', count)}
  end
end
local t = redis.call('TIME')
out[n + 1] = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return out
"""

#: Users held by this node: run for each socket that opens here, and by the heartbeat for all of
#: the node's users (500 a call).  KEYS: chat:online.  ARGV: node, ttl ms, key prefix of
#: chat:conn, presence channel prefix, key prefix of chat:sockets, then pairs of a user
#: (canonical name) and how many sockets this node holds for them.  Each user's node entry,
#: socket count and online expiry are pushed forward; a user who was offline (first socket, or
#: swept while this node was too slow to beat, or Redis restarted empty) is announced "online"
#: on their presence channel (prefix .. lower(user)).  Returns how many were announced.
PRESENCE_UP = _ANNOUNCE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[2])
local announced = 0
for i = 6, #ARGV, 2 do
  local user = ARGV[i]
  local ck = ARGV[3] .. string.lower(user)
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
  redis.call('ZADD', ck, exp, ARGV[1])
  redis.call('PEXPIRE', ck, ARGV[2])
  local sk = ARGV[5] .. string.lower(user)
  redis.call('HSET', sk, ARGV[1], ARGV[i + 1])
  redis.call('PEXPIRE', sk, ARGV[2])
  local was = redis.call('ZSCORE', KEYS[1], user)
  redis.call('ZADD', KEYS[1], 'GT', exp, user)
  if (not was) or tonumber(was) <= now then
    announce(ARGV[4], user, 'true')
    announced = announced + 1
  end
end
return announced
"""

#: May one more socket of a user open?  KEYS: chat:conn:<user>, chat:sockets:<user>.  ARGV:
#: node, the user's sockets on this node counting the new one, the most a user may have open
#: (CHAT_MAX_SOCKETS_PER_USER), ttl ms.  Counts the sockets of every live node (a node is live
#: while its chat:conn entry has not expired; the counts of dead ones are dropped).  If the new
#: socket fits, records this node's count and returns 1; else changes nothing and returns 0.
SOCKET_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local total = tonumber(ARGV[2])
local counts = redis.call('HGETALL', KEYS[2])
for i = 1, #counts, 2 do
  if counts[i] ~= ARGV[1] then
    if redis.call('ZSCORE', KEYS[1], counts[i]) then
      total = total + tonumber(counts[i + 1])
    else
      redis.call('HDEL', KEYS[2], counts[i])
    end
  end
end
if total > tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

#: A user's last socket on this node closed.  KEYS: chat:conn:<user>, chat:online,
#: chat:sockets:<user>.  ARGV: node, user, presence channel prefix.  Publishes "offline" when
#: no live node holds the user any more.
PRESENCE_DOWN = _ANNOUNCE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
    announce(ARGV[3], ARGV[2], 'false')
    return 1
  end
end
return 0
"""

#: Every process runs this on its heartbeat: users whose presence expired (their process died
#: without cleaning up, e.g. SIGKILL) are dropped and announced offline, once.  KEYS:
#: chat:online.  ARGV: key prefix of chat:conn, presence channel prefix, max users per run.
PRESENCE_SWEEP = _ANNOUNCE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, user in ipairs(gone) do
  local ck = ARGV[1] .. string.lower(user)
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
  if redis.call('ZCARD', ck) == 0 and redis.call('ZREM', KEYS[1], user) == 1 then
    announce(ARGV[2], user, 'false')
    n = n + 1
  end
end
return n
"""

#: The presence of watched users.  KEYS: chat:online.  ARGV: key prefix of user hashes, then
#: lower-cased names.  Returns, per name, {canonical name, 1 online / 0 offline}, or {false}
#: for a name nobody registered.
PRESENCE_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 2, #ARGV do
  local name = redis.call('HGET', ARGV[1] .. ARGV[i], 'name')
  if name then
    local until_ms = redis.call('ZSCORE', KEYS[1], name)
    local online = 0
    if until_ms and tonumber(until_ms) > now then online = 1 end
    out[i - 1] = {name, online}
  else
    out[i - 1] = {false}
  end
end
return out
"""

#: Advance a stored cursor, never moving it back.  KEYS: chat:cursor:<user>.  ARGV: id, ttl s.
CURSOR_MAX = """
local cur = redis.call('GET', KEYS[1])
local function parse(s)
  local a, b = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end
local nm, ns = parse(ARGV[1])
if cur then
  local cm, cs = parse(cur)
  if cm and (cm > nm or (cm == nm and cs >= ns)) then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
