-- Keep this instance live (its connection counts keep counting).
-- KEYS[1] instances sorted set, KEYS[2] this instance's hash
-- ARGV[1] this instance's id, ARGV[2] liveness in milliseconds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local liveness = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + liveness, ARGV[1])
redis.call('PEXPIRE', KEYS[2], liveness * 2)
return 1
