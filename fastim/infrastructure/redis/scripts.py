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

# KEYS[1] = gml:{groupId}; ARGV = user_id, ts, window.
# Removes the element found and returns it, or false when none. The element is
# first overwritten with a marker no message can equal, then LREM removes the
# first marker counted from the nearer end: only the element found goes, and
# Redis walks at most half the list, in C.
REMOVE = _FIND_ANCHOR + """
local index, item = find_anchor(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
if index == nil then
  return false
end
local marker = '\0fastim-recalled'
redis.call('LSET', KEYS[1], index, marker)
if index < redis.call('LLEN', KEYS[1]) / 2 then
  redis.call('LREM', KEYS[1], 1, marker)
else
  redis.call('LREM', KEYS[1], -1, marker)
end
return item
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

# KEYS[1] = gml:{groupId}; ARGV = message JSON, ttl_seconds, max_length.
# Appends, renews (or, for a non-positive TTL, removes) the expiry, trims to the
# newest max_length when it is positive, and returns the new length: one
# command, so many sockets' appends can share one pipelined round trip.
APPEND = """
redis.call('RPUSH', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
local max_length = tonumber(ARGV[3])
if max_length > 0 then
  redis.call('LTRIM', KEYS[1], -max_length, -1)
end
return redis.call('LLEN', KEYS[1])
"""

# KEYS[1] = gml:{groupId}; ARGV = count (> 0).
# The newest count elements, oldest first, and the length, read atomically.
NEWEST = """
return {redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1), redis.call('LLEN', KEYS[1])}
"""
