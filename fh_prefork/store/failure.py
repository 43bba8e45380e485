"""What a store failure is, in the words an operator needs: unreachable, refused, forbidden, full.

"cannot reach" was said of everything, a full disk and a wrong password
included. Every backend raises ``StoreUnavailable`` from the client's own
error; ``classify`` reads that error (and its causes) once, so the log line,
the status and the master's start check all say the same thing.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

#: the kinds, from the one an operator fixes in the network to the one fixed in the store
UNREACHABLE, REFUSED, FORBIDDEN, FULL, UNREADABLE = (
    "unreachable", "refused", "forbidden", "full", "unreadable")

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FORBIDDEN_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
#: substrings of server answers (Redis error replies, memcached SERVER_ERROR lines)
_AUTH_WORDS = ("WRONGPASS", "NOAUTH", "invalid username-password", "Authentication required",
               "AUTH <password> called without", "invalid password")
_FORBIDDEN_WORDS = ("NOPERM",)
_FULL_WORDS = ("OOM ", "OOM command not allowed", "out of memory", "SERVER_ERROR out of memory")


@dataclass(frozen=True)
class Failure:
    """A failure's ``kind`` and the words that say it ("authentication failed", "full")."""

    kind: str
    words: str

    @property
    def phrase(self) -> str:
        """What follows the store's name in a sentence: "is full", "refused: forbidden"."""
        if self.kind in (REFUSED, FORBIDDEN):
            return f"refused: {self.words}"
        return f"is {self.words}"


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(err: BaseException) -> Failure:
    """The kind of a backend failure, from the error and the errors that caused it."""
    chain = _chain(err)
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    names = {type(e).__name__ for e in chain}
    if "AuthenticationError" in names or any(w in text for w in _AUTH_WORDS):
        return Failure(REFUSED, "authentication failed")
    if "NoPermissionError" in names or any(w in text for w in _FORBIDDEN_WORDS):
        return Failure(FORBIDDEN, "forbidden")
    if "OutOfMemoryError" in names or any(w in text for w in _FULL_WORDS):
        return Failure(FULL, "full")
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return Failure(REFUSED, "TLS handshake refused")
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return Failure(FULL, "full")
        if isinstance(e, OSError) and e.errno in _FORBIDDEN_ERRNOS:
            return Failure(FORBIDDEN, "forbidden")
    for e in chain:
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)):
            return Failure(UNREACHABLE, "unreachable")
    if names & {"ConnectionError", "TimeoutError", "MemcacheUnexpectedCloseError",
                "ClusterDownError", "BusyLoadingError"}:
        return Failure(UNREACHABLE, "unreachable")
    if any(isinstance(e, (ValueError, UnicodeError)) for e in chain):
        return Failure(UNREADABLE, "unreadable")
    if any(isinstance(e, OSError) for e in chain):
        return Failure(UNREACHABLE, "unreachable")
    return Failure(UNREACHABLE, "unreachable")
