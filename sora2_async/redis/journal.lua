-- sora2-async: one batch's journal in Redis, and its follower leases. One call, one change.
--
-- An entry is the JSON row of sora2_async/_journal_codec.py (numbers as strings, so that no
-- float is rounded here) plus its "seq" (the order it was first recorded in) and
-- "created_at". A SUBMITTED entry is in `submitted`; the process that follows it holds its
-- lease: `owners` names the owner, `leases` holds the expiry, on the server's clock.
--
-- KEYS (one hash tag, so that a cluster keeps them in one slot):
--   1 entries    HASH  key -> row (JSON)
--   2 seq        STRING the last seq given out
--   3 submitted  ZSET  key -> seq, for the entries in state "submitted"
--   4 leases     ZSET  key -> expiry (seconds)
--   5 owners     HASH  key -> owner id
--   6 tasks      HASH  task id -> key
-- ARGV: 1 op, 2 owner, 3 now ('' = the server's TIME), 4 follower ttl, 5.. op args
--
-- ops:
--   write key row mode   the row replaces the entry; a null task_id keeps the old one;
--                        mode "lease": a submitted entry's lease goes to owner;
--                        mode "status": the entry must exist ('missing' otherwise) and
--                        keeps its request. An ended entry (completed, failed) has no
--                        lease; an intent or a refusal keeps its submitter's (see reserve).
--   claim key            1 when owner holds the lease now (it was free, lapsed or its own)
--   reserve key          the submitter's lease, on an entry not yet submitted: 1 when owner
--                        holds it now, 0 when another owner's is live, 2 when the entry is
--                        submitted or ended (look it up). One generate per request across
--                        every process: whoever holds it sends; the others wait.
--   release key          owner's lease on key is dropped
--   adopt limit          claims up to limit ('' = all) submitted entries without a live
--                        lease, oldest first: {held elsewhere, row, row, ...}

local op, owner = ARGV[1], ARGV[2]
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local ttl = tonumber(ARGV[4])
local K_ENTRIES, K_SEQ, K_SUBMITTED = KEYS[1], KEYS[2], KEYS[3]
local K_LEASES, K_OWNERS, K_TASKS = KEYS[4], KEYS[5], KEYS[6]

local function take(key)
  redis.call('ZADD', K_LEASES, now + ttl, key)
  redis.call('HSET', K_OWNERS, key, owner)
end

local function drop(key)
  redis.call('ZREM', K_LEASES, key)
  redis.call('HDEL', K_OWNERS, key)
end

-- The owner of key's live lease, or nil when it has none or it lapsed.
local function live_owner(key)
  local expiry = redis.call('ZSCORE', K_LEASES, key)
  if not expiry or tonumber(expiry) <= now then
    return nil
  end
  return redis.call('HGET', K_OWNERS, key) or nil
end

if op == 'write' then
  local key, mode = ARGV[5], ARGV[7]
  local row = cjson.decode(ARGV[6])
  local old_text = redis.call('HGET', K_ENTRIES, key)
  local old = old_text and cjson.decode(old_text)
  if mode == 'status' then
    if not old then
      return 'missing'
    end
    row.request = old.request
  end
  if old then
    row.seq, row.created_at = old.seq, old.created_at
    if row.task_id == cjson.null then
      row.task_id = old.task_id
    end
  else
    row.seq = tostring(redis.call('INCR', K_SEQ))
    row.created_at = row.updated_at
  end
  row.key = key
  redis.call('HSET', K_ENTRIES, key, cjson.encode(row))
  if row.task_id ~= cjson.null then
    redis.call('HSET', K_TASKS, row.task_id, key)
  end
  if row.state == 'submitted' then
    redis.call('ZADD', K_SUBMITTED, tonumber(row.seq), key)
    if mode == 'lease' then
      take(key)
    end
  else
    redis.call('ZREM', K_SUBMITTED, key)
    -- A 429 between two attempts records a refusal, then the next attempt's intent: the
    -- submitter keeps its lease meanwhile, so that nobody else sends the same request.
    if row.state ~= 'intent' and row.state ~= 'rejected' then
      drop(key)
    end
  end
  return 'ok'
end

if op == 'reserve' then
  local key = ARGV[5]
  local text = redis.call('HGET', K_ENTRIES, key)
  if text then
    local state = cjson.decode(text).state
    if state ~= 'intent' and state ~= 'rejected' then
      return 2
    end
  end
  local holder = live_owner(key)
  if holder and holder ~= owner then
    return 0
  end
  take(key)
  return 1
end

if op == 'claim' then
  local key = ARGV[5]
  if not redis.call('ZSCORE', K_SUBMITTED, key) then
    return 0
  end
  local holder = live_owner(key)
  if holder and holder ~= owner then
    return 0
  end
  take(key)
  return 1
end

if op == 'release' then
  local key = ARGV[5]
  if redis.call('HGET', K_OWNERS, key) == owner then
    drop(key)
  end
  return 'ok'
end

if op == 'adopt' then
  local limit = tonumber(ARGV[5])
  local out = {0}
  local claimed = 0
  for _, key in ipairs(redis.call('ZRANGE', K_SUBMITTED, 0, -1)) do
    local holder = live_owner(key)
    if holder then
      if holder ~= owner then
        out[1] = out[1] + 1
      end
    elseif not limit or claimed < limit then
      take(key)
      claimed = claimed + 1
      out[#out + 1] = redis.call('HGET', K_ENTRIES, key)
    end
  end
  return out
end

return redis.error_reply('unknown journal op ' .. tostring(op))
