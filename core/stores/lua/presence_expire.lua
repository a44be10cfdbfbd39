-- Remove a channel's presence entries whose time is up (their instance stopped
-- refreshing them) and return them: atomically, so that when instances race each
-- expired entry is returned to one of them, which announces that it left.
-- KEYS[1] the channel's presence sorted set (member -> expiry, ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
return gone
