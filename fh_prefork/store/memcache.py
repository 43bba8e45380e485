"""memcached backend and ``MemcacheSessionStore``.

Key layout, shared with the FeatureHub Ruby and JavaScript stores:

* ``{prefix}_{environment_id}``      JSON array of feature states (the CAS target)
* ``{prefix}_{environment_id}_sha``  hex SHA-256 fingerprint of the array (change detection)
* ``{prefix}_{environment_id}_deleted`` tombstones (fh_prefork only): JSON array of
  ``{"id", "key", "version", "deleted_at"}``, written before the data
* ``{prefix}_{environment_id}_leader`` leader lease (leader mode only): JSON
  ``{"holder", "host", "pid", "expires_at"}``, created with ``add`` and an
  expiry, renewed by its holder with ``gets`` + ``cas``, deleted only by it

TLS (memcached ``-Z``): ``memcache://host:port?ca=/ca.pem[&cert=/c.pem&key=/c.key]``, or
``?tls=1`` for the system's CAs. The server's certificate is always verified and
its name checked against the host in the URL (``check_hostname=false`` turns
only the name check off, for a certificate that names no such host).

Values are written as raw UTF-8 JSON bytes with memcached flags 0. The client
is built without a serde, so nothing read from memcached is ever deserialized
by pymemcache: bytes in, ``json.loads`` (after a bounded inflate for Dalli's
zlib values, recognised by their header) in our own code, nothing else.
"""

from __future__ import annotations

import functools
import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from featurehub_sdk.featurehub_config import FeatureHubConfig

from .. import features as fs
from ..apikey import environment_id, require_client_evaluated
from .backend import Snapshot, StoreUnavailable, store_keys
from .core import SessionStore
from .lease import Lease, LeaseAnswer, released_seconds
from .options import MemcacheSessionStoreOptions

SOURCE = "memcache-store"
SCHEME = "memcache://"
#: bytes of an item memcached spends beyond the value (header, key, flags): kept free
ITEM_HEADROOM = 1024
#: what a released lease record holds: no lease decodes from it, so any acquirer takes it
_RELEASED = b"released"

Server = tuple[str, int]


@dataclass(frozen=True)
class TlsSettings:
    """TLS to memcached: CA file (None: the system's), optional client certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the server; ``ValueError`` naming a bad file.

        Built once per process (parsing checks the files, the client then uses
        them); a new worker builds its own, so rotated files are picked up.
        """
        return _tls_context(self, os.getpid())

    def _build(self) -> ssl.SSLContext:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"memcache TLS {name} file {path!r} does not exist")
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as err:
            raise ValueError(f"memcache TLS files unusable: {err}") from None
        context.check_hostname = self.check_hostname  # verification itself stays required
        return context


@functools.lru_cache(maxsize=8)
def _tls_context(settings: TlsSettings, pid: int) -> ssl.SSLContext:
    return settings._build()


_TLS_PARAMS = ("tls", "ca", "cert", "key", "check_hostname")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_url(connection: str) -> tuple[list[Server], TlsSettings | None]:
    """Servers and TLS settings of ``memcache://host:port[,host:port][?ca=...&cert=...]``."""
    text, _, query = connection.strip().partition("?")
    return parse_servers(text), _parse_tls(connection, query)


def _parse_tls(connection: str, query: str) -> TlsSettings | None:
    if not query:
        return None
    one: dict[str, str] = {}
    for part in query.split("&"):  # not parse_qs: a '+' in a path stays a '+'
        name, _, value = part.partition("=")
        if name not in _TLS_PARAMS or name in one:
            raise ValueError(f"memcache address {connection!r}: unknown or repeated parameter "
                             f"{name!r}; known: {', '.join(_TLS_PARAMS)}")
        one[name] = unquote(value)

    def flag(name: str, default: bool) -> bool:
        value = one.get(name, "").lower()
        if not value:
            return default
        if value not in _TRUE + _FALSE:
            raise ValueError(f"memcache address {connection!r}: {name}={value!r}, "
                             "expected true or false")
        return value in _TRUE

    wants_files = any(one.get(name) for name in ("ca", "cert", "key"))
    if not flag("tls", wants_files):
        if wants_files or "check_hostname" in one:
            raise ValueError(f"memcache address {connection!r}: TLS parameters with tls=false")
        return None
    if one.get("key") and not one.get("cert"):
        raise ValueError(f"memcache address {connection!r}: key= needs cert=")
    for name in ("ca", "cert", "key"):
        if one.get(name) and not one[name].startswith("/"):
            raise ValueError(f"memcache address {connection!r}: {name}= must be an absolute path")
    tls = TlsSettings(one.get("ca") or None, one.get("cert") or None, one.get("key") or None,
                      flag("check_hostname", True))
    tls.context()  # refuse missing or unusable files now, in the master
    return tls


def parse_servers(connection: str) -> list[Server]:
    """``host:port[,host:port]``, optionally after ``memcache://``; the port defaults to 11211.

    TLS parameters after ``?`` are checked and left to :func:`parse_url`.
    """
    text, _, query = connection.strip().partition("?")
    if query:
        _parse_tls(connection, query)
    if text.startswith(SCHEME):
        text = text[len(SCHEME):]
    elif "://" in text:
        raise ValueError(f"memcache address {connection!r}: unknown scheme, expected "
                         f"'{SCHEME}host:port[,host:port]'")
    text = text.rstrip("/")
    servers: list[Server] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"memcache address {connection!r}: empty server entry")
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"memcache address {connection!r}: bad host in {part!r}")
        try:
            port = int(port_text) if port_text else 11211
        except ValueError:
            raise ValueError(f"memcache address {connection!r}: bad port in {part!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"memcache address {connection!r}: port {port} out of range")
        servers.append((host, port))
    return servers


def make_client(servers: list[Server], options: MemcacheSessionStoreOptions,
                tls: TlsSettings | None = None) -> Any:
    """A pymemcache client with bounded timeouts and no serde (bytes only); TLS if given."""
    # imported here: users of the embedded store or Redis never load pymemcache
    from pymemcache.client.base import Client
    from pymemcache.client.hash import HashClient

    common: dict[str, Any] = dict(connect_timeout=options.connect_timeout,
                                  timeout=options.timeout, no_delay=True, default_noreply=False)
    if tls is not None:
        common["tls_context"] = tls.context()
    if len(servers) == 1:
        return Client(servers[0], **common)
    return HashClient(servers, retry_attempts=1, retry_timeout=0, dead_timeout=5,
                      ignore_exc=False, **common)


def check_client(client: Any) -> None:
    """Refuse a client whose serde would turn cached bytes into Python objects.

    Ruby's Dalli marks its JSON values with flags 1, the same flag pymemcache's
    object serde reads as "serialized Python object": a deserializing client
    would load and run data written by any process that can reach memcached.
    Bytes must come back untouched.
    """
    from pymemcache.client.hash import HashClient

    serdes = [getattr(client, "serde", None)]
    if isinstance(client, HashClient):
        serde = client.default_kwargs.get("serde")
        if serde is not None or client.default_kwargs.get("deserializer") is not None:
            serdes.append(serde or client)  # a deserializer was given: refuse below
    for serde in serdes:
        if serde is None:
            continue
        probe = b'["fh-prefork-probe"]'
        try:
            untouched = all(serde.deserialize("k", probe, flags) == probe for flags in (0, 1, 2))
        except Exception:
            untouched = False
        if not untouched:
            raise ValueError("the memcache client deserializes values (a serde or deserializer "
                             "is set); give fh_prefork a client without one: values are JSON "
                             "bytes and nothing read from a shared cache may be deserialized")


class MemcacheBackend:
    """Moves the store's bytes in and out of memcached; every call bounded by timeouts."""

    source = SOURCE

    def __init__(self, client: Any, data_key: str, description: str) -> None:
        self._client = client
        self.data_key, self.sha_key, self.tombstones_key, self.lease_key = store_keys(data_key)
        self.description = description

    def item_limit(self) -> int | None:
        """The largest value every server stores: ``item_size_max`` (``stats settings``) less
        ``ITEM_HEADROOM``; None when a server does not say (a proxy without ``stats``).

        Asked once, by the store thread as it starts (or at open, for a value the limit
        could matter to: see ``SessionStore._decode``), never per write.
        ``StoreUnavailable`` when a server cannot be reached: asked again later.
        """
        from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

        clients = list(getattr(self._client, "clients", {}).values()) or [self._client]
        limits = []
        for client in clients:
            try:
                stats = self._call(client.stats, "settings")
            except StoreUnavailable as err:
                if isinstance(err.__cause__, (MemcacheClientError, MemcacheServerError)):
                    return None     # it answered, with an error: it does not say
                raise
            size = stats.get(b"item_size_max")
            if not isinstance(size, int) or size <= ITEM_HEADROOM:
                return None
            limits.append(size - ITEM_HEADROOM)
        return min(limits) if limits else None

    def change_token(self) -> str | None:
        raw = self._call(self._client.get, self.sha_key)
        return fs.decode_fingerprint(raw)

    def read(self) -> Snapshot:
        # data (with its fingerprint) first, tombstones second (see backend.py's ordering
        # contract), in one round trip: memcached reads a multi-get's keys in the order given,
        # and pymemcache's HashClient asks the data key's server first (a proxy that splits
        # multi-gets, such as mcrouter, may not: docs/stores.md says what that costs)
        found = self._call(self._client.gets_many,
                           [self.data_key, self.sha_key, self.tombstones_key])
        value, cas = found.get(self.data_key, (None, None))
        sha_raw, _ = found.get(self.sha_key, (None, None))
        tombstones, tombstones_cas = found.get(self.tombstones_key, (None, None))
        return Snapshot(value=value, cas_token=cas,
                        change_token=fs.decode_fingerprint(sha_raw),
                        tombstones=tombstones, tombstones_cas=tombstones_cas)

    def write(self, value: bytes, fingerprint: str, previous: Snapshot,
              tombstones: bytes | None = None) -> str | None:
        if tombstones is not None and not self._store(self.tombstones_key, tombstones,
                                                      previous.tombstones is None,
                                                      previous.tombstones_cas):
            return None
        if not self._store(self.data_key, value, previous.value is None, previous.cas_token):
            return None
        self._set_fingerprint(value, fingerprint)
        return fingerprint

    #: Attempts at setting the fingerprint while other writers race for it; past them the
    #: next full read (a verify at the latest) repairs it.
    FINGERPRINT_ATTEMPTS = 5

    def _set_fingerprint(self, value: bytes, fingerprint: str) -> bool:
        """Set ``_sha`` for ``value``, only while the data still is ``value``.

        The two keys are written one after the other, so a writer delayed
        between them would otherwise set its fingerprint over a newer
        writer's (the data stays whole, but a reader whose token equals the
        stale fingerprint misses the newer state until a full read). Read
        the fingerprint's CAS token first, then check the data, then
        compare-and-set: a newer writer in between makes the CAS fail, and
        the data check then leaves the fingerprint to it.
        """
        encoded = fingerprint.encode("ascii")
        for _ in range(self.FINGERPRINT_ATTEMPTS):
            current, cas = self._call(self._client.gets, self.sha_key)
            if self._call(self._client.get, self.data_key) != value:
                return False        # moved on: the newer writer sets its own
            if current is None:
                stored = self._call(self._client.add, self.sha_key, encoded, noreply=False)
            else:
                stored = self._call(self._client.cas, self.sha_key, encoded, cas, noreply=False)
            if stored is True:
                return True
        return False

    def _store(self, key: str, value: bytes, absent: bool, cas: Any) -> bool:
        """add when it was absent, else compare-and-set: True only when the server stored it."""
        if absent:
            return self._call(self._client.add, key, value, noreply=False) is True
        # cas answers True (stored), False (exists: someone else wrote), None (not found)
        return self._call(self._client.cas, key, value, cas, noreply=False) is True

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        if snapshot.value is None or not self._set_fingerprint(snapshot.value, fingerprint):
            return None     # the data moved: the next tick reads it
        return fingerprint

    # -- leader lease -------------------------------------------------------------------------

    @staticmethod
    def _lease_expire(ttl: float) -> tuple[int, float]:
        """memcached's expiry in whole seconds, and how long a stored lease surely lives.

        memcached's clock ticks once a second, so an item stored with expiry E
        may vanish after E - 1 seconds: that is the window the holder may rely on.
        """
        expire = max(1, math.ceil(ttl))
        return expire, max(expire - 1.0, min(ttl, expire) / 2)

    def lease_read(self) -> Lease | None:
        return Lease.decode(self._call(self._client.get, self.lease_key))

    def lease_acquire(self, candidate: Lease, ttl: float, vacant: bool = True) -> LeaseAnswer:
        expire, valid_for = self._lease_expire(ttl)
        raw, cas = self._call(self._client.gets, self.lease_key)
        if raw is None:
            if not vacant:
                return LeaseAnswer(False, None)   # left to its last holder, who may renew
            mine = self._stamped(candidate, ttl)
            if self._call(self._client.add, self.lease_key, mine.encode(), expire=expire,
                          noreply=False) is True:
                return LeaseAnswer(True, mine, valid_for)
            raw, cas = self._call(self._client.gets, self.lease_key)
            if raw is None:
                return LeaseAnswer(False, None)
        current = Lease.decode(raw)
        if current is not None and current.holder != candidate.holder:
            return LeaseAnswer(False, current)
        if current is None and raw != _RELEASED and not vacant:
            return LeaseAnswer(False, None)       # junk: vacant, left alone likewise
        # ours already (a renewal that came late), released, or junk: take it by cas
        return self._cas_lease(candidate, ttl, cas, current)

    def lease_renew(self, lease: Lease, ttl: float) -> LeaseAnswer:
        raw, cas = self._call(self._client.gets, self.lease_key)
        if raw is None:   # vanished (evicted, memcached restarted): still ours, take it back
            expire, valid_for = self._lease_expire(ttl)
            mine = self._stamped(lease, ttl)
            if self._call(self._client.add, self.lease_key, mine.encode(), expire=expire,
                          noreply=False) is True:
                return LeaseAnswer(True, mine, valid_for, retaken=True)
            raw, cas = self._call(self._client.gets, self.lease_key)
            if raw is None:
                return LeaseAnswer(False, None)
        current = Lease.decode(raw)
        if current is not None and current.holder != lease.holder:
            return LeaseAnswer(False, current)
        return self._cas_lease(lease, ttl, cas, current, retaken=current is None)

    def lease_release(self, lease: Lease) -> bool:
        raw, cas = self._call(self._client.gets, self.lease_key)
        current = Lease.decode(raw)
        if current is None or current.holder != lease.holder:
            return False
        # memcached has no compare-and-delete: compare-and-set the released marker, which
        # every contender takes at once, for what was left of the lease; a lease that passed
        # to another process since our read has another cas and is left alone
        return self._call(self._client.cas, self.lease_key, _RELEASED, cas,
                          expire=max(1, math.ceil(released_seconds(lease))),
                          noreply=False) is True

    def _cas_lease(self, lease: Lease, ttl: float, cas: Any, current: Lease | None,
                   retaken: bool = False) -> LeaseAnswer:
        expire, valid_for = self._lease_expire(ttl)
        mine = self._stamped(lease, ttl)
        stored = self._call(self._client.cas, self.lease_key, mine.encode(), cas,
                            expire=expire, noreply=False)
        if stored is True:
            return LeaseAnswer(True, mine, valid_for, retaken)
        return LeaseAnswer(False, self.lease_read() if stored is False else None)

    @staticmethod
    def _stamped(lease: Lease, ttl: float) -> Lease:
        return lease.stamped(ttl)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as err:  # pymemcache raises socket, timeout and protocol errors
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err


class MemcacheSessionStore(SessionStore):
    """Feature states shared through memcached (the FeatureHub Ruby store's design, fixed).

    ``connection_or_client``: ``"host:port"``, ``"host:port,host2:port"``,
    ``"memcache://host:port[,host:port]"`` or a pymemcache client without a serde.
    """

    SOURCE = SOURCE

    def __init__(self, connection_or_client: str | Any, config: FeatureHubConfig,
                 opts: MemcacheSessionStoreOptions | Mapping[str, Any] | None = None, *,
                 start: bool = True) -> None:
        options = MemcacheSessionStoreOptions.coerce(opts)
        api_key = config.get_api_keys()[0]
        require_client_evaluated(api_key)
        data_key = f"{options.prefix}_{environment_id(api_key)}"
        if isinstance(connection_or_client, str):
            servers, tls = parse_url(connection_or_client)
            description = SCHEME + ",".join(f"{h}:{p}" for h, p in servers)
            if tls is not None:
                description += " (TLS)"
            client = make_client(servers, options, tls)
        else:
            check_client(connection_or_client)
            client = connection_or_client
            description = f"memcache client {type(client).__name__}"
        backend = MemcacheBackend(client, data_key, f"{description} key {data_key}")
        super().__init__(backend, config, options, start=start)
