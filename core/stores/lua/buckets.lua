-- Token buckets, refilled and spent atomically: one token from every bucket, or from
-- none (the arithmetic of take_tokens in core/stores/ratelimit.py). Time comes from
-- Redis, so instances' clocks do not matter. Included (`--#include buckets`) by the
-- scripts that spend tokens; not loaded on its own.
-- take_tokens(KEYS from `first_key` on: bucket hashes; ARGV from `first_arg` on: each
-- bucket's refill rate (tokens/s) then its burst) returns 0 when every bucket gave a
-- token, else the seconds until all of them can.
local function take_tokens(first_key, first_arg)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local levels = {}
  local wait = 0
  local count = #KEYS - first_key + 1
  for i = 1, count do
    local key = KEYS[first_key + i - 1]
    local rate = tonumber(ARGV[first_arg + 2 * i - 2])
    local burst = tonumber(ARGV[first_arg + 2 * i - 1])
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
  for i = 1, count do
    local key = KEYS[first_key + i - 1]
    local rate = tonumber(ARGV[first_arg + 2 * i - 2])
    local burst = tonumber(ARGV[first_arg + 2 * i - 1])
    local tokens = levels[i]
    if wait == 0 then tokens = tokens - 1 end
    redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
    -- A bucket left alone refills completely; then it is the same as no bucket.
    redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  end
  return wait
end
