"""Redis (and Valkey) backend and ``RedisSessionStore``, on redis-py (the ``redis`` extra).

Key layout, shared with the FeatureHub JavaScript store (``featurehub-store-redis``):

* ``{prefix}_{environment_id}``          JSON array of feature states
* ``{prefix}_{environment_id}_sha``      hex SHA-256 fingerprint of the array
* ``{prefix}_{environment_id}_deleted``  tombstones (fh_prefork only, as on memcached)
* ``{prefix}_{environment_id}_leader``   leader lease: JSON ``{"holder", "host", "pid",
  "expires_at"}`` with a Redis expiry (``PX``), renewed and deleted only by its holder
  (a Lua script compares the holder server-side)

Compare-and-set. The token of a read is the SHA-1 of the bytes read (``''``:
absent); a Lua script compares it with the SHA-1 of what the server holds now.

* One node: one script compares the data *and* the tombstones, then sets the
  tombstones, the data and ``_sha`` and publishes, all in one atomic step. The
  JavaScript store WATCHes ``_sha`` and sets ``_sha`` + data in one MULTI; since
  our step always sets ``_sha`` and compares the data, neither store can
  overwrite the other unseen.
* Cluster: the keys live in different slots, so as on memcached the data key is
  the compare-and-set target (a one-key script on its node), tombstones are
  compare-and-set before it and read after it (``backend.py``'s ordering
  contract), then ``_sha`` is set and the change published.

Push: every write publishes the new fingerprint on the channel named after the
data key (``{prefix}_{environment_id}``); each store subscribes on a thread of
its own (see :class:`RedisNotifier`) and wakes its store thread at once.

Passwords never leave the client: ``description`` is rebuilt from redis-py's own
parse of the URL (host, port, db, user), never from the URL text.
"""

from __future__ import annotations

import functools
import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .. import features as fs
from ..apikey import environment_id, require_client_evaluated
from ..ratelog import RateLimitedLog
from ..threads import start_without_signals, wait_for_end
from .backend import PushStatus, Snapshot, StoreUnavailable, Wake, store_keys
from .core import SessionStore
from .core import log as store_log  # push is part of what the store does
from .lease import Lease, LeaseAnswer, released_seconds
from .options import RedisSessionStoreOptions

SOURCE = "redis-store"
SCHEMES = ("redis://", "rediss://", "unix://")
#: Redis Cluster: the same URL as redis-py reads it, with ``+cluster`` after the scheme.
CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}
EXTRA_HINT = "install the redis extra: pip install 'fh-prefork[redis]'"

# KEYS: data, sha, tombstones. ARGV: data digest, tombstones digest ('' = absent), data,
# fingerprint, '1' to write the tombstones, tombstones, channel.
_WRITE_ONE_NODE = """
local function digest(key)
  local v = redis.call('GET', key)
  if not v then return '' end
  return redis.sha1hex(v)
end
if digest(KEYS[1]) ~= ARGV[1] or digest(KEYS[3]) ~= ARGV[2] then return 0 end
if ARGV[5] == '1' then redis.call('SET', KEYS[3], ARGV[6]) end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[7], ARGV[4])
return 1
"""

# Compare-and-set by digest: set KEYS[2] only while KEYS[1] is what was read. KEYS[1] and
# KEYS[2] are one key for a compare-and-set, the data and _sha for a fingerprint repair.
# ARGV: KEYS[1]'s digest as read ('' = absent), the new value of KEYS[2].
_SET_IF_UNCHANGED = """
local v = redis.call('GET', KEYS[1])
local d = ''
if v then d = redis.sha1hex(v) end
if d ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# The lease holder named by a record, or nil when the record is absent or junk.
_HOLDER = """
local function holder(raw)
  if not raw then return nil end
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and type(rec.holder) == 'string' and rec.holder ~= '' then
    return rec.holder
  end
  return nil
end
"""

# KEYS: lease. ARGV: candidate holder, record, ttl ms, '1' to take a vacant lease too.
# Taken when released or ours already, and when vacant (absent or junk) if ARGV[4] says so.
_LEASE_ACQUIRE = _HOLDER + """
local cur = redis.call('GET', KEYS[1])
local h = holder(cur)
if h and h ~= ARGV[1] then return {0, cur} end
if not h and cur ~= 'released' and ARGV[4] ~= '1' then return {0, ''} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {1, ARGV[2]}
"""

# KEYS: lease. ARGV: holder, record, ttl ms. Renewed while the record names the holder, and
# taken back (2) when it vanished (absent or junk: evicted, Redis restarted empty).
_LEASE_RENEW = _HOLDER + """
local cur = redis.call('GET', KEYS[1])
local h = holder(cur)
if h and h ~= ARGV[1] then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if h then return {1, ARGV[2]} end
return {2, ARGV[2]}
"""

# KEYS: lease. ARGV: holder, ms left of the lease. Only while the record names the holder:
# replaced by the released marker, which every contender takes at once, for what was left.
_LEASE_RELEASE = _HOLDER + """
if holder(redis.call('GET', KEYS[1])) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'released', 'PX', ARGV[2])
return 1
"""


def _no_client_setinfo() -> dict[str, Any]:
    """redis-py's arguments for connecting without ``CLIENT SETINFO``: one round trip less
    before every connection's first command, a worker's first read included (the library's
    name and version are then not in ``CLIENT LIST``). ``driver_info`` since redis-py 7,
    ``lib_name``/``lib_version`` before (deprecated since)."""
    try:
        import redis.driver_info  # noqa: F401
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {"driver_info": None}


def _redis() -> Any:
    try:
        import redis
    except ImportError:  # an optional extra
        raise ValueError(f"a redis:// store needs redis-py: {EXTRA_HINT}") from None
    return redis


def is_redis_url(url: str) -> bool:
    return url.startswith(SCHEMES) or url.startswith(tuple(CLUSTER_SCHEMES))


def split_url(url: str) -> tuple[str, bool]:
    """The URL redis-py reads, and whether it names a cluster (``redis+cluster://``)."""
    for scheme, plain in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return plain + url[len(scheme):], True
    if url.startswith(SCHEMES):
        return url, False
    raise ValueError(f"redis store URL must start with redis://, rediss://, unix://, "
                     f"redis+cluster:// or rediss+cluster://, got a {url.split(':', 1)[0]!r} URL")


@functools.lru_cache(maxsize=16)
def describe_url(url: str) -> str:
    """``url`` as redis-py reads it, rebuilt without the password (safe to log and show).

    Raises ``ValueError`` for a URL redis-py refuses (that is the validation).
    Remembered: the master's settings check describes the URL once, before the
    workers fork and each describes it again in its post-fork hook.
    """
    plain, cluster = split_url(url)
    _redis()  # installed, or a one-line error naming the extra
    from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

    try:
        kw: dict[str, Any] = parse_url(plain)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as err:
        raise ValueError(f"redis store URL: {err}") from None
    if cluster and (kw.get("connection_class") is UnixDomainSocketConnection
                    or not kw.get("host")):
        raise ValueError("a Redis Cluster URL names a node's host and port: "
                         "redis+cluster://host:port")
    user = f"{kw['username']}@" if kw.get("username") else ""
    if kw.get("password"):
        user = f"{kw.get('username') or ''}:***@"
    if kw.get("connection_class") is UnixDomainSocketConnection:
        return f"unix://{user}{kw.get('path')}?db={kw.get('db', 0)}"
    scheme = "rediss" if kw.get("connection_class") is SSLConnection else "redis"
    if cluster:
        return f"{scheme}+cluster://{user}{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
    return f"{scheme}://{user}{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/" \
           f"{kw.get('db', 0)}"


def make_client(url: str, options: RedisSessionStoreOptions, *,
                subscriber: bool = True) -> Any:
    """A redis-py client for ``url``: bytes replies, bounded timeouts, no silent retries.

    A cluster client connects when it is built (it asks for the slot map), so
    the backend builds it on first use: the store's one read at start, in the
    post-fork hook, where the slot map and the reads across slots are each
    bounded by ``connect_timeout`` and ``timeout``.

    ``subscriber``: health checks (a connection idle for 30 s is PINGed before
    use), so a subscriber, which only ever waits, notices a server that vanished
    without a reset (paused, partitioned) and reconnects. The store's own client
    goes without (``subscriber=False``): each of its commands is bounded by the
    socket timeout and fails alike with or without a PING before it (no retries),
    and a fresh connection's PING is one more round trip in every worker's start.
    """
    redis = _redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    plain, cluster = split_url(url)
    # RESP2 unless the URL asks for another (``?protocol=3``): nothing here needs RESP3, and
    # its HELLO is one more round trip in every worker's start, before the store's first read
    # no retries: a client's Retry is deep-copied into each connection it makes, and without
    # one redis-py gives each the same Retry(NoBackoff(), 0); RedisCluster uses its own
    common: dict[str, Any] = dict(socket_timeout=options.timeout,
                                  socket_connect_timeout=options.connect_timeout,
                                  retry=Retry(NoBackoff(), 0) if cluster else None,
                                  decode_responses=False,
                                  health_check_interval=30 if subscriber else 0, protocol=2,
                                  **_no_client_setinfo())
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(plain, **common)
    return redis.Redis.from_url(plain, **common)


def _digest(value: bytes | None) -> str:
    return "" if value is None else hashlib.sha1(value).hexdigest()


def _bytes(value: Any) -> bytes | None:
    """A reply as bytes: Lua integers and the like aside, replies already are."""
    if value is None or isinstance(value, bytes):
        return value
    return bytes(value)


def check_client(client: Any) -> None:
    """Refuse a client that decodes replies: stored values are bytes, read as they are.

    With ``decode_responses=True`` redis-py raises inside the client on a value
    that is not UTF-8 (a foreign writer's junk, a zlib value), which would look
    like an unreachable store forever and the junk would never be repaired.
    """
    encoder = getattr(client, "get_encoder", None)
    if callable(encoder) and getattr(encoder(), "decode_responses", False):
        raise ValueError("the Redis client decodes responses (decode_responses=True); "
                         "give fh_prefork one built with decode_responses=False")


def describe_client(client: Any) -> str:
    """A client's address from redis-py's connection settings (never the password)."""
    pool = getattr(client, "connection_pool", None)
    kw = getattr(pool, "connection_kwargs", None)
    if isinstance(kw, dict) and kw.get("host"):
        user = f"{kw['username']}@" if kw.get("username") else ""
        return f"redis client {user}{kw['host']}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
    return f"redis client {type(client).__name__}"


def is_cluster_client(client: Any) -> bool:
    try:
        from redis.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, RedisCluster)


class RedisBackend:
    """Moves the store's bytes in and out of Redis or Valkey; every call bounded by timeouts.

    ``client``: a redis-py client, or a callable that builds one (called on first
    use, so a cluster that is down at construction costs nothing there).
    ``subscriber``: builds the push subscriber's client, when ``client`` is a
    callable whose clients are not meant for that (see :func:`make_client`).
    """

    source = SOURCE

    def __init__(self, client: Any | Callable[[], Any], data_key: str, description: str,
                 cluster: bool, *, subscriber: Callable[[], Any] | None = None) -> None:
        self._client_or_factory = client
        self._subscriber = subscriber
        self._given = hasattr(client, "execute_command")   # a client, not a factory of them
        self._client: Any = client if self._given else None
        self.cluster = cluster
        self.data_key, self.sha_key, self.tombstones_key, self.lease_key = store_keys(data_key)
        self.channel = data_key
        self.description = description
        self._scripts: dict[str, Any] = {}

    # -- data ---------------------------------------------------------------------------------

    def change_token(self) -> str | None:
        return fs.decode_fingerprint(_bytes(self._call("get", self.sha_key)))

    def read(self) -> Snapshot:
        # data (with its fingerprint) first, tombstones second: see backend.py's ordering contract
        if self.cluster:
            value = _bytes(self._call("get", self.data_key))
            sha = _bytes(self._call("get", self.sha_key))
            tombstones = _bytes(self._call("get", self.tombstones_key))
        else:  # one MGET: one consistent moment of all three
            value, sha, tombstones = (_bytes(v) for v in self._call(
                "mget", [self.data_key, self.sha_key, self.tombstones_key]))
        # the compare-and-set tokens are the SHA-1 of these bytes: made by a write that needs
        # them (see write and settle), not at every read
        return Snapshot(value=value, change_token=fs.decode_fingerprint(sha),
                        tombstones=tombstones)

    def write(self, value: bytes, fingerprint: str, previous: Snapshot,
              tombstones: bytes | None = None) -> str | None:
        data_digest = previous.cas_token if isinstance(previous.cas_token, str) \
            else _digest(previous.value)
        tombs_digest = previous.tombstones_cas if isinstance(previous.tombstones_cas, str) \
            else _digest(previous.tombstones)
        if not self.cluster:
            stored = self._script("write", _WRITE_ONE_NODE,
                                  [self.data_key, self.sha_key, self.tombstones_key],
                                  [data_digest, tombs_digest, value, fingerprint,
                                   "0" if tombstones is None else "1", tombstones or b"",
                                   self.channel])
            return fingerprint if int(stored) == 1 else None
        if tombstones is not None and not self._cas(self.tombstones_key, tombs_digest,
                                                    tombstones):
            return None
        if not self._cas(self.data_key, data_digest, value):
            return None
        self._call("set", self.sha_key, fingerprint.encode("ascii"))
        self._publish(fingerprint)
        return fingerprint

    def _cas(self, key: str, digest: str, value: bytes) -> bool:
        stored = self._script("set_if_unchanged", _SET_IF_UNCHANGED, [key, key], [digest, value])
        return int(stored) == 1

    def _publish(self, fingerprint: str) -> None:
        try:
            self._call("publish", self.channel, fingerprint)
        except StoreUnavailable:
            pass  # the data landed; subscribers still see it at their safety poll

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        if self.cluster:    # the two keys live in different slots: no one atomic step
            self._call("set", self.sha_key, fingerprint.encode("ascii"))
            return fingerprint
        digest = snapshot.cas_token if isinstance(snapshot.cas_token, str) \
            else _digest(snapshot.value)
        # only while the data is still what the fingerprint was computed from: a write that
        # landed since set its own, and must not be overwritten with an older one
        settled = self._script("set_if_unchanged", _SET_IF_UNCHANGED, [self.data_key, self.sha_key],
                               [digest, fingerprint])
        return fingerprint if int(settled) == 1 else None

    # -- leader lease -------------------------------------------------------------------------

    def lease_read(self) -> Lease | None:
        return Lease.decode(_bytes(self._call("get", self.lease_key)))

    def lease_acquire(self, candidate: Lease, ttl: float, vacant: bool = True) -> LeaseAnswer:
        mine = self._stamped(candidate, ttl)
        return self._lease_answer(
            self._script("acquire", _LEASE_ACQUIRE, [self.lease_key],
                         [candidate.holder, mine.encode(), self._ttl_ms(ttl),
                          "1" if vacant else "0"]), ttl)

    def lease_renew(self, lease: Lease, ttl: float) -> LeaseAnswer:
        mine = self._stamped(lease, ttl)
        return self._lease_answer(
            self._script("renew", _LEASE_RENEW, [self.lease_key],
                         [lease.holder, mine.encode(), self._ttl_ms(ttl)]), ttl)

    def lease_release(self, lease: Lease) -> bool:
        return int(self._script("release", _LEASE_RELEASE, [self.lease_key],
                                [lease.holder, self._ttl_ms(released_seconds(lease))])) == 1

    @staticmethod
    def _ttl_ms(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    @staticmethod
    def _lease_answer(reply: Any, ttl: float) -> LeaseAnswer:
        code, raw = int(reply[0]), _bytes(reply[1]) or None
        held = code in (1, 2)
        # Redis expires with millisecond precision from when it ran the script, which is
        # after the caller's start: the whole ttl is ours, less a margin for clock rate
        return LeaseAnswer(held, Lease.decode(raw), max(0.0, ttl - 0.1) if held else 0.0,
                           retaken=code == 2)

    @staticmethod
    def _stamped(lease: Lease, ttl: float) -> Lease:
        return lease.stamped(ttl)

    # -- push ---------------------------------------------------------------------------------

    def notifier(self, wake: Wake) -> RedisNotifier:
        """A subscriber to this store's channel on a client of its own; ``wake(full)`` runs
        on its thread (the store thread's client is never touched from there)."""
        return RedisNotifier(self._notifier_client, self.channel, wake,
                             owns_client=not (self._given and self.cluster))

    def _notifier_client(self) -> Any:
        given: Any = self._client_or_factory
        if not self._given:    # a URL: a fresh client, same settings (never the URL text)
            return self._subscriber() if self._subscriber is not None else given()
        if self.cluster:
            return given       # a given cluster client: redis-py's pubsub has its own connection
        redis = _redis()
        pool = given.connection_pool
        return redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs))

    # -- plumbing -----------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._client is None:
            factory = self._client_or_factory
            assert callable(factory)
            try:
                self._client = factory()
            except Exception as err:  # a cluster asks for its slot map when built
                raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        return self._client

    def _script(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        client = self._connect()
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = client.register_script(source)
        try:
            return script(keys=keys, args=args)
        except Exception as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    def _call(self, method: str, *args: Any) -> Any:
        client = self._connect()
        try:
            return getattr(client, method)(*args)
        except Exception as err:  # redis-py raises connection, timeout and response errors
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass


class RedisNotifier:
    """Subscribes to a store's channel on its own thread; ``wake`` on every message.

    A lost connection is retried with capped, jittered exponential backoff;
    once subscribed again ``wake(True)`` asks for a full read, since messages
    published meanwhile are gone. ``close()`` returns within about 0.2 s.
    """

    POLL = 0.2          # s, longest blocking read: bounds how long close() waits
    BACKOFF_MAX = 5.0   # s

    def __init__(self, connect: Callable[[], Any], channel: str, wake: Wake, *,
                 owns_client: bool = True) -> None:
        self._connect = connect
        self._owns_client = owns_client   # False: the application's own client, not ours
        self._client: Any = None
        self._channel = channel
        self._wake = wake
        self._stop = threading.Event()
        self._log = RateLimitedLog(store_log)
        self.connected = False
        self.reconnects = 0
        self.messages = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None    # made by start(), off the worker's start

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fh-prefork-redis-push",
                                        daemon=True)
        start_without_signals(self._thread)

    def _subscribe(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        pubsub = self._client.pubsub()
        pubsub.subscribe(self._channel)
        return pubsub

    def _run(self) -> None:
        try:
            self._listen()
        finally:  # the thread owns the client it made: closed by it, never under it
            client, self._client = self._client, None
            if client is not None and self._owns_client:
                try:
                    client.close()
                except Exception:
                    pass

    def _listen(self) -> None:
        delay = 0.05
        first = True
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._subscribe()
                # the subscribe confirmation proves the subscription is live
                deadline = time.monotonic() + 5
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=self.POLL)
                    if msg is not None and msg.get("type") == "subscribe":
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("no subscribe confirmation")
                if self._stop.is_set():
                    break
                self.connected = True
                self._log.recovered("fh_prefork: change notifications on Redis channel %s "
                                    "resumed", self._channel)
                if not first:
                    self.reconnects += 1
                    self._wake(True)   # what was published while we were away is lost
                else:   # a write between the store's first read and this subscription
                    self._wake(False)  # was published to nobody: one cheap token check
                first = False
                delay = 0.05
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=self.POLL)
                    if msg is not None and msg.get("type") in ("message", "smessage"):
                        self.messages += 1
                        self._wake(False)
            except Exception as err:  # lost, refused or denied: back off, subscribe again
                self.connected = False
                self.last_error = f"{type(err).__name__}: {err}"
                self._log.failure("fh_prefork: no change notifications on Redis channel %s (%s);"
                                  " the store polls at its refresh period until they resume",
                                  self._channel, self.last_error)
                first = False
                self._stop.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.BACKOFF_MAX)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        wait_for_end(thread, 2.0)

    def status(self) -> PushStatus:
        return {"connected": self.connected, "reconnects": self.reconnects,
                "messages": self.messages, "last_error": self.last_error}


class RedisSessionStore(SessionStore):
    """Feature states shared through Redis or Valkey, interoperable with the JavaScript store.

    ``connection_or_client``: a URL as redis-py reads it (``redis://[[user]:password@]host:port/db``,
    ``rediss://...``, ``unix:///path``), ``redis+cluster://host:port`` (or ``rediss+cluster://``)
    for Redis Cluster, or a redis-py ``Redis`` / ``RedisCluster`` client.
    """

    SOURCE = SOURCE

    def __init__(self, connection_or_client: str | Any, config: FeatureHubConfig,
                 opts: RedisSessionStoreOptions | Mapping[str, Any] | None = None, *,
                 start: bool = True) -> None:
        options = RedisSessionStoreOptions.coerce(opts)
        api_key = config.get_api_keys()[0]
        require_client_evaluated(api_key)
        data_key = f"{options.prefix}_{environment_id(api_key)}"
        if isinstance(connection_or_client, str):
            description = describe_url(connection_or_client)
            url = connection_or_client
            cluster = split_url(url)[1]
            client: Any = lambda: make_client(url, options, subscriber=False)  # noqa: E731
            subscriber: Callable[[], Any] | None = lambda: make_client(url, options)  # noqa: E731
        else:
            client = connection_or_client
            check_client(client)
            cluster = is_cluster_client(client)
            description = describe_client(client)
            subscriber = None
        backend = RedisBackend(client, data_key, f"{description} key {data_key}", cluster,
                               subscriber=subscriber)
        super().__init__(backend, config, options, start=start)
