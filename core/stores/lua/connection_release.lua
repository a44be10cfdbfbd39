-- Give back a connection slot; the field disappears at zero.
-- KEYS[1] this instance's hash (ip -> count); ARGV[1] ip
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left
