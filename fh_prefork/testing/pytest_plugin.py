"""pytest fixtures that let an application's own tests set FeatureHub flags.

Opt in from a ``conftest.py``::

    pytest_plugins = ["fh_prefork.testing.pytest_plugin"]

    def test_new_checkout(featurehub, client):
        featurehub.set("NEW_CHECKOUT", True)          # served by the app from now on
        assert client.get("/").json["enabled"] is True

``featurehub`` runs a local Edge (:class:`~fh_prefork.testing.edge_simulator.EdgeSimulator`)
and points fh_prefork's settings at it, with a private embedded store in the
test's ``tmp_path``, and starts fh_prefork in the test's process (as a server's
post-fork hook would; a worker already running there is restarted on these
settings): the application under test, in this process or in a server it
starts with :attr:`FeatureHubFlags.env`, gets its flags the way it does in
production (Edge stream, store, replay), not through a mock. ``set`` and
``delete`` return once the change is served: by fh_prefork in this process,
or, for a server in a subprocess, by what ``probe(key)`` answers (the version
the server serves, e.g. from an endpoint of the app; None when it has none).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .edge_simulator import EdgeSimulator

#: ``probe(key)``: the version of ``key`` the application serves now (None: it has none).
Probe = Callable[[str], int | None]

#: A client-evaluated key of the simulator's environment ``tests``.
API_KEY = "app-tests/tests/client*secret"


class FeatureHubFlags:
    """Sets flags on the test's Edge, and waits until this process serves them."""

    def __init__(self, edge: EdgeSimulator, env: Mapping[str, str]) -> None:
        self.edge = edge
        #: environment for a server the test starts in a subprocess
        self.env = dict(env)

    def set(self, key: str, value: Any, type: str | None = None, timeout: float = 5.0,
            probe: Probe | None = None) -> dict[str, Any]:
        """Create or change a flag (type inferred from ``value`` unless given); the new state."""
        body: dict[str, Any] = {"key": key, "value": value}
        if type is not None:
            body["type"] = type
        feature: dict[str, Any] = self.edge.control_push(body)
        self.wait_served(key, feature["version"], timeout, probe)
        return feature

    def set_many(self, flags: Mapping[str, Any], timeout: float = 5.0,
                 probe: Probe | None = None) -> None:
        for key, value in flags.items():
            self.set(key, value, timeout=timeout, probe=probe)

    def delete(self, key: str, timeout: float = 5.0, probe: Probe | None = None) -> None:
        self.edge.delete_feature({"key": key})
        self.wait_served(key, None, timeout, probe)

    def wait_served(self, key: str, version: int | None, timeout: float = 5.0,
                    probe: Probe | None = None) -> None:
        """Wait until ``key`` is served at ``version`` (None: deleted), as ``probe(key)``
        answers, else as fh_prefork in this process serves it.

        Returns at once with no probe when fh_prefork is not running in this process.
        """
        from .. import runtime

        if probe is None:
            worker = runtime.current_worker()
            if worker is None:
                return
            repository = worker.repository

            def probe(key: str) -> int | None:
                holder = repository.features.get(key)
                return holder.get_version if holder is not None and holder.exists else None

        deadline = time.monotonic() + timeout
        while True:
            held = probe(key)
            if held == version:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fh_prefork did not serve {key} at version {version} "
                                   f"within {timeout} s (it serves {held})")
            time.sleep(0.01)  # polling interval of a bounded wait


@pytest.fixture
def featurehub_edge() -> Iterator[EdgeSimulator]:
    """A local FeatureHub Edge on a free loopback port, stopped after the test."""
    with EdgeSimulator(keepalive_interval=1.0) as edge:
        yield edge


@pytest.fixture
def featurehub(featurehub_edge: EdgeSimulator, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[FeatureHubFlags]:
    """Flags the test sets, served to the app through fh_prefork as in production."""
    from .. import runtime

    env = {"FEATUREHUB_EDGE_URL": featurehub_edge.url, "FEATUREHUB_API_KEY": API_KEY,
           "FH_PREFORK_STORE": f"file://{tmp_path}/featurehub-store",
           "FH_PREFORK_REFRESH_SECONDS": "0.2"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # configure() overrides would win over the environment: the test's Edge and store rule
    monkeypatch.setattr(runtime, "_overrides", {})
    # A worker already running here serves another Edge: the test's flags would never reach
    # it. Start one on the test's settings now, so that set() has something to wait for
    # (started lazily by the app's first flag read, the first request would serve nothing).
    runtime.stop_worker()
    runtime.start_worker(hooked="fh_prefork.testing.pytest_plugin")
    try:
        yield FeatureHubFlags(featurehub_edge, {**os.environ, **env})
    finally:
        runtime.stop_worker()
