-- Applies one update to one state, atomically: the incarnation check, the exactly-once
-- check, the optional expected-version check, the fields, the version, the stream
-- entry and the publish.
--
-- Values travel as opaque text: this script never parses or builds JSON (Redis's
-- cjson turns [] into {}, rounds big integers and reorders keys). A field's stored
-- text is "<slot> <json>": the slot keeps the order keys were first written in.
--
-- KEYS: 1 meta (hash: version, epoch, next_slot, ...), 2 fields (hash: key ->
--       "slot json"), 3 log (stream of applied updates), 4 outcomes (hash of one
--       session: request id -> outcome, and "max" -> the highest request id seen),
--       5 channel
-- ARGV: 1 epoch (the incarnation the sender's copy is of), 2 request id ("" when
--       untracked), 3 floor (the highest request id the session sent before it
--       attached, "" when unknown), 4 expected version ("" when unconditional),
--       5 "1" when a conflict is the sender's answer (remembered for its retries),
--       "0" when the server only guards its own reading of the state (it retries),
--       6 after: a request id of the same session that must have been answered
--       before this one is applied ("" for none: updates sent without waiting keep
--       their order, even when an earlier one never reached Redis),
--       7 number of set fields N, then N pairs key, json; then the number of removed
--       keys R and R keys; then the published payload (text after the version), the
--       stream's length cap, the outcomes' time to live in seconds, and the outcome
--       window (how many request ids a session remembers).
-- Returns: {"applied", version} | {"repeat", outcome} | {"unknown"} |
--          {"conflict", version} | {"gone"} | {"epoch", epoch} | {"gap"}

local meta, fields, log, outcomes, channel = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local epoch, request_id, floor, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

-- Request ids are decimal u64 text: compare them as numbers without losing digits.
local function less_or_equal(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

local function remember(outcome)
  if request_id == '' then return end
  redis.call('HSET', outcomes, request_id, outcome)
  local max = redis.call('HGET', outcomes, 'max')
  if not max or less_or_equal(max, request_id) then
    redis.call('HSET', outcomes, 'max', request_id)
  end
  -- Keep the window: drop the outcome that just fell out of it, if any.
  local window = tonumber(ARGV[#ARGV])
  local id = tonumber(request_id)
  if id and id > window and id < 2^53 then
    redis.call('HDEL', outcomes, string.format('%d', id - window))
  end
  redis.call('EXPIRE', outcomes, tonumber(ARGV[#ARGV - 1]))
end

if redis.call('EXISTS', meta) == 0 then return {'gone'} end
local current_epoch = redis.call('HGET', meta, 'epoch')
if current_epoch ~= epoch then return {'epoch', current_epoch} end

if request_id ~= '' then
  local previous = redis.call('HGET', outcomes, request_id)
  if previous then return {'repeat', previous} end
  local max = redis.call('HGET', outcomes, 'max')
  if not max and floor ~= '' then
    -- A session this incarnation does not know starts after what it sent before.
    max = floor
    redis.call('HSET', outcomes, 'max', floor)
    redis.call('EXPIRE', outcomes, tonumber(ARGV[#ARGV - 1]))
  end
  if max and less_or_equal(request_id, max) then return {'unknown'} end
  if ARGV[6] ~= '' and redis.call('HEXISTS', outcomes, ARGV[6]) == 0 then
    return {'gap'}
  end
end

local version = redis.call('HGET', meta, 'version')
if expected ~= '' and expected ~= version then
  if ARGV[5] == '1' then remember('conflict ' .. version) end
  return {'conflict', version}
end

local n = tonumber(ARGV[7])
local at = 8
for _ = 1, n do
  local key, json = ARGV[at], ARGV[at + 1]
  local stored = redis.call('HGET', fields, key)
  local slot
  if stored then
    slot = string.sub(stored, 1, string.find(stored, ' ', 1, true) - 1)
  else
    slot = string.format('%d', redis.call('HINCRBY', meta, 'next_slot', 1))
  end
  redis.call('HSET', fields, key, slot .. ' ' .. json)
  at = at + 2
end
local removed = tonumber(ARGV[at])
at = at + 1
for _ = 1, removed do
  redis.call('HDEL', fields, ARGV[at])
  at = at + 1
end
local payload = ARGV[at]
local cap = ARGV[at + 1]

local next_version = string.format('%d', redis.call('HINCRBY', meta, 'version', 1))
redis.call('XADD', log, 'MAXLEN', '~', cap, next_version .. '-1', 'u', payload)
remember('applied ' .. next_version)
redis.call('PUBLISH', channel, next_version .. ' ' .. payload)
return {'applied', next_version}
