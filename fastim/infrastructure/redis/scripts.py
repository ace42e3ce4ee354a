"""Lua scripts: one round trip, one atomic step, for each search or check-then-change of the repositories.

Each is a plain string, run through :class:`~fastim.infrastructure.redis.batcher.LuaScript` (EVALSHA).
"""

from __future__ import annotations

# How many elements a scan fetches per LRANGE: recent anchors (the common case: recall,
# scrolling back a little) are found in the first chunk.
SCAN_CHUNK = 128

# find_anchor(key, user_id, ts_text, window) -> the 0-based index of the newest
# element of KEYS[1] whose userId is user_id and whose ts is ts, with the
# element; or nil. Bounded: it looks at the newest `window` elements, then, in
# the older part, at the `window` elements on either side of where a binary
# search by ts places the anchor (lists are appended in time order), so a call
# costs O(window + log n) whatever the length of the list.
#
# The plain-text search for the digits of ts skips cjson.decode for almost
# every element. ts is compared as a number (cjson reads JSON numbers as
# doubles, exact for millisecond timestamps); a numeric userId (written by
# fast-im's Java nodes) matches when its integer digits are user_id, the way
# codec.decode_message turns it into a string. Elements that are not JSON
# or not message-shaped never match, and count as "not later" in the search.
_FIND_ANCHOR = f"""
local function matches(item, user_id, ts, ts_text)
  if not string.find(item, ts_text, 1, true) then
    return false
  end
  local ok, obj = pcall(cjson.decode, item)
  if not (ok and type(obj) == 'table' and obj.ts == ts and type(obj.info) == 'string') then
    return false
  end
  local author = obj.userId
  return (type(author) == 'string' and author == user_id)
      or (type(author) == 'number' and author == math.floor(author)
          and string.format('%d', author) == user_id)
end

local function scan(key, low, high, user_id, ts, ts_text)
  local stop = high
  while stop >= low do
    local start = math.max(low, stop - {SCAN_CHUNK} + 1)
    local items = redis.call('LRANGE', key, start, stop)
    for i = #items, 1, -1 do
      if matches(items[i], user_id, ts, ts_text) then
        return start + i - 1, items[i]
      end
    end
    stop = start - 1
  end
  return nil
end

local function ts_at(key, index)
  local ok, obj = pcall(cjson.decode, redis.call('LINDEX', key, index))
  if ok and type(obj) == 'table' and type(obj.ts) == 'number' then
    return obj.ts
  end
  return nil
end

local function find_anchor(key, user_id, ts_text, window)
  local ts = tonumber(ts_text)
  local size = redis.call('LLEN', key)
  local newest = math.max(0, size - window)
  local index, item = scan(key, newest, size - 1, user_id, ts, ts_text)
  if index ~= nil or newest == 0 then
    return index, item
  end
  local low, high = 0, newest - 1
  while low < high do
    local middle = math.floor((low + high + 1) / 2)
    local found = ts_at(key, middle)
    if found == nil or found <= ts then
      low = middle
    else
      high = middle - 1
    end
  end
  return scan(key, math.max(0, low - window), math.min(newest - 1, low + window), user_id, ts, ts_text)
end
"""

# KEYS[1] = gml:{groupId}; ARGV = user_id, ts, count, window.
# Returns the up to count elements just before the anchor, oldest first, or
# false (nil to the client) when the anchor is not found.
BEFORE = _FIND_ANCHOR + """
local index = find_anchor(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[4]))
if index == nil then
  return false
end
local count = tonumber(ARGV[3])
if count <= 0 or index == 0 then
  return {}
end
return redis.call('LRANGE', KEYS[1], math.max(0, index - count), index - 1)
"""

# The stream of a group: a hash (fastim:stream:{groupId}) with its epoch and latest seq (and, when
# Redis is replicated, the run_id of the Redis process that wrote it last). The first event of a
# stream creates it with the epoch the node proposes; its seq counts every event.
_STREAM = """
local function next_seq(stream, epoch_candidate, ttl, writer)
  local epoch = redis.call('HGET', stream, 'epoch')
  if epoch and writer ~= '' then
    local last_writer = redis.call('HGET', stream, 'writer')
    if last_writer and last_writer ~= writer then
      -- Another Redis process wrote the stream last: this one is a promoted replica (or the keys
      -- moved here), which may lack the newest events the old one had announced. Their seqs must
      -- not be reused: the stream restarts, under a new epoch.
      epoch = false
    end
  end
  if not epoch then
    epoch = epoch_candidate
    redis.call('HSET', stream, 'epoch', epoch, 'seq', 0)
  end
  if writer ~= '' then
    redis.call('HSET', stream, 'writer', writer)
  end
  local seq = redis.call('HINCRBY', stream, 'seq', 1)
  if ttl > 0 then
    redis.call('EXPIRE', stream, ttl)
  else
    redis.call('PERSIST', stream)
  end
  return seq, epoch
end

-- The seq of an element of the message list when it belongs to the given epoch; 0 when it
-- belongs to another (an earlier stream: its elements all come before this one's); nil when it
-- has none (fast-im's own messages).
local function seq_of(item, epoch)
  if not item then
    return nil
  end
  local seq = string.match(item, '"seq":(%d+)}$')
  if not seq then
    return nil
  end
  if not string.find(item, '"id":"' .. epoch .. '-', 1, true) then
    return 0
  end
  return tonumber(seq)
end
"""

# KEYS[1] = gml:{groupId}, KEYS[2] = its stream;
# ARGV = message JSON (without id and seq), ttl_seconds, max_length, epoch candidate,
#        deadline (Redis time, ms; 0: none), channel, publish command (PUBLISH, or SPUBLISH on a
#        cluster; '' when the node publishes itself, once replicas confirmed the write), writer (the
#        run_id of the Redis process the node believes it talks to, when Redis is replicated and
#        events are published before replicas have them; '' otherwise: see next_seq).
# Past the deadline nothing happens ({-1}): a node that stopped waiting for the answer told its
# client the message was not sent, and it must never be stored later. Otherwise the message takes
# the stream's next seq, gets "id" ({epoch}-{seq}) and "seq" as its last keys, is appended (the
# list's TTL renewed, trimmed to max_length when positive) and published on the group's channel
# in the same step, so subscribers receive the group's events in seq order. Returns
# {seq, epoch, length, the stored element}.
APPEND = _STREAM + """
local deadline = tonumber(ARGV[5])
if deadline > 0 then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
    return {-1}
  end
end
local ttl = tonumber(ARGV[2])
local seq, epoch = next_seq(KEYS[2], ARGV[4], ttl, ARGV[8])
local item = string.sub(ARGV[1], 1, -2) .. ',"id":"' .. epoch .. '-' .. seq .. '","seq":' .. seq .. '}'
redis.call('RPUSH', KEYS[1], item)
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
local max_length = tonumber(ARGV[3])
if max_length > 0 then
  redis.call('LTRIM', KEYS[1], -max_length, -1)
end
if ARGV[7] ~= '' then
  redis.call(ARGV[7], ARGV[6], item)
end
return {seq, epoch, redis.call('LLEN', KEYS[1]), item}
"""

# KEYS[1] = gml:{groupId}, KEYS[2] = its stream, KEYS[3] = its recall events (fastim:recalls:{groupId});
# ARGV = "ts" or "id", user_id, ts or id, window, not_before_ms, ttl_seconds, keep_recalls,
#        epoch candidate, channel, the recall event's JSON up to its userId, publish command, writer.
# Finds the user's message by (user_id, ts) as BEFORE does, or by id (its seq, by a binary search:
# the list is appended in seq order), removes it, and records and publishes the recall event, a
# stream event with its own seq, in one step. {0}: not found; {-1}: older than not_before_ms;
# {1, the removed message, the recall event}. The element is first overwritten with a marker no
# message can equal, then LREM removes the marker counted from the nearer end: Redis walks at most
# half the list, in C.
REMOVE = _FIND_ANCHOR + _STREAM + """
local function find_by_id(key, stream, user_id, id)
  local epoch, wanted = string.match(id, '^(.+)%-(%d+)$')
  if not epoch or redis.call('HGET', stream, 'epoch') ~= epoch then
    return nil
  end
  wanted = tonumber(wanted)
  local low, high = 0, redis.call('LLEN', key) - 1
  while low <= high do
    local middle = math.floor((low + high) / 2)
    local item = redis.call('LINDEX', key, middle)
    local seq = seq_of(item, epoch)
    if seq == nil or seq < wanted then
      low = middle + 1
    elseif seq > wanted then
      high = middle - 1
    else
      local ok, obj = pcall(cjson.decode, item)
      if ok and type(obj) == 'table' and obj.id == id and (user_id == '' or tostring(obj.userId) == user_id) then
        return middle, item
      end
      return nil
    end
  end
  return nil
end

local index, item
if ARGV[1] == 'id' then
  index, item = find_by_id(KEYS[1], KEYS[2], ARGV[2], ARGV[3])
else
  index, item = find_anchor(KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
end
if index == nil then
  return {0}
end
local obj = cjson.decode(item)
if type(obj.ts) ~= 'number' then
  return {0}
end
if obj.ts < tonumber(ARGV[5]) then
  return {-1}
end
local marker = '\0fastim-recalled'
redis.call('LSET', KEYS[1], index, marker)
if index < redis.call('LLEN', KEYS[1]) / 2 then
  redis.call('LREM', KEYS[1], 1, marker)
else
  redis.call('LREM', KEYS[1], -1, marker)
end
local ttl = tonumber(ARGV[6])
local seq, epoch = next_seq(KEYS[2], ARGV[8], ttl, ARGV[12])
local event = ARGV[10] .. ',"userId":' .. cjson.encode(tostring(obj.userId)) .. ',"ts":' .. string.format('%d', obj.ts)
if type(obj.id) == 'string' then
  event = event .. ',"id":' .. cjson.encode(obj.id)
end
event = event .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}'
redis.call('RPUSH', KEYS[3], event)
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)
if ttl > 0 then
  redis.call('EXPIRE', KEYS[3], ttl)
else
  redis.call('PERSIST', KEYS[3])
end
if ARGV[11] ~= '' then
  redis.call(ARGV[11], ARGV[9], event)
end
return {1, item, event}
"""

# KEYS[1] = gml:{groupId}; ARGV = user_id, ts, window.
# The newest message (user_id, ts), searched as BEFORE does, or false.
FIND = _FIND_ANCHOR + """
local index, item = find_anchor(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
if index == nil then
  return false
end
return item
"""

# KEYS[1] = gml:{groupId}, KEYS[2] = its stream, KEYS[3] = its recall events; ARGV = since, limit.
# {seq, epoch, the list's length, the newest messages, the newest recall events}: as many of each
# as events came after since, when that is 1 to limit; none otherwise. The node keeps those after since.
TAIL = """
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
local total = redis.call('LLEN', KEYS[1])
local count = seq - tonumber(ARGV[1])
if count <= 0 or count > tonumber(ARGV[2]) then
  return {seq, epoch, total, {}, {}}
end
return {seq, epoch, total, redis.call('LRANGE', KEYS[1], -count, -1), redis.call('LRANGE', KEYS[3], -count, -1)}
"""

# KEYS[1] = gml:{groupId}; ARGV = start, end, limit.
# LRANGE start end, but at most limit elements from start: the work never
# depends on how wide a range the client asked for.
RANGE = """
local size = redis.call('LLEN', KEYS[1])
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
if first < 0 then
  first = math.max(size + first, 0)
end
if last < 0 then
  last = size + last
end
last = math.min(last, size - 1, first + tonumber(ARGV[3]) - 1)
if first > last then
  return {}
end
return redis.call('LRANGE', KEYS[1], first, last)
"""

# KEYS[1] = ugs:{userId}; ARGV = group_id, max_groups.
# 1: added; 0: already a member; -1: the user is in max_groups groups (0: no limit).
JOIN = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 0
end
local max_groups = tonumber(ARGV[2])
if max_groups > 0 and redis.call('SCARD', KEYS[1]) >= max_groups then
  return -1
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] = login:{userId}; ARGV = token.
# Milliseconds the token still lives (-1: no expiry) when it is the user's token, else -3.
TOKEN_REMAINING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
return -3
"""

# KEYS[1] = login:{userId}; ARGV = token. Deletes the token only if it is this one: 1 if it was.
REVOKE_TOKEN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] = login:{userId}; ARGV = token, ttl_seconds.
# Renews the TTL only when the token matches, so a stale token never extends
# the life of a newer one.
CHECK_AND_RENEW_TOKEN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] = gml:{groupId}, KEYS[2] = its stream; ARGV = count (0 for none).
# The newest count elements, oldest first, the length, and the stream's seq and epoch, read atomically.
NEWEST = """
local count = tonumber(ARGV[1])
local items = {}
if count > 0 then
  items = redis.call('LRANGE', KEYS[1], -count, -1)
end
local stream = redis.call('HMGET', KEYS[2], 'seq', 'epoch')
return {items, redis.call('LLEN', KEYS[1]), tonumber(stream[1] or '0'), stream[2] or ''}
"""

# KEYS[1] = gml:{groupId}. {the newest element (false when none), the length}, read atomically.
SUMMARY = """
return {redis.call('LINDEX', KEYS[1], -1), redis.call('LLEN', KEYS[1])}
"""
