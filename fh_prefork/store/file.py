"""Embedded backend: one file per prefix and environment, on this host only.

Writers take an exclusive ``fcntl`` lock on a sibling lock file, check that the
data is still what they read (compare-and-set), write a temporary file, fsync
it and rename it over the data file. Readers never lock: a rename is atomic, so
they see the old file or the new one, never a torn one. The lock dies with its
holder, so a writer killed with SIGKILL never blocks the others.

The change token is the file's inode, size and mtime in nanoseconds: an idle
refresh tick costs one ``stat()``. Each write sets the new file's mtime past
the old one's, so two writes inside one clock tick still differ.

Nobody else on the host may inject flags: the folder must be ours and mode
0700, the files ours and not writable by others, or the store refuses them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from . import faults
from .backend import Snapshot, StoreUnavailable
from .core import SessionStore, environment_id, require_client_evaluated
from .options import FileSessionStoreOptions, validate_key

SOURCE = "file-store"
SCHEME = "file://"
#: Longest wait for the write lock; holders keep it for one small write only.
LOCK_TIMEOUT = 2.0


def default_directory() -> Path:
    """A per-user runtime folder: ``$XDG_RUNTIME_DIR``, else ``/dev/shm``, else the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "fh-prefork"
    uid = os.geteuid()
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path("/dev/shm") / f"fh-prefork-{uid}"
    return Path(tempfile.gettempdir()) / f"fh-prefork-{uid}"


def parse_file_url(url: str) -> Path:
    """``file:///abs/path`` -> ``/abs/path`` (a folder)."""
    if not url.startswith(SCHEME):
        raise ValueError(f"file store URL {url!r} must start with {SCHEME}")
    path = url[len(SCHEME):]
    if not path.startswith("/"):
        raise ValueError(f"file store URL {url!r} must hold an absolute path: file:///path")
    return Path(path)


def ensure_private_directory(directory: Path) -> Path:
    """Create the folder with mode 0700, or check an existing one is ours and private."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create store folder {directory}: {err}") from err
    st = os.stat(directory, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"store folder {directory} is not a folder")
    _check_owned(directory, st, "folder")
    return directory


def _check_owned(path: Path, st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise ValueError(f"store {what} {path} is owned by uid {st.st_uid}, not by this user "
                         f"(uid {os.geteuid()}): refusing it, another user could inject flags")
    if st.st_mode & 0o022:
        raise ValueError(f"store {what} {path} is writable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):o}): refusing it, "
                         f"fix with chmod go-w {path}")


def _token(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class FileBackend:
    """Moves the store's bytes in and out of one private file."""

    source = SOURCE

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = ensure_private_directory(directory)
        self.path = self.directory / f"{validate_key(name)}.json"
        self.lock_path = self.directory / f"{name}.lock"
        self.description = f"file://{self.path}"
        self._lock_fd = -1
        for existing in (self.path, self.lock_path):
            try:
                _check_owned(existing, os.stat(existing, follow_symlinks=False), "file")
            except FileNotFoundError:
                pass
        self._remove_stale_temporaries()

    def change_token(self) -> str | None:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreUnavailable(f"cannot stat {self.path}: {err}") from err
        return _token(st)

    def read(self) -> Snapshot:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return Snapshot(value=None)
        except OSError as err:
            raise StoreUnavailable(f"cannot open {self.path}: {err}") from err
        try:
            st = os.fstat(fd)
            try:
                _check_owned(self.path, st, "file")
            except ValueError as err:
                raise StoreUnavailable(str(err)) from None
            with os.fdopen(fd, "rb", closefd=False) as f:
                value = f.read()
        except OSError as err:
            raise StoreUnavailable(f"cannot read {self.path}: {err}") from err
        finally:
            os.close(fd)
        token = _token(st)
        return Snapshot(value=value, cas_token=(token, value), change_token=token)

    def write(self, value: bytes, fingerprint: str, previous: Snapshot) -> str | None:
        with self._locked():
            current = self.read()
            if current.value != previous.value:  # compare the bytes: exact, no token aliasing
                return None
            old_mtime = 0
            if current.change_token is not None:
                old_mtime = int(current.change_token.rsplit(":", 1)[1])
            return self._replace(value, old_mtime)

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        return snapshot.change_token

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _remove_stale_temporaries(self, older_than: float = 60.0) -> None:
        """Temporary files left by writers killed mid-write; harmless, but not forever."""
        cutoff = time.time() - older_than
        for tmp in self.directory.glob(".tmp-*"):
            try:
                if tmp.lstat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                pass

    def _replace(self, value: bytes, old_mtime_ns: int) -> str:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
                f.flush()
                os.fsync(f.fileno())
            mtime = max(time.time_ns(), old_mtime_ns + 1)
            os.utime(tmp, ns=(mtime, mtime))
            faults.hit("between_data_and_fingerprint")
            os.rename(tmp, self.path)
        except OSError as err:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StoreUnavailable(f"cannot write {self.path}: {err}") from err
        return _token(os.stat(self.path, follow_symlinks=False))

    def _locked(self) -> _FileLock:
        if self._lock_fd < 0:
            try:
                self._lock_fd = os.open(self.lock_path,
                                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        0o600)
                _check_owned(self.lock_path, os.fstat(self._lock_fd), "lock file")
            except (OSError, ValueError) as err:
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)
                    self._lock_fd = -1
                raise StoreUnavailable(f"cannot open lock {self.lock_path}: {err}") from err
        return _FileLock(self._lock_fd, self.lock_path)


class _FileLock:
    """Exclusive flock with a deadline: a wedged holder cannot stall the store thread."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path

    def __enter__(self) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = 0.0005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StoreUnavailable(f"cannot lock {self._path}: {err}") from err
            if time.monotonic() >= deadline:
                raise StoreUnavailable(f"lock {self._path} held for over {LOCK_TIMEOUT} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class FileSessionStore(SessionStore):
    """Feature states shared by the processes of one host through a private file.

    ``path``: a folder (``None`` for the per-user default) or ``file:///folder``.
    """

    SOURCE = SOURCE

    def __init__(self, path: str | os.PathLike[str] | None, config: FeatureHubConfig,
                 opts: FileSessionStoreOptions | Mapping[str, Any] | None = None) -> None:
        options = FileSessionStoreOptions.coerce(opts)
        api_key = config.get_api_keys()[0]
        require_client_evaluated(api_key)
        if path is None:
            directory = default_directory()
        elif isinstance(path, str) and path.startswith(SCHEME):
            directory = parse_file_url(path)
        else:
            directory = Path(path)
        backend = FileBackend(directory, f"{options.prefix}_{environment_id(api_key)}")
        super().__init__(backend, config, options)
