-- A session attached to a state: its outcomes exist from now on, starting after the
-- request ids it says it sent before (so that a later absence means they expired,
-- and only then are its retries answered "unknown").
-- KEYS: 1 outcomes (see apply.lua).
-- ARGV: 1 the highest request id the session sent before ("0" when none), 2 the
--       outcomes' time to live in seconds.
redis.call('HSETNX', KEYS[1], 'max', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
