"""The prefork master checks the store once at start, and says what is wrong in one line.

Without it a wrong Redis password, an ACL without ``@scripting`` or a missing
TLS client certificate start a server whose every worker quietly falls back to
its own Edge connection, each with a WARNING, the ACL case saying
"unreachable". The master asks the store what a worker will ask of it
(connect, authenticate, read, run the scripts, write and delete a probe key
under the prefix, publish, and subscribe when push is on) with the store's own timeouts, closes
every connection before any fork, and logs one ERROR line naming the setting
and what is wrong. It never refuses to start: workers keep serving from Edge.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

from ..settings import Settings
from .backend import store_keys
from .failure import UNREACHABLE, UNREADABLE, Failure, classify

log = logging.getLogger("fh_prefork.store")

SETTING = "FH_PREFORK_STORE"
#: seconds the probe key lives if the master dies between writing and deleting it
PROBE_SECONDS = 10
#: seconds to wait for a subscription's confirmation
SUBSCRIBE_WAIT = 2.0


class _Problem(Exception):
    """One check failed: ``failure`` says what, ``doing`` what the master was asking."""

    def __init__(self, doing: str, err: BaseException, failure: Failure | None = None) -> None:
        super().__init__(f"{doing}: {err}")
        self.doing, self.err = doing, err
        self.failure = failure or classify(err)


def _step(doing: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except Exception as err:
        raise _Problem(doing, err) from err


def check_store_at_start(settings: Settings, logger: logging.Logger | None = None
                         ) -> Failure | None:
    """Check ``settings.store`` once; log one line if it is not usable. Never raises.

    ERROR for what an operator must fix (authentication failed, forbidden,
    full, an unreadable certificate); WARNING for an unreachable store (it may
    simply start after the server). Returns what failed, None when usable.
    """
    out = logger or log
    url = settings.store
    if url in ("none", "default") or not url:
        return None
    started = time.monotonic()
    try:
        if url.startswith("memcache://"):
            _check_memcache(settings)
        elif url.startswith("file://"):
            _check_file(settings)
        else:
            from .redis import is_redis_url
            if is_redis_url(url):
                _check_redis(settings)
    except _Problem as problem:
        failure = problem.failure
        fallback = ("leader mode falls back to one Edge connection per worker"
                    if settings.edge_mode == "leader" else "workers serve from Edge only")
        level = logging.WARNING if failure.kind == UNREACHABLE else logging.ERROR
        out.log(level, "fh_prefork: %s=%s: %s (%s): %s; %s until it is fixed", SETTING,
                settings.store_display, failure.words, problem.doing, _said(problem.err),
                fallback)
        return failure
    except Exception as err:  # a bug here must not stop the server: say it and go on
        out.warning("fh_prefork: %s=%s: the start check failed: %s: %s", SETTING,
                    settings.store_display, type(err).__name__, err)
        return None
    out.info("fh_prefork: %s=%s checked at start in %.2f s", SETTING, settings.store_display,
             time.monotonic() - started)
    return None


#: the server's reply code that redis-py turns into an exception class and drops from the text
_REPLY_CODES = {"NoPermissionError": "NOPERM", "AuthenticationError": "WRONGPASS",
                "OutOfMemoryError": "OOM"}


def _said(err: BaseException) -> str:
    """The error as the server said it: ``NOPERM this user has no permissions to run...``."""
    name = type(err).__name__
    code = _REPLY_CODES.get(name)
    if code is not None:
        return f"{code} {err}"
    return f"{name}: {err}" if name not in ("OSError", "ValueError") else str(err)


def _data_key(settings: Settings) -> str:
    return f"{settings.prefix}_{settings.environment_id}"


def _check_memcache(settings: Settings) -> None:
    from .memcache import make_client, parse_url
    from .options import MemcacheSessionStoreOptions

    servers, tls = _step("reading the TLS files", parse_url, settings.store)
    options = MemcacheSessionStoreOptions(connect_timeout=settings.memcache_timeout,
                                          timeout=settings.memcache_timeout)
    client = _step("opening the client", make_client, servers, options, tls)
    keys = store_keys(_data_key(settings))
    probe = f"{keys.data}_probe_{os.getpid()}"[:250]
    try:
        _step("reading the data key", client.gets_many, [keys.data, keys.sha])
        _step("writing a probe key", client.set, probe, b"probe", expire=PROBE_SECONDS,
              noreply=False)
        _step("deleting the probe key", client.delete, probe, noreply=False)
    finally:
        client.close()


def _check_redis(settings: Settings) -> None:
    from .options import RedisSessionStoreOptions
    from .redis import make_client

    _check_redis_tls_files(settings.store)
    options = RedisSessionStoreOptions(connect_timeout=settings.redis_timeout,
                                       timeout=settings.redis_timeout)
    client = _step("opening the client", make_client, settings.store, options)
    keys = store_keys(_data_key(settings))
    probe = f"{keys.data}_probe_{os.getpid()}"
    try:
        _step("connecting and authenticating", client.ping)
        _step("reading the data key", client.get, keys.data)
        # what the store's scripts do, through the same EVALSHA / SCRIPT LOAD path; one key
        # per script, as a cluster needs
        read = client.register_script("return redis.call('GET', KEYS[1])")
        _step("running a script (EVALSHA) on the data key", read, keys=[keys.data], args=[])
        write = client.register_script(
            "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); "
            "return redis.call('DEL', KEYS[1])")
        _step("writing a probe key from a script (EVALSHA)", write, keys=[probe],
              args=[b"probe", PROBE_SECONDS * 1000])
        _check_channel(client, _data_key(settings), subscribe=settings.push == "on")
    finally:
        client.close()


def _check_redis_tls_files(url: str) -> None:
    """A client certificate, key or CA file named in a ``rediss://`` URL must be readable:
    redis-py would say ``FileNotFoundError`` at each connect, which reads as unreachable."""
    from redis.connection import parse_url

    from .redis import split_url

    kwargs: dict[str, Any] = parse_url(split_url(url)[0])  # type: ignore[no-untyped-call]
    for name in ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs"):
        path = kwargs.get(name)
        if isinstance(path, str) and path and not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "is not readable"
            raise _Problem(f"reading the TLS files ({name})",
                           OSError(errno.ENOENT, f"{path} {why}"),
                           Failure(UNREADABLE, "unreadable"))


def _check_channel(client: Any, channel: str, subscribe: bool) -> None:
    """The write script PUBLISHes every write on the store's channel (push or not); push
    also SUBSCRIBEs. A message without a fingerprint wakes a listening store for one cheap
    token check, nothing more."""
    _step("publishing (PUBLISH) on the store's channel", client.publish, channel, b"")
    if not subscribe:
        return
    pubsub = _step("subscribing (SUBSCRIBE) to the store's channel", client.pubsub)
    try:
        _step("subscribing (SUBSCRIBE) to the store's channel", pubsub.subscribe, channel)
        deadline = time.monotonic() + SUBSCRIBE_WAIT
        while True:
            msg = _step("subscribing (SUBSCRIBE) to the store's channel", pubsub.get_message,
                        timeout=0.1)
            if msg is not None and msg.get("type") == "subscribe":
                return
            if time.monotonic() >= deadline:
                raise _Problem("subscribing (SUBSCRIBE) to the store's channel",
                               TimeoutError("no subscribe confirmation"))
    finally:
        try:
            pubsub.close()
        except Exception:
            pass


def _check_file(settings: Settings) -> None:
    from .file import parse_file_url

    folder = _step("reading the folder", parse_file_url, settings.store)
    if not folder.exists():
        return      # created by runtime.check() in the master before this; else by workers
    probe = folder / f".probe-{os.getpid()}"
    try:
        fd = _step("writing a probe file", os.open, probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                   0o600)
        try:
            _step("writing a probe file", os.write, fd, b"x" * 4096)
            _step("writing a probe file", os.fsync, fd)
        finally:
            os.close(fd)
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    if os.statvfs(folder).f_bavail == 0:
        raise _Problem("checking free space", OSError(errno.ENOSPC, "No space left on device"))
