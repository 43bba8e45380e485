"""uWSGI option checks. A uWSGI built without thread support cannot run here (2.0.31 always
has threads), so these tests hand the checker a stand-in for the ``uwsgi`` module; the real
server is exercised with and without --enable-threads in tests/servers."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

import fh_prefork.uwsgi as fh_uwsgi


def problems(monkeypatch: pytest.MonkeyPatch, opt: dict[str, Any],
             has_threads: int = 1) -> list[tuple[int, str]]:
    monkeypatch.setattr(fh_uwsgi, "_uwsgi", SimpleNamespace(opt=opt, has_threads=has_threads))
    return fh_uwsgi.option_problems()


def test_not_under_uwsgi_there_is_nothing_to_check() -> None:
    assert fh_uwsgi.option_problems() == [] and fh_uwsgi.install() is False


def test_recommended_options_raise_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    opt = {"master": True, "processes": b"4", "py-call-uwsgi-fork-hooks": True}
    assert problems(monkeypatch, opt) == []
    assert problems(monkeypatch, {"master": b"true", "lazy-apps": b"1"}) == []


def test_threads_disabled_is_an_error_naming_enable_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    found = problems(monkeypatch, {"master": True, "lazy-apps": True}, has_threads=0)
    assert [level for level, _ in found] == [logging.ERROR]
    assert "enable-threads = true" in found[0][1]
    assert problems(monkeypatch, {"master": True, "lazy-apps": True, "threads": b"4"},
                    has_threads=0) == []


def test_ini_false_is_read_as_false(monkeypatch: pytest.MonkeyPatch) -> None:
    found = problems(monkeypatch, {"master": b"true", "py-call-uwsgi-fork-hooks": b"false"})
    assert len(found) == 1 and "py-call-uwsgi-fork-hooks = true" in found[0][1]


def test_no_master_with_several_workers_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    found = problems(monkeypatch, {"processes": b"4", "lazy-apps": True})
    assert [level for level, _ in found] == [logging.WARNING]
    assert "master = true" in found[0][1]
