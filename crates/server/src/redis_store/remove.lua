-- Removes a state everywhere: its keys go, and every server following it is told.
-- KEYS: 1 meta, 2 fields, 3 log, 4 clients, 5 channel, 6 tombstone (that the state
--       was removed, for an hour: a server that missed the publish tells a removed
--       state from one Redis lost), 7 presence, 8 presence expiries, 9 presence
--       writers.
-- ARGV: 1 the epoch to remove ("" for whichever incarnation exists), 2 why (for
--       people, sent to the clients).
-- Returns 1 when removed, 0 when there was no such state (or another incarnation).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[1] ~= '' and ARGV[1] ~= epoch then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7], KEYS[8], KEYS[9])
redis.call('SET', KEYS[6], epoch, 'EX', 3600)
redis.call('PUBLISH', KEYS[5], 'x ' .. epoch .. ' ' .. ARGV[2])
return 1
