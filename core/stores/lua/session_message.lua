-- Count accepted messages in a live session (an expired one is not resurrected).
-- KEYS[1] session hash; ARGV[1] ttl in milliseconds, ARGV[2] time of the last one
-- (epoch ms), ARGV[3] how many
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'messageCount', ARGV[3])
redis.call('HSET', KEYS[1], 'lastMessageTimestamp', ARGV[2], 'lastSeen', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
