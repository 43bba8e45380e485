"""A repeated failure: logged when it starts, then at a bounded rate with a count, and when it
ends; a failure of another kind is news at once. And the words each kind is said in."""

from __future__ import annotations

import errno
import logging
import types

import pytest
import redis.exceptions as rex
from pymemcache.exceptions import MemcacheServerError

from fh_prefork import ratelog
from fh_prefork.ratelog import RateLimitedLog
from fh_prefork.store import StoreUnavailable
from fh_prefork.store.failure import classify


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelog, "time", types.SimpleNamespace(monotonic=fake))
    return fake


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_once_at_start_then_once_a_minute_with_a_count_then_once_at_the_end(
        clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = RateLimitedLog(logging.getLogger("t.ratelog"))
    for _ in range(130):            # a failure every second for 130 s
        log.failure("store %s is full", "x", kind="full")
        clock.now += 1
    log.recovered("store %s is back", "x")
    assert lines(caplog) == [
        "store x is full",
        "store x is full (60 times in the last 60 s)",
        "store x is full (60 times in the last 60 s)",
        "store x is back (after 130 failure(s) in 130 s)",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 4


def test_another_kind_of_failure_is_logged_at_once(clock: Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("t.ratelog"))
    log.failure("unreachable", kind="unreachable")
    log.failure("unreachable", kind="unreachable")
    log.failure("full", kind="full")
    assert lines(caplog) == ["unreachable", "full"]
    assert log.kind == "full"


def test_recovery_without_a_failure_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    RateLimitedLog(logging.getLogger("t.ratelog")).recovered("back")
    assert lines(caplog) == []


def _raised(cause: BaseException) -> StoreUnavailable:
    try:
        try:
            raise cause
        except BaseException as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
    except StoreUnavailable as wrapped:
        return wrapped


@pytest.mark.parametrize(("cause", "kind", "phrase"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "unreachable",
     "is unreachable"),
    (TimeoutError("timed out"), "unreachable", "is unreachable"),
    (rex.ConnectionError("Error 111 connecting"), "unreachable", "is unreachable"),
    (rex.AuthenticationError("invalid username-password pair"), "refused",
     "refused: authentication failed"),
    (rex.ResponseError("WRONGPASS invalid username-password pair or user is disabled."),
     "refused", "refused: authentication failed"),
    (rex.NoPermissionError("this user has no permissions to run the 'evalsha' command"),
     "forbidden", "refused: forbidden"),
    (rex.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), "full",
     "is full"),
    (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "full",
     "is full"),
    (MemcacheServerError("out of memory storing object"), "full", "is full"),
    (OSError(errno.ENOSPC, "No space left on device"), "full", "is full"),
    (PermissionError(errno.EACCES, "Permission denied"), "forbidden", "refused: forbidden"),
    (OSError(errno.EROFS, "Read-only file system"), "forbidden", "refused: forbidden"),
])
def test_each_failure_is_said_in_its_own_words(cause: BaseException, kind: str,
                                               phrase: str) -> None:
    failure = classify(_raised(cause))
    assert (failure.kind, failure.phrase) == (kind, phrase)
