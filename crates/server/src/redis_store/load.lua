-- Reads a state at one version: its meta and its fields, in one atomic step.
-- KEYS: 1 meta, 2 fields. Returns {} when the state does not exist, else
-- {version, epoch, created, expires ("" for never), key1, "slot json", key2, ...}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local meta = redis.call('HMGET', KEYS[1], 'version', 'epoch', 'created', 'expires')
local reply = {meta[1], meta[2], meta[3] or '0', meta[4] or ''}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
