-- The present connections of a channel: members whose time is not up.
-- KEYS[1] the channel's presence sorted set (member -> expiry, ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
