"""The uWSGI example (the Docker image's uWSGI service) runs $WEB_CONCURRENCY workers."""

from __future__ import annotations

from collections.abc import Callable

import psutil
import pytest

from fh_prefork.testing.edge_simulator import EdgeSimulator

from .conftest import BIN, EXAMPLES, Server


def _workers(server: Server) -> set[int]:
    master = psutil.Process(server.proc.pid)
    return {child.pid for child in master.children()}


@pytest.mark.parametrize("concurrency, expected", [("3", 3), (None, 4)])
def test_uwsgi_ini_honours_web_concurrency(
        start_server: Callable[..., Server], edge: EdgeSimulator,
        example_env: dict[str, str], concurrency: str | None, expected: int) -> None:
    if not (BIN / "uwsgi").exists():
        pytest.skip("uwsgi is not installed")
    example_env.pop("WEB_CONCURRENCY", None)
    if concurrency is not None:
        example_env["WEB_CONCURRENCY"] = concurrency
    server = start_server([str(BIN / "uwsgi"), "--ini", str(EXAMPLES / "uwsgi" / "uwsgi.ini"),
                           "--http-socket", "127.0.0.1:{port}", "--disable-logging"],
                          cwd=EXAMPLES / "uwsgi")
    server.serving("/", lambda body: isinstance(body, dict) and body.get("enabled") is True)
    workers = _workers(server)
    assert len(workers) == expected, (workers, server.log_text())
    answered = {server.serving("/", lambda b: isinstance(b, dict))["pid"] for _ in range(40)}
    assert answered <= workers
