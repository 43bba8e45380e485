"""Embedded backend: one file per prefix and environment, on this host only.

Writers take an exclusive ``fcntl`` lock on a sibling lock file, check that the
data is still what they read (compare-and-set), write a temporary file, fsync
it and rename it over the data file. Readers never lock: a rename is atomic, so
they see the old file or the new one, never a torn one. The lock dies with its
holder, so a writer killed with SIGKILL never blocks the others.

The change token is the file's inode, size and mtime in nanoseconds: an idle
refresh tick costs one ``stat()``. Each write sets the new file's mtime past
the old one's, so two writes inside one clock tick still differ.

Tombstones (deletions, see :mod:`fh_prefork.tombstones`) live in
``{name}.deleted.json`` beside the data, replaced the same way under the same
lock, before the data; readers read the data first.

Leader mode: ``{name}.leader`` beside the data holds the leader lease, an
exclusive ``flock`` the leader keeps for its whole term (the kernel drops it
when the leader dies, however it dies). The leader writes its lease record
(the same JSON as on memcached, space-padded to a fixed size and written with
one ``pwrite``, so a reader never sees a torn record) into it on every renewal.

Nobody else on the host may inject flags: the folder must be ours and not
writable by others, the files ours and not writable by others, or the store
refuses them. The folder is opened once (``O_NOFOLLOW``, so not through a
symlink) and every file is reached through that descriptor, never by path
again: someone who can write the folder's parent and swaps the folder (or puts
a symlink in its place) cannot redirect reads or writes. A process keeps the
folder it opened, and logs once that its path now names another. Missing
parents are created 0700 whatever the umask.

The default folder (``$XDG_RUNTIME_DIR/fh-prefork``, else
``/dev/shm/fh-prefork-$UID``) sits in a place other users may write: if it is
taken (another owner, a symlink, open modes), a fresh private folder beside it
(``fh-prefork-$UID-XXXXXXXX``, made by ``mkdtemp``) is used and logged, instead
of refusing to start; one left by an earlier run is reused. A folder the user
named (``file:///path``) is refused instead.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurehub_sdk.featurehub_config import FeatureHubConfig

from ..apikey import environment_id, require_client_evaluated
from .backend import Snapshot, StoreUnavailable, Wake
from .core import SessionStore
from .inotify import DirectoryWatch, watch_files
from .lease import LEASE_RECORD_BYTES, Lease, LeaseAnswer
from .options import FileSessionStoreOptions, validate_key

log = logging.getLogger("fh_prefork")

SOURCE = "file-store"
SCHEME = "file://"
#: Longest wait for the write lock; holders keep it for one small write only.
LOCK_TIMEOUT = 2.0


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Folders opened in this process by ensure_private_directory (a prefork master's check):
#: forked workers inherit the descriptor, so a folder swapped after the master checked it
#: cannot redirect them.
_OPENED: dict[str, int] = {}
#: The default folder resolved per (XDG_RUNTIME_DIR, uid): one per process tree.
_DEFAULTS: dict[tuple[str | None, int], Path] = {}


def _usual_directory() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "fh-prefork"
    uid = os.geteuid()
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path("/dev/shm") / f"fh-prefork-{uid}"
    return Path(tempfile.gettempdir()) / f"fh-prefork-{uid}"


def default_directory() -> Path:
    """A per-user runtime folder, created private: ``$XDG_RUNTIME_DIR``, else ``/dev/shm``.

    If the usual place is taken (another user created it first, or a symlink),
    a private folder of our own beside it is used and logged: someone else
    squatting the name must not stop the server.
    """
    key = (os.environ.get("XDG_RUNTIME_DIR"), os.geteuid())
    known = _DEFAULTS.get(key)
    if known is not None:
        return known
    usual = _usual_directory()
    try:
        folder = ensure_private_directory(usual)
    except ValueError as err:
        folder = _fresh_beside(usual)
        log.warning("fh_prefork: the default store folder cannot be used (%s); using the "
                    "private folder %s instead", err, folder)
    _DEFAULTS[key] = folder
    return folder


def _fresh_beside(usual: Path) -> Path:
    """Our own private ``{usual}-XXXXXXXX``: one an earlier run made, else a new one."""
    uid = os.geteuid()
    try:
        names = sorted(os.listdir(usual.parent))
    except OSError:
        names = []
    for name in names:
        if not name.startswith(f"{usual.name}-"):
            continue
        try:
            st = os.stat(usual.parent / name, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077:
            try:
                return ensure_private_directory(usual.parent / name)
            except ValueError:
                continue
    try:  # mkdtemp: a name nobody could have guessed, created 0700 by us or not at all
        return ensure_private_directory(Path(tempfile.mkdtemp(prefix=f"{usual.name}-",
                                                              dir=usual.parent)))
    except OSError as err:
        raise ValueError(f"cannot create a private store folder in {usual.parent}: "
                         f"{err}") from err


def parse_file_url(url: str) -> Path:
    """``file:///abs/path`` -> ``/abs/path`` (a folder)."""
    if not url.startswith(SCHEME):
        raise ValueError(f"file store URL {url!r} must start with {SCHEME}")
    path = url[len(SCHEME):]
    if not path.startswith("/"):
        raise ValueError(f"file store URL {url!r} must hold an absolute path: file:///path")
    return Path(path)


def ensure_private_directory(directory: Path) -> Path:
    """Create the folder (and missing parents) 0700, or check an existing one is ours.

    The folder stays open in this process, so workers forked later use the very
    folder checked here (see ``_OPENED``).
    """
    key = os.path.abspath(directory)
    fd = _open_private(directory)
    old = _OPENED.pop(key, None)
    if old is not None:
        os.close(old)
    _OPENED[key] = fd
    return directory


def _open_private(directory: Path) -> int:
    """A descriptor of the folder, created private if missing; ``ValueError`` if not ours."""
    try:
        for parent in reversed(directory.parents):
            _mkdir_private(parent)
        _mkdir_private(directory)
    except OSError as err:
        raise ValueError(f"cannot create store folder {directory}: {err}") from err
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError(f"store folder {directory} is a symlink or not a folder: refusing "
                             "it, another user could redirect the store") from None
        raise ValueError(f"cannot open store folder {directory}: {err}") from err
    return _owned_folder(directory, fd)


def _existing_folder(directory: Path) -> int:
    """A descriptor of an existing private folder (``FileNotFoundError`` when it is missing)."""
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ValueError(f"cannot open store folder {directory}: {err}") from err
    return _owned_folder(directory, fd)


def _owned_folder(directory: Path, fd: int) -> int:
    """``fd`` once the folder it opens is ours and private; else closed, so no refusal leaks it."""
    try:
        _check_owned(directory, os.fstat(fd), "folder")
    except (OSError, ValueError):
        os.close(fd)
        raise
    return fd


def _mkdir_private(path: Path) -> None:
    """Create one missing folder 0700 whatever the umask (an existing one is left as it is)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    fd = os.open(path, _DIR_FLAGS)  # not by path: it may have been swapped for a symlink
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _folder_descriptor(directory: Path) -> int:
    """This backend's own descriptor: the one a master opened, or a new one."""
    opened = _OPENED.get(os.path.abspath(directory))
    if opened is None:
        return _open_private(directory)
    return _owned_folder(directory, os.dup(opened))


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
    #: change tokens are the file's identity, not a fingerprint: nothing to settle
    fingerprint_tokens = False

    def __init__(self, directory: Path, name: str, *, create: bool = True) -> None:
        """``create=False`` (reading tools): the folder must exist; nothing is made or removed."""
        self.directory = directory
        self.path = self.directory / f"{validate_key(name)}.json"
        self.tombstones_path = self.directory / f"{name}.deleted.json"
        self.lock_path = self.directory / f"{name}.lock"
        self.leader_path = self.directory / f"{name}.leader"
        self.description = f"file://{self.path}"
        # every file is reached through this one descriptor
        self._dir = _folder_descriptor(directory) if create else _existing_folder(directory)
        held = os.fstat(self._dir)
        self._dir_id = (held.st_dev, held.st_ino)
        self._swap_logged = False
        self._lock_fd = -1
        self._leader_fd = -1    # open and flocked while this backend's process leads
        try:
            for existing in (self.path, self.tombstones_path, self.lock_path, self.leader_path):
                try:
                    _check_owned(existing, self._stat(existing), "file")
                except FileNotFoundError:
                    pass
        except ValueError:
            os.close(self._dir)
            raise
        if create:
            self._remove_stale_temporaries()

    def written_at(self) -> float | None:
        """Unix time the data was last replaced (None: no data), for reading tools."""
        try:
            return self._stat(self.path).st_mtime
        except FileNotFoundError:
            return None

    def _stat(self, path: Path) -> os.stat_result:
        return os.stat(path.name, dir_fd=self._dir, follow_symlinks=False)

    def change_token(self) -> str | None:
        self._notice_swap()
        try:
            st = self._stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreUnavailable(f"cannot stat {self.path}: {err}") from err
        return _token(st)

    def _notice_swap(self) -> None:
        """Log once when the folder's path names another folder than the one held open."""
        if self._swap_logged:
            return
        try:
            st = os.stat(self.directory)
            same = (st.st_dev, st.st_ino) == self._dir_id
        except OSError:
            same = False
        if not same:
            self._swap_logged = True
            log.warning("fh_prefork: store folder %s was moved, removed or replaced; process %d "
                        "keeps reading and writing the folder it opened (restart the server to "
                        "use the new one)", self.directory, os.getpid())

    def read(self) -> Snapshot:
        value, st = self._read_file(self.path)
        tombstones, _ = self._read_file(self.tombstones_path)  # after the data: see backend.py
        token = _token(st) if st is not None else None
        return Snapshot(value=value, cas_token=value, change_token=token,
                        tombstones=tombstones, tombstones_cas=tombstones)

    def _read_file(self, path: Path) -> tuple[bytes | None, os.stat_result | None]:
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir)
        except FileNotFoundError:
            return None, None
        except OSError as err:
            raise StoreUnavailable(f"cannot open {path}: {err}") from err
        try:
            st = os.fstat(fd)
            try:
                _check_owned(path, st, "file")
            except ValueError as err:
                raise StoreUnavailable(str(err)) from None
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read(), st
        except OSError as err:
            raise StoreUnavailable(f"cannot read {path}: {err}") from err
        finally:
            os.close(fd)

    def write(self, value: bytes, fingerprint: str, previous: Snapshot,
              tombstones: bytes | None = None) -> str | None:
        with self._locked():
            current = self.read()
            # compare the bytes: exact, no token aliasing
            if current.value != previous.value or current.tombstones != previous.tombstones:
                return None
            if tombstones is not None:
                self._replace(self.tombstones_path, tombstones, 0)
            old_mtime = 0
            if current.change_token is not None:
                old_mtime = int(current.change_token.rsplit(":", 1)[1])
            return self._replace(self.path, value, old_mtime)

    def settle(self, snapshot: Snapshot, fingerprint: str) -> str | None:
        return snapshot.change_token

    def notifier(self, wake: Wake) -> DirectoryWatch | None:
        """Push: the kernel's notifications on the folder (Linux inotify; None elsewhere)."""
        return watch_files(self.directory, [self.path.name], wake)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._drop_leader_fd()
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1

    # -- leader lease -------------------------------------------------------------------------

    def lease_read(self) -> Lease | None:
        """The record in the lease file; None when absent, unreadable, or nobody holds the lock."""
        if self._leader_fd >= 0:
            return self._read_record(self._leader_fd)
        try:
            fd = self._open_leader()
        except FileNotFoundError:
            return None
        try:
            if self._try_lock(fd):  # nobody leads: the record is a past term's
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            return self._read_record(fd)
        finally:
            os.close(fd)

    def lease_acquire(self, candidate: Lease, ttl: float, vacant: bool = True) -> LeaseAnswer:
        """An existing lease file nobody has locked was let go by its holder, released or
        dead (the lock dies with it): taken at once. A missing one is vacant: created and
        taken only when ``vacant`` (its holder may be alive, and recreate it at renewal)."""
        if self._leader_fd >= 0:
            return self.lease_renew(candidate, ttl)
        try:
            fd = self._open_leader(create=vacant)
        except FileNotFoundError:
            return LeaseAnswer(False, None)
        return self._take(fd, candidate, ttl)

    def _take(self, fd: int, lease: Lease, ttl: float, retaken: bool = False) -> LeaseAnswer:
        """Lock the lease file open on ``fd`` and write ``lease`` into it (fd is consumed)."""
        try:
            if not self._try_lock(fd):
                return LeaseAnswer(False, self._read_record(fd))
            if not self._names_path(fd):  # unlinked or replaced since we opened it
                return LeaseAnswer(False, None)
            mine = lease.stamped(ttl)
            self._write_record(fd, mine)
            self._drop_leader_fd()
            self._leader_fd, fd = fd, -1  # kept open: the lock lives as long as the fd
            return LeaseAnswer(True, mine, float("inf"), retaken)
        finally:
            if fd >= 0:
                os.close(fd)  # closing our only fd also drops a lock we took

    def lease_renew(self, lease: Lease, ttl: float) -> LeaseAnswer:
        fd = self._leader_fd
        if fd < 0:
            return LeaseAnswer(False, self.lease_read())
        if not self._names_path(fd):
            # the file was deleted or replaced under our lock: take the path back, unless
            # someone already locks what it names now
            answer = self._take(self._open_leader(create=True), lease, ttl, retaken=True)
            if not answer.held:
                self._drop_leader_fd()
            return answer
        mine = lease.stamped(ttl)
        self._write_record(fd, mine)
        return LeaseAnswer(True, mine, float("inf"))

    def lease_release(self, lease: Lease) -> bool:
        fd = self._leader_fd
        if fd < 0:
            return False
        try:
            if self._names_path(fd):
                self._write_record(fd, Lease(lease.holder, lease.host, lease.pid, time.time()))
        except StoreUnavailable:
            pass  # the unlock below is what releases
        self._drop_leader_fd()
        return True

    def _open_leader(self, create: bool = False) -> int:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.leader_path.name, flags, 0o600, dir_fd=self._dir)
        except FileNotFoundError:
            raise
        except OSError as err:
            raise StoreUnavailable(f"cannot open {self.leader_path}: {err}") from err
        try:
            _check_owned(self.leader_path, os.fstat(fd), "lease file")
        except ValueError as err:
            os.close(fd)
            raise StoreUnavailable(str(err)) from None
        return fd

    def _try_lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise StoreUnavailable(f"cannot lock {self.leader_path}: {err}") from err

    def _names_path(self, fd: int) -> bool:
        try:
            held, named = os.fstat(fd), self._stat(self.leader_path)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise StoreUnavailable(f"cannot stat {self.leader_path}: {err}") from err
        return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)

    def _read_record(self, fd: int) -> Lease | None:
        try:
            return Lease.decode(os.pread(fd, LEASE_RECORD_BYTES + 1, 0).rstrip(b" \n\0"))
        except OSError as err:
            raise StoreUnavailable(f"cannot read {self.leader_path}: {err}") from err

    def _write_record(self, fd: int, lease: Lease) -> None:
        record = lease.encode()
        if len(record) >= LEASE_RECORD_BYTES:
            raise StoreUnavailable(f"lease record of {len(record)} bytes is too long")
        try:  # one fixed-size pwrite: readers see the old record or the new one
            os.pwrite(fd, record.ljust(LEASE_RECORD_BYTES - 1) + b"\n", 0)
        except OSError as err:
            raise StoreUnavailable(f"cannot write {self.leader_path}: {err}") from err

    def _drop_leader_fd(self) -> None:
        if self._leader_fd >= 0:
            try:
                fcntl.flock(self._leader_fd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(self._leader_fd)
            self._leader_fd = -1

    def _remove_stale_temporaries(self, older_than: float = 60.0) -> None:
        """Temporary files left by writers killed mid-write; harmless, but not forever."""
        cutoff = time.time() - older_than
        try:
            names = [n for n in os.listdir(self._dir) if n.startswith(".tmp-")]
        except OSError:
            return
        for name in names:
            try:
                if os.stat(name, dir_fd=self._dir, follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(name, dir_fd=self._dir)
            except OSError:
                pass

    def _replace(self, path: Path, value: bytes, old_mtime_ns: int) -> str:
        tmp = f".tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=self._dir)
        except OSError as err:
            raise StoreUnavailable(f"cannot write {path}: {err}") from err
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
                f.flush()
                os.fsync(f.fileno())
                mtime = max(time.time_ns(), old_mtime_ns + 1)
                os.utime(f.fileno(), ns=(mtime, mtime))
            os.rename(tmp, path.name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            return _token(self._stat(path))
        except OSError as err:
            try:
                os.unlink(tmp, dir_fd=self._dir)
            except OSError:
                pass
            raise StoreUnavailable(f"cannot write {path}: {err}") from err

    def _locked(self) -> _FileLock:
        if self._lock_fd < 0:
            try:
                self._lock_fd = os.open(self.lock_path.name,
                                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        0o600, dir_fd=self._dir)
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
                 opts: FileSessionStoreOptions | Mapping[str, Any] | None = None, *,
                 start: bool = True) -> None:
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
        super().__init__(backend, config, options, start=start)
