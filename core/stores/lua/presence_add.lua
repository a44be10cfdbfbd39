-- Add (or refresh) present connections of a channel, each until now + ttl; return the
-- members whose time is not up, the added ones included.
-- KEYS[1] the channel's presence sorted set (member -> expiry, ms)
-- ARGV[1] ttl in milliseconds, ARGV[2] 1 to return the members (0: refresh only),
-- ARGV[3..] members
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
-- The set outlives its members by a margin, and goes when every instance is gone.
redis.call('PEXPIRE', KEYS[1], ttl * 2)
if ARGV[2] == '1' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
end
return {}
