"""Logging that stays readable under a persistent fault: once, then at a bounded rate."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """Logs a failure when it starts, then at most once per ``interval`` seconds.

    ``recovered()`` logs once when the failure clears, with how many repeats
    were suppressed, so a flapping dependency leaves a short, honest trail.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._failing = False
        self._last = 0.0
        self._suppressed = 0

    @property
    def failing(self) -> bool:
        return self._failing

    def failure(self, msg: str, *args: Any, level: int = logging.WARNING,
                exc_info: bool = False) -> None:
        """Log ``msg`` now if the failure is new or ``interval`` has passed, else count it."""
        now = time.monotonic()
        if not self._failing or now - self._last >= self._interval:
            if self._suppressed:
                msg += " (%d similar message(s) suppressed)"
                args = (*args, self._suppressed)
            self._logger.log(level, msg, *args, exc_info=exc_info)
            self._failing, self._last, self._suppressed = True, now, 0
        else:
            self._suppressed += 1

    def recovered(self, msg: str, *args: Any) -> None:
        if self._failing:
            self._logger.info(msg, *args)
            self._failing, self._suppressed = False, 0
