-- Add (or refresh) present connections of a channel, each until now + ttl. Returns the
-- channel's members whose time is not up (with ARGV[2] = 1), or else those of the given
-- members that were no longer there (swept while their instance was late: the caller
-- announces them again).
-- KEYS[1] the channel's presence sorted set (member -> expiry, ms)
-- ARGV[1] ttl in milliseconds, ARGV[2] 1 to return the members, ARGV[3..] members
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local back = {}
for i = 3, #ARGV do
  if redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) == 1 then
    back[#back + 1] = ARGV[i]
  end
end
-- The set outlives its members by a margin, and goes when every instance is gone.
redis.call('PEXPIRE', KEYS[1], ttl * 3)
if ARGV[2] == '1' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
end
return back
