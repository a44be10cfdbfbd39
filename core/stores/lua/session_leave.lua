-- The client left: note when, the channels it was in (with the last message id it was
-- sent in each), and the messages it sent that were not counted yet.
-- KEYS[1] session hash; ARGV[1] ttl in milliseconds, ARGV[2] now (epoch ms),
-- ARGV[3] its channels, JSON {channel: last id}, ARGV[4] messages not counted yet,
-- ARGV[5] time of the last of them (epoch ms)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lastSeen', ARGV[2])
redis.call('HSET', KEYS[1], 'channels', ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'messageCount', ARGV[4])
  redis.call('HSET', KEYS[1], 'lastMessageTimestamp', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
