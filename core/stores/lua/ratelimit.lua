-- Spend one token from every bucket named in KEYS, or from none.
-- KEYS[i] a bucket hash (the keys share a hash tag: one slot on a cluster)
-- ARGV[2i-1] its refill rate (tokens/s), ARGV[2i] its burst (bucket size)
-- Returns "0" when every bucket gave a token, else the seconds until all of them can.
--#include buckets
return tostring(take_tokens(1, 1))
