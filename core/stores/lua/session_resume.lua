-- Resume a session: refresh its TTL and lastSeen, return its fields (empty if gone).
-- KEYS[1] session hash; ARGV[1] ttl in milliseconds, ARGV[2] now (epoch ms)
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'lastSeen', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
