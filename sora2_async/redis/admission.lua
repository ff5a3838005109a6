-- sora2-async: the budget of one API key in Redis. One script, one rule, the server's clock.
--
-- The same rule as sora2_async/_admission.py (and the same limit-after-429 arithmetic as
-- sora2_async/_ceiling.py); tests/test_redis_script.py compares the two on generated
-- sequences. Every call prunes what has left the window, says that its owner lives, does
-- one operation, and returns the store's state.
--
-- KEYS (one hash tag, so that a cluster keeps them in one slot):
--   1 entries   ZSET  permit id -> until (a request counts until then)
--   2 inflight  SET   permit ids not answered yet
--   3 owners    HASH  owner -> alive until
--   4 counts    HASH  owner -> live leases
--   5 leases    HASH  lease id -> owner
--   6 fronts    HASH  owner|kind -> since|promise|alive until (waiting queue fronts)
--   7 ceiling   HASH  lowered_to, lowered_at, failed, repeats, learnt_at, blocked_until,
--                     rate_limited (learnt_at: the lowered_at that failed and repeats go with)
--   8 epoch     STRING the store's identity: gone after a restart that lost the data
--   9 dues      ZSET  lease id -> when its poll falls due (the same leases as 5, by due, so
--                     that a submission reads only the ones due before its own)
--  10 refused   ZSET  permit id -> until, for the entries of 1 that met a 429
-- ARGV: 1 op, 2 owner, 3 now ('' = the server's TIME), 4 configured limit, 5 window,
--       6 flight ttl, 7 lease ttl, 8 starve after, 9 front ttl, 10 known epoch,
--       11 promise slip (_admission.PROMISE_SLIP), 12.. op args

local EPS = 1e-6
local INF = math.huge
local POLL, GENERATE, EXTRA = 0, 1, 2

local op, owner = ARGV[1], ARGV[2]
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local configured = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local flight_ttl = tonumber(ARGV[6])
local lease_ttl = tonumber(ARGV[7])
local starve_after = tonumber(ARGV[8])
local front_ttl = tonumber(ARGV[9])
local known_epoch = ARGV[10]
local promise_slip = tonumber(ARGV[11])
local K_ENTRIES, K_INFLIGHT, K_OWNERS, K_COUNTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_LEASES, K_FRONTS, K_CEILING, K_EPOCH = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_DUES, K_REFUSED = KEYS[9], KEYS[10]

local function fmt(x)
  if x == INF then return '+inf' end
  if x == -INF then return '-inf' end
  return string.format('%.17g', x)
end

local function num(x, default)
  if x == false or x == nil or x == '' then return default end
  if x == 'inf' or x == '+inf' then return INF end
  if x == '-inf' then return -INF end
  return tonumber(x)
end

-- The limit after 429s ----------------------------------------------------------------------

local c = redis.call('HMGET', K_CEILING, 'lowered_to', 'lowered_at', 'blocked_until',
                     'rate_limited', 'failed', 'repeats', 'learnt_at')
local lowered_to = num(c[1], configured)
local lowered_at = num(c[2], -INF)
local blocked_until = num(c[3], -INF)
local rate_limited = num(c[4], 0)
local failed = num(c[5], configured)  -- the limit in force when the last 429 came
local repeats = num(c[6], 0)  -- 429s in a row, none of our probes holding in between
-- lowered since by a version that keeps no learning: nothing learnt
if c[7] ~= c[2] then failed, repeats = configured, 0 end
local PROBE_EVERY = {1, 8, 32}  -- as _ceiling._PROBE_EVERY
local FORGET_AFTER = 64  -- as _ceiling._FORGET_AFTER

local function windows_since(at)
  local k = math.floor((at - lowered_at) / window)
  if k < 0 then k = 0 end
  while lowered_at + (k + 1) * window <= at do k = k + 1 end
  while k > 0 and lowered_at + k * window > at do k = k - 1 end
  return k
end

-- Ceiling._replay: the limit at `at`, and whether the learning has ended by then
local function replay(at)
  local value = lowered_to
  if value >= configured then return configured, true end
  local cap = math.max(1, failed - 1)  -- the climb stops below where the last 429 came
  local every = PROBE_EVERY[math.min(math.max(1, repeats), #PROBE_EVERY)]
  local held, waited = false, 0
  for _ = 1, windows_since(at) do
    if value >= failed then held, cap = true, configured end  -- a probe held a window
    if 2 * value <= configured and value < cap then
      value = math.min(cap, 2 * value)
    elseif value < cap then
      value = value + 1
    else
      waited = waited + 1
      if waited % every == 0 then value = math.min(configured, value + 1) end
    end
    if value == configured then return value, true end
  end
  return value, held
end

local function ceiling_at(at)
  return (replay(at))
end

local function next_rise(at)
  if ceiling_at(at) >= configured then return INF end
  return lowered_at + (windows_since(at) + 1) * window
end

-- Prepare: a restart that lost the data, what has left, a clock that stepped back, the owner ---

local epoch = redis.call('GET', K_EPOCH)
local reset = 0
if not epoch then
  epoch = owner .. '@' .. fmt(now)
  redis.call('SET', K_EPOCH, epoch)
end
if known_epoch ~= '' and known_epoch ~= epoch then reset = 1 end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ENTRIES, '-inf', fmt(now + EPS))) do
  redis.call('SREM', K_INFLIGHT, id)
end
redis.call('ZREMRANGEBYSCORE', K_ENTRIES, '-inf', fmt(now + EPS))
local cap = now + flight_ttl + window
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ENTRIES, '(' .. fmt(cap), '+inf')) do
  redis.call('ZADD', K_ENTRIES, fmt(cap), id)
end
if blocked_until > now + window then
  blocked_until = now + window
  redis.call('HSET', K_CEILING, 'blocked_until', fmt(blocked_until))
end

local fronts = {}  -- other owners' live fronts: {kind, since, promise}
local front_data = redis.call('HGETALL', K_FRONTS)
for i = 1, #front_data, 2 do
  local field, value = front_data[i], front_data[i + 1]
  local sep = string.find(field, '|', 1, true)
  local who, kind = string.sub(field, 1, sep - 1), tonumber(string.sub(field, sep + 1))
  local a = string.find(value, '|', 1, true)
  local b = string.find(value, '|', a + 1, true)
  local since = tonumber(string.sub(value, 1, a - 1))
  local promise = num(string.sub(value, a + 1, b - 1), nil)
  local alive = tonumber(string.sub(value, b + 1))
  if alive <= now then
    redis.call('HDEL', K_FRONTS, field)
  elseif who ~= owner then
    table.insert(fronts, {kind, since, promise})
  end
end

-- a lease is in both K_LEASES and K_DUES; every place that ends one ends it in both
local function forget_lease(id)
  redis.call('HDEL', K_LEASES, id)
  redis.call('ZREM', K_DUES, id)
end

local gone = now - window - lease_ttl  -- long dead: their leases are no more
local dead, living = {}, {[owner] = true}  -- living: the owners whose leases count now
local owner_data = redis.call('HGETALL', K_OWNERS)
for i = 1, #owner_data, 2 do
  local who, alive = owner_data[i], tonumber(owner_data[i + 1])
  if alive < gone then
    dead[who] = true
    redis.call('HDEL', K_OWNERS, who)
    redis.call('HDEL', K_COUNTS, who)
  elseif alive > now then
    living[who] = true
  end
end
if next(dead) ~= nil then
  local lease_data = redis.call('HGETALL', K_LEASES)
  for i = 1, #lease_data, 2 do
    if dead[lease_data[i + 1]] then forget_lease(lease_data[i]) end
  end
end
redis.call('HSET', K_OWNERS, owner, fmt(now + lease_ttl))  -- this owner lives

-- live leases of every owner that lives
local function count_reserved()
  local total = 0
  local data = redis.call('HGETALL', K_OWNERS)
  for i = 1, #data, 2 do
    if tonumber(data[i + 1]) > now then
      total = total + num(redis.call('HGET', K_COUNTS, data[i]), 0)
    end
  end
  return total
end
local reserved = count_reserved()

-- The window (as _admission.Window) -----------------------------------------------------------

local function later(at)
  return redis.call('ZCOUNT', K_ENTRIES, '(' .. fmt(at + EPS), '+inf')
end

local function expiry(k)
  local r = redis.call('ZRANGEBYSCORE', K_ENTRIES, '(' .. fmt(now + EPS), '+inf',
                       'WITHSCORES', 'LIMIT', k - 1, 1)
  if #r == 0 then return nil end
  return tonumber(r[2])
end

local function first_expiry_after(at)
  local r = redis.call('ZRANGEBYSCORE', K_ENTRIES, '(' .. fmt(at + EPS), '+inf',
                       'WITHSCORES', 'LIMIT', 0, 1)
  if #r == 0 then return nil end
  return tonumber(r[2])
end

local limit = ceiling_at(now)
local rises_at = next_rise(now)
local used = later(now)

-- The rule (as _admission) ------------------------------------------------------------------

local function fits(kind, promise)
  if now < blocked_until or used + 1 > limit then return false end
  if kind == POLL then return true end
  local own = 0
  if promise ~= nil then own = 1 end
  local horizon = now + (promise or 0)
  if later(horizon) + reserved + 1 + own > limit then return false end
  -- A promised poll due before the horizon meets a fuller window: each is checked at its own
  -- due time (it may wait promise_slip for its slot), with this request and the polls due by
  -- then (the loop over lease_dues in _admission.fits). A lease without a due (the previous
  -- version of this script kept none) counts as due at the horizon or later, as it did then.
  local due_by = 0
  local dues = redis.call('ZRANGEBYSCORE', K_DUES, '-inf', '(' .. fmt(horizon), 'WITHSCORES')
  for i = 1, #dues, 2 do
    local who = redis.call('HGET', K_LEASES, dues[i])
    if not who then  -- ended by the previous version of this script (it left the due)
      redis.call('ZREM', K_DUES, dues[i])
    elseif living[who] then
      due_by = due_by + 1
      if later(math.max(now, num(dues[i + 1])) + promise_slip) + due_by + 1 > limit then
        return false
      end
    end
  end
  return true
end

-- contenders: {kind, since, promise}; the first is "me"
local function serves_next(contenders)
  local poll, submission = nil, nil
  for _, cand in ipairs(contenders) do
    if cand[1] == POLL then
      if poll == nil or cand[2] < poll[2] then poll = cand end
    elseif submission == nil or cand[2] < submission[2] then
      submission = cand
    end
  end
  if submission == nil then return poll end
  if poll == nil or (now - submission[2] >= starve_after and fits(submission[1], submission[3])) then
    return submission
  end
  return poll
end

local function next_change(me, starving_at)
  local best = INF
  local function consider(t) if t ~= nil and t > now and t < best then best = t end end
  consider(blocked_until)
  consider(rises_at)
  consider(starving_at)
  consider(expiry(1))
  if me[3] ~= nil and me[3] ~= 0 then
    local t = first_expiry_after(now + me[3])
    if t ~= nil then consider(t - me[3]) end
  end
  return best
end

-- nil when `me` may go now, else when to look again
local function decide(me, contenders)
  if serves_next(contenders) == me and fits(me[1], me[3]) then return nil end
  local starving_at = INF
  local any_poll, oldest = false, nil
  for _, cand in ipairs(contenders) do
    if cand[1] == POLL then any_poll = true
    elseif oldest == nil or cand[2] < oldest then oldest = cand[2] end
  end
  if any_poll and oldest ~= nil then starving_at = oldest + starve_after end
  return next_change(me, starving_at)
end

local function next_free_at()
  local excess = used + 1 - limit
  local free_at = now
  if excess > 0 then
    local e = expiry(excess)
    if e == nil then free_at = rises_at else free_at = math.min(e, rises_at) end
  end
  return math.max(blocked_until, free_at)
end

-- The operation ----------------------------------------------------------------------------

local function add_lease(id, due)
  redis.call('HSET', K_LEASES, id, owner)
  redis.call('ZADD', K_DUES, fmt(due), id)
  redis.call('HINCRBY', K_COUNTS, owner, 1)
end

local function admit(permit_id, promise, lease_id)
  redis.call('ZADD', K_ENTRIES, fmt(now + flight_ttl + window), permit_id)
  redis.call('SADD', K_INFLIGHT, permit_id)
  used = used + 1
  if promise ~= nil then add_lease(lease_id, now + promise) end
end

local function forget_front(kind, since)
  local field = owner .. '|' .. kind
  local value = redis.call('HGET', K_FRONTS, field)
  if value and tonumber(string.sub(value, 1, string.find(value, '|', 1, true) - 1)) == since then
    redis.call('HDEL', K_FRONTS, field)
  end
end

local result = {'', ''}
if reset == 1 and op ~= 'restore' and op ~= 'close' then
  result = {'reset', ''}  -- the owner writes back what it knows, then asks again
elseif op == 'attempt' then
  -- 12 kind, 13 since, 14 promise, 15 permit id, 16 lease id, 17 n rivals, then triples
  local me = {tonumber(ARGV[12]), tonumber(ARGV[13]), num(ARGV[14], nil)}
  local contenders = {me}
  local n = tonumber(ARGV[17])
  for i = 0, n - 1 do
    local base = 18 + 3 * i
    table.insert(contenders, {tonumber(ARGV[base]), tonumber(ARGV[base + 1]), num(ARGV[base + 2], nil)})
  end
  for _, f in ipairs(fronts) do table.insert(contenders, f) end
  local again = decide(me, contenders)
  if again == nil then
    forget_front(me[1], me[2])
    admit(ARGV[15], me[3], ARGV[16])
    result = {'admitted', ''}
  else
    local promise = ''
    if me[3] ~= nil then promise = fmt(me[3]) end
    redis.call('HSET', K_FRONTS, owner .. '|' .. me[1],
               fmt(me[2]) .. '|' .. promise .. '|' .. fmt(now + front_ttl))
    result = {'wait', fmt(again)}
  end
elseif op == 'extra' then
  -- 12 permit id
  if #fronts == 0 and fits(EXTRA, nil) then
    admit(ARGV[12], nil, '')
    result = {'admitted', ''}
  else
    result = {'refused', ''}
  end
elseif op == 'leave' then
  forget_front(tonumber(ARGV[12]), tonumber(ARGV[13]))
elseif op == 'stamp' then
  -- 12 permit id, 13 rate limited (0/1), 14 retry after ('' = none)
  local id = ARGV[12]
  if redis.call('SREM', K_INFLIGHT, id) == 1 then
    redis.call('ZADD', K_ENTRIES, 'XX', fmt(now + window), id)
    if ARGV[13] == '1' then
      -- the oldest answered entry: how long our log has been watching the key
      local oldest = nil
      local rank = 0
      while oldest == nil do
        local r = redis.call('ZRANGE', K_ENTRIES, rank, rank + 31, 'WITHSCORES')
        if #r == 0 then break end
        for i = 1, #r, 2 do
          if redis.call('SISMEMBER', K_INFLIGHT, r[i]) == 0 then oldest = tonumber(r[i + 1]); break end
        end
        rank = rank + 32
      end
      local seen_for = 0
      if oldest ~= nil then seen_for = now - (oldest - window) end
      -- what the server counts of ours: our earlier 429s out (see Ceiling.lower)
      redis.call('ZADD', K_REFUSED, fmt(now + window), id)
      redis.call('ZREMRANGEBYSCORE', K_REFUSED, '-inf', fmt(now + EPS))  -- as later() counts
      local ours = later(now) - redis.call('ZCARD', K_REFUSED) + 1
      local retry_after = num(ARGV[14], nil)
      local current, ended = replay(now)
      -- Ceiling.lower: learn afresh, count a repeat, or (a request sent before the limit
      -- came down) learn nothing
      local stale = now - lowered_at > FORGET_AFTER * window
      -- the others were on the key at the last 429, still being learnt: seen since then
      if repeats > 0 and not stale and not ended then
        seen_for = math.max(seen_for, now - lowered_at)
      end
      if repeats == 0 or stale or (ended and ours > failed) then
        failed, repeats = math.min(current, ours), 1
      elseif now - lowered_at > window / 120 and ours <= current then
        failed, repeats = math.min(current, ours), repeats + 1
      end
      local lowered
      if retry_after ~= nil then
        lowered = current - 1
      else
        local others = math.max(1, configured - (ours - 1))
        seen_for = math.min(window, math.max(window / 12, seen_for))
        local expected = others * window / seen_for
        local target = math.floor(configured - expected) - 1
        lowered = math.max(math.floor(ours / 2), math.min(current - 1, target))
      end
      lowered_to, lowered_at = math.max(1, lowered), now
      if retry_after ~= nil then blocked_until = math.max(blocked_until, now + retry_after) end
      rate_limited = rate_limited + 1
      redis.call('HSET', K_CEILING, 'lowered_to', lowered_to, 'lowered_at', fmt(lowered_at),
                 'failed', failed, 'repeats', repeats, 'learnt_at', fmt(lowered_at),
                 'blocked_until', fmt(blocked_until), 'rate_limited', rate_limited)
      limit, rises_at = ceiling_at(now), next_rise(now)
    end
  end
elseif op == 'promise' then
  -- 12 lease id, 13 due in (seconds from now, on this clock)
  add_lease(ARGV[12], now + num(ARGV[13]))
elseif op == 'release' then
  -- 12 lease id
  local who = redis.call('HGET', K_LEASES, ARGV[12])
  forget_lease(ARGV[12])
  if who then
    local left = redis.call('HINCRBY', K_COUNTS, who, -1)
    if left < 0 then redis.call('HSET', K_COUNTS, who, 0) end
  end
elseif op == 'restore' then
  -- after a restart that lost the data: 12 n entries, then (id, until, answered) triples,
  -- then n leases, then (id, due) pairs
  local n = tonumber(ARGV[12])
  for i = 0, n - 1 do
    local base = 13 + 3 * i
    local id, until_, answered = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2]
    if until_ > now then
      redis.call('ZADD', K_ENTRIES, fmt(math.min(until_, cap)), id)
      if answered == '0' then redis.call('SADD', K_INFLIGHT, id) end
    end
  end
  local m = 13 + 3 * n
  local leases_n = tonumber(ARGV[m])
  for i = 0, leases_n - 1 do
    local id = ARGV[m + 1 + 2 * i]
    if redis.call('HEXISTS', K_LEASES, id) == 0 then add_lease(id, num(ARGV[m + 2 + 2 * i])) end
  end
  used = later(now)
  reset = 0
elseif op == 'close' then
  local lease_data = redis.call('HGETALL', K_LEASES)
  for i = 1, #lease_data, 2 do
    if lease_data[i + 1] == owner then forget_lease(lease_data[i]) end
  end
  redis.call('HDEL', K_COUNTS, owner)
  redis.call('HDEL', K_OWNERS, owner)
  redis.call('HDEL', K_FRONTS, owner .. '|0', owner .. '|1')
end
reserved = count_reserved()

local polls_elsewhere, generates_elsewhere = 0, 0
for _, f in ipairs(fronts) do
  if f[1] == POLL then polls_elsewhere = polls_elsewhere + 1
  else generates_elsewhere = generates_elsewhere + 1 end
end

-- op result, op detail, now, epoch, reset, limit, used, reserved, blocked until,
-- next free at, rate limited, polls elsewhere, generates elsewhere
return {result[1], result[2], fmt(now), epoch, reset, limit, used, reserved,
        fmt(blocked_until), fmt(next_free_at()), rate_limited, polls_elsewhere,
        generates_elsewhere}
