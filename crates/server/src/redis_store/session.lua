-- A session attached to a state: its outcomes exist from now on, starting after the
-- request ids it says it sent before (so that a later absence means they expired,
-- and only then are its retries answered "unknown"). A client keeps at most `cap`
-- sessions per incarnation of a state: the least recently attached one goes.
-- KEYS: 1 outcomes (see apply.lua; its remembered request ids are the key with
--       ":outids:" for ":out:"), 2 the client's sessions (a sorted set of their
--       outcomes' keys by last attach).
-- ARGV: 1 the highest request id the session sent before ("0" when none), 2 the
--       outcomes' time to live in seconds, 3 now (unix ms), 4 the cap.
redis.call('HSETNX', KEYS[1], 'max', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
-- Sessions whose outcomes expired are gone already: forget them first.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - 1000 * tonumber(ARGV[2]))
while redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[4]) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])[1]
  redis.call('DEL', oldest, (string.gsub(oldest, ':out:', ':outids:', 1)))
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
