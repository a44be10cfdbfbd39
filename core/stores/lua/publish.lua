-- Order a broadcast, keep it in the history stream, and publish it: one round trip.
-- KEYS[1] history stream, KEYS[2] pub/sub channel
-- ARGV[1] frame tail (the JSON after the id), ARGV[2] priority, ARGV[3] class,
-- ARGV[4] stream length cap, ARGV[5] stream TTL in milliseconds, ARGV[6] '1' on a Redis
-- Cluster: sharded pub/sub (SPUBLISH reaches the slot's shard only, not every node)
-- Optionally, the message's charge (single Redis only: these keys are in another slot):
-- KEYS[3..] token buckets to spend one token from each, or from none, before
-- publishing; ARGV[7..] each one's refill rate then burst.
-- ARGV[#ARGV] (last) the moment (ms, Redis's clock) the publisher stops waiting for the
-- reply
-- Returns the message id (the stream id, "<ms>-<seq>"); "!<seconds>" when the charge
-- was refused (nothing published; the seconds until it can be paid); or false if it
-- came too late: held up (a frozen node, a failover) until its publisher had given up
-- on it and delivered it to its own clients alone, it must reach nobody else.
--#include buckets
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return false
end
if #KEYS > 2 then
  local wait = take_tokens(3, 7)
  if wait > 0 then return '!' .. tostring(wait) end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*',
                      't', ARGV[1], 'p', ARGV[2], 'c', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local publish = ARGV[6] == '1' and 'SPUBLISH' or 'PUBLISH'
redis.call(publish, KEYS[2], '{"type":"message","id":"' .. id .. '",' .. ARGV[1])
return id
