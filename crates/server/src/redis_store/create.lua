-- Creates a state unless it exists (the first server wins; the others load it), or
-- replaces it (reset: a new incarnation, whose followers resync).
-- KEYS: 1 meta, 2 fields, 3 log, 4 channel, 5 tombstone (see remove.lua).
-- ARGV: 1 the epoch (a random id of this incarnation), 2 created (unix ms),
--       3 expires (unix ms, "" for never), 4 "1" to replace a state that exists,
--       5 the size of the value as JSON text, then pairs key, json of the initial
--       value, in order.
-- Returns 1 when created, 0 when it existed (and was kept).
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[4] ~= '1' then return 0 end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
redis.call('DEL', KEYS[5])
local slot = 0
for at = 6, #ARGV, 2 do
  slot = slot + 1
  redis.call('HSET', KEYS[2], ARGV[at], string.format('%d', slot) .. ' ' .. ARGV[at + 1])
end
redis.call('HSET', KEYS[1], 'version', '0', 'epoch', ARGV[1], 'next_slot',
  string.format('%d', slot), 'created', ARGV[2], 'bytes', ARGV[5])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'expires', ARGV[3]) end
if ARGV[4] == '1' then redis.call('PUBLISH', KEYS[4], 'r ' .. ARGV[1]) end
return 1
