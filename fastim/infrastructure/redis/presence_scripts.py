"""Lua scripts of presence: each change-set, renewal or removal of one node in one group is one atomic step.

Every script of a group gets KEYS[1] = the group's live nodes (a sorted set:
node id -> lease deadline, Redis time in ms), KEYS[2] = its count of distinct
users online, and, for writes, KEYS[3] = this node's hash (user -> sockets).
Other nodes' hashes are named ARGV[1] .. node .. ARGV[2]; they share the
group's hash tag, so on a cluster every key of a script is in one slot.

A node whose deadline passed is removed by the next write of any node to the
group (every live node renews every few seconds): its users that no live node
holds are reported as left. Its hash outlives the deadline by a grace period
for that; should it be gone all the same, the count is recomputed.
"""

from __future__ import annotations

# ARGV[1] node key prefix, ARGV[2] node key suffix, ARGV[3] this node's id, ARGV[4] lease (ms),
# ARGV[5] grace (ms), ARGV[6] the publish command ('' : announce nothing), ARGV[7] the group's
# channel, ARGV[8] the event's JSON up to its groupId, ARGV[9] the most users an event lists.
_COMMON = """
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function node_key(node)
  return ARGV[1] .. node .. ARGV[2]
end

local function held(nodes, user)
  for _, node in ipairs(nodes) do
    if redis.call('HEXISTS', node_key(node), user) == 1 then
      return true
    end
  end
  return false
end

local function others(me)
  local found = {}
  for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if node ~= me then
      table.insert(found, node)
    end
  end
  return found
end

local function recount()
  local seen, count = {}, 0
  for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    for _, user in ipairs(redis.call('HKEYS', node_key(node))) do
      if not seen[user] then
        seen[user] = true
        count = count + 1
      end
    end
  end
  redis.call('SET', KEYS[2], count)
end

-- Remove the nodes whose lease ran out; the users gone with them go into left.
local function reap(now, left)
  if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
    recount()
  end
  local stamp = string.format('%d', now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', stamp)
  if #dead == 0 then
    return
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', stamp)
  local live = redis.call('ZRANGE', KEYS[1], 0, -1)
  local seen, lost, gone = {}, false, 0
  for _, node in ipairs(dead) do
    local key = node_key(node)
    if redis.call('EXISTS', key) == 0 then
      lost = true
    end
    for _, user in ipairs(redis.call('HKEYS', key)) do
      if not seen[user] then
        seen[user] = true
        if not held(live, user) then
          table.insert(left, user)
          gone = gone + 1
        end
      end
    end
    redis.call('DEL', key)
  end
  if lost then
    recount()
  else
    redis.call('DECRBY', KEYS[2], gone)
  end
end

-- The group's keys live as long as its latest deadline, and the grace; the number online after.
local function settle(now)
  local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #latest == 0 then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 0
  end
  local ttl = string.format('%d', math.max(1, tonumber(latest[2]) - now + tonumber(ARGV[5])))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end

local function id_list(users)
  local parts = {}
  for i, user in ipairs(users) do
    parts[i] = cjson.encode(user)
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- One event for the whole change-set, naming the users only when few changed.
local function announce(joined, left, online)
  if ARGV[6] == '' or (#joined == 0 and #left == 0) then
    return
  end
  if #joined + #left > tonumber(ARGV[9]) then
    joined, left = {}, {}
  end
  table.sort(joined)
  table.sort(left)
  redis.call(ARGV[6], ARGV[7], ARGV[8] .. ',"joined":' .. id_list(joined) .. ',"left":' .. id_list(left)
    .. ',"online":' .. string.format('%d', online) .. '}')
end

-- This node's hash and deadline after a write: in the set while it holds users, out of it once it holds none.
local function keep(now, me)
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[4])), me)
    redis.call('PEXPIRE', KEYS[3], string.format('%d', tonumber(ARGV[4]) + tonumber(ARGV[5])))
  else
    redis.call('ZREM', KEYS[1], me)
  end
end
"""

# ARGV[10..] = user id, sockets, user id, sockets, ... (0 sockets: the user has none left on this node).
# Sets this node's count of each user; a user's first socket on any live node is a join, its last a
# leave. Returns 1 when this node held no live lease in the group before (new, or lapsed), else 0.
APPLY = _COMMON + """
local now = now_ms()
local me = ARGV[3]
local joined, left = {}, {}
reap(now, left)
local lapsed = 0
if not redis.call('ZSCORE', KEYS[1], me) then
  lapsed = 1
end
local rest = others(me)
local came, went = 0, 0
for i = 10, #ARGV, 2 do
  local user, count = ARGV[i], tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[3], user) or '0')
  if count > 0 then
    redis.call('HSET', KEYS[3], user, count)
  else
    redis.call('HDEL', KEYS[3], user)
  end
  if (old > 0) ~= (count > 0) and not held(rest, user) then
    if count > 0 then
      table.insert(joined, user)
      came = came + 1
    else
      table.insert(left, user)
      went = went + 1
    end
  end
end
if came ~= went then
  redis.call('INCRBY', KEYS[2], came - went)
end
keep(now, me)
announce(joined, left, settle(now))
return lapsed
"""

# Renews this node's lease in the group. Returns 1 when it had lapsed (its users there are gone).
RENEW = _COMMON + """
local now = now_ms()
local me = ARGV[3]
local left = {}
reap(now, left)
local lapsed = 0
if not redis.call('ZSCORE', KEYS[1], me) then
  lapsed = 1
  redis.call('DEL', KEYS[3])
else
  keep(now, me)
end
announce({}, left, settle(now))
return lapsed
"""

# Removes this node's users from the group at once (a graceful stop).
DROP = _COMMON + """
local now = now_ms()
local me = ARGV[3]
local left = {}
reap(now, left)
local rest = others(me)
local went = 0
for _, user in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not held(rest, user) then
    table.insert(left, user)
    went = went + 1
  end
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], me)
if went > 0 then
  redis.call('DECRBY', KEYS[2], went)
end
announce({}, left, settle(now))
return 0
"""

# KEYS[1] = the group's live nodes; ARGV[1], ARGV[2] as above.
# The hashes (user, sockets, user, sockets, ...) of the nodes whose lease lives; lapsed ones are left for a writer.
USERS = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local found = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')) do
  table.insert(found, redis.call('HGETALL', ARGV[1] .. node .. ARGV[2]))
end
return found
"""

# KEYS[1] = the group's live nodes, KEYS[2] = its count; ARGV[1], ARGV[2] as above.
# The number of distinct users online: the count, or, while a lapsed node waits to be removed by a
# writer, the users of the live nodes counted one by one.
COUNT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local stamp = string.format('%d', now)
if redis.call('ZCOUNT', KEYS[1], '-inf', stamp) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  return tonumber(redis.call('GET', KEYS[2]))
end
local seen, count = {}, 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. stamp, '+inf')) do
  for _, user in ipairs(redis.call('HKEYS', ARGV[1] .. node .. ARGV[2])) do
    if not seen[user] then
      seen[user] = true
      count = count + 1
    end
  end
end
return count
"""
