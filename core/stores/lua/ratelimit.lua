-- Token bucket, refilled and spent atomically (the arithmetic of take_token in
-- core/stores/ratelimit.py). Time comes from Redis, so instances' clocks do not matter.
-- KEYS[1] bucket hash; ARGV[1] refill rate (tokens/s), ARGV[2] burst (bucket size)
-- Returns "0" when a token was spent, else the seconds until one is available.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local last = tonumber(bucket[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local retry_after = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  retry_after = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
-- A bucket left alone refills completely; then it is the same as no bucket.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(retry_after)
