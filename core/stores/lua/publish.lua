-- Order a broadcast, keep it in the history stream, and publish it: one round trip.
-- KEYS[1] history stream, KEYS[2] pub/sub channel
-- ARGV[1] frame tail (the JSON after the id), ARGV[2] priority, ARGV[3] class,
-- ARGV[4] stream length cap, ARGV[5] stream TTL in milliseconds
-- Returns the message id (the stream id, "<ms>-<seq>").
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*',
                      't', ARGV[1], 'p', ARGV[2], 'c', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2], '{"type":"message","id":"' .. id .. '",' .. ARGV[1])
return id
