-- Write this instance's own connection count for an address (the local truth: after a
-- release, on every keep-alive, after Redis came back); zero removes its field.
-- KEYS[1] the address's hash (instance -> "<count> <expiry ms>")
-- ARGV[1] this instance's id, ARGV[2] its count, ARGV[3] liveness in milliseconds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local liveness = tonumber(ARGV[3])
if tonumber(ARGV[2]) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now + liveness))
redis.call('PEXPIRE', KEYS[1], liveness * 2)
return 1
