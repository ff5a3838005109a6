-- sora2-async: a service's videos in Redis, and their leases. One call, one atomic change.
--
-- The rule is sora2_async/_video_rules.py's (the stores' contract suite runs on both): a
-- record is changed by the owner of its lease; a task id is written by anyone while the
-- record has none (the writer takes the lease), even over an uncertain end; a terminal
-- state ends the lease; a record whose lease lapsed is claimed by whoever asks. Leases run
-- on the server's clock (TIME).
--
-- A record is the JSON of sora2_async/_video_records.py's fields, every value a string
-- (so that no number is rounded here) or absent (None).
--
-- KEYS (one hash tag, so that a cluster keeps them in one slot):
--   1 videos   HASH  id -> record (JSON)
--   2 live     ZSET  id -> lease expiry, for the unfinished records
--   3 ended    ZSET  id -> when it ended (for retention)
--   4 idem     HASH  idempotency key -> {target, digest} (JSON)
--   5 idemat   ZSET  idempotency key -> when it was first seen
--   6 batches  HASH  batch id -> {video_ids, created_at} (JSON)
--   7 batchat  ZSET  batch id -> when it was made
-- ARGV: 1 op, 2 owner, 3 now ('' = the server's TIME), 4 lease ttl, 5 wall time, 6.. op args
--
-- ops:
--   create key digest target retention batch record...  {'created'|'exists'|'conflict', id}
--   update id changes uncertain                         the new record, or false
--   claim limit retention                               the claimed records
--   renew id...                                         the ids still held (renewed)
--   release id...                                       nothing
--
-- Every change a reader can see (an update) is published on the channel '<videos key>:changes'
-- with the record's id, so that event streams on any host wake at once.

local op, owner = ARGV[1], ARGV[2]
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local ttl, wall = tonumber(ARGV[4]), ARGV[5]
local K_VIDEOS, K_LIVE, K_ENDED = KEYS[1], KEYS[2], KEYS[3]
local K_IDEM, K_IDEMAT, K_BATCHES, K_BATCHAT = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local TERMINAL = {completed = true, failed = true, error = true}

local function num(x)
  return string.format('%.17g', x)
end

-- JSON null decodes to cjson.null, which Lua takes for true: a record keeps no nulls.
local function decode(text)
  local rec = cjson.decode(text)
  for name, value in pairs(rec) do
    if value == cjson.null then
      rec[name] = nil
    end
  end
  return rec
end

local function load(id)
  local text = redis.call('HGET', K_VIDEOS, id)
  if not text then
    return nil
  end
  return decode(text)
end

local function save(rec)
  redis.call('HSET', K_VIDEOS, rec.id, cjson.encode(rec))
  if TERMINAL[rec.state] then
    redis.call('ZREM', K_LIVE, rec.id)
    redis.call('ZADD', K_ENDED, now, rec.id)
  else
    redis.call('ZREM', K_ENDED, rec.id)  -- an uncertain end revived by its task id
    redis.call('ZADD', K_LIVE, tonumber(rec.lease_until), rec.id)
  end
end

local function hold(rec)
  rec.owner = owner
  rec.lease_until = num(now + ttl)
end

local function held(rec)
  return rec and not TERMINAL[rec.state] and rec.owner == owner
end

local function prune(retention)
  local cutoff = now - retention
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ENDED, '-inf', cutoff)) do
    redis.call('HDEL', K_VIDEOS, id)
  end
  redis.call('ZREMRANGEBYSCORE', K_ENDED, '-inf', cutoff)
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', K_IDEMAT, '-inf', cutoff)) do
    redis.call('HDEL', K_IDEM, key)
  end
  redis.call('ZREMRANGEBYSCORE', K_IDEMAT, '-inf', cutoff)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_BATCHAT, '-inf', cutoff)) do
    redis.call('HDEL', K_BATCHES, id)
  end
  redis.call('ZREMRANGEBYSCORE', K_BATCHAT, '-inf', cutoff)
end

if op == 'create' then
  local key, digest, target, batch = ARGV[6], ARGV[7], ARGV[8], ARGV[10]
  if key ~= '' then
    local seen = redis.call('HGET', K_IDEM, key)
    if seen then
      seen = cjson.decode(seen)
      if seen.digest ~= digest then
        return {'conflict', seen.target}
      end
      return {'exists', seen.target}
    end
    redis.call('HSET', K_IDEM, key, cjson.encode({target = target, digest = digest}))
    redis.call('ZADD', K_IDEMAT, now, key)
  end
  for i = 11, #ARGV do
    local rec = decode(ARGV[i])
    if rec.owner then
      rec.lease_until = num(now + ttl)
    else
      rec.lease_until = '0'
    end
    rec.created_at, rec.updated_at = wall, wall
    save(rec)
  end
  if batch ~= '' then
    redis.call('HSET', K_BATCHES, target, batch)
    redis.call('ZADD', K_BATCHAT, now, target)
  end
  return {'created', target}
elseif op == 'update' then
  local rec = load(ARGV[6])
  if not rec then
    return false
  end
  local changes = cjson.decode(ARGV[7])
  local takes_task = changes.task_id ~= nil and changes.task_id ~= cjson.null and not rec.task_id
  local revives = takes_task and rec.state == 'error' and rec.error_code == ARGV[8]
  if (TERMINAL[rec.state] and not revives) or (rec.owner ~= owner and not takes_task) then
    return false
  end
  if revives then
    rec.error, rec.error_code = nil, nil
  end
  for name, value in pairs(changes) do
    if value == cjson.null then
      rec[name] = nil
    else
      rec[name] = value
    end
  end
  rec.version = tostring(tonumber(rec.version or '0') + 1)
  rec.updated_at = wall
  if TERMINAL[rec.state] then
    rec.owner, rec.lease_until = nil, '0'
  else
    hold(rec)
  end
  save(rec)
  redis.call('PUBLISH', K_VIDEOS .. ':changes', rec.id)
  return cjson.encode(rec)
elseif op == 'claim' then
  local out = {}
  local ids = redis.call('ZRANGEBYSCORE', K_LIVE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
  for _, id in ipairs(ids) do
    local rec = load(id)
    if rec and not TERMINAL[rec.state] then
      hold(rec)
      save(rec)
      out[#out + 1] = cjson.encode(rec)
    else
      redis.call('ZREM', K_LIVE, id)
    end
  end
  prune(tonumber(ARGV[7]))
  return out
elseif op == 'renew' or op == 'release' then
  local out = {}
  for i = 6, #ARGV do
    local rec = load(ARGV[i])
    if held(rec) then
      if op == 'renew' then
        rec.lease_until = num(now + ttl)
      else
        rec.lease_until = '0'
      end
      save(rec)
      out[#out + 1] = rec.id
    end
  end
  return out
end
return redis.error_reply('unknown op ' .. tostring(op))
