"""Logging that stays readable under a persistent fault: once, then at a bounded rate.

A failure that repeats (a store that is down, a full disk) is logged when it
starts, then at most once per ``interval`` with how many times it happened
since the last line ("... (83 times in the last 60 s)"), and once when it
ends. A failure of another kind (unreachable, then full) is a new failure and
is logged at once. The log of a fault is then a few honest lines per process,
not one per attempt, onto what may be the same full disk.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """Logs a failure when it starts, then at most once per ``interval`` seconds, with a count.

    ``recovered()`` logs once when the failure clears, with how many times it
    happened and for how long, so a flapping dependency leaves a short trail.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._failing = False
        self._kind: str | None = None
        self._since = 0.0       # monotonic: when the failure started
        self._last = 0.0        # monotonic: the last line logged
        self._unlogged = 0      # failures since the last line
        self._total = 0         # failures since the start
        self._level = logging.WARNING   # the level the failure started at

    @property
    def failing(self) -> bool:
        return self._failing

    @property
    def kind(self) -> str | None:
        """The current failure's kind, as given to ``failure`` (None: not failing)."""
        return self._kind if self._failing else None

    def failure(self, msg: str, *args: Any, level: int = logging.WARNING,
                exc_info: bool = False, kind: str | None = None) -> None:
        """Log ``msg`` now if the failure is new (or of another ``kind``) or ``interval`` has
        passed since the last line, else count it."""
        now = time.monotonic()
        new = not self._failing or kind != self._kind
        self._unlogged += 1
        self._total = 1 if new else self._total + 1
        if new or now - self._last >= self._interval:
            if not new:
                msg += " (%d times in the last %.0f s)"
                args = (*args, self._unlogged, now - self._last)
            else:
                self._since, self._level = now, level
            self._logger.log(level, msg, *args, exc_info=exc_info)
            self._failing, self._kind, self._last, self._unlogged = True, kind, now, 0

    def recovered(self, msg: str, *args: Any) -> None:
        """Log ``msg`` once if a failure was going on, with its count and duration.

        At WARNING when the failure was (at most WARNING otherwise): the end of a
        fault shows wherever its start showed.
        """
        if self._failing:
            msg += " (after %d failure(s) in %.0f s)"
            self._logger.log(min(self._level, logging.WARNING), msg, *args, self._total,
                             time.monotonic() - self._since)
            self._failing, self._kind, self._unlogged, self._total = False, None, 0, 0
