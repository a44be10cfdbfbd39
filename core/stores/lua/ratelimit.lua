-- Token buckets, refilled and spent atomically: one token from every bucket named in
-- KEYS, or from none (the arithmetic of take_token in core/stores/ratelimit.py). Time
-- comes from Redis, so instances' clocks do not matter.
-- KEYS[i] a bucket hash (the keys share a hash tag: one slot on a cluster)
-- ARGV[2i-1] its refill rate (tokens/s), ARGV[2i] its burst (bucket size)
-- Returns "0" when every bucket gave a token, else the seconds until all of them can.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1])
  local last = tonumber(bucket[2])
  if tokens == nil or last == nil then
    tokens = burst
    last = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
  if tokens < 1 then wait = math.max(wait, (1 - tokens) / rate) end
  levels[i] = tokens
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tokens = levels[i]
  if wait == 0 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  -- A bucket left alone refills completely; then it is the same as no bucket.
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
end
return tostring(wait)
