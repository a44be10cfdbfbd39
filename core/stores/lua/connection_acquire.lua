-- Take a connection slot for an address if all live instances together hold fewer than
-- the limit. The address's hash has a field per instance, "<count> <expiry ms>": an
-- instance's count stops counting at its expiry unless the instance refreshes it
-- (connection_set), so a dead instance's connections drop out by themselves. One key:
-- every address is its own hash tag, so this runs on one shard of a Redis Cluster.
-- KEYS[1] the address's hash
-- ARGV[1] this instance's id, ARGV[2] limit, ARGV[3] liveness in milliseconds,
-- ARGV[4] this instance's own count for the address before this connection
-- Returns 1 if the slot was taken, 0 if the address is at its limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local liveness = tonumber(ARGV[3])
local own = tonumber(ARGV[4])
local total = own
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local count, expiry = string.match(flat[i + 1], '^(%d+) (%d+)$')
  if count and tonumber(expiry) > now then
    if flat[i] ~= ARGV[1] then total = total + tonumber(count) end
  else
    redis.call('HDEL', KEYS[1], flat[i])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], (own + 1) .. ' ' .. (now + liveness))
redis.call('PEXPIRE', KEYS[1], liveness * 2)
return 1
