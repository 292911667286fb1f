-- A session attached to a state: its outcomes exist from now on, starting after the
-- request ids it says it sent before (so that a later absence means they expired,
-- and only then are its retries answered "unknown"). A client keeps `cap` sessions
-- per incarnation of a state: past that, the one least recently active (attached, or
-- an update applied: see apply.lua) goes, with its outcomes, once it has been idle
-- for `grace` seconds (a tab still open keeps its outcomes); and whatever its age
-- past `hard_cap` sessions.
-- KEYS: 1 outcomes (see apply.lua), 2 the client's sessions (a sorted set of session
--       ids by last activity, unix seconds).
-- ARGV: 1 the highest request id the session sent before ("0" when none), 2 the
--       outcomes' time to live in seconds, 3 the cap, 4 the session id, 5 and 6 the
--       prefixes that make a session id of this client the key of its outcomes and
--       of its remembered request ids (same slot: they carry the state's hash tag),
--       7 the hard cap, 8 the grace in seconds.
local ttl = tonumber(ARGV[2])
local now = tonumber(redis.call('TIME')[1])
redis.call('HSETNX', KEYS[1], 'max', ARGV[1])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[4])
-- Sessions whose outcomes expired are gone already: forget them first.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - ttl))
while redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[3]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if redis.call('ZCARD', KEYS[2]) <= tonumber(ARGV[7])
    and tonumber(oldest[2]) > now - tonumber(ARGV[8]) then
    break
  end
  redis.call('ZREM', KEYS[2], oldest[1])
  redis.call('DEL', ARGV[5] .. oldest[1], ARGV[6] .. oldest[1])
end
redis.call('EXPIRE', KEYS[2], ttl)
return 1
