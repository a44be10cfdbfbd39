-- Announce this instance as live and replace its connection counts with the local truth
-- (after Redis restarted or this instance was cut off).
-- KEYS[1] instances sorted set, KEYS[2] this instance's hash
-- ARGV[1] this instance's id, ARGV[2] liveness in milliseconds, ARGV[3..] ip, count, ...
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local liveness = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + liveness, ARGV[1])
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[2], liveness * 2) end
return 1
