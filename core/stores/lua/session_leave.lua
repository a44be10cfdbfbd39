-- The client left: note when, and the last message it was sent (if known).
-- KEYS[1] session hash; ARGV[1] ttl in milliseconds, ARGV[2] now (epoch ms),
-- ARGV[3] last message id or ""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lastSeen', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'lastMessageId', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
