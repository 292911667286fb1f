-- Remembers how a session's request ended when it was not applied (the interceptor
-- vetoed it, ...), so that its retry on any server gets the same answer; or reads
-- what is remembered of it.
-- KEYS: 1 meta, 2 outcomes, 3 the session's remembered request ids (see apply.lua).
-- ARGV: 1 epoch, 2 request id, 3 floor ("" when unknown), 4 the outcome to remember
--       ("" to only read), 5 the outcomes' time to live in seconds, 6 the window.
-- Returns: {"new"} (never seen: remembered when given) | {"repeat", outcome} |
--          {"unknown"} | {"gone"} | {"epoch", epoch}
local meta, outcomes, ids = KEYS[1], KEYS[2], KEYS[3]
local epoch, request_id, floor, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function less_or_equal(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

if redis.call('EXISTS', meta) == 0 then return {'gone'} end
local current_epoch = redis.call('HGET', meta, 'epoch')
if current_epoch ~= epoch then return {'epoch', current_epoch} end

local previous = redis.call('HGET', outcomes, request_id)
if previous then return {'repeat', previous} end
local max = redis.call('HGET', outcomes, 'max')
if not max and floor ~= '' then max = floor end
if max and less_or_equal(request_id, max) then return {'unknown'} end
if outcome == '' then return {'new'} end

redis.call('HSET', outcomes, request_id, outcome, 'max', request_id)
redis.call('RPUSH', ids, request_id)
while redis.call('LLEN', ids) > tonumber(ARGV[6]) do
  redis.call('HDEL', outcomes, redis.call('LPOP', ids))
end
redis.call('EXPIRE', outcomes, tonumber(ARGV[5]))
redis.call('EXPIRE', ids, tonumber(ARGV[5]))
return {'new'}
