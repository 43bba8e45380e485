"""Randomized histories: does the shared state tell the truth after any mix of faults?

Real gunicorn workers (3 at start, 2-5 as the schedule adds and removes them)
run the probe app against the local Edge simulator and a store (a memcached or a
Redis of the test's own, or the embedded file store in ``tmp_path``), each worker on its
own Edge stream (``every``) or one leader's (``leader``). A seeded schedule
(``tests/history/schedule.py``) drives Edge creates, updates and deletes (to
every stream or to one), memcached flush_all / restart / SIGSTOP..SIGCONT, the
file store's data file deleted, worker SIGKILLs and gunicorn TTIN/TTOU, with
short sleeps between. At quiescence (memcached running, nothing paused) every
worker and the store must hold exactly Edge's features within ``QUIESCE_BOUND``:
nothing missing, nothing extra, nothing older (``tests/support/state.py``).
A one-stream event reaches the other workers only through the store, and in
leader mode followers have no Edge connection at all.

Seeds:

* CI (default): ``CI_SEEDS`` for each backend x Edge mode, plus fault-free
  controls per combination (updates to every stream; creates, deletes and
  updates, some to one stream) that prove the harness: they pass on any store
  that works without faults. A passing run takes ~3-10 s, a failing one ~35-45 s
  (the quiescence bound); the default set (memcached, file, Redis) takes ~2.5 min when it
  passes.
* long mode: ``FH_PREFORK_HISTORY_SEEDS=<count>`` runs seeds
  ``range(start, start + count)``, ``start`` from ``FH_PREFORK_HISTORY_SEED_START``
  (default 0), e.g.::

      FH_PREFORK_HISTORY_SEEDS=300 .venv/bin/pytest tests/history -q -x

* replay one seed: ``FH_PREFORK_HISTORY_SEED=<n>``, narrowed to one combination by
  node id (a failure prints the exact command)::

      FH_PREFORK_HISTORY_SEED=10 .venv/bin/pytest -s \\
          'tests/history/test_history.py::test_history[memcache-leader-seed10]'

  ``-k "memcache and leader"`` narrows too. Add ``-s`` to see each run's timings.

A failure names the seed, prints the schedule (one step per line), what each
step actually did (stream and pid it reached, waits that timed out), and
``describe()`` of every worker and the store that differ from Edge.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.history.schedule import (
    ALL_KINDS,
    BACKEND_KINDS,
    BACKENDS,
    EDGE_FAULT_END,
    EDGE_KINDS,
    EDGE_ONLY,
    REAL_EDGE_KINDS,
    UPDATES_ONLY,
    Schedule,
    Step,
    edge_after,
    generate,
)
from tests.servers.conftest import API_KEY
from tests.support.balancer import Balancer
from tests.support.cost import assert_cost, measure_cost
from tests.support.matrix import pairwise
from tests.support.memcached import Memcached
from tests.support.procs import hold_for
from tests.support.redis import Redis
from tests.support.servers import fh_log_lines
from tests.support.state import (
    State,
    converged,
    describe,
    edge_state,
    file_state,
    memcached_flush_all,
    memcached_state,
    redis_flush_all,
    redis_state,
    worker_states,
)

StartCluster = Callable[..., Cluster]

ENVIRONMENT = "env-srv"    # environment id in API_KEY: the store's data key is {prefix}_env-srv
assert f"/{ENVIRONMENT}/" in API_KEY
REFRESH = 0.3
LEASE = 3                  # leader mode: a SIGKILLed leader's lease lapses after 3 s
MODES = ("every", "leader")
#: Bounded waits, in seconds. Quiescence: a leader's lease lapsing, a worker booting, a few
#: verify periods, and slack for a loaded 2-core machine.
BASELINE_BOUND = 20.0
SETTLE_BOUND = 8.0
TTOU_BOUND = 15.0          # gunicorn's graceful timeout is 10 s
QUIESCE_BOUND = 30.0
POLL = 0.2
#: Edge-absence grace the workers run with (FH_PREFORK_EDGE_ABSENCE_SECONDS), and how long an
#: agreement must then last: the grace plus a full verify read (12 refreshes), with slack. A
#: state that agrees for a moment and is then judged away by a worker is no convergence.
ABSENCE = 1.0
#: Real-Edge runs: the grace is longer than any Edge fault of the schedule (EDGE_FAULT_MAX),
#: as production's 300 s is longer than an Edge restart or a replica's lag; streams end
#: after REAL_DROP_AFTER seconds (Edge's drop-after-seconds, 30 s in production).
REAL_ABSENCE = 4.0
#: Cost bounds (tests/support/cost.py): the schedules kill, add and remove workers while
#: two clients keep asking, so a worker may go longer without answering than in a fault
#: test; a spin (a core for seconds) or a stall still fails.
HISTORY_MAX_WAIT = 3.0
HISTORY_MAX_GAP = 6.0
#: CPU seconds per second a worker may use during a schedule: its events, reconnects, store
#: syncs and the runner's own sampling are work (the busiest of 204 real-Edge schedules used
#: 0.19 s per second, on a loaded machine); a spin burns a whole core (about 1.0).
HISTORY_CPU_PER_SECOND = 0.5
REAL_DROP_AFTER = 3.0
#: Edge's stream drop (30 s in production) in the other runs: a delete no stream heard (its
#: leader SIGKILLed before its write) is judged from the next full list, so lists must come
#: well inside QUIESCE_BOUND
DROP_AFTER = 5.0

#: Seeds CI runs for every backend x mode (together they use every step kind of both
#: backends: test_ci_seeds_cover_every_step_kind).
CI_SEEDS = (2, 10)
CONTROL_SEED = 1


def seeds() -> list[int]:
    one = os.environ.get("FH_PREFORK_HISTORY_SEED", "").strip()
    if one:
        return [int(one)]
    count = os.environ.get("FH_PREFORK_HISTORY_SEEDS", "").strip()
    if count:
        start = int(os.environ.get("FH_PREFORK_HISTORY_SEED_START", "0") or 0)
        return list(range(start, start + int(count)))
    return list(CI_SEEDS)


class StoreUnderTest:
    """The store the workers share, seen and hurt from outside."""

    def __init__(self, backend: str, prefix: str, tmp_path: Path,
                 memcached: Memcached | Redis | None) -> None:
        self.backend = backend
        self.data_key = f"{prefix}_{ENVIRONMENT}"
        self.memcached = memcached
        self.folder = tmp_path / "store"
        self.paused = False

    @property
    def url(self) -> str:
        if self.memcached is not None:
            return self.memcached.url
        return f"file://{self.folder}"

    def state(self) -> State | None:
        if isinstance(self.memcached, Redis):
            return redis_state(self.memcached.url, self.data_key)
        if self.memcached is not None:
            return memcached_state(self.memcached.address, self.data_key)
        return file_state(self.folder, self.data_key)

    def _pid(self) -> int:
        assert self.memcached is not None and self.memcached.proc is not None
        return self.memcached.proc.pid

    def flush_all(self) -> str:
        assert self.memcached is not None
        if isinstance(self.memcached, Redis):
            return redis_flush_all(self.memcached.url)
        return memcached_flush_all(self.memcached.port)

    def restart(self) -> str:
        assert self.memcached is not None
        self.memcached.restart()  # a paused memcached is SIGKILLed like a running one
        self.paused = False
        return f" [pid {self._pid()}]"

    def pause(self) -> str:
        os.kill(self._pid(), signal.SIGSTOP)
        self.paused = True
        return ""

    def resume(self) -> str:
        if self.memcached is None or not self.paused:
            return ""
        self.paused = False
        try:
            os.kill(self._pid(), signal.SIGCONT)
        except (ProcessLookupError, AssertionError):
            return " [memcached not running]"
        return ""

    def ensure_running(self) -> None:
        if self.memcached is not None and (self.memcached.proc is None
                                           or self.memcached.proc.poll() is not None):
            self.memcached.stop()
            self.memcached.start()

    def delete_file(self) -> str:
        path = self.folder / f"{self.data_key}.json"
        try:
            path.unlink()
        except FileNotFoundError:
            return " [no data file]"
        return ""


class History:
    """Runs one schedule against a cluster and reports what each step did."""

    def __init__(self, schedule: Schedule, mode: str, cluster: Cluster, edge: EdgeSimulator,
                 store: StoreUnderTest) -> None:
        self.schedule = schedule
        self.mode = mode
        self.cluster = cluster
        self.edge = edge
        self.store = store
        self.workers = schedule.workers     # what gunicorn is asked to run
        self.log: list[str] = []
        self.started = time.monotonic()
        self.last: tuple[State, dict[int, State], State | None] = ({}, {}, None)
        self.last_error = ""
        #: every Edge the workers reach (the balancer's replicas in real-Edge runs)
        self.replicas: list[EdgeSimulator] = [edge]
        #: while an Edge fault lasts: worker pid -> {key: id} it held, which Edge still has,
        #: when the fault began. No bad list, lag or key outage may take one away.
        self.protected: dict[int, dict[str, str]] | None = None
        self.protected_at = 0.0
        #: the workers' absence grace: a fault that outlasts it in wall time (a slow step on
        #: a loaded machine) may remove what it hides, by design, so the check stops there
        self.absence = ABSENCE
        #: a fault outlasted the grace and no settle has converged since: the absence marks it
        #: proposed may still be confirmed (a few refreshes later) during the next fault, so
        #: that fault is not protected; the flags come back once Edge names them (the settle)
        self.outlasted = False
        self.violations: list[str] = []

    def note(self, text: str) -> None:
        self.log.append(f"[{time.monotonic() - self.started:6.2f}] {text}")

    # -- observing ------------------------------------------------------------------------

    def observe(self) -> bool:
        """One look at Edge, every worker and the store; True when they all agree."""
        expected = edge_state(self.edge)
        try:
            workers = worker_states(self.cluster, timeout=5)
        except (TimeoutError, OSError, ValueError, KeyError) as err:
            self.last = (expected, {}, self.store.state())
            self.last_error = repr(err)
            return False
        store = self.store.state()
        self.last = (expected, workers, store)
        self.last_error = ""
        return len(workers) == self.workers and converged(expected, workers, store)

    def wait_converged(self, bound: float) -> float | None:
        """Seconds until everything agreed, or None after ``bound``."""
        started = time.monotonic()
        deadline = started + bound
        while True:
            if self.observe():
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL)  # polling interval of a bounded wait

    def summary(self) -> str:
        expected, workers, store = self.last
        lines = [f"edge: {sorted(expected.items())}",
                 f"gunicorn asked for {self.workers} worker(s); answered: {sorted(workers)}"]
        if self.last_error:
            lines.append(f"last observation failed: {self.last_error}")
        lines.append(describe(expected, workers, store))
        try:
            for pid, status in sorted(self.cluster.statuses(timeout=5).items()):
                st = status.get("store") or {}
                lines.append(f"worker {pid}: role={status.get('role')} "
                             f"edge={status.get('edge_state')} store_healthy={st.get('healthy')} "
                             f"pending={st.get('pending')} last_error={st.get('last_error')!r}")
        except (TimeoutError, OSError, ValueError):
            lines.append("(statuses unavailable)")
        return "\n".join(lines)

    # -- acting ---------------------------------------------------------------------------

    def run(self) -> None:
        for i, step in enumerate(self.schedule.steps):
            self.note(f"{i:3d} {step}{self.do(step)}")

    def do(self, step: Step) -> str:
        done = self._do(step)
        if self.protected is not None:
            self.check_protected(step)
        if step.kind in EDGE_FAULT_END.values():
            self.protected = None
        return done

    def _do(self, step: Step) -> str:
        if step.kind in EDGE_KINDS:
            return self.edge_event(step)
        if step.kind in REAL_EDGE_KINDS:
            return self.edge_fault(step)
        if step.kind == "sleep":
            time.sleep(step.seconds)
            return ""
        if step.kind == "mc_flush":
            return self.store.flush_all()
        if step.kind == "mc_restart":
            return self.store.restart()
        if step.kind == "mc_stop":
            return self.store.pause()
        if step.kind == "mc_cont":
            return self.store.resume()
        if step.kind == "file_delete":
            return self.store.delete_file()
        if step.kind == "kill_worker":
            pids = self.cluster.worker_pids()
            if not pids:
                return " [no worker to kill]"
            victim = pids[step.pick % len(pids)]
            try:
                self.cluster.kill_worker(victim)
            except ProcessLookupError:
                return f" [worker {victim} already gone]"
            return f" [pid {victim}]"
        if step.kind == "ttin":
            handled = self.signal_handled(signal.SIGTTIN, "ttin")
            self.workers += 1
            return f" [-> {self.workers} workers]" + ("" if handled else " [not handled]")
        if step.kind == "ttou":
            return self.ttou()
        if step.kind == "settle":
            took = self.wait_converged(SETTLE_BOUND)
            if took is None:
                return f" [NOT converged within {SETTLE_BOUND:g} s: {self.brief_diff()}]"
            self.outlasted = False   # Edge named every flag again: the marks are lifted
            return f" [converged in {took:.2f} s]"
        raise AssertionError(f"unknown step {step}")

    def brief_diff(self) -> str:
        return describe(*self.last).replace("\n", "; ")

    def signal_handled(self, sig: int, name: str) -> bool:
        """Send ``sig`` to the master and wait until it logged handling it.

        Two signals of one kind that arrive before the master's handler runs
        are one signal to the kernel: a second TTIN sent at once is lost, and
        the worker count the schedule expects would never be reached.
        """
        line = f"Handling signal: {name}"
        before = self.cluster.log_text().count(line)
        self.cluster.send(sig)
        deadline = time.monotonic() + TTOU_BOUND
        while self.cluster.log_text().count(line) <= before:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)  # polling interval of a bounded wait
        return True

    def ttou(self) -> str:
        before = set(self.cluster.worker_pids())
        self.signal_handled(signal.SIGTTOU, "ttou")
        self.workers -= 1
        deadline = time.monotonic() + TTOU_BOUND
        while True:
            now = set(self.cluster.worker_pids())
            if before - now and len(now) == self.workers:
                return f" [-> {self.workers} workers; gone: {sorted(before - now)}]"
            if time.monotonic() >= deadline:
                return f" [worker count still {len(now)} after {TTOU_BOUND:g} s]"
            time.sleep(0.05)  # polling interval of a bounded wait

    def edge_event(self, step: Step) -> str:
        feature = step.feature()

        def sender(edge: EdgeSimulator) -> Callable[..., None]:
            return edge.delete_feature if step.kind == "delete" else edge.push_feature

        if not step.one_stream:
            sender(self.edge)(feature)
            return f" [{sum(r.open_streams for r in self.replicas)} stream(s)]"
        # only streams of live workers: an event queued on a dead worker's stream would reach
        # nobody, not even the full list its replacement may already have received; and not
        # a lagging replica's, which forwards nothing
        live = set(self.cluster.worker_pids())
        owned = [(replica, s.id, pid) for replica in self.replicas
                 if not replica.state().get("frozen") for s in replica.streams()
                 if (pid := replica.stream_pid(s)) in live]
        if not owned:
            sender(self.edge)(feature)
            return " [no stream of a live worker open: sent to all]"
        replica, stream_id, pid = owned[step.pick % len(owned)]
        try:
            sender(replica)(feature, stream_id)
        except KeyError:  # closed in between: Edge's state already changed, tell everyone
            sender(self.edge)(feature)
            return f" [stream {stream_id} closed: sent to all]"
        return f" [stream {stream_id} of pid {pid}, 1 of {len(owned)}]"

    # -- the real Edge's faults ----------------------------------------------------------------

    def edge_fault(self, step: Step) -> str:
        """Bad lists, a lagging replica, an unknown key, dropped streams (REAL_EDGE_WEIGHTS)."""
        replicas, lagging = self.replicas, self.replicas[-1]
        if step.kind in EDGE_FAULT_END:
            self.protect()
        if step.kind == "bad_list":
            if step.value:
                for replica in replicas:
                    replica.serve_empty(True)
            else:
                keys = sorted(f["key"] for f in self.edge.features())
                hidden = keys[step.pick % len(keys):][:max(1, len(keys) // 3)]
                for replica in replicas:
                    replica.hide(hidden)
            for replica in replicas:
                replica.drop_streams()      # every stream reconnects and gets the bad list
            return "" if step.value else f" [hiding {hidden}]"
        if step.kind == "bad_list_end":
            for replica in replicas:
                replica.serve_empty(False)
                replica.hide([])
                replica.drop_streams()
            return ""
        if step.kind == "replica_lag":
            lagging.freeze()
            return f" [replica on port {lagging.port} frozen]"
        if step.kind == "catch_up":
            lagging.catch_up()
            return ""
        if step.kind == "unknown_key":
            for replica in replicas:
                replica.keys_unknown = True
                replica.drop_streams()
            return ""
        if step.kind == "key_known":
            for replica in replicas:
                replica.keys_unknown = False
            return ""
        if step.kind == "drop_streams":
            for replica in replicas:
                replica.drop_streams()
            return ""
        raise AssertionError(f"unknown Edge fault {step}")

    def protect(self) -> None:
        """Note what each worker holds that Edge has, as an Edge fault begins."""
        if self.outlasted:
            self.note("not protected: an earlier fault outlasted the grace and its absence "
                      "marks may land now; protection resumes after the next settle")
            return
        expected = edge_state(self.edge)
        try:
            workers = worker_states(self.cluster, timeout=5)
        except (TimeoutError, OSError, ValueError, KeyError):
            workers = {}
        self.protected = {pid: {k: fid for k, (fid, _) in held.items()
                                if k in expected and expected[k][0] == fid}
                          for pid, held in workers.items()}
        self.protected_at = time.monotonic()

    def check_protected(self, step: Step) -> None:
        """During an Edge fault: no worker may have lost a flag it held that Edge still has."""
        assert self.protected is not None
        if time.monotonic() - self.protected_at >= self.absence:
            self.note(f"the Edge fault outlasted the {self.absence:g} s grace in wall time: "
                      "what it hides may be removed from here, by design")
            self.protected = None
            self.outlasted = True
            return
        expected = edge_state(self.edge)
        try:
            workers = worker_states(self.cluster, timeout=5)
        except (TimeoutError, OSError, ValueError, KeyError):
            return        # a worker booting or exiting: the next step looks again
        for pid, held in self.protected.items():
            now = workers.get(pid)
            if now is None:
                continue  # killed or removed: its replacement was not there to protect
            lost = sorted(k for k, fid in held.items()
                          if k in expected and expected[k][0] == fid and k not in now)
            if lost:
                self.violations.append(f"after '{step}': worker {pid} lost {lost}, which "
                                       f"Edge still has")


def run_schedule(schedule: Schedule, mode: str, request: pytest.FixtureRequest,
                 edge: EdgeSimulator, start_cluster: StartCluster,
                 prefix: str, tmp_path: Path, *, real_edge: bool = False) -> None:
    """Run ``schedule``; ``real_edge``: behind a balancer over two replicas of ``edge``, with
    the real Edge's stream drop and the real-Edge absence grace (see REAL_EDGE_WEIGHTS)."""
    with contextlib.ExitStack() as stack:
        replicas = [edge]
        url = edge.url
        edge.drop_after = DROP_AFTER    # Edge ends every stream, so every worker's list renews
        if real_edge:
            lagging = stack.enter_context(edge.replica())
            replicas.append(lagging)
            for replica in replicas:
                replica.drop_after = REAL_DROP_AFTER
            url = stack.enter_context(Balancer([edge.port, lagging.port])).url
        _run_schedule(schedule, mode, request, edge, replicas, url, start_cluster, prefix,
                      tmp_path, REAL_ABSENCE if real_edge else ABSENCE)


def _run_schedule(schedule: Schedule, mode: str, request: pytest.FixtureRequest,
                  edge: EdgeSimulator, replicas: list[EdgeSimulator], url: str,
                  start_cluster: StartCluster, prefix: str, tmp_path: Path,
                  absence: float) -> None:
    backend = schedule.backend
    stay = absence + 12 * REFRESH * 1.2 + 0.5
    server_fixture = {"memcache": "own_memcached", "redis": "own_redis"}.get(backend)
    memcached: Memcached | Redis | None = (request.getfixturevalue(server_fixture)
                                           if server_fixture else None)
    store = StoreUnderTest(backend, prefix, tmp_path, memcached)
    edge.set_features(schedule.initial_features())
    env = {"FH_PREFORK_STORE": store.url, "FH_PREFORK_EDGE_MODE": mode,
           # a full read (verify) every 12 refreshes: every 3.6 s, well inside QUIESCE_BOUND
           "FH_PREFORK_REFRESH_SECONDS": str(REFRESH),
           "FH_PREFORK_EDGE_ABSENCE_SECONDS": str(absence), "FEATUREHUB_EDGE_URL": url}
    if mode == "leader":
        env["FH_PREFORK_LEASE_SECONDS"] = str(LEASE)
    cluster = start_cluster("gunicorn", schedule.workers, env=env)
    history = History(schedule, mode, cluster, edge, store)
    history.replicas = replicas
    history.absence = absence
    label = f"seed {schedule.seed} ({backend}, {mode})"

    def failure(what: str) -> str:
        replay = (f"FH_PREFORK_HISTORY_SEED={schedule.seed} .venv/bin/pytest -s "
                  f"'{request.node.nodeid}'")
        return "\n".join([
            f"history {label}: {what}", f"replay: {replay}", "", "schedule:", str(schedule), "",
            "executed:", *history.log, "", "state at the end (describe):", history.summary(),
            "", "fh_prefork log lines (last 25):", *fh_log_lines(cluster)[-25:]])

    took = history.wait_converged(BASELINE_BOUND)
    if took is None:
        pytest.fail(failure(f"the initial features never converged within "
                            f"{BASELINE_BOUND:g} s (before any step)"), pytrace=False)
    history.note(f"baseline converged in {took:.2f} s")
    history.started = time.monotonic()
    try:
        with measure_cost(cluster, clients=2) as cost:
            history.run()
            ran = time.monotonic() - history.started
            history.note("quiescence: " + ("SIGCONT memcached" if store.paused
                                           else "nothing paused") + store.resume())
            store.ensure_running()
            took = history.wait_converged(QUIESCE_BOUND)
    finally:
        store.resume()
    history.note(f"cost: {cost.summary()}")
    assert edge_state(edge) == edge_after(schedule), "the Edge simulator lost track of the schedule"
    try:   # what the faults cost while they lasted: a spin or a stall fails the history
        assert_cost(cost, max_wait=HISTORY_MAX_WAIT, max_gap=HISTORY_MAX_GAP,
                    floor=HISTORY_CPU_PER_SECOND)
    except AssertionError as err:
        pytest.fail(failure(f"the schedule cost too much: {err}"), pytrace=False)
    if history.violations:
        pytest.fail(failure("a bad Edge list, a lagging replica or a key outage removed "
                            "flags Edge still had:\n" + "\n".join(history.violations)),
                    pytrace=False)
    if took is None:
        pytest.fail(failure(f"did not converge within {QUIESCE_BOUND:g} s of quiescence"),
                    pytrace=False)
    hold_for(stay)
    history.note(f"held {stay:.1f} s past convergence (absence grace and a verify read)")
    if history.wait_converged(SETTLE_BOUND) is None:
        pytest.fail(failure(f"converged, then lost the agreement within {stay:.1f} s (the "
                            f"{absence:g} s Edge-absence grace and a verify read)"),
                    pytrace=False)
    print(f"history {label}: {len(schedule.steps)} steps in {ran:.1f} s, "
          f"converged {took:.2f} s after quiescence, {history.workers} workers; "
          f"busiest worker {cost.max_cpu:.2f} CPU s, longest unanswered request "
          f"{cost.longest_wait:.2f} s, longest silent worker "
          f"{max(cost.gaps.values(), default=0.0):.2f} s")


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_history(backend: str, mode: str, seed: int, request: pytest.FixtureRequest,
                 edge: EdgeSimulator, start_cluster: StartCluster,
                 prefix: str, tmp_path: Path) -> None:
    run_schedule(generate(seed, backend), mode, request, edge, start_cluster, prefix, tmp_path)


#: name -> (weights, share of one-stream events): fault-free schedules.
CONTROLS: dict[str, tuple[dict[str, float], float]] = {
    "updates-to-all-streams": (UPDATES_ONLY, 0.0),
    "edge-events-some-to-one-stream": (EDGE_ONLY, 0.4),
}


#: Every pair of (backend, mode, control) once, 6 of the 12 combinations: a control proves
#: the harness converges without faults, and a harness bug that needs one backend, one mode
#: or one control shows in a pair (FH_PREFORK_FULL_MATRIX=1 runs all 12).
CONTROL_CASES = pairwise((BACKENDS, MODES, tuple(CONTROLS)), [
    ("memcache", "every", "updates-to-all-streams"),
    ("memcache", "leader", "edge-events-some-to-one-stream"),
    ("file", "every", "edge-events-some-to-one-stream"),
    ("file", "leader", "updates-to-all-streams"),
    ("redis", "every", "updates-to-all-streams"),
    ("redis", "leader", "edge-events-some-to-one-stream"),
])


@pytest.mark.parametrize(("backend", "mode", "control"), CONTROL_CASES)
def test_control_without_faults(
        backend: str, mode: str, control: str, request: pytest.FixtureRequest,
        edge: EdgeSimulator, start_cluster: StartCluster,
        prefix: str, tmp_path: Path) -> None:
    """The harness itself: without faults, Edge's events must converge on any working store
    (creates, deletes, fresh ids on re-creation, events that reach one stream only)."""
    weights, one_stream = CONTROLS[control]
    schedule = generate(CONTROL_SEED, backend, weights=weights, one_stream=one_stream)
    run_schedule(schedule, mode, request, edge, start_cluster, prefix, tmp_path)


def test_schedules_are_seeded_and_fair() -> None:
    for backend in BACKENDS:
        for seed in range(200):
            schedule = generate(seed, backend)
            assert schedule == generate(seed, backend), "same seed, same schedule"
            assert 25 <= len(schedule.steps) <= 42
            kinds = {s.kind for s in schedule.steps}
            for other, only in BACKEND_KINDS.items():
                if other != backend:
                    assert not kinds & (set(only) - set(BACKEND_KINDS[backend]))
            workers, paused, unsettled = schedule.workers, False, False
            seen_ids: set[str] = {s.id for s in schedule.initial}
            for step in schedule.steps:
                if step.kind == "create":
                    assert step.id not in seen_ids, f"seed {seed}: id {step.id} reused"
                    seen_ids.add(step.id)
                unsettled |= step.kind in EDGE_KINDS and step.one_stream
                if step.kind == "settle":
                    unsettled = False
                if step.kind == "ttou":
                    assert not paused and not unsettled, f"seed {seed}: unfair ttou"
                paused = (step.kind == "mc_stop") or (paused and step.kind not in
                                                      ("mc_cont", "mc_restart"))
                workers += {"ttin": 1, "ttou": -1}.get(step.kind, 0)
                assert 2 <= workers <= 5
            assert workers == schedule.final_workers


def test_ci_seeds_cover_every_step_kind() -> None:
    for backend in BACKENDS:
        kinds = {s.kind for seed in CI_SEEDS for s in generate(seed, backend).steps}
        one_stream = {s.kind for seed in CI_SEEDS for s in generate(seed, backend).steps
                      if s.one_stream}
        wanted = {k for k in ALL_KINDS
                  if k in BACKEND_KINDS[backend]
                  or not any(k in only for other, only in BACKEND_KINDS.items()
                             if other != backend)}
        assert kinds == wanted, (backend, sorted(wanted - kinds))
        assert one_stream == set(EDGE_KINDS), (backend, one_stream)


#: The real-Edge seed CI runs per backend, in both modes: the first whose schedule has every
#: real-Edge kind and a delete (test_real_edge_ci_seeds_cover_every_kind).
REAL_CI_SEEDS = {"memcache": 117, "file": 102, "redis": 117}


def real_cases() -> list[tuple[str, int]]:
    if os.environ.get("FH_PREFORK_HISTORY_SEEDS", "").strip() or \
            os.environ.get("FH_PREFORK_HISTORY_SEED", "").strip():
        return [(backend, seed) for backend in BACKENDS for seed in seeds()]
    return list(REAL_CI_SEEDS.items())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("backend", "seed"), real_cases(), ids=lambda v: f"{v}")
def test_real_edge_history(backend: str, mode: str, seed: int, request: pytest.FixtureRequest,
                           edge: EdgeSimulator, start_cluster: StartCluster,
                           prefix: str, tmp_path: Path) -> None:
    """The real Edge's faults mixed into a history: version-0 deletes (the simulator's
    default), empty and short lists, one of two replicas lagging, unknown-key periods,
    dropped streams. During each fault no worker loses a flag Edge still has; at quiescence
    every worker and the store equal Edge exactly."""
    run_schedule(generate(seed, backend, real_edge=True), mode, request, edge, start_cluster,
                 prefix, tmp_path, real_edge=True)


def test_real_edge_schedules_are_fair() -> None:
    for backend in BACKENDS:
        for seed in range(200):
            schedule = generate(seed, backend, real_edge=True)
            assert schedule == generate(seed, backend, real_edge=True)
            fault = None
            for step in schedule.steps:
                if step.kind in EDGE_FAULT_END:
                    assert fault is None, f"seed {seed}: two Edge faults at once"
                    fault = step.kind
                    assert 0 < step.seconds <= 3.0 < REAL_ABSENCE
                elif fault is not None and step.kind == EDGE_FAULT_END[fault]:
                    fault = None
                elif step.kind in ("settle", "ttou"):
                    assert fault is None, f"seed {seed}: {step.kind} during an Edge fault"
            assert fault is None, f"seed {seed}: an Edge fault outlives the schedule"


def test_real_edge_ci_seeds_cover_every_kind() -> None:
    for backend, seed in REAL_CI_SEEDS.items():
        kinds = {s.kind for s in generate(seed, backend, real_edge=True).steps}
        assert set(REAL_EDGE_KINDS) <= kinds, (backend, sorted(set(REAL_EDGE_KINDS) - kinds))
        assert "delete" in kinds
