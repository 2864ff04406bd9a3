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

# Shared by the epoch-checking scripts. The epoch key names the life of this Redis's
# data: a random value set by the first node. When a node that knew an epoch finds none,
# Redis has lost its data (restarted without persistence) and every lease with it, while
# the nodes' talkers still believe they hold their floors until their next renewal fails
# (within a third of a lease). So the discovering node also sets the quiet key for one
# lease: no floor is granted until it expires, and no floor is ever granted twice.
_EPOCH_OF = """
local function epoch_of(epoch_key, quiet_key, known, candidate, quiet_ms)
  local current = redis.call('GET', epoch_key)
  if current then return current end
  redis.call('SET', epoch_key, candidate)
  if known ~= '' then
    redis.call('SET', quiet_key, '1', 'PX', quiet_ms)
  end
  return candidate
end
"""

# KEYS[1]  the epoch key      KEYS[2]  the quiet key
# ARGV[1]  the epoch this node knows ('' when none yet)
# ARGV[2]  a fresh epoch to set if there is none
# ARGV[3]  the quiet period, milliseconds (one lease)
# returns  {epoch, quiet milliseconds left (<= 0: none)}
EPOCH_CHECK = _EPOCH_OF + """
local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return {epoch, redis.call('PTTL', KEYS[2])}
"""

# KEYS[1]  the channel's floor key
# KEYS[2]  the epoch key      KEYS[3]  the quiet key
# ARGV[1]  the new lease (JSON)
# ARGV[2]  time to live, milliseconds (also the quiet period after a data loss)
# ARGV[3]  the epoch this node knows ('' when none yet)
# ARGV[4]  a fresh epoch to set if there is none
# returns  {0, epoch} when the lease was stored (the floor was idle);
#          {1, epoch, current lease (JSON)} when the floor is taken;
#          {2, epoch, quiet milliseconds left} while grants wait out a data loss
# One script rather than SET NX then GET: between the two, the holder could release or
# expire and we would report a holder that no longer exists (or nil while taken).
FLOOR_ACQUIRE = _EPOCH_OF + """
local epoch = epoch_of(KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[2])
local quiet = redis.call('PTTL', KEYS[3])
if quiet > 0 then
  return {2, epoch, quiet}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, epoch}
end
return {1, epoch, redis.call('GET', KEYS[1])}
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
