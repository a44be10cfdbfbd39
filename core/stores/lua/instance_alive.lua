-- Keep this instance in the list of live instances (for operators: who is out there),
-- and drop the ones whose time is up.
-- KEYS[1] instances sorted set
-- ARGV[1] this instance's id, ARGV[2] liveness in milliseconds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
