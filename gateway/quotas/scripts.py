"""The Redis side of admission: three Lua scripts, each one atomic round trip.

Per quota and period, three keys:
  <base>:h  hash   init (present once the counter is built), spent, reserved, r:<admission> amounts
  <base>:x  zset   admission -> deadline (ms, wall clock): reservations of crashed workers expire
  <base>:w  zset   rolling periods only: "<id>|<nanos>" scored by the call's start (ms)
Per rate limit and subject, two keys:
  <base>:z  zset   "<admission>|<tokens>" scored by the call's time (ms), the last minute
  <base>:t  string tokens in that minute
Money is integer nano-dollars. Lua numbers are doubles, exact to 2**53, and are
written back with %.0f so Redis always receives integer strings.
"""

from __future__ import annotations

_COMMON = """
local function incr(key, field, value)
  if value ~= 0 then redis.call('HINCRBY', key, field, string.format('%.0f', value)) end
end
local function amount_of(member)
  return tonumber(string.match(member, '|(%-?%d+)$')) or 0
end
"""

# KEYS: 3 per quota (h, x, w), then 2 per rate limit (z, t).
# ARGV: logical now ms, admission id, wall-clock ms, reservation deadline ms, n quotas,
#       n limits, then 5 per quota (amount or -1, cost, rolling 0/1, window ms, expire-at s),
#       then 3 per limit (requests per minute or -1, tokens per minute or -1, tokens).
# Returns {0} admitted, {1, quota index, oldest rolling entry ms} over a quota,
#         {2, limit index, retry after ms} over a rate limit, {3, missing quota indexes...}.
ADMIT = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local wall = tonumber(ARGV[3])
local deadline = tonumber(ARGV[4])
local nq = tonumber(ARGV[5])
local nl = tonumber(ARGV[6])
local qa = 7
local la = qa + 5 * nq

local missing = {3}
for i = 1, nq do
  if redis.call('HEXISTS', KEYS[3*i-2], 'init') == 0 then table.insert(missing, i) end
end
if #missing > 1 then return missing end

for j = 1, nl do
  local z, t = KEYS[3*nq + 2*j - 1], KEYS[3*nq + 2*j]
  local rpm = tonumber(ARGV[la + 3*(j-1)])
  local tpm = tonumber(ARGV[la + 3*(j-1) + 1])
  local tokens = tonumber(ARGV[la + 3*(j-1) + 2])
  local cutoff = now - 60000
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do gone = gone + amount_of(m) end
    redis.call('DECRBY', t, string.format('%.0f', gone))
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
  end
  if rpm >= 0 and redis.call('ZCARD', z) + 1 > rpm then
    local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    local retry = 60000
    if #first > 0 then retry = tonumber(first[2]) + 60000 - now end
    return {2, j, retry}
  end
  local total = tonumber(redis.call('GET', t) or '0')
  if tpm >= 0 and total + tokens > tpm then
    local retry = 60000
    if tokens <= tpm then
      local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local freed = 0
      for k = 1, #entries, 2 do
        freed = freed + amount_of(entries[k])
        if total - freed + tokens <= tpm then
          retry = tonumber(entries[k+1]) + 60000 - now
          break
        end
      end
    end
    return {2, j, retry}
  end
end

for i = 1, nq do
  local h, x, w = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local base = qa + 5*(i-1)
  local amount, cost = tonumber(ARGV[base]), tonumber(ARGV[base+1])
  local rolling, window = tonumber(ARGV[base+2]), tonumber(ARGV[base+3])
  local expired = redis.call('ZRANGEBYSCORE', x, '-inf', wall)
  for _, rid in ipairs(expired) do
    local held = tonumber(redis.call('HGET', h, 'r:' .. rid) or '0')
    incr(h, 'reserved', -held)
    redis.call('HDEL', h, 'r:' .. rid)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', x, '-inf', wall) end
  if rolling == 1 then
    local cutoff = now - window
    local old = redis.call('ZRANGEBYSCORE', w, '-inf', cutoff)
    if #old > 0 then
      local gone = 0
      for _, m in ipairs(old) do gone = gone + amount_of(m) end
      incr(h, 'spent', -gone)
      redis.call('ZREMRANGEBYSCORE', w, '-inf', cutoff)
    end
  end
  if amount >= 0 and cost > 0 then
    local spent = tonumber(redis.call('HGET', h, 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
    if spent + reserved + cost > amount then
      local oldest = 0
      if rolling == 1 then
        local first = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
        if #first > 0 then oldest = tonumber(first[2]) end
      end
      return {1, i, oldest}
    end
  end
end

for i = 1, nq do
  local h, x, w = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local base = qa + 5*(i-1)
  local cost, expire_at = tonumber(ARGV[base+1]), ARGV[base+4]
  if cost > 0 then
    redis.call('HSET', h, 'r:' .. id, string.format('%.0f', cost))
    incr(h, 'reserved', cost)
    redis.call('ZADD', x, deadline, id)
  end
  redis.call('EXPIREAT', h, expire_at)
  redis.call('EXPIREAT', x, expire_at)
  if redis.call('EXISTS', w) == 1 then redis.call('EXPIREAT', w, expire_at) end
end
for j = 1, nl do
  local z, t = KEYS[3*nq + 2*j - 1], KEYS[3*nq + 2*j]
  local tokens = tonumber(ARGV[la + 3*(j-1) + 2])
  redis.call('ZADD', z, now, id .. '|' .. string.format('%.0f', tokens))
  redis.call('INCRBY', t, string.format('%.0f', tokens))
  redis.call('PEXPIRE', z, 120000)
  redis.call('PEXPIRE', t, 120000)
end
return {0}
"""
)

# KEYS as for ADMIT. ARGV: call start ms, admission id, n quotas, n limits,
# then 3 per quota (actual nanos, rolling 0/1, expire-at s), then 2 per limit
# (tokens reserved, actual tokens). A counter that is not built (Redis was
# flushed since admission) is left alone: its rebuild from the audit trail
# will count this call. Returns each quota's spend after settling (-1 if unbuilt).
SETTLE = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local nq = tonumber(ARGV[3])
local nl = tonumber(ARGV[4])
local qa = 5
local la = qa + 3 * nq
local result = {}
for i = 1, nq do
  local h, x, w = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local base = qa + 3*(i-1)
  local cost, rolling, expire_at = tonumber(ARGV[base]), tonumber(ARGV[base+1]), ARGV[base+2]
  if redis.call('HEXISTS', h, 'init') == 1 then
    local held = redis.call('HGET', h, 'r:' .. id)
    if held then
      incr(h, 'reserved', -tonumber(held))
      redis.call('HDEL', h, 'r:' .. id)
      redis.call('ZREM', x, id)
    end
    if cost > 0 then
      incr(h, 'spent', cost)
      if rolling == 1 then
        redis.call('ZADD', w, now, id .. '|' .. string.format('%.0f', cost))
        redis.call('EXPIREAT', w, expire_at)
      end
    end
    table.insert(result, redis.call('HGET', h, 'spent') or '0')
  else
    table.insert(result, '-1')
  end
end
for j = 1, nl do
  local z, t = KEYS[3*nq + 2*j - 1], KEYS[3*nq + 2*j]
  local reserved = tonumber(ARGV[la + 2*(j-1)])
  local actual = tonumber(ARGV[la + 2*(j-1) + 1])
  local old_member = id .. '|' .. string.format('%.0f', reserved)
  local score = redis.call('ZSCORE', z, old_member)
  if score and actual ~= reserved then
    redis.call('ZREM', z, old_member)
    redis.call('ZADD', z, score, id .. '|' .. string.format('%.0f', actual))
    redis.call('INCRBY', t, string.format('%.0f', actual - reserved))
  end
end
return result
"""
)

# Build one counter from the audit trail, once: HSETNX on `init` is the guard, so
# of several workers rebuilding the same counter at once only the first writes.
# KEYS: h, w. ARGV: spent nanos, expire-at s, then (score ms, member) pairs for a
# rolling window. Returns 1 if this call built the counter, 0 if another had.
INIT = """
if redis.call('HSETNX', KEYS[1], 'init', '1') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', '0')
redis.call('EXPIREAT', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
for k = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], ARGV[k], ARGV[k+1])
end
if #ARGV > 2 then redis.call('EXPIREAT', KEYS[2], ARGV[2]) end
return 1
"""
