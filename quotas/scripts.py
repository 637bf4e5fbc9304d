"""The Redis side of admission: three Lua scripts, each one atomic round trip.

Per quota and period, two keys:
  <base>:c  hash   init (present once the counter is built), spent, reserved, and one
                   r:<admission> = "<nanos>|<deadline ms>" per reservation held
  <base>:w  zset   rolling periods only: "<id>|<nanos>" scored by the call's start (ms)
Per rate limit and subject, two keys:
  <base>:z  zset   "<admission>|<tokens>" scored by the call's time (ms)
  <base>:t  string the tokens of the entries in <base>:z
Money is integer nano-dollars. Lua numbers are doubles, exact to 2**53; amounts
the caller sends are passed on to Redis as the integer strings they came as, and
sums are written back with %.0f.

Every `redis.call` inside a script costs a few microseconds of Redis' single
thread, and admission runs two scripts per call, so the scripts do only what the
decision needs. Housekeeping that cannot change a decision runs when it matters
or once in a while, when the caller says so (`refresh`, about once a second per
process and call scope): dropping the entries older than a minute from a rate
limit's window (the counts with them are upper bounds, so a call they would
refuse sweeps first and decides on exact counts), dropping the reservations of
crashed workers (likewise, before a quota refuses), and pushing expiry times
forward. A key a script creates gets its expiry at once, so none outlives its use.
"""

from __future__ import annotations

_COMMON = """
local function amount_of(member)
  return tonumber(string.match(member, '|(%-?%d+)$')) or 0
end
-- Drop a rate limit's entries older than `cutoff`, and their tokens.
local function sweep_window(z, t, cutoff)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do gone = gone + amount_of(m) end
    redis.call('DECRBY', t, string.format('%.0f', gone))
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
  end
end
-- Drop the reservations whose deadline has passed (their worker crashed); return
-- what the counter still holds in reservations.
local function sweep_reservations(c, wall)
  local fields = redis.call('HGETALL', c)
  local reserved, expired, dead = 0, 0, {}
  for k = 1, #fields, 2 do
    local name = fields[k]
    if string.sub(name, 1, 2) == 'r:' then
      local nanos, deadline = string.match(fields[k+1], '^(%d+)|(%d+)$')
      nanos = tonumber(nanos) or 0
      if tonumber(deadline or '0') <= wall then
        expired = expired + nanos
        table.insert(dead, name)
      end
    elseif name == 'reserved' then
      reserved = tonumber(fields[k+1])
    end
  end
  if #dead > 0 then
    redis.call('HDEL', c, unpack(dead))
    redis.call('HINCRBY', c, 'reserved', string.format('%.0f', -expired))
  end
  return reserved - expired
end
"""

# KEYS: 2 per quota (c, w), then 2 per rate limit (z, t).
# ARGV: logical now ms, admission id, wall-clock ms, cost nanos, tokens, refresh 0/1,
#       reservation lifetime ms, n quotas, n limits, then 3 per quota (amount or -1
#       if it does not block, window ms or 0 for a calendar period, expiry: a calendar
#       period's end + 2 days in s, or a rolling period's days + 2 in s), then 2 per
#       limit (requests per minute or -1, tokens per minute or -1). The first six
#       change per call; the caller encodes the rest once per call scope.
# Returns {0} admitted, {1, quota index, oldest rolling entry ms} over a quota,
#         {2, limit index, retry after ms} over a rate limit, {3, missing quota indexes...}.
ADMIT = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local wall = tonumber(ARGV[3])
local cost = ARGV[4]
local costn = tonumber(cost)
local tokens = ARGV[5]
local tokensn = tonumber(tokens)
local refresh = ARGV[6] == '1'
local lifetime = tonumber(ARGV[7])
local nq = tonumber(ARGV[8])
local nl = tonumber(ARGV[9])
local qa = 10
local la = qa + 3 * nq
local wall_s = math.floor(wall / 1000)

local counters, missing = {}, nil
for i = 1, nq do
  local v = redis.call('HMGET', KEYS[2*i-1], 'init', 'spent', 'reserved')
  if not v[1] then
    missing = missing or {3}
    table.insert(missing, i)
  else
    counters[i] = {tonumber(v[2] or '0'), tonumber(v[3] or '0')}
  end
end
if missing then return missing end

local cutoff = now - 60000
for j = 1, nl do
  local z, t = KEYS[2*nq + 2*j - 1], KEYS[2*nq + 2*j]
  local rpm, tpm = tonumber(ARGV[la + 2*(j-1)]), tonumber(ARGV[la + 2*(j-1) + 1])
  local swept = refresh
  if swept then sweep_window(z, t, cutoff) end
  local count, total = 0, 0
  if rpm >= 0 then count = redis.call('ZCARD', z) end
  if tpm >= 0 then total = tonumber(redis.call('GET', t) or '0') end
  if not swept and ((rpm >= 0 and count + 1 > rpm) or (tpm >= 0 and total + tokensn > tpm)) then
    sweep_window(z, t, cutoff)
    if rpm >= 0 then count = redis.call('ZCARD', z) end
    if tpm >= 0 then total = tonumber(redis.call('GET', t) or '0') end
  end
  if rpm >= 0 and count + 1 > rpm then
    local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    local retry = 60000
    if #first > 0 then retry = tonumber(first[2]) + 60000 - now end
    return {2, j, retry}
  end
  if tpm >= 0 and total + tokensn > tpm then
    local retry = 60000
    if tokensn <= tpm then
      local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local freed = 0
      for k = 1, #entries, 2 do
        freed = freed + amount_of(entries[k])
        if total - freed + tokensn <= tpm then
          retry = tonumber(entries[k+1]) + 60000 - now
          break
        end
      end
    end
    return {2, j, retry}
  end
end

for i = 1, nq do
  local c, w = KEYS[2*i-1], KEYS[2*i]
  local base = qa + 3*(i-1)
  local amount, window = tonumber(ARGV[base]), tonumber(ARGV[base+1])
  local spent, reserved = counters[i][1], counters[i][2]
  if window > 0 then
    local old = redis.call('ZRANGEBYSCORE', w, '-inf', now - window)
    if #old > 0 then
      local gone = 0
      for _, m in ipairs(old) do gone = gone + amount_of(m) end
      redis.call('HINCRBY', c, 'spent', string.format('%.0f', -gone))
      redis.call('ZREMRANGEBYSCORE', w, '-inf', now - window)
      spent = spent - gone
    end
  end
  if refresh then reserved = sweep_reservations(c, wall) end
  if amount >= 0 and costn > 0 and spent + reserved + costn > amount then
    if not refresh then reserved = sweep_reservations(c, wall) end
    if spent + reserved + costn > amount then
      local oldest = 0
      if window > 0 then
        local first = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
        if #first > 0 then oldest = tonumber(first[2]) end
      end
      return {1, i, oldest}
    end
  end
end

local held = cost .. '|' .. string.format('%.0f', wall + lifetime)
for i = 1, nq do
  local c, w = KEYS[2*i-1], KEYS[2*i]
  if costn > 0 then
    redis.call('HSET', c, 'r:' .. id, held)
    redis.call('HINCRBY', c, 'reserved', cost)
  end
  if refresh then
    local base = qa + 3*(i-1)
    local expire = tonumber(ARGV[base+2])
    if tonumber(ARGV[base+1]) > 0 then expire = wall_s + expire
    else expire = math.max(expire, wall_s + 172800) end
    redis.call('EXPIREAT', c, expire)
    redis.call('EXPIREAT', w, expire)
  end
end
local member = id .. '|' .. tokens
for j = 1, nl do
  local z, t = KEYS[2*nq + 2*j - 1], KEYS[2*nq + 2*j]
  redis.call('ZADD', z, now, member)
  if redis.call('INCRBY', t, tokens) == tokensn or refresh then
    redis.call('PEXPIRE', z, 120000)
    redis.call('PEXPIRE', t, 120000)
  end
end
return {0}
"""
)

# KEYS as for ADMIT. ARGV: call start ms (the admission's logical now), admission id,
# wall-clock s, reserved nanos, actual nanos, reserved tokens, actual tokens, n quotas,
# n limits, then 1 per quota (a rolling period's days + 2 in s, 0 for a calendar one).
# A counter that is not built (Redis was flushed since admission) is left alone: its
# rebuild from the audit trail will count this call. Returns each quota's spend after
# settling (-1 if unbuilt or if the call cost nothing).
SETTLE = """
local now = ARGV[1]
local id = ARGV[2]
local wall_s = tonumber(ARGV[3])
local reserved, actual = ARGV[4], ARGV[5]
local actualn = tonumber(actual)
local reserved_tokens, actual_tokens = ARGV[6], ARGV[7]
local nq = tonumber(ARGV[8])
local nl = tonumber(ARGV[9])
local result = {}
for i = 1, nq do
  local c, w = KEYS[2*i-1], KEYS[2*i]
  local built = redis.call('HDEL', c, 'r:' .. id) == 1
  if built then
    redis.call('HINCRBY', c, 'reserved', '-' .. reserved)
  else
    built = redis.call('HEXISTS', c, 'init') == 1
  end
  result[i] = -1
  if built and actualn > 0 then
    result[i] = redis.call('HINCRBY', c, 'spent', actual)
    local rolling = tonumber(ARGV[9 + i])
    if rolling > 0 then
      redis.call('ZADD', w, now, id .. '|' .. actual)
      redis.call('EXPIREAT', w, wall_s + rolling)
    end
  end
end
if reserved_tokens ~= actual_tokens then
  local old_member, new_member = id .. '|' .. reserved_tokens, id .. '|' .. actual_tokens
  local change = string.format('%.0f', tonumber(actual_tokens) - tonumber(reserved_tokens))
  for j = 1, nl do
    local z, t = KEYS[2*nq + 2*j - 1], KEYS[2*nq + 2*j]
    -- Added before the old entry goes, so the set never empties (and loses its expiry).
    redis.call('ZADD', z, now, new_member)
    if redis.call('ZREM', z, old_member) == 1 then
      redis.call('INCRBY', t, change)
    else
      redis.call('ZREM', z, new_member)  -- the entry had left the window already
    end
  end
end
return result
"""

# Build one counter from the audit trail, once: HSETNX on `init` is the guard, so
# of several workers rebuilding the same counter at once only the first writes.
# KEYS: c, w. ARGV: spent nanos, expire-at s, then (score ms, member) pairs for a
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
