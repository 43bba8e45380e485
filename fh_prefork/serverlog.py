"""fh_prefork's log records in the prefork server's own log, unless the application took over.

Python's default leaves a library's INFO records nowhere and its warnings to
the last-resort handler, without time, pid or level. Under a prefork server
the operator reads the server's log, so the adapters route the ``fh_prefork``
logger there: gunicorn's error log (its level, format and destination, which
name the pid), or stderr in uWSGI's format, which uWSGI writes to its log.

An application that configures logging keeps full control: nothing is
installed when the ``fh_prefork`` logger already has a handler or a level,
and once the root logger has handlers (``logging.basicConfig``,
``dictConfig``, Django's ``LOGGING``) records go to them, under the root's
level, exactly as propagation would send them.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

LOGGER = "fh_prefork"
#: uWSGI's own lines carry no pid or level; ours do, so four workers' lines can be told apart.
UWSGI_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"


class ServerLogHandler(logging.Handler):
    """Hands each record to the server's handlers, or to the application's once it has some."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if root.handlers:       # the application configured logging: it decides
            if record.levelno >= root.getEffectiveLevel():
                _handle(root.handlers, record)
            return
        _handle(self.target.handlers, record)


def _handle(handlers: list[logging.Handler], record: logging.LogRecord) -> None:
    for handler in handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


def route_to(target: logging.Logger, level: int) -> bool:
    """Send ``fh_prefork`` records to ``target``'s handlers at ``level``; False if the app decides.

    Idempotent: a second call (gunicorn's reload) only updates the target and level.
    """
    logger = logging.getLogger(LOGGER)
    ours = [h for h in logger.handlers if isinstance(h, ServerLogHandler)]
    if ours:
        ours[0].target = target
        logger.setLevel(level)
        return True
    if logger.handlers or logger.level != logging.NOTSET:
        return False
    logger.addHandler(ServerLogHandler(target))
    logger.setLevel(level)
    logger.propagate = False    # the handler propagates by hand, under the root's level
    return True


def route_to_gunicorn(server: object) -> bool:
    """gunicorn: the arbiter's error log (``server.log.error_log``), at its level."""
    error_log = getattr(getattr(server, "log", None), "error_log", None)
    if not isinstance(error_log, logging.Logger):
        return False
    return route_to(error_log, error_log.level or logging.INFO)


def route_to_stderr() -> bool:
    """uWSGI: stderr, which uWSGI writes to its log, at INFO."""
    target = logging.getLogger("fh_prefork.serverlog.stderr")
    if not target.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(UWSGI_FORMAT))
        target.addHandler(handler)
        target.propagate = False
    return route_to(target, logging.INFO)


def route_for(server: str) -> bool:
    """Route by server name, for a process the hooks never reached (``runtime`` finds it)."""
    if server == "uWSGI":
        return route_to_stderr()
    error_log = logging.getLogger("gunicorn.error")  # configured by the arbiter, inherited
    if server == "gunicorn" and error_log.handlers:
        return route_to(error_log, error_log.level or logging.INFO)
    return False


def _writes_to_a_terminal_stream(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler) and handler.stream in (sys.stderr, sys.stdout,
                                                             sys.__stderr__, sys.__stdout__)


def refuse(server: object, message: str) -> NoReturn:
    """Stop a gunicorn master with ``message``: in its error log and, as one line, on stderr.

    ``raise SystemExit(message)`` alone reaches stderr only: with ``--error-logfile``
    the operator's log would say "Starting gunicorn" and nothing more. The record
    goes to the error log's handlers that do not already write to stderr (or stdout),
    so a terminal shows the line once.
    """
    error_log = getattr(getattr(server, "log", None), "error_log", None)
    if isinstance(error_log, logging.Logger):
        record = error_log.makeRecord(error_log.name, logging.ERROR, __file__, 0, "%s",
                                      (message,), None)
        _handle([h for h in error_log.handlers if not _writes_to_a_terminal_stream(h)], record)
    raise SystemExit(message)
