-- Creates a state unless it exists (the first server wins; the others load it).
-- KEYS: 1 meta, 2 fields. ARGV: the epoch (a random id of this incarnation), then
-- pairs key, json of the initial value, in order.
-- Returns 1 when created, 0 when it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local slot = 0
for at = 2, #ARGV, 2 do
  slot = slot + 1
  redis.call('HSET', KEYS[2], ARGV[at], string.format('%d', slot) .. ' ' .. ARGV[at + 1])
end
redis.call('HSET', KEYS[1], 'version', '0', 'epoch', ARGV[1], 'next_slot', string.format('%d', slot))
return 1
