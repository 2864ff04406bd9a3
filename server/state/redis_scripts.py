"""The Lua scripts of the Redis live-state store, all in one place.

Each script runs atomically inside Redis, so "read the lease, compare its token, then
write" can never interleave with another node's call. A lease is stored as the JSON text
of ``FloorLease.encode()``; the scripts read only its ``token`` field. A value that is not
a lease (corrupt, or written by something else) never matches any token, so the token
checks refuse it rather than fail.

Every header says what KEYS and ARGV hold and what the script returns. Redis turns a Lua
``false`` into a nil reply (None in Python) and a Lua number into an integer.
"""

from __future__ import annotations

# Shared by the token-checking scripts: the stored lease's token, or nil when the value is
# not a JSON object with a string token.
_TOKEN_OF = """
local function token_of(value)
  if not value then return nil end
  local ok, lease = pcall(cjson.decode, value)
  if ok and type(lease) == 'table' and type(lease.token) == 'string' then
    return lease.token
  end
  return nil
end
"""

# KEYS[1]  the channel's floor key
# ARGV[1]  the new lease (JSON)
# ARGV[2]  time to live, milliseconds
# returns  nil when the lease was stored (the floor was idle);
#          the current lease (JSON) when the floor is taken
# One script rather than SET NX then GET: between the two, the holder could release or
# expire and we would report a holder that no longer exists (or nil while taken).
FLOOR_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
"""

# KEYS[1]  the channel's floor key
# ARGV[1]  the token the caller expects the live lease to have
# ARGV[2]  the new lease (JSON)
# ARGV[3]  time to live of the new lease, milliseconds
# returns  1 when replaced; 0 when the floor is idle or held under another token
FLOOR_REPLACE = _TOKEN_OF + """
if token_of(redis.call('GET', KEYS[1])) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS[1]  the channel's floor key
# ARGV[1]  the holder's token
# ARGV[2]  new time to live, milliseconds from now
# returns  1 when renewed; 0 when the floor is idle or held under another token
FLOOR_RENEW = _TOKEN_OF + """
if token_of(redis.call('GET', KEYS[1])) ~= ARGV[1] then
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS[1]  the channel's floor key
# ARGV[1]  the holder's token
# returns  1 when deleted; 0 when the floor is idle or held under another token
FLOOR_RELEASE = _TOKEN_OF + """
if token_of(redis.call('GET', KEYS[1])) ~= ARGV[1] then
  return 0
end
return redis.call('DEL', KEYS[1])
"""
