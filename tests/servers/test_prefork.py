"""gunicorn and uWSGI masters forking real workers: every worker correct, in every mode."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH, default_store_env
from tests.support.matrix import chosen
from tests.support.procs import wait_for
from tests.support.servers import stream_owners, versions

StartCluster = Callable[..., Cluster]
#: tgkill(2), a signal to one thread of a process: its number on the machines we test on
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())

VARIANTS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "gunicorn-sync": ("gunicorn", (), {}),
    "gunicorn-preload": ("gunicorn", ("--preload",), {"PROBE_CONFIG_AT_IMPORT": "1"}),
    "gunicorn-gthread": ("gunicorn", ("-k", "gthread", "--threads", "4"), {}),
    "uwsgi": ("uwsgi", (), {}),
    "uwsgi-config-in-master": ("uwsgi", (), {"PROBE_CONFIG_AT_IMPORT": "1"}),
    "uwsgi-lazy-apps": ("uwsgi", ("--lazy-apps",), {"PROBE_CONFIG_AT_IMPORT": "1"}),
    "uwsgi-enable-threads": ("uwsgi", ("--enable-threads",), {}),
    "uwsgi-fork-hooks": ("uwsgi", ("--py-call-uwsgi-fork-hooks",),
                         {"PROBE_CONFIG_AT_IMPORT": "1"}),
}

STORES = ("memcache", "default", "redis")

#: Variant x store, pairwise rather than the full product (24): every variant once on a
#: network store (memcache and redis in turn: two client libraries, two fork stories), and
#: every variant whose master reads flags before forking (the fork-safety risk) on the
#: embedded file store too. Every server kind meets every store here; each store's logic is
#: proven on its own by tests/store. FH_PREFORK_FULL_MATRIX=1 runs all 24.
VARIANT_STORES = chosen(list(VARIANTS), STORES, [
    ("gunicorn-sync", "memcache"),
    ("gunicorn-preload", "redis"), ("gunicorn-preload", "default"),
    ("gunicorn-gthread", "redis"),
    ("uwsgi", "memcache"),
    ("uwsgi-config-in-master", "memcache"), ("uwsgi-config-in-master", "default"),
    ("uwsgi-lazy-apps", "redis"), ("uwsgi-lazy-apps", "default"),
    ("uwsgi-enable-threads", "redis"),
    ("uwsgi-fork-hooks", "memcache"), ("uwsgi-fork-hooks", "default"),
])

#: Two refresh periods at the top of their jitter, plus scheduling slack on a 2-core machine.
PROPAGATION_BOUND = 2 * REFRESH * 1.2 + 3.0


def store_env(store: str, tmp_path: Path, request: pytest.FixtureRequest
              ) -> dict[str, str | None] | None:
    """memcache: the server_env's own; default: the embedded store; redis: a shared Redis."""
    if store == "default":
        return default_store_env(tmp_path)
    if store == "redis":
        return {"FH_PREFORK_STORE": request.getfixturevalue("redis_server").url}
    return None


def start_variant(start_cluster: StartCluster, name: str, workers: int = 4,
                  store: dict[str, str | None] | None = None) -> Cluster:
    kind, args, env = VARIANTS[name]
    return start_cluster(kind, workers, args, {**env, **(store or {})})


@pytest.mark.parametrize("variant, store", VARIANT_STORES)
def test_every_worker_serves_and_an_update_to_one_stream_reaches_all(
        start_cluster: StartCluster, edge: EdgeSimulator, variant: str, store: str,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cluster = start_variant(start_cluster, variant, store=store_env(store, tmp_path, request))
    workers = cluster.worker_pids()
    assert len(workers) == 4
    # a store that nobody wrote yet: the first flags come from each worker's Edge stream
    wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="initial flags")

    # One Edge stream per worker, none from the master, even when the master read flags.
    assert edge.wait_for_streams(4, timeout=10), edge.state()
    owners = wait_for(lambda: (o := stream_owners(edge)) and None not in o and o, 5,
                      what="stream owners")
    assert sorted(pid for pid in owners if pid is not None) == sorted(workers), (owners, workers)
    assert cluster.master_pid not in owners

    # An update pushed to a single worker's stream reaches every worker through the store.
    one = edge.streams()[0]
    edge.push_feature(make_feature("FLAG", False, 2), stream_id=one.id)
    started = time.monotonic()
    wait_for(lambda: set(versions(cluster).values()) == {2}, PROPAGATION_BOUND,
             what="update to reach every worker")
    took = time.monotonic() - started
    print(f"{variant}/{store}: one-stream update reached all 4 workers in {took:.2f} s")
    assert all(f["FLAG"]["value"] is False for f in cluster.flags("FLAG").values())

    # The worker's own threads are alive: Edge connected, refresh ticking.
    statuses = cluster.statuses()
    for pid, status in statuses.items():
        assert status["role"] == "worker" and status["pid"] == pid
        expected = {"default": "file://" + str(tmp_path), "redis": "redis://"}.get(
            store, "memcache://")
        assert status["store"]["backend"].startswith(expected), status["store"]
        assert status["edge_state"] == "connected", status
        assert status["store"]["counters"]["refreshes"] >= 1, status


@pytest.mark.parametrize("variant", ["gunicorn-preload", "uwsgi-config-in-master"])
def test_master_that_read_flags_keeps_no_thread_or_connection(
        start_cluster: StartCluster, edge: EdgeSimulator, variant: str) -> None:
    cluster = start_variant(start_cluster, variant)
    master = psutil.Process(cluster.master_pid)
    edge_port = edge.port
    assert not [c for c in master.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == edge_port]
    threads_before = master.num_threads()
    ticks = {pid: s["store"]["counters"]["refreshes"] for pid, s in cluster.statuses().items()}
    wait_for(lambda: all(s["store"]["counters"]["refreshes"] >= ticks[pid] + 3
                         for pid, s in cluster.statuses().items()), 10, what="3 worker ticks")
    assert master.num_threads() == threads_before
    for status in cluster.statuses().values():
        assert status["threads"] <= 3 + 4, status  # main (+ gthread pool) + edge + store


@pytest.mark.parametrize("store", ["memcache", "default", "redis"])
@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_same_update_to_every_worker_is_written_once(
        start_cluster: StartCluster, edge: EdgeSimulator, kind: str, store: str,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cluster = start_cluster(kind, 6, env=store_env(store, tmp_path, request))
    assert edge.wait_for_streams(6, timeout=10)

    def settled() -> dict[int, dict[str, Any]] | None:
        statuses = cluster.statuses()
        idle = all(s["store"]["pending"] == 0 and not s["store"]["flushing"]
                   for s in statuses.values())
        return statuses if idle else None

    def initial_write_done() -> dict[int, dict[str, Any]] | None:
        statuses = settled()
        written = statuses and sum(s["counters"]["writes"] for s in statuses.values()) >= 1
        return statuses if written else None

    # the initial features from Edge are written first: count only what the update causes
    initial = wait_for(initial_write_done, 10, what="the initial write")
    before = {pid: s["counters"] for pid, s in initial.items()}
    update = [make_feature(f"SAME{i}", True, 3) for i in range(5)]
    # all streams at once; OTHER stays, or its absence would be judged a delete and written
    edge.set_features([make_feature("FLAG", True, 1), make_feature("OTHER", False, 1), *update])
    wait_for(lambda: all(f["SAME4"]["version"] == 3
                         for f in cluster.flags("SAME4").values()), PROPAGATION_BOUND,
             what="the update in every worker")

    after = {pid: s["counters"] for pid, s in wait_for(settled, 5, what="flushes").items()}
    writes = sum(after[p]["writes"] - before[p]["writes"] for p in after)
    deferred = sum(after[p]["deferred"] - before[p]["deferred"] for p in after)
    conflicts = sum(after[p]["cas_conflicts"] - before[p]["cas_conflicts"] for p in after)
    print(f"{kind}/{store}: same update to 6 workers: {writes} data write(s), "
          f"{conflicts} CAS conflicts")
    assert writes == 1
    assert deferred == 0


@pytest.mark.parametrize("kind", ["gunicorn", "uwsgi"])
def test_worker_killed_while_edge_is_down_is_replaced_and_serves_latest_at_once(
        start_cluster: StartCluster, edge: EdgeSimulator, kind: str) -> None:
    cluster = start_cluster(kind, 4)
    edge.push_feature(make_feature("FLAG", False, 5))
    wait_for(lambda: set(versions(cluster).values()) == {5}, PROPAGATION_BOUND, what="v5")
    edge.go_down()
    victim = cluster.worker_pids()[0]
    cluster.kill_worker(victim)
    replacement = wait_for(lambda: [p for p in cluster.worker_pids() if p != victim]
                           if len(cluster.worker_pids()) == 4 and victim not in
                           cluster.worker_pids() else None, 15, what="replacement worker")
    new_pid = (set(replacement) - set(versions(cluster))) or set(replacement)
    answers = cluster.flags("FLAG")
    assert all(f["FLAG"]["version"] == 5 and f["FLAG"]["value"] is False
               for f in answers.values()), answers
    fresh = [p for p in answers if p in new_pid]
    assert fresh, "the replacement worker answered"
    status = cluster.statuses()
    assert any(s["edge_state"] in ("backoff", "connecting") for s in status.values())


def test_gunicorn_reload_and_shutdown_leave_no_stuck_worker(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    cluster = start_cluster("gunicorn", 4)
    old = set(cluster.worker_pids())
    assert edge.wait_for_streams(4, timeout=10)
    cluster.send(signal.SIGHUP)
    wait_for(lambda: len(set(cluster.worker_pids())) == 4
             and not (set(cluster.worker_pids()) & old), 20, what="new generation of workers")
    # worker exit closed every old stream: exactly one per new worker remains
    wait_for(lambda: edge.open_streams == 4, 10, what="old streams closed")
    assert set(versions(cluster).values()) == {1}
    took = cluster.stop()
    print(f"gunicorn graceful stop of 4 workers took {took:.2f} s")
    assert took < 10, "a worker hung on exit (graceful timeout is 10 s)"
    wait_for(lambda: edge.open_streams == 0, 5, what="all streams closed")


def test_uwsgi_shutdown_closes_everything(start_cluster: StartCluster,
                                          edge: EdgeSimulator) -> None:
    cluster = start_cluster("uwsgi", 4)
    assert edge.wait_for_streams(4, timeout=10)
    took = cluster.stop()
    print(f"uWSGI stop of 4 workers took {took:.2f} s")
    assert took < 10, "a worker waited for worker-reload-mercy: a thread kept it alive"
    wait_for(lambda: edge.open_streams == 0, 5, what="all streams closed")


def _blocked_signals(pid: int, tid: int, field: str = "SigBlk") -> set[int]:
    """The signals thread ``tid`` of process ``pid`` blocks (or, ``SigPnd``, holds pending:
    sent to that thread and not yet handled), as the kernel reports them."""
    with open(f"/proc/{pid}/task/{tid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status
                    if line.startswith(f"{field}:"))
    return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}


SERVER_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                  signal.SIGUSR2}


#: server, store, and the library threads a worker then runs besides its main thread
THREAD_SETS = [("uwsgi", "redis", 3),       # store, its push subscriber, Edge
               ("gunicorn", "default", 3),  # store, its inotify watch, Edge
               ("gunicorn", "none", 2)]     # the status ticker, Edge


@pytest.mark.parametrize(("kind", "store", "threads"), THREAD_SETS,
                         ids=[f"{k}-{s}" for k, s, _ in THREAD_SETS])
def test_signals_sent_to_a_worker_reach_its_main_thread_only(
        start_cluster: StartCluster, edge: EdgeSimulator, request: pytest.FixtureRequest,
        tmp_path: Path, kind: str, store: str, threads: int) -> None:
    """The kernel gives a worker's signal to its main thread, or to another thread that does
    not block it when the main thread has one pending: every library thread blocks them."""
    env: dict[str, str | None] = {"FH_PREFORK_STORE": store}
    if store == "redis":
        env["FH_PREFORK_STORE"] = request.getfixturevalue("redis_server").url
    elif store == "default":
        env = default_store_env(tmp_path)
    cluster = start_cluster(kind, 2, env=env)
    assert edge.wait_for_streams(2, timeout=10)
    for pid in cluster.worker_pids():
        def library_threads(pid: int = pid) -> list[int] | None:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
            return tids if len(tids) >= threads else None

        others = wait_for(library_threads, 10, what=f"{threads} library threads in {pid}")
        for tid in others:
            assert SERVER_SIGNALS <= _blocked_signals(pid, tid), (pid, tid)
        assert not SERVER_SIGNALS & _blocked_signals(pid, pid), "the main thread's own"


@pytest.mark.skipif(SYS_TGKILL is None, reason="tgkill's number unknown on this machine")
def test_a_uwsgi_sigint_on_a_library_thread_neither_ends_nor_hangs_the_worker(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    """uWSGI handles SIGINT in C in the thread that receives it, running the exit hooks
    there: on a library thread that hung the worker until worker-reload-mercy. Aimed at
    each library thread (tgkill), it now waits there, blocked, and the worker serves on."""
    cluster = start_cluster("uwsgi", 1)
    assert edge.wait_for_streams(1, timeout=10)
    pid = cluster.worker_pids()[0]
    libc = ctypes.CDLL(None, use_errno=True)
    library_threads = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    for tid in library_threads:
        assert libc.syscall(SYS_TGKILL, pid, tid, signal.SIGINT) == 0, ctypes.get_errno()
    # delivered and held there, blocked (the old code ran uWSGI's handler at once instead)
    wait_for(lambda: all(signal.SIGINT in _blocked_signals(pid, tid, "SigPnd")
                         for tid in library_threads), 5, what="SIGINT pending on each thread")
    assert cluster.worker_pids() == [pid]
    assert cluster.get("/status")["pid"] == pid
    took = cluster.stop()
    assert took < 10, "a worker waited for worker-reload-mercy"


HELD_START = Path(__file__).parent.parent / "support" / "held_start"


def _held_cluster(kind: str, env: dict[str, str], tmp_path: Path, **hold: str) -> Cluster:
    """A server whose workers' starts are held open 2 s (tests/support/held_start), started
    without waiting for them (start_cluster would)."""
    env = {**env, "PYTHONPATH": f"{HELD_START}{os.pathsep}{env['PYTHONPATH']}",
           "FH_TEST_HELD_START": str(tmp_path / "held"), "FH_TEST_HOLD_SECONDS": "2", **hold}
    cluster = Cluster(kind, 1, env, log_dir=str(tmp_path))
    with open(cluster.log_path, "ab") as log:
        cluster.proc = subprocess.Popen(cluster.command(), env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
    return cluster


def _held(tmp_path: Path, pid: int | None = None) -> list[Path]:
    """The markers of workers inside their held start (``pid``'s only, if given)."""
    return list(tmp_path.glob(f"held.{pid}" if pid is not None else "held.*"))


def _assert_stopped_at_once(cluster: Cluster, took: float, kind: str) -> None:
    print(f"{kind}: stopped during a worker's start in {took:.2f} s")
    assert took < 6, cluster.log_text()[-3000:]    # the start holds 2 s; mercy was 10 s
    assert "NO MERCY" not in cluster.log_text()


@pytest.mark.servers   # starts its servers itself: start_cluster waits for the start to end
@pytest.mark.parametrize(("kind", "where"), [("uwsgi", "start"), ("gunicorn", "start"),
                                             ("gunicorn", "after")])
def test_a_worker_told_to_stop_while_it_starts_stops_at_once(
        edge: EdgeSimulator, server_env: dict[str, str], tmp_path: Path, kind: str,
        where: str) -> None:
    """A stop that lands in the post-fork hook: uWSGI raised it there as KeyboardInterrupt,
    printed it and served on; gunicorn's worker still ran the master's handlers, which
    dropped it. Either way the master killed the worker only after its 10 s of mercy or
    graceful timeout (the 12 s uWSGI stop CI met now and then). ``after``: an application's
    post_fork calls ours, then works on: the stop must still be kept."""
    cluster = _held_cluster(kind, server_env, tmp_path, FH_TEST_HOLD_WHERE=where)
    try:
        wait_for(lambda: _held(tmp_path), 20, what="a worker inside its start")
        took = cluster.stop()
    finally:
        cluster.stop()
    _assert_stopped_at_once(cluster, took, kind)


def _time_from_held_start(cluster: Cluster, tmp_path: Path, act: Callable[[int], object],
                          done: Callable[[int], object], what: str) -> float:
    """Seconds from ``act(pid)``, ``pid`` a worker inside its held start, until ``done(pid)``;
    the server is stopped after, whatever happened."""
    try:
        held = wait_for(lambda: _held(tmp_path), 20, what="a worker inside its start")
        pid = int(held[0].suffix[1:])
        started = time.monotonic()
        act(pid)
        wait_for(lambda: done(pid), 30, what=what)
        return time.monotonic() - started
    finally:
        cluster.stop()


@pytest.mark.servers
def test_ctrl_c_while_a_uwsgi_worker_starts_stops_it_at_once(
        edge: EdgeSimulator, server_env: dict[str, str], tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches every process of the group: the worker's own SIGINT,
    then the master's, which must not interrupt the worker's end."""
    cluster = _held_cluster("uwsgi", server_env, tmp_path)
    took = _time_from_held_start(
        cluster, tmp_path, lambda pid: os.killpg(cluster.master_pid, signal.SIGINT),
        lambda pid: cluster.proc is not None and cluster.proc.poll() is not None,
        "the server gone")
    _assert_stopped_at_once(cluster, took, "uwsgi, Ctrl-C")


@pytest.mark.servers
def test_a_graceful_uwsgi_reload_while_a_worker_starts_replaces_it_at_once(
        edge: EdgeSimulator, server_env: dict[str, str], tmp_path: Path) -> None:
    """SIGHUP (a graceful reload, touch-reload) reaches a starting worker while uWSGI still
    ignores it there: the master waited worker-reload-mercy for that worker to go."""
    cluster = _held_cluster("uwsgi", server_env, tmp_path)
    took = _time_from_held_start(
        cluster, tmp_path, lambda pid: os.kill(cluster.master_pid, signal.SIGHUP),
        lambda pid: pid not in cluster.worker_pids() and cluster.worker_pids(),
        "the starting worker replaced")
    _assert_stopped_at_once(cluster, took, "uwsgi, a graceful reload")


@pytest.mark.servers
def test_a_respawned_uwsgi_worker_told_to_stop_while_it_starts_stops_at_once(
        edge: EdgeSimulator, server_env: dict[str, str], tmp_path: Path) -> None:
    """A worker uWSGI respawns (after a crash, max-requests) starts with its copy of the
    master's C signal handlers, not Python's: the stop must end it all the same."""
    cluster = _held_cluster("uwsgi", server_env, tmp_path)
    try:
        first = wait_for(lambda: cluster.worker_pids(), 20, what="the first worker")[0]

        def serving() -> bool:
            try:
                return bool(cluster.get("/ping", timeout=5) == "ok")
            except (OSError, ValueError):   # still starting: the request waits or is refused
                return False

        wait_for(serving, 20, what="it serving")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: [p for p in cluster.worker_pids() if p != first], 20,
                          what="a respawned worker")[0]
        wait_for(lambda: _held(tmp_path, second), 20, what="it inside its start")
        took = cluster.stop()
    finally:
        cluster.stop()
    _assert_stopped_at_once(cluster, took, "uwsgi, a respawned worker")


def test_edge_down_at_start_then_up(start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    edge.go_down()
    cluster = start_cluster("gunicorn", 4)
    for status in cluster.statuses().values():
        assert status["edge_state"] in ("backoff", "connecting")
    edge.push_feature(make_feature("FLAG", False, 7))  # applied to the state while down
    edge.come_up()
    assert edge.wait_for_streams(4, timeout=10), edge.state()
    wait_for(lambda: set(versions(cluster).values()) == {7}, PROPAGATION_BOUND, what="v7")


def test_refresh_ticks_of_eight_workers_are_spread(start_cluster: StartCluster) -> None:
    cluster = start_cluster("gunicorn", 8)
    statuses = wait_for(lambda: (st := cluster.statuses()) and all(
        len(s["store"]["recent_ticks"]) >= 12 for s in st.values()) and st, 30,
        interval=0.5, what="12 ticks in every worker")
    ticks = sorted((t, pid) for pid, s in statuses.items() for t in s["store"]["recent_ticks"])
    assert len({pid for _, pid in ticks}) == 8
    # each worker's period is jittered: intervals vary, inside +/-20% of the period
    for pid, s in statuses.items():
        own = s["store"]["recent_ticks"]
        gaps = [b - a for a, b in zip(own, own[1:], strict=False)]
        # load only delays a wake-up: the lower bound is strict, the upper one allows two
        # late wake-ups of the 11 (8 workers start on 2 cores while these are taken)
        assert min(gaps) > REFRESH * 0.8 - 0.05, gaps
        assert sum(g >= REFRESH * 1.2 + 0.15 for g in gaps) <= 2, gaps
        assert max(gaps) < REFRESH * 1.2 + 0.5, gaps   # late, never a period skipped
        mean = sum(gaps) / len(gaps)
        spread = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
        assert spread > 0.04, f"worker {pid} ticks at a fixed period: {gaps}"
    # and the workers are not aligned with each other
    close = sum(1 for i, (t, pid) in enumerate(ticks)
                if any(abs(t - u) < 0.01 and p != pid for u, p in ticks[max(0, i - 8):i + 8]))
    share = close / len(ticks)
    print(f"{len(ticks)} ticks of 8 workers; {share:.0%} within 10 ms of another worker's tick")
    # lockstep gives ~100%; independent uniform phases give ~25% at this tick density
    assert share < 0.6
