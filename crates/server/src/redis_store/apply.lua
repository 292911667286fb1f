-- Applies one update to one state, atomically: the incarnation check, the exactly-once
-- check, the optional expected-version check, the size limit, the fields, the version,
-- the stream entry and the publish.
--
-- Values travel as opaque text: this script never parses or builds JSON (Redis's
-- cjson turns [] into {}, rounds big integers and reorders keys). A field's stored
-- text is "<slot> <json>": the slot keeps the order keys were first written in. The
-- state's size as JSON text is kept in meta's "bytes" from the lengths of the texts.
--
-- KEYS: 1 meta (hash: version, epoch, next_slot, bytes, ...), 2 fields (hash: key ->
--       "slot json"), 3 log (stream of applied updates), 4 outcomes (hash of one
--       session: request id -> outcome, and "max" -> the highest request id seen),
--       5 channel, 6 the session's remembered request ids, oldest first (a list),
--       7 the client's sessions by last activity (see session.lua)
-- ARGV: 1 epoch (the incarnation the sender's copy is of), 2 request id ("" when
--       untracked), 3 floor (the highest request id the session sent before it
--       attached, "" when unknown), 4 expected version ("" when unconditional),
--       5 "1" when a conflict is the sender's answer (remembered for its retries),
--       "0" when the server only guards its own reading of the state (it retries),
--       6 after: a request id of the same session that must have been answered
--       before this one is applied ("" for none: updates sent without waiting keep
--       their order, even when an earlier one never reached Redis),
--       7 the state's size limit in bytes ("" for none),
--       8 number of set fields N, then N triples key, json, length of the key as JSON;
--       then the number of removed keys R and R pairs key, length of the key as JSON;
--       then the published payload (text after the version), what the stream keeps
--       of it ("~" for a payload too large to keep: a server that needs it loads the
--       whole state), the stream's length cap, the session id, the outcomes' time to
--       live in seconds, and the outcome window (how many request ids a session
--       remembers).
-- Returns: {"applied", version} | {"repeat", outcome} | {"unknown"} |
--          {"conflict", version} | {"gone"} | {"epoch", epoch} | {"gap"} |
--          {"too_large", bytes}

local meta, fields, log, outcomes, channel, ids, sessions =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local epoch, request_id, floor, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = tonumber(ARGV[#ARGV - 1])
local window = tonumber(ARGV[#ARGV])

-- Request ids are decimal u64 text: compare them as numbers without losing digits.
local function less_or_equal(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

-- Remembers the outcome of a new request id (ids only grow): the last `window` stay.
local function remember(outcome)
  if request_id == '' then return end
  redis.call('HSET', outcomes, request_id, outcome, 'max', request_id)
  redis.call('RPUSH', ids, request_id)
  while redis.call('LLEN', ids) > window do
    redis.call('HDEL', outcomes, redis.call('LPOP', ids))
  end
  redis.call('EXPIRE', outcomes, ttl)
  redis.call('EXPIRE', ids, ttl)
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
    redis.call('EXPIRE', outcomes, ttl)
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

-- The size the state's JSON text will have: each entry is `"key":value,`.
local function value_length(stored)
  return #stored - string.find(stored, ' ', 1, true)
end
local n = tonumber(ARGV[8])
local removed_at = 9 + 3 * n
local removed = tonumber(ARGV[removed_at])
local bytes = redis.call('HGET', meta, 'bytes')
local new_bytes
if bytes then
  local count = redis.call('HLEN', fields)
  local entries = tonumber(bytes) - 2 + (count > 0 and 1 or 0)
  local at = 9
  for _ = 1, n do
    local key, json, key_length = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
    local stored = redis.call('HGET', fields, key)
    if stored then
      entries = entries - (key_length + 2 + value_length(stored))
    else
      count = count + 1
    end
    entries = entries + key_length + 2 + #json
    at = at + 3
  end
  at = removed_at + 1
  for _ = 1, removed do
    local stored = redis.call('HGET', fields, ARGV[at])
    if stored then
      entries = entries - (tonumber(ARGV[at + 1]) + 2 + value_length(stored))
      count = count - 1
    end
    at = at + 2
  end
  new_bytes = 2 + entries - (count > 0 and 1 or 0)
  if ARGV[7] ~= '' and new_bytes > tonumber(ARGV[7]) then
    remember('toolarge ' .. string.format('%d', new_bytes))
    return {'too_large', string.format('%d', new_bytes)}
  end
end

local at = 9
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
  at = at + 3
end
at = removed_at + 1
for _ = 1, removed do
  redis.call('HDEL', fields, ARGV[at])
  at = at + 2
end
local payload, kept, cap = ARGV[at], ARGV[at + 1], ARGV[at + 2]

if new_bytes then redis.call('HSET', meta, 'bytes', string.format('%d', new_bytes)) end
local next_version = string.format('%d', redis.call('HINCRBY', meta, 'version', 1))
redis.call('XADD', log, 'MAXLEN', '~', cap, next_version .. '-1', 'u', kept)
remember('applied ' .. next_version)
if request_id ~= '' then
  -- An active session is the last one its client's cap would forget.
  redis.call('ZADD', sessions, 'XX', redis.call('TIME')[1], ARGV[#ARGV - 2])
end
redis.call('PUBLISH', channel, next_version .. ' ' .. payload)
return {'applied', next_version}
