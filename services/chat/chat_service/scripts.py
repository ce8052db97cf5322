"""The Lua scripts chat runs in Redis: each is one round trip and atomic.

Message ids
    Every stored message gets an id ``<ms>-<seq>`` made here, not by XADD, from a *clock*:
    ``ms`` is Redis' clock in ms (never going back: the clock keeps the highest ms used) and
    ``seq`` the clock's counter.  Each person has a clock for their private messages,
    ``chat:clock:user:<name>``; each room has its own, ``chat:clock:room:<room>``.  So a
    clock's ids increase in the order Redis executed its sends, and because a script stores
    (XADD) and publishes (SPUBLISH) atomically, a process hears each clock's messages in id
    order.  Clients resume from a position per clock (their private messages, each room:
    :mod:`.client`).

Conversation streams
    Each person has their own copy of each private conversation (``chat:pm:<owner>:<other>``),
    numbered by their own clock; a message is stored in the sender's copy (SEND_MINE), then
    in the receiver's (SEND_THEIRS), so each call touches one person's keys.  Each room is one
    stream (``chat:room:<room>``).  A stream holds its messages in both directions, and the
    edits and deletions of them as entries of their own (field ``e``), so a replay delivers
    every change in id order, and a history page shows each message as it is now
    (``chat:edits``).

Presence
    A user is online while a chat process holds a socket of theirs: ``chat:sockets:<user>`` has
    a field per process.  There is no global list of who is online: a process that died
    without a word is found in ``chat:nodes`` and its users (``chat:node:<holder>``) are swept
    one by one (:mod:`.presence`).

One owner per call
    Every script works on the keys of one owner, a person or a room, and publishes on that
    owner's channel; the keys carry the owner's hash tag (``webchat_common.keys``), so on a
    Redis Cluster each call runs on one slot (docs/cluster.md).  What spans owners is several
    calls in an order that makes a failure in between harmless: a private message's two
    copies, a room message and then the sender's read marker (:data:`MARK`), a read marker
    checked against a room's stream and then moved.  Accounts (``user:<name>``) are looked up
    by the caller (:mod:`.accounts`), never here.

Publishing is SPUBLISH (sharded pub/sub, :mod:`.broker`).
"""

# Shared prelude: ``now``, Redis' clock in ms.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Shared prelude (after _NOW): a new id in ``id``, ``ms`` (string) from the clock KEYS[1] of
# the stream KEYS[2].  A clock with no id yet starts above the stream's last entry (written
# under an older clock: a room's entries before rooms had clocks of their own).
_ID = """
local ms = now
local last = redis.call('HGET', KEYS[1], 'ms')
if not last then
  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if top then
    local tms, tseq = string.match(top[1], '^(%d+)-(%d+)$')
    redis.call('HSET', KEYS[1], 'ms', tms, 'seq', tseq)
    last = tms
  end
end
last = tonumber(last or '0')
if ms < last then ms = last else redis.call('HSET', KEYS[1], 'ms', string.format('%d', ms)) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local msstr = string.format('%d', ms)
local id = msstr .. '-' .. seq
"""
_NEW_ID = _NOW + _ID

# Shared prelude: announce(channel, user, state) publishes (SPUBLISH) a presence frame on the
# user's presence channel; state is 'true' or 'false'.
_ANNOUNCE = """
local function announce(channel, user, state)
  redis.call('SPUBLISH', channel, '{"type":"presence","user":' .. cjson.encode(user) .. ',"online":' .. state .. '}')
end
"""

def _dedup(key, duplicate):
    """De-duplication by the sender's ``cid``: ``KEYS[key]``, when given, is
    ``chat:cid:<sender>:<target>:<cid>`` (ARGV[5]: its TTL, s).  If it exists the message was
    stored already (the client sent it again after a reconnect that lost the ack): nothing is
    stored, and the script returns ``duplicate`` built from the first message's ``sid``, ``sts``
    and ``sname``.  The caller stores the key after storing the message (see ``_DEDUP_SET``).
    A duplicate still writes (the key's own expiry, unchanged) so that a WAIT after it
    (CHAT_ACK_REPLICAS, ``store.Store._pipeline``) also waits for the first message to reach
    the replicas: WAIT counts the connection's own writes, and the first may have been made on
    another connection and not confirmed."""
    return f"""
local dkey = KEYS[{key}]
if dkey then
  local seen = redis.call('GET', dkey)
  if seen then
    redis.call('PEXPIRE', dkey, math.max(redis.call('PTTL', dkey), 1))
    local sid, sts, sname = string.match(seen, '^(%S+) (%S+) (.*)$')
    return {duplicate}
  end
end
"""


_DEDUP_SET = """
if dkey then redis.call('SET', dkey, id .. ' ' .. msstr .. ' ' .. (name or ''), 'EX', ARGV[5]) end
"""

# Shared prelude: ``remember(zset, member, ms, age)`` scores a conversation in a user's
# chat:convs and keeps the key as long as the history; a new conversation also drops the ones
# older than the history (only then: the list cannot grow without a new one).
_REMEMBER = """
local function remember(key, member, at, age)
  if redis.call('ZADD', key, at, member) == 1 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%d', at - tonumber(age)))
  end
  redis.call('PEXPIRE', key, age)
end
"""

#: A private message, the sender's call: their copy.  KEYS: the sender's clock, their copy
#: (chat:pm:<sender>:<receiver>), chat:convs:<sender>, chat:read:<sender>,
#: chat:sockets:<sender>, optionally the cid key.  ARGV: frame tail (JSON object without its
#: "{", carrying sender, data, cid), max length, age ms, the sender's channel, the cid key's
#: TTL, the sending socket's token, the receiver's registered name (looked up by the caller:
#: :mod:`.accounts`), "self" for a message to oneself (else "").  Stores the message in the
#: sender's copy with an id of their clock and, when the sender has other sockets open,
#: publishes it to them as ``"<id>/<token> <frame>"`` (every socket of theirs but the sending
#: one, which has the ack; a message to oneself goes to all of them); puts the conversation
#: first in their list and moves their read marker to it (one has read what one answers).  A
#: message from a long-poll tab (token ``p.<poll>``) is stored with the token (``o``), so that
#: the tab's replay can leave it out; entries are told from changes by their third field
#: (``e``).  Returns {id, ts, receiver name, duplicate 0/1}.  The receiver's copy is
#: SEND_THEIRS, the caller's next call.
SEND_MINE = _REMEMBER + _dedup(6, "{sid, sts, sname, 1}") + """
local name = ARGV[7]""" + _NEW_ID + """
local frame = '{"type":"message","id":"' .. id .. '","ts":' .. msstr .. ',"receiver":' .. cjson.encode(name) .. ',' .. ARGV[1]
if string.sub(ARGV[6], 1, 2) == 'p.' then
  -- from a long-poll tab: named, so that the tab is not sent it again when a replay picks it up
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'f', frame, 'o', ARGV[6])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'f', frame)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[8] == 'self' then
  redis.call('SPUBLISH', ARGV[4], id .. ' ' .. frame)
else
  local open = 0
  for _, n in ipairs(redis.call('HVALS', KEYS[5])) do open = open + tonumber(n) end
  if open > 1 then redis.call('SPUBLISH', ARGV[4], id .. '/' .. ARGV[6] .. ' ' .. frame) end
end
remember(KEYS[3], name, ms, ARGV[3])
redis.call('HSET', KEYS[4], '@' .. string.lower(name), id)
redis.call('PEXPIRE', KEYS[4], ARGV[3])""" + _DEDUP_SET + """
return {id, msstr, name, 0}
"""

# Shared prelude: ``find_sent(copy, sid, low)``: the id, in a person's copy, of the message
# whose id in its sender's copy is ``sid`` (its ``p``), looking back from the newest entry to
# id ``low``; false when it is not there.  A re-send and an edit only come within their
# windows, so the look back is short.
_FIND_SENT = """
local function find_sent(copy, sid, low)
  local hi = '+'
  while true do
    local batch = redis.call('XREVRANGE', copy, hi, low, 'COUNT', 64)
    for _, e in ipairs(batch) do
      if e[2][3] == 'p' and e[2][4] == sid then return e[1] end
    end
    if #batch < 64 then return false end
    hi = '(' .. batch[#batch][1]
  end
end
"""

#: A private message, the receiver's call: their copy.  KEYS: the receiver's clock, their copy
#: (chat:pm:<receiver>:<sender>), chat:convs:<receiver>, chat:sockets:<receiver>.  ARGV: frame
#: tail (as SEND_MINE's), max length, age ms, the receiver's channel, "" or (for a message the
#: sender's call found already stored: a re-send) the lowest id to look for it from, the
#: message's id in the sender's copy, the sender, the receiver's registered name.  Idempotent:
#: a re-sent message the receiver's copy holds already (an entry whose ``p`` is its id) is not
#: stored again.  Else stores it with an id of the receiver's clock and the sender's id
#: (``p``), publishes it to the receiver and puts the conversation first in their list.
#: Returns {id in the receiver's copy, online 0/1}.
SEND_THEIRS = _REMEMBER + _FIND_SENT + """
if ARGV[5] ~= '' then
  local got = find_sent(KEYS[2], ARGV[6], ARGV[5])
  if got then return {got, redis.call('EXISTS', KEYS[4])} end
end""" + _NEW_ID + """
local frame = '{"type":"message","id":"' .. id .. '","ts":' .. msstr .. ',"receiver":' .. cjson.encode(ARGV[8]) .. ',' .. ARGV[1]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'f', frame, 'p', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SPUBLISH', ARGV[4], id .. ' ' .. frame)
remember(KEYS[3], ARGV[7], ms, ARGV[3])
return {id, redis.call('EXISTS', KEYS[4])}
"""

#: The id, in a person's copy, of the message whose id in its sender's copy is ARGV[1]: see
#: ``find_sent``.  KEYS: the copy.  ARGV: that id, the lowest id to look from.  Returns the id
#: or false.
FIND_SENT = _FIND_SENT + """
return find_sent(KEYS[1], ARGV[1], ARGV[2])
"""

#: What the other person of a private conversation knows a point of a copy by.  KEYS: a
#: person's copy, optionally their chat:read.  ARGV: an id of the copy, or (with chat:read) the
#: field of the conversation in it, whose marker is the id.  Returns the sender's id (``p``)
#: of the last message at or before that id that the other person sent, or false (none, within
#: the last ARGV[2] entries).
PEER_ID = """
local at = ARGV[1]
if KEYS[2] then at = redis.call('HGET', KEYS[2], ARGV[1]) end
if not at then return false end
local hi, seen = at, 0
while seen < tonumber(ARGV[2]) do
  local batch = redis.call('XREVRANGE', KEYS[1], hi, '-', 'COUNT', 64)
  for _, e in ipairs(batch) do
    if e[2][3] == 'p' then return e[2][4] end
    seen = seen + 1
  end
  if #batch < 64 then return false end
  hi = '(' .. batch[#batch][1]
end
return false
"""

#: Room message.  KEYS: the room's clock, chat:room:<room>, optionally the cid key.
#: ARGV: frame tail (with sender, room, data, cid), max length, age ms, the room's channel,
#: the cid key's TTL.  Returns {id, ts, duplicate 0/1}.  (The sender's read marker is moved by
#: the caller's next call, :data:`MARK`, in the sender's slot.)
SEND_ROOM = _dedup(3, "{sid, sts, 1}") + _NEW_ID + """
local frame = '{"type":"message","id":"' .. id .. '","ts":' .. msstr .. ',' .. ARGV[1]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'f', frame)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SPUBLISH', ARGV[4], id .. ' ' .. frame)
local name""" + _DEDUP_SET + """
return {id, msstr, 0}
"""

# Shared prelude: ``after(a, b)``: is id ``a`` above id ``b`` (both "<ms>-<seq>")?
_AFTER = """
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
"""

# Shared prelude: ``unread(stream, marker, cap)``: the messages after ``marker`` (false: all),
# counting at most ``cap`` entries (changes are entries but not messages).
_UNREAD = """
local function unread(stream, marker, cap)
  local lo = '-'
  if marker then lo = '(' .. marker end
  local n = 0
  for _, e in ipairs(redis.call('XRANGE', stream, lo, '+', 'COUNT', cap)) do
    if e[2][3] ~= 'e' then n = n + 1 end
  end
  return n
end
"""

# Shared prelude: ``page(stream, edits, before, want)``: up to ``want`` message frames of a
# conversation below id ``before`` ("+": from the newest), newest first, each as it is now
# (edited text or tombstone from its chat:edits hash); change entries are skipped.
_PAGE = """
local function page(stream, edits, before, want)
  local hi = before
  if hi ~= '+' then hi = '(' .. hi end
  local ids, frames = {}, {}
  while #frames < want do
    local asked = math.max(want - #frames, 16)  -- (read ahead: changes may come first)
    local batch = redis.call('XREVRANGE', stream, hi, '-', 'COUNT', asked)
    for _, e in ipairs(batch) do
      if e[2][3] ~= 'e' and #frames < want then
        ids[#ids + 1] = e[1]
        frames[#frames + 1] = e[2][2]
      end
    end
    if #batch < asked then break end
    hi = '(' .. batch[#batch][1]
  end
  if #ids > 0 then
    local now = redis.call('HMGET', edits, unpack(ids))
    for i = 1, #ids do
      if now[i] then frames[i] = now[i] end
    end
  end
  return frames
end
"""

# Shared prelude: ``issued(clock, stream)``: the last id a clock issued ("<ms>-<seq>"); for a
# clock with none yet, its stream's last entry's (see _ID), else "0-0".
_ISSUED = """
local function issued(clock, stream)
  local c = redis.call('HMGET', clock, 'ms', 'seq')
  if c[1] then return c[1] .. '-' .. c[2] end
  if stream then
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    if top then return top[1] end
  end
  return '0-0'
end
"""

# Shared prelude: ``read(stream, start)``: {boundary, {entries after ``start``...}, start}
# ("$": none read; a missing stream is empty), at most ARGV[2] entries.  ``boundary`` is the
# first kept entry when older ones were trimmed ("0-0" otherwise): a start below it means
# messages may have been lost (reported conservatively: also when the client missed exactly
# the whole kept history).
_READ = """
local function read(key, start)
  if start == '$' or redis.call('EXISTS', key) == 0 then return {'0-0', {}, start} end
  -- Trimming (MAXLEN ~) removes the oldest entries: if any was removed, everything older
  -- than the first kept entry may be gone, so a cursor older than it may have missed some.
  -- (Redis 7.0 does not update max-deleted-entry-id on trimming, so it cannot be used.)
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
  local boundary = '0-0'
  if tonumber(f['entries-added']) > tonumber(f['length']) then boundary = f['recorded-first-entry-id'] end
  local rng
  if start == '0-0' then rng = '-' else rng = '(' .. start end
  return {boundary, redis.call('XRANGE', key, rng, '+', 'COUNT', ARGV[2]), start}
end
"""

#: What a user missed of their private messages: one clock's snapshot, atomic with its sends
#: (so nothing published before it is missed, and everything after has a higher id).  KEYS:
#: chat:convs:<user>, the user's clock.  ARGV: the exclusive start id, max entries per stream,
#: the name of the user's copies without the other person's (lower-cased) name at its end
#: (``webchat_common.keys.chat_pm(user, "")``).  The copies read are the user's of
#: the conversations with a message since the start's ms (``chat:convs`` scores them by their
#: last message).  Returns per stream read ``read``'s triple, and last: the clock's last id
#: issued ("<ms>-<seq>", "0-0": none).
REPLAY_PRIVATE = _ISSUED + _READ + """
local out = {}
local since_ms = string.match(ARGV[1], '^(%d+)-')
for _, peer in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], since_ms, '+inf')) do
  out[#out + 1] = read(ARGV[3] .. string.lower(peer), ARGV[1])
end
out[#out + 1] = issued(KEYS[2])
return out
"""

#: What a user missed of a room: its clock's snapshot, as REPLAY_PRIVATE's.  KEYS: the room's
#: stream, its clock.  ARGV: the exclusive start id ("$": read nothing), max entries.  Returns
#: ``read``'s triple and, fourth, the room's last id issued.
REPLAY_ROOM = _ISSUED + _READ + """
local r = read(KEYS[1], ARGV[1])
r[4] = issued(KEYS[2], KEYS[1])
return r
"""

#: One page of a conversation, newest first.  KEYS: the stream (a room's, or the reader's
#: copy), its chat:edits hash, and for a named room its chat:members (only members read it; the
#: default room is everyone's, and who may read a private conversation the caller checked).
#: ARGV: the exclusive upper id ("+": from the newest), how many messages, the reader (as a
#: member of the set).  Returns {-1} (not a member), else {1, then up to that many plus one
#: message frames} (one more than asked: the caller knows whether there are more), each as it
#: is now (edited text or tombstone from chat:edits); changes are skipped.  (The reader's
#: marker is in their own slot; the other person's of a private conversation is in their
#: copy's ids: ``PEER_ID``.)
HISTORY = _PAGE + """
if KEYS[3] and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 0 then return {-1} end
local frames = page(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]) + 1)
local out = {1}
for i = 1, #frames do out[#out + 1] = frames[i] end
return out
"""

#: A conversation in the list.  KEYS: its stream, its chat:edits hash.  ARGV: the user's read
#: marker ("": none), the most entries counted as unread.  Returns {its last message frame as
#: it is now or false, unread count}.
SUMMARY = _UNREAD + _PAGE + """
local last = page(KEYS[1], KEYS[2], '+', 1)[1] or false
local marker = false
if ARGV[1] ~= '' then marker = ARGV[1] end
return {last, unread(KEYS[1], marker, ARGV[2])}
"""

#: How much of a conversation is unread after a point.  KEYS: its stream.  ARGV: the id read
#: up to, the most entries counted, "check" when that id must be a message of the stream.
#: Returns -1 when it must and is not, else the count of messages after it.
UNREAD = _UNREAD + """
if ARGV[3] == 'check' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
  if #e == 0 or e[1][2][3] == 'e' then return -1 end
end
return unread(KEYS[1], ARGV[1], ARGV[2])
"""

#: Move a read marker forward.  KEYS: chat:read:<user>.  ARGV: the conversation's field, the
#: id read up to, the marker's TTL ms.  Returns {1 moved / 0 not (the marker is already there
#: or further), the marker}.
MARK = _AFTER + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local moved = 0
if (not cur) or after(ARGV[2], cur) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  cur = ARGV[2]
  moved = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {moved, cur}
"""

#: Edit or delete a message.  KEYS: the conversation's clock, its stream, its chat:edits hash.
#: ARGV: the message's id, the message as the caller read it from chat:edits ("" when it was
#: never changed), the message as it is to be (JSON), the window ms (a message older than
#: this cannot be changed), "edit" or "delete", age ms, max length, then the channels to
#: publish on.  The change is an entry of the stream (so a replay delivers it in order) and the
#: new message is kept in chat:edits (so history shows it).  Returns {id, ts}, or {"changed"}
#: when the message changed since the caller read it, or {"too_late"}.
CHANGE = """
local cur = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if cur ~= ARGV[2] then return {'changed'} end""" + _NOW + """
local written = tonumber(string.match(ARGV[1], '^(%d+)-'))
if now - written > tonumber(ARGV[4]) then
  return {'too_late'}
end""" + _ID + """
local frame = '{"type":"' .. ARGV[5] .. '","id":"' .. id .. '","ts":' .. msstr .. ',"target":"' .. ARGV[1] ..
  '","message":' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], id, 'f', frame, 'e', '1')
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
for i = 8, #ARGV do redis.call('SPUBLISH', ARGV[i], id .. ' ' .. frame) end
return {id, msstr}
"""

#: The process is alive.  KEYS: chat:nodes.  ARGV: holder (the process's presence id), ttl
#: ms, "known" (it registered before) or "new".  Its entry expires ttl from now.  Returns 0,
#: changing nothing, when a known holder has no entry any more (it was claimed as dead while
#: it was late, or Redis forgot it): the process must hold its users again under a new id.
NODE_BEAT = _NOW + """
if ARGV[3] == 'known' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

#: Claim up to ARGV[1] holders whose entry in chat:nodes (KEYS[1]) expired (their process died,
#: or is too slow to beat) for ARGV[2] ms: each is renamed ``~<holder>`` with that lease, so
#: that one caller at a time sweeps it; a lease that expires (its sweeper died) is claimed
#: again.  The sweeper removes ``~<holder>`` when done.  Returns the holders claimed.
NODES_DEAD = _NOW + """
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  local holder = m
  if string.sub(m, 1, 1) == '~' then holder = string.sub(m, 2) else redis.call('ZREM', KEYS[1], m) end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), '~' .. holder)
  out[#out + 1] = holder
end
return out
"""

#: May one more socket of a user open?  KEYS: chat:sockets:<user>.  ARGV: holder, the user's
#: sockets on this process counting the new one, the most a user may have open
#: (CHAT_MAX_SOCKETS_PER_USER), the user's presence channel, the user.  Counts the sockets of
#: every process (a dead one's count is removed by its sweep).  If the new socket fits, records
#: this process's count, announces the user online if nobody held them, and returns 1; else
#: changes nothing and returns 0.
SOCKET_OPEN = _ANNOUNCE + """
local total = tonumber(ARGV[2])
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if counts[i] ~= ARGV[1] then total = total + tonumber(counts[i + 1]) end
end
if total > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if #counts == 0 then announce(ARGV[4], ARGV[5], 'true') end
return 1
"""

#: Hold a user again under a process's new holder id (see NODE_BEAT).  KEYS:
#: chat:sockets:<user>.  ARGV: holder, the user's sockets on this process, their presence
#: channel, the user, then the process's retired holder ids (removed).  A user nobody held
#: (the sweep of the old id announced them offline) is announced online.  Returns 1 when
#: announced, else 0.
PRESENCE_UP = _ANNOUNCE + """
local before = redis.call('HLEN', KEYS[1])
for i = 5, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if before == 0 then
  announce(ARGV[3], ARGV[4], 'true')
  return 1
end
return 0
"""

#: A holder holds no socket of a user any more: the user's last socket on this process closed,
#: or the holder's process died (the sweep).  KEYS: chat:sockets:<user>.  ARGV: holder, user,
#: their presence channel.  Publishes "offline" (and returns 1) when this removed the last
#: holder of the user (once: only the call that removes the last one).
PRESENCE_DOWN = _ANNOUNCE + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0 then
  announce(ARGV[3], ARGV[2], 'false')
  return 1
end
return 0
"""

#: Advance a user's delivered cursor, never moving a clock's back.  KEYS: chat:cursors:<user>.
#: ARGV: ttl s, then pairs of a clock's field and an id.  Returns how many fields moved.
CURSOR_MAX = _AFTER + """
local moved = 0
for i = 2, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or after(ARGV[i + 1], cur) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    moved = moved + 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return moved
"""

#: Take ``cost`` tokens from a token bucket (refilled at ``rate`` a second up to ``burst``) if it
#: holds at least one; 1 if taken, else 0.  KEYS: chat:rate:<user>.  ARGV: rate, burst, cost.
#: The bucket may go below zero (a costly command), and expires once it would be full again.
RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'n')
local n = tonumber(b[2]) or burst
if b[1] then n = math.min(burst, n + (now - tonumber(b[1])) * rate) end
if n < 1 then return 0 end
n = n - cost
redis.call('HSET', KEYS[1], 't', string.format('%.6f', now), 'n', string.format('%.6f', n))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - n) / rate * 1000) + 1000)
return 1
"""
