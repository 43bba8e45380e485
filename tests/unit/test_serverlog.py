"""Routing fh_prefork's records to the server's log, and handing control back to the app."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from fh_prefork import serverlog


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def clean_loggers() -> Iterator[None]:
    """Leave the fh_prefork and root loggers as they were."""
    lib, root = logging.getLogger(serverlog.LOGGER), logging.getLogger()
    saved = (lib.handlers[:], lib.level, lib.propagate, root.handlers[:], root.level)
    lib.handlers, lib.level, lib.propagate = [], logging.NOTSET, True
    yield
    lib.handlers, lib.level, lib.propagate, root.handlers, root.level = saved


def no_app_logging() -> None:
    """What a server process without logging configuration has (pytest adds its own handler)."""
    logging.getLogger().handlers = []


def test_records_go_to_the_server_log_at_its_level(clean_loggers: None) -> None:
    no_app_logging()
    server, sink = logging.getLogger("test.server.error"), Collect()
    server.addHandler(sink)
    assert serverlog.route_to(server, logging.INFO)
    logging.getLogger("fh_prefork.store").info("seeded")
    logging.getLogger("fh_prefork").debug("too fine")
    assert sink.messages == ["seeded"]
    assert serverlog.route_to(server, logging.INFO), "idempotent"
    assert len(logging.getLogger("fh_prefork").handlers) == 1


def test_an_application_that_configured_logging_decides(clean_loggers: None) -> None:
    no_app_logging()
    server, sink, app = logging.getLogger("test.server.error2"), Collect(), Collect()
    server.addHandler(sink)
    serverlog.route_to(server, logging.INFO)
    root = logging.getLogger()
    root.addHandler(app)
    root.setLevel(logging.WARNING)       # e.g. logging.basicConfig(level=WARNING) in the app
    logging.getLogger("fh_prefork").info("quiet")
    logging.getLogger("fh_prefork").warning("loud")
    assert app.messages == ["loud"] and sink.messages == []


def test_nothing_is_installed_when_the_app_configured_fh_prefork_first(
        clean_loggers: None) -> None:
    logging.getLogger("fh_prefork").setLevel(logging.ERROR)
    assert not serverlog.route_to(logging.getLogger("test.server.error3"), logging.INFO)
    assert logging.getLogger("fh_prefork").handlers == []

