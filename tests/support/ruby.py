"""Drive the FeatureHub Ruby store's protocol (tests/support/ruby_store.rb, real Dalli) from tests.

``RubyStore`` runs one long-lived ``ruby`` process, like one Ruby app process with a
``MemcacheSessionStore``: its internal fingerprint lives as long as the process and is
refreshed only by ``refresh()`` (the timer tick) or by ``refresh_seconds``.

The raw helpers read memcached the way Dalli does (flags: 0x1 serialized, 0x2 zlib) with
code of their own, so what a test says the store holds does not depend on the code under
test.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pymemcache.client.base import Client

from .procs import kill_tree

SCRIPT = Path(__file__).with_name("ruby_store.rb")

#: Dalli's memcached flag bits
SERIALIZED = 0x1
COMPRESSED = 0x2

#: Bound on what a compressed value may inflate to here (memcached's item limit in the tests)
MAX_INFLATED = 8 * 1024 * 1024


def ruby_missing() -> str | None:
    """Why the Ruby side cannot run here (no ruby, or no dalli gem), or None when it can."""
    ruby = shutil.which("ruby")
    if ruby is None:
        return "ruby is not installed (scripts/test installs Debian's ruby and ruby-dalli)"
    try:
        done = subprocess.run([ruby, "-e", 'require "dalli"'], capture_output=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"ruby does not run: {err}"
    if done.returncode != 0:
        return ("the dalli gem cannot be loaded (scripts/test installs ruby-dalli): "
                + done.stderr.decode(errors="replace").strip()[-300:])
    return None


class RubyStoreError(AssertionError):
    """The Ruby process did not answer in time, or exited."""


class RubyStore:
    """One Ruby store process on ``servers`` and ``data_key``; killed by pid on exit."""

    def __init__(self, servers: str, data_key: str, *, retries: int = 10,
                 backoff_ms: float = 500, refresh_seconds: float = 0,
                 set_delay_ms: float = 0, observe_overwrites: bool = False,
                 log_path: str | Path | None = None, timeout: float | None = None) -> None:
        self.servers = servers
        self.data_key = data_key
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.refresh_seconds = refresh_seconds
        self.set_delay_ms = set_delay_ms
        self.observe_overwrites = observe_overwrites
        self.log_path = Path(log_path) if log_path else Path(
            tempfile.mkdtemp(prefix="fh-ruby-")) / "ruby_store.log"
        # a write may sleep the backoff after each of its attempts: bound every command by that
        self.timeout = (timeout if timeout is not None
                        else retries * backoff_ms / 1000 + set_delay_ms / 1000 + 10)
        self.info: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        ruby = shutil.which("ruby") or "ruby"
        return [ruby, str(SCRIPT), "--servers", self.servers, "--key", self.data_key,
                "--retries", str(self.retries), "--backoff-ms", str(self.backoff_ms),
                "--refresh-seconds", str(self.refresh_seconds),
                "--set-delay-ms", str(self.set_delay_ms),
                *(["--observe-overwrites"] if self.observe_overwrites else [])]

    def start(self, timeout: float = 20.0) -> RubyStore:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, bufsize=0,
                                         start_new_session=True)
        try:
            self.info = self._answer(self.proc, timeout)
        except BaseException:
            self.close()
            raise
        return self

    # -- commands -------------------------------------------------------------------------

    def request(self, payload: Mapping[str, Any], timeout: float | None = None
                ) -> dict[str, Any]:
        """Send one command, wait (bounded) for its one-line answer."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.stdin is None:
                raise RubyStoreError("the Ruby store is not running")
            try:
                proc.stdin.write(json.dumps(payload).encode() + b"\n")
                proc.stdin.flush()
            except OSError as err:
                raise RubyStoreError(f"the Ruby store is gone: {err}; log:\n{self.log()}"
                                     ) from None
            return self._answer(proc, self.timeout if timeout is None else timeout)

    def update(self, feature: Mapping[str, Any]) -> dict[str, Any]:
        """process_update: {"ok", "result": written|unchanged|exhausted, "attempts", ...}.

        With ``observe_overwrites`` a written answer adds "overwrote": the data key changed
        between this write's read and its set, so the set overwrote someone's write.
        """
        return self.request({"cmd": "update", "feature": feature})

    def updates(self, features: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """process_updates (a whole ``features`` event)."""
        return self.request({"cmd": "updates", "features": list(features)})

    def delete(self, fid: str) -> dict[str, Any]:
        return self.request({"cmd": "delete", "id": fid})

    def refresh(self) -> dict[str, Any]:
        """One refresh-timer tick: adopt the store's fingerprint if it changed."""
        return self.request({"cmd": "refresh"})

    def read(self) -> list[dict[str, Any]]:
        """The array the Ruby store reads from the data key."""
        answer = self.request({"cmd": "read"})
        if not answer.get("ok"):
            raise RubyStoreError(f"read failed: {answer}")
        return list(answer["features"])

    # -- process --------------------------------------------------------------------------

    def _answer(self, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RubyStoreError(f"the Ruby store did not answer within {timeout:.1f} s; "
                                     f"log:\n{self.log()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RubyStoreError(f"the Ruby store exited ({proc.poll()}); "
                                     f"log:\n{self.log()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Ask the process to quit; kill it (and anything it started) by pid regardless."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self._lock.acquire(timeout=1):   # not while a command is half written
            try:
                if proc.stdin is not None:
                    proc.stdin.write(b'{"cmd":"quit"}\n')
                    proc.stdin.close()
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            finally:
                self._lock.release()
        kill_tree(proc.pid)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> RubyStore:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- memcached as Dalli sees it -------------------------------------------------------------

class _Untouched:
    """A pymemcache serde that hands back (bytes, flags) and never deserializes anything."""

    def serialize(self, key: str, value: bytes) -> tuple[bytes, int]:
        return value, 0

    def deserialize(self, key: str, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


def raw_client(address: str) -> Any:
    """A pymemcache client on ``host:port`` whose get answers ``(value bytes, flags)``."""
    host, _, port = address.replace("memcache://", "").rpartition(":")
    return Client((host, int(port)), serde=_Untouched(), connect_timeout=1, timeout=1)


def raw_item(address: str, key: str) -> tuple[bytes, int] | None:
    """``(value bytes, flags)`` of ``key`` on ``host:port``; None when absent."""
    client = raw_client(address)
    try:
        item: tuple[bytes, int] | None = client.get(key)
    finally:
        client.close()
    return item


def inflate(value: bytes, limit: int = MAX_INFLATED) -> bytes:
    """zlib-inflate at most ``limit`` bytes; more is an error, not a memory blow-up."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(value, limit)
    if inflater.unconsumed_tail:
        raise ValueError(f"compressed value inflates past {limit} bytes")
    return out


def decode_item(value: bytes, flags: int) -> Any:
    """The Ruby store's reading: inflate (0x2), JSON-load (0x1), then JSON.parse a string."""
    if flags & COMPRESSED:
        value = inflate(value)
    decoded: Any = json.loads(value)
    if isinstance(decoded, str):  # the JSON serializer's string holding the JSON array
        decoded = json.loads(decoded)
    return decoded


def stored_array(address: str, data_key: str) -> list[dict[str, Any]] | None:
    """The feature array under ``data_key``, in stored order (None: absent or unreadable)."""
    item = raw_item(address, data_key)
    if item is None:
        return None
    try:
        value = decode_item(*item)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def array_fingerprint(features: Iterable[Mapping[str, Any]]) -> str:
    """The Ruby store's fingerprint: SHA-256 hex of id:version joined by | in array order."""
    text = "|".join(f"{f['id']}:{int(f.get('version') or 0)}" for f in features)
    return hashlib.sha256(text.encode()).hexdigest()


def sorted_fingerprint(features: Iterable[Mapping[str, Any]]) -> str:
    """The same over the array sorted by id (what the JavaScript store writes)."""
    return array_fingerprint(sorted(features, key=lambda f: str(f["id"])))
