"""Lua scripts that let one round trip search a group's list from its newest end.

Each is a plain string; a repository registers it on its own client
(``client.register_script``), which runs it with EVALSHA.
"""

from __future__ import annotations

# How many elements the scan fetches per LRANGE. Recent anchors (the common
# case: recall, scrolling back a little) are found in the first chunk, and a
# chunk this size keeps a deep scan at a few hundred LRANGE calls per 10^4
# messages.
SCAN_CHUNK = 128

# find_anchor(key, user_id, ts_text) -> the 0-based index of the newest element
# of KEYS[1] whose userId is user_id and whose ts is ts, with the element; or
# nil. The plain-text search for the digits of ts skips cjson.decode for almost
# every element. ts is compared as a number (cjson reads JSON numbers as
# doubles, exact for millisecond timestamps); a numeric userId (written by
# fast-im's Java nodes) matches when its integer digits are user_id, the way
# codec.decode_message turns it into a string. Elements that are not JSON
# or not message-shaped never match.
_FIND_ANCHOR = f"""
local function find_anchor(key, user_id, ts_text)
  local ts = tonumber(ts_text)
  local stop = redis.call('LLEN', key) - 1
  while stop >= 0 do
    local start = math.max(0, stop - {SCAN_CHUNK} + 1)
    local items = redis.call('LRANGE', key, start, stop)
    for i = #items, 1, -1 do
      local item = items[i]
      if string.find(item, ts_text, 1, true) then
        local ok, obj = pcall(cjson.decode, item)
        if ok and type(obj) == 'table' and obj.ts == ts and type(obj.info) == 'string' then
          local author = obj.userId
          if (type(author) == 'string' and author == user_id)
              or (type(author) == 'number' and author == math.floor(author)
                  and string.format('%d', author) == user_id) then
            return start + i - 1, item
          end
        end
      end
    end
    stop = start - 1
  end
  return nil
end
"""

# KEYS[1] = gml:{groupId}; ARGV = user_id, ts, count.
# Returns the up to count elements just before the anchor, oldest first, or
# false (nil to the client) when the anchor does not exist.
BEFORE = _FIND_ANCHOR + """
local index = find_anchor(KEYS[1], ARGV[1], ARGV[2])
if index == nil then
  return false
end
local count = tonumber(ARGV[3])
if count <= 0 or index == 0 then
  return {}
end
return redis.call('LRANGE', KEYS[1], math.max(0, index - count), index - 1)
"""

# KEYS[1] = gml:{groupId}; ARGV = user_id, ts.
# Removes the newest matching element and returns it, or false when none.
# LREM with count -1 removes the first equal element counted from the tail,
# which is the one found: any newer equal string would have matched first.
REMOVE = _FIND_ANCHOR + """
local index, item = find_anchor(KEYS[1], ARGV[1], ARGV[2])
if index == nil then
  return false
end
redis.call('LREM', KEYS[1], -1, item)
return item
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
