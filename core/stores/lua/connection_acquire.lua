-- Take a connection slot for an IP if all live instances together hold fewer than the
-- limit. Each instance counts its connections in its own hash; an instance is live while
-- its score in the instances set (an expiry time) is in the future.
-- KEYS[1] instances sorted set, KEYS[2] this instance's hash (ip -> count)
-- ARGV[1] ip, ARGV[2] limit, ARGV[3] key prefix, ARGV[4] this instance's id,
-- ARGV[5] liveness in milliseconds
-- Returns 1 if the slot was taken, 0 if the IP is at its limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local liveness = tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], now + liveness, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local total = 0
for _, instance in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local held = redis.call('HGET', ARGV[3] .. 'connections:' .. instance, ARGV[1])
  if held then total = total + tonumber(held) end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[2], liveness * 2)
return 1
