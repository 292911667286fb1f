-- Presence of a state: one server's entries put or removed, or all of them synced
-- (its entries not listed are removed, and the expired entries of every server,
-- which stopped refreshing theirs because it died, are swept).
-- KEYS: 1 meta, 2 presence (hash: entry id -> "<node> <JSON>"), 3 expiries (sorted
--       set: entry id -> unix ms past which it is swept), 4 channel, 5 writers (hash:
--       node -> unix ms of its last sync)
-- ARGV: 1 node, 2 ttl in ms, 3 mode ("c": changes, "s": sync), 4 the incarnation
--       (epoch) the entries are of, 5 how long a writer may go without a sync and
--       still sweep (ms), then for each entry three: id, stored text ("" removes the
--       entry), join JSON (published when the entry is new or different).
-- The script never parses JSON: the texts come ready from the server.
-- Publishes "p <pv> <node> [change, ...]" when anything changed, pv counting the
-- state's presence changes (in meta), so that a server that missed one reloads.
-- Returns pv, or -1 when the state does not exist (or is another incarnation).
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[4] then return -1 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = now + tonumber(ARGV[2])
local changes = {}
local listed = {}
local function leave(id)
  if redis.call('HDEL', KEYS[2], id) == 1 then
    table.insert(changes, '{"event":"leave","id":"' .. id .. '"}')
  end
  redis.call('ZREM', KEYS[3], id)
end
for i = 6, #ARGV, 3 do
  local id, stored = ARGV[i], ARGV[i + 1]
  listed[id] = true
  if stored == '' then
    leave(id)
  else
    if redis.call('HGET', KEYS[2], id) ~= stored then
      redis.call('HSET', KEYS[2], id, stored)
      table.insert(changes, ARGV[i + 2])
    end
    redis.call('ZADD', KEYS[3], deadline, id)
  end
end
if ARGV[3] == 's' then
  local prefix = ARGV[1] .. ' '
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if not listed[all[i]] and string.sub(all[i + 1], 1, #prefix) == prefix then
      leave(all[i])
    end
  end
  -- Sweep only when this writer itself could write recently: after a stall of Redis
  -- (or of this server), every entry looks expired, and the live servers have not
  -- written theirs again yet.
  local last = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
  redis.call('HSET', KEYS[5], ARGV[1], now)
  if now - last <= tonumber(ARGV[5]) then
    local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
    for _, id in ipairs(expired) do
      leave(id)
    end
    -- Writers silent for long are forgotten.
    local writers = redis.call('HGETALL', KEYS[5])
    for i = 1, #writers, 2 do
      if now - tonumber(writers[i + 1]) > 10 * tonumber(ARGV[2]) then
        redis.call('HDEL', KEYS[5], writers[i])
      end
    end
  end
end
if #changes == 0 then
  return tonumber(redis.call('HGET', KEYS[1], 'pv') or '0')
end
local pv = redis.call('HINCRBY', KEYS[1], 'pv', 1)
redis.call('PUBLISH', KEYS[4], 'p ' .. pv .. ' ' .. ARGV[1] .. ' [' .. table.concat(changes, ',') .. ']')
return pv
