"""anvil's counters in Redis, shared by every hato instance that points at one Redis.

``hato_anvil_backend = redis:URL`` (hato) makes the anvil service keep its
per-(service, client address) counters here, so that N hato machines behind
one MX name enforce one limit per client (docs/scale-out.md). The anvil
service keeps its in-memory table as well and falls back to it when this
module raises :class:`RedisUnavailable`.

Windows are Postfix's (anvil.c): a fixed window per ident that starts at its
first event; the first event after ``start + rate_time_unit`` resets every
rate of that ident (connections, messages, recipients, new TLS sessions,
AUTH) to 0 and starts the window again. Time is Redis's ``TIME`` in whole
seconds, read inside the scripts, so machines with skewed clocks agree.

Every operation is one Lua script (atomic on the server; EVALSHA, loaded
again by redis-py after NOSCRIPT, e.g. when Redis restarted). Keys, below
``prefix`` (``hato:anvil:``):

``rate:IDENT`` (hash)
    ``start`` and the rates ``connect``, ``message``, ``recipient``,
    ``newtls``, ``auth`` of the current window. Expires
    ``max(2 × rate_time_unit, 60 s)`` after the ident's last event, so idle
    clients vanish.
``count:IDENT`` (hash)
    The connections in progress, one field per instance id. A field at 0 is
    deleted (and the hash with its last field). Expires
    ``max(2 × rate_time_unit, session_ttl)`` (1 hour) after the last event
    or disconnect for that ident: a client whose sessions stay silent longer
    than that is under-counted (the limit fails open).
``instance:ID:idents`` (set)
    The idents in which this instance holds a count, so :meth:`resync` can
    take them all back after a crash or an outage. Same expiry as the counts,
    refreshed by every operation of the instance.
``instance:ID:live`` (string)
    This instance is alive: refreshed by every operation of the instance
    (:meth:`ping` included, which makes ``ping`` a heartbeat), expires after
    ``live_ttl`` (10 minutes). A connection count is the sum over the
    instances that are alive; the fields of an instance that is not are
    deleted as they are met. A machine that died thus stops counting after
    ``live_ttl``; one that comes back calls :meth:`resync` first.

The scripts name keys they compute (the other idents' count hashes in
``resync``, other instances' ``live`` keys), so this needs one Redis server
(with replicas or Sentinel as you like), not Redis Cluster. Redis 5 or later.

Errors: any Redis or network error, and any operation that takes longer
than ``timeout`` seconds from start to end (waiting for a free connection of
the pool included), raise :class:`RedisUnavailable`. Nothing is retried
here: the anvil service decides.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

#: request → the field of the rate hash it counts.
RATE_FIELDS = {"connect": "connect", "message": "message", "recipient": "recipient",
               "newtls": "newtls", "auth": "auth"}

_LUA_COMMON = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local function now_s()
  return tonumber(redis.call('TIME')[1])
end
-- the connections of an ident over the live instances; fields of dead ones go
local function live_sum(ckey, live_prefix, live_suffix)
  local kv = redis.call('HGETALL', ckey)
  local sum = 0
  for i = 1, #kv, 2 do
    if redis.call('EXISTS', live_prefix .. kv[i] .. live_suffix) == 1 then
      local n = tonumber(kv[i + 1]) or 0
      if n > 0 then sum = sum + n end
    else
      redis.call('HDEL', ckey, kv[i])
    end
  end
  return sum
end
local function alive(live_key, live_ttl, set_key, set_ttl)
  redis.call('SET', live_key, '1', 'EX', live_ttl)
  if set_key then redis.call('EXPIRE', set_key, set_ttl) end
end
"""

# KEYS: rate hash, count hash, this instance's ident set, this instance's live key
# ARGV: field, rate_time_unit, rate_ttl, count_ttl, live_ttl, instance, ident,
#       live prefix, live suffix
_LUA_EVENT = _LUA_COMMON + """
local field = ARGV[1]
local unit = tonumber(ARGV[2])
local now = now_s()
alive(KEYS[4], ARGV[5], KEYS[3], ARGV[4])
local start = tonumber(redis.call('HGET', KEYS[1], 'start'))
local rate
if start == nil or start + unit < now then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'start', now, field, 1)
  rate = 1
else
  rate = redis.call('HINCRBY', KEYS[1], field, 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if field == 'connect' then
  redis.call('HINCRBY', KEYS[2], ARGV[6], 1)
  redis.call('SADD', KEYS[3], ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
local count = live_sum(KEYS[2], ARGV[8], ARGV[9])
if count > 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if field ~= 'connect' then count = 0 end
return {count, rate}
"""

# KEYS: count hash, this instance's ident set, this instance's live key
# ARGV: instance, ident, count_ttl, live_ttl
_LUA_DISCONNECT = _LUA_COMMON + """
alive(KEYS[3], ARGV[4], KEYS[2], ARGV[3])
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if n ~= nil then
  if n <= 1 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('SREM', KEYS[2], ARGV[2])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 0
"""

# KEYS: rate hash, count hash, this instance's live key
# ARGV: rate_time_unit, live_ttl, live prefix, live suffix
_LUA_LOOKUP = _LUA_COMMON + """
local unit = tonumber(ARGV[1])
local now = now_s()
alive(KEYS[3], ARGV[2], nil, nil)
local count = live_sum(KEYS[2], ARGV[3], ARGV[4])
local r = redis.call('HMGET', KEYS[1], 'start', 'connect', 'message', 'recipient',
                     'newtls', 'auth')
local start = tonumber(r[1])
local out = {count, 0, 0, 0, 0, 0}
if start ~= nil and not (start + unit < now) then
  for i = 2, 6 do out[i] = tonumber(r[i]) or 0 end
end
return out
"""

# KEYS: this instance's ident set, this instance's live key
# ARGV: instance, count_ttl, live_ttl, count prefix, then ident, count pairs
_LUA_RESYNC = _LUA_COMMON + """
local inst = ARGV[1]
local cprefix = ARGV[4]
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
local old = redis.call('SMEMBERS', KEYS[1])
for _, ident in ipairs(old) do
  redis.call('HDEL', cprefix .. ident, inst)
end
redis.call('DEL', KEYS[1])
for i = 5, #ARGV - 1, 2 do
  local n = tonumber(ARGV[i + 1]) or 0
  if n > 0 then
    local ckey = cprefix .. ARGV[i]
    redis.call('HSET', ckey, inst, n)
    redis.call('EXPIRE', ckey, ARGV[2])
    redis.call('SADD', KEYS[1], ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return #old
"""

# KEYS: this instance's live key, its ident set; ARGV: live_ttl, count_ttl
_LUA_PING = _LUA_COMMON + """
alive(KEYS[1], ARGV[1], KEYS[2], ARGV[2])
return 1
"""


class RedisUnavailable(Exception):
    """Redis could not be asked: network, server or timeout (the text says which)."""


def backend_url(url: str) -> str:
    """The redis-py URL of a ``hato_anvil_backend`` value or of a bare URL:
    ``redis:redis://h:6379/0`` and ``redis://h:6379/0`` both give the latter;
    ``redis:rediss://…`` and ``redis:unix:///path`` work alike."""
    url = url.strip()
    if url.startswith("redis:") and not url.startswith("redis://"):
        url = url[len("redis:"):]
    return url


def display_url(url: str) -> str:
    """*url* without its password, for logs (``redis://user:***@host:6379/0``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query,
                       parts.fragment))


class RedisCounters:
    """Counters shared by every hato instance that points at one Redis."""

    def __init__(self, url: str, *, rate_time_unit: int, instance: str,
                 pool_size: int = 8, timeout: float = 1.0, prefix: str = "hato:anvil:",
                 session_ttl: int = 3600, live_ttl: int = 600):
        if not instance:
            raise ValueError("anvil redis backend: empty instance id")
        if pool_size < 1:
            raise ValueError("anvil redis backend: pool_size must be at least 1")
        if timeout <= 0:
            raise ValueError("anvil redis backend: timeout must be positive")
        self.url = backend_url(url)
        self.display_url = display_url(self.url)
        self.unit = max(1, rate_time_unit)
        self.instance = instance
        self.timeout = timeout
        self.prefix = prefix
        self.rate_ttl = max(2 * int(self.unit + 0.999), 60)
        self.count_ttl = max(2 * int(self.unit + 0.999), int(session_ttl))
        self.live_ttl = max(1, int(live_ttl))
        try:
            self._pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=pool_size, timeout=timeout,
                socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0))
            # an unknown URL option only shows when a connection is made: check now
            self._pool.connection_class(**self._pool.connection_kwargs)
        except (ValueError, TypeError) as err:
            raise ValueError(f"anvil redis backend {self.display_url}: {err}") from None
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._event = self._client.register_script(_LUA_EVENT)
        self._disconnect = self._client.register_script(_LUA_DISCONNECT)
        self._lookup = self._client.register_script(_LUA_LOOKUP)
        self._resync = self._client.register_script(_LUA_RESYNC)
        self._ping = self._client.register_script(_LUA_PING)
        base = f"{prefix}instance:{instance}:"
        self._idents_key = base + "idents"
        self._live_key = base + "live"
        self._live_prefix = f"{prefix}instance:"
        self._live_suffix = ":live"

    def __repr__(self) -> str:
        return f"RedisCounters({self.display_url!r}, instance={self.instance!r})"

    # -- keys -----------------------------------------------------------------------------

    def rate_key(self, ident: str) -> str:
        return f"{self.prefix}rate:{ident}"

    def count_key(self, ident: str) -> str:
        return f"{self.prefix}count:{ident}"

    # -- running a script -----------------------------------------------------------------

    async def _run(self, script, keys: list[str], args: list) -> object:
        try:
            async with asyncio.timeout(self.timeout):
                return await script(keys=keys, args=args)
        except TimeoutError:
            # asyncio's deadline, or redis-py's own (a subclass of RedisError)
            raise RedisUnavailable(f"no answer within {self.timeout:g}s") from None
        except (RedisError, OSError) as err:
            raise RedisUnavailable(str(err).rstrip(".") or type(err).__name__) from err

    # -- the requests ---------------------------------------------------------------------

    async def event(self, request: str, ident: str) -> tuple[int, int]:
        """request is one of connect, message, recipient, newtls, auth. Counts the
        event in the current window of ident and returns (count, rate): count is
        the connection count of ident summed over all live instances (only for
        connect; 0 otherwise), rate the number of such events in the current
        window. Raises RedisUnavailable on any Redis/network error or timeout."""
        field = RATE_FIELDS.get(request)
        if field is None:
            raise ValueError(f"anvil redis backend: unknown request {request!r}")
        got = await self._run(
            self._event,
            [self.rate_key(ident), self.count_key(ident), self._idents_key, self._live_key],
            [field, self.unit, self.rate_ttl, self.count_ttl, self.live_ttl, self.instance,
             ident, self._live_prefix, self._live_suffix])
        count, rate = got  # type: ignore[misc]
        return int(count), int(rate)

    async def disconnect(self, ident: str) -> None:
        """This instance's connection count for ident, less one (not below 0)."""
        await self._run(self._disconnect,
                        [self.count_key(ident), self._idents_key, self._live_key],
                        [self.instance, ident, self.count_ttl, self.live_ttl])

    async def lookup(self, ident: str) -> dict[str, int]:
        """The connection count over the live instances and the rates of the current
        window (0 once the window is over), without counting anything: keys
        count, rate, message, recipient, newtls, auth."""
        got = await self._run(self._lookup,
                              [self.rate_key(ident), self.count_key(ident), self._live_key],
                              [self.unit, self.live_ttl, self._live_prefix, self._live_suffix])
        values = [int(v) for v in got]  # type: ignore[union-attr]
        return dict(zip(("count", "rate", "message", "recipient", "newtls", "auth"), values))

    async def resync(self, counts: dict[str, int]) -> None:
        """After an outage or at start: this instance's live connection counts
        (ident -> count) replace whatever Redis holds for this instance."""
        args: list = [self.instance, self.count_ttl, self.live_ttl, f"{self.prefix}count:"]
        for ident, n in counts.items():
            if n > 0:
                args += [ident, int(n)]
        await self._run(self._resync, [self._idents_key, self._live_key], args)

    async def ping(self) -> bool:
        """Whether Redis answers; also this instance's heartbeat (it stays
        counted as alive for ``live_ttl`` more seconds)."""
        try:
            await self._run(self._ping, [self._live_key, self._idents_key],
                            [self.live_ttl, self.count_ttl])
        except RedisUnavailable:
            return False
        return True

    async def close(self) -> None:
        """Close the pool's connections (the client owns no other)."""
        await self._pool.disconnect()
