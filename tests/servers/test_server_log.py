"""fh_prefork's lines in the server's own log, and no silent misconfiguration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from fh_prefork.testing.cluster import Cluster, free_port
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.support.procs import wait_for
from tests.support.servers import versions

StartCluster = Callable[..., Cluster]


def started_lines(cluster: Cluster) -> dict[int, str]:
    """Worker pid -> its start line, as the server's log shows it."""
    found = {}
    for line in cluster.log_text().splitlines():
        m = re.search(r"fh_prefork: worker (\d+) started by ", line)
        if m:
            found[int(m.group(1))] = line
    return found


def every_start_line(cluster: Cluster) -> dict[int, str]:
    """``started_lines`` once every worker running now has logged its start (bounded)."""
    pids = set(cluster.worker_pids())
    wait_for(lambda: pids <= set(started_lines(cluster)), 10, what="a start line per worker")
    return started_lines(cluster)


def test_gunicorn_shows_each_worker_start_in_its_error_log_with_pid_and_level(
        start_cluster: StartCluster) -> None:
    cluster = start_cluster("gunicorn", 4)
    for pid, line in every_start_line(cluster).items():
        # gunicorn's own format: [time] [pid] [LEVEL] message
        assert re.match(rf"\[[^\]]+\] \[{pid}\] \[INFO\] fh_prefork: worker {pid} started by "
                        r"gunicorn post_fork: store memcache://", line), line
        assert "edge sse, mode every" in line


def test_gunicorn_log_level_is_obeyed(start_cluster: StartCluster) -> None:
    cluster = start_cluster("gunicorn", 2, args=("--log-level", "warning"))
    assert set(versions(cluster).values()) == {1}
    assert started_lines(cluster) == {}, "INFO lines must not pass gunicorn's warning level"


def test_uwsgi_log_carries_fh_prefork_lines_with_pid_and_level(
        start_cluster: StartCluster) -> None:
    cluster = start_cluster("uwsgi", 2)
    for pid, line in every_start_line(cluster).items():
        assert re.search(rf"\[{pid}\] \[INFO\] fh_prefork: worker {pid} started by uWSGI", line)


def test_forgotten_hooks_leave_the_master_dormant_and_say_what_to_add(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    cluster = start_cluster("gunicorn", 3, args=("-c", "python:tests.servers.nohooks_conf",
                                                 "--preload"),
                            env={"PROBE_CONFIG_AT_IMPORT": "1"})
    wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="flags in every worker")
    master = psutil.Process(cluster.master_pid)
    assert master.num_threads() == 1, "a prefork master must hold no thread"
    remote_ports = {c.raddr.port for c in master.net_connections(kind="tcp") if c.raddr}
    assert edge.port not in remote_ports, "the master holds an Edge connection"
    assert not remote_ports, f"the master holds connections to {remote_ports}"
    text = cluster.log_text()
    hints = [line for line in text.splitlines() if "no gunicorn hook started fh_prefork" in line]
    assert len(hints) == 3, hints
    assert all("from fh_prefork.gunicorn import on_starting, post_fork, worker_exit" in line
               for line in hints)
    assert "[WARNING]" in hints[0] or "WARNING" in hints[0]


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi-with-http-router"])
def test_status_of_a_whole_server_lists_every_worker_and_agreement(
        start_cluster: StartCluster, edge: EdgeSimulator, tmp_path: Path, kind: str) -> None:
    """Asked from an operator's shell, not the server's: another XDG_RUNTIME_DIR and no
    FH_PREFORK_* settings. The records are found as the server's workers wrote them, and a
    child that is no worker (uWSGI's HTTP router) is listed, not counted as a failure."""
    server_runtime, operator_runtime = tmp_path / "server-run", tmp_path / "operator-run"
    server_runtime.mkdir(mode=0o700)
    operator_runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(server_runtime)}
    if kind == "gunicorn":
        cluster = start_cluster("gunicorn", 3, env=env)
    else:   # process titles tell the router ("uWSGI http 1") from the workers
        cluster = start_cluster("uwsgi", 3, ("--http", f"127.0.0.1:{free_port()}",
                                             "--auto-procname"), env=env)
    children = {p.pid: " ".join(p.cmdline()) for p in psutil.Process(cluster.master_pid).children()}
    workers = {pid for pid, title in children.items()
               if kind == "gunicorn" or "uWSGI worker" in title}
    assert len(workers) == 3, children

    def served() -> bool:
        answers = cluster.sample("/flags?key=FLAG", pids=sorted(workers))
        return {a["flags"]["FLAG"]["version"] for a in answers.values()} == {1}

    wait_for(served, 10, what="flags everywhere")
    cli = [str(Path(sys.executable).parent / "fh-prefork"), "status", "--server",
           str(cluster.master_pid)]
    operator_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("FH_PREFORK_", "FEATUREHUB_"))}
    operator_env["XDG_RUNTIME_DIR"] = str(operator_runtime)

    def report() -> dict[str, Any] | None:
        run = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=30,
                             env=operator_env)
        answer = json.loads(run.stdout)
        connected = all(w.get("edge_state") == "connected" for w in answer["workers"])
        return answer if run.returncode == 0 and connected else None  # records: once a second

    answer = wait_for(report, 10, what="every worker published and agrees with the store")
    assert {w["pid"] for w in answer["workers"]} == workers
    assert all(w["agrees"] and w["edge_state"] == "connected" for w in answer["workers"])
    assert set(answer["silent"]) == set(children) - workers
    assert answer["silent"] if kind != "gunicorn" else not answer["silent"]
    assert not any(operator_runtime.iterdir()), "a reading tool creates nothing"
    text = subprocess.run(cli, capture_output=True, text=True, timeout=30, env=operator_env)
    assert text.returncode == 0 and text.stdout.count("agrees") == 3, text.stdout
    print(text.stdout)


def test_status_of_a_server_whose_store_url_has_a_password(
        start_cluster: StartCluster, edge: EdgeSimulator, tmp_path: Path) -> None:
    """Records mask the password; the command compares with the store as the master names
    it (its environment), or says to pass --store, and prints the password nowhere."""
    pytest.importorskip("redis")
    from tests.support.redis import Redis

    with Redis(password="s3cret-pw") as redis_server:
        cluster = start_cluster("gunicorn", 2, env={"FH_PREFORK_STORE": redis_server.url})
        wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="flags everywhere")
        cli = [str(Path(sys.executable).parent / "fh-prefork"), "status", "--server",
               str(cluster.master_pid), "--json"]
        operator_env = {k: v for k, v in os.environ.items()
                        if not k.startswith(("FH_PREFORK_", "FEATUREHUB_"))}

        def report() -> dict[str, Any] | None:
            run = subprocess.run(cli, capture_output=True, text=True, timeout=30,
                                 env=operator_env)
            assert "s3cret-pw" not in run.stdout + run.stderr
            answer = json.loads(run.stdout)
            return answer if run.returncode == 0 and len(answer["workers"]) == 2 else None

        answer = wait_for(report, 10, what="both workers agree with the password store")
        assert all(w["agrees"] for w in answer["workers"])
        assert all(":***@" in w["store"] for w in answer["workers"])
