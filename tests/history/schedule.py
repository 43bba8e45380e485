"""Seeded random fault schedules for the history test: pure data, no I/O, no clock.

``generate(seed, backend)`` draws everything from ``random.Random(seed)``, so a
seed names one schedule forever (for a given version of this file): the
initial Edge features, then ~25-40 steps of Edge events (create, update,
delete; to every stream or to one), store faults, worker faults and short
sleeps. The generator models Edge's feature set (key -> id, version) so every
event is one the real FeatureHub could send: an update is the next version of
the current id, a delete names a present key, and a key created again after a
delete gets a fresh id (FeatureHub gives a new feature a new id).

These rules keep every schedule *fair*, i.e. its final state knowable by the
workers, so that a test failure is the store's fault and never the schedule's
(the runner adds one: a one-stream event goes only to a live worker's stream):

* ``ttou`` (gunicorn removes its oldest worker, with no replacement and so no
  new Edge stream) is preceded by ``settle`` when an event went to one stream
  since the last settle: otherwise the removed worker could take the only
  copy of that event with it, a loss no store can repair. ``settle`` waits,
  bounded, until every worker and the store agree with Edge; a store that
  never gets there is noted in the run's log and fails at the end anyway. A SIGKILLed worker
  is replaced, and its replacement's stream brings Edge's full list, so kills
  need no such rule.
* Edge always holds at least one feature: for an empty environment "the store
  holds nothing" and "the store holds an empty list" would both be the truth.
* memcached is never paused (SIGSTOP) across ``ttou``/``settle`` (an
  ``mc_cont`` comes first), and a pause lasts ~0.5-3 s of the schedule's sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fh_prefork.testing.edge_simulator import make_feature

BACKENDS = ("memcache", "file", "redis")
KEYS = tuple(f"K{i}" for i in range(8))
INITIAL_KEYS = 3
MIN_WORKERS, MAX_WORKERS = 2, 5
#: Share of Edge events sent to one random open stream instead of every stream.
ONE_STREAM = 0.4

EDGE_KINDS = ("create", "update", "delete")
#: Step kinds and their default weights; backend-only kinds are dropped for the other backend.
WEIGHTS: dict[str, float] = {
    "create": 8, "update": 24, "delete": 8,       # Edge events
    "sleep": 16,                                   # 0.05-0.6 s
    "mc_flush": 4, "mc_restart": 3, "mc_stop": 3,  # memcache backend: flush_all, restart, SIGSTOP
    "file_delete": 6,                              # file backend: the data file deleted
    "kill_worker": 5, "ttin": 3, "ttou": 3,        # gunicorn workers: SIGKILL, one more, one less
}
#: Controls that must converge on any store that is not broken outright.
UPDATES_ONLY: dict[str, float] = {"update": 3, "sleep": 1}
EDGE_ONLY: dict[str, float] = {"create": 1, "update": 3, "delete": 1, "sleep": 2}
#: Redis is hurt as memcached is (the mc_* steps: FLUSHALL, restart empty, SIGSTOP/SIGCONT),
#: so a seed gives Redis the schedule it gives memcached.
BACKEND_KINDS = {"memcache": ("mc_flush", "mc_restart", "mc_stop", "mc_cont"),
                 "file": ("file_delete",),
                 "redis": ("mc_flush", "mc_restart", "mc_stop", "mc_cont")}
#: Kinds the generator inserts itself (never drawn).
IMPLIED_KINDS = ("mc_cont", "settle")
ALL_KINDS = (*WEIGHTS, *IMPLIED_KINDS)

#: What the real FeatureHub Edge adds (issue 19), drawn only in real-Edge schedules
#: (``generate(..., real_edge=True)``), which run behind a balancer over two Edge replicas:
#: a bad list (every replica serves an empty list, or one lacking some features, while
#: they still exist), one replica lagging (frozen, then catching up), the API key unknown
#: for a while (200 + ``failure``), and every stream dropped (Edge's ``bye``). Each fault
#: lasts ``seconds`` of the schedule's sleeps, less than the workers' absence grace
#: (production: up to 120 s against a 300 s grace), and one Edge fault runs at a time.
REAL_EDGE_WEIGHTS: dict[str, float] = {"bad_list": 4, "replica_lag": 4, "unknown_key": 2,
                                       "drop_streams": 3}
#: The implied step that ends each lasting Edge fault.
EDGE_FAULT_END = {"bad_list": "bad_list_end", "replica_lag": "catch_up",
                  "unknown_key": "key_known"}
REAL_EDGE_KINDS = (*REAL_EDGE_WEIGHTS, *EDGE_FAULT_END.values())
#: Longest Edge fault, in seconds of sleeps: below the real-Edge runs' absence grace.
EDGE_FAULT_MAX = 3.0


@dataclass(frozen=True)
class Step:
    kind: str
    key: str = ""
    id: str = ""
    version: int = 0
    value: bool = False
    one_stream: bool = False
    pick: int = 0          # which open stream or worker: index modulo how many there are
    seconds: float = 0.0   # sleep length; for mc_stop the planned pause

    def feature(self) -> dict[str, Any]:
        return make_feature(self.key, self.value, self.version, id=self.id)

    def __str__(self) -> str:
        if self.kind in EDGE_KINDS:
            target = f"one stream (pick {self.pick})" if self.one_stream else "all streams"
            what = f"{self.key} id={self.id} v{self.version}"
            if self.kind != "delete":
                what += f" value={self.value}"
            return f"{self.kind:<11} {what} -> {target}"
        if self.kind == "sleep":
            return f"sleep       {self.seconds:.2f} s"
        if self.kind == "mc_stop":
            return f"mc_stop     SIGSTOP memcached for ~{self.seconds:.2f} s of sleeps"
        if self.kind == "kill_worker":
            return f"kill_worker SIGKILL worker (pick {self.pick})"
        if self.kind == "bad_list":
            what = "an empty list" if self.value else f"a list lacking some features ({self.pick})"
            return f"bad_list    every replica serves {what} for ~{self.seconds:.2f} s"
        if self.kind in ("replica_lag", "unknown_key"):
            return f"{self.kind:<11} for ~{self.seconds:.2f} s of sleeps"
        return self.kind


@dataclass(frozen=True)
class Schedule:
    seed: int
    backend: str
    workers: int                      # gunicorn workers at start
    initial: tuple[Step, ...]         # Edge's features before the cluster starts (creates)
    steps: tuple[Step, ...]
    final_workers: int = field(default=0)

    def initial_features(self) -> list[dict[str, Any]]:
        return [s.feature() for s in self.initial]

    def lines(self) -> list[str]:
        out = [f"seed {self.seed}, {self.backend} backend, {self.workers} workers at start, "
               f"{self.final_workers} at the end"]
        out += [f"   init {s.key} id={s.id} v{s.version} value={s.value}" for s in self.initial]
        out += [f"   {i:3d} {s}" for i, s in enumerate(self.steps)]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def generate(seed: int, backend: str, *, workers: int = 3,
             weights: Mapping[str, float] | None = None, length: int | None = None,
             one_stream: float = ONE_STREAM, real_edge: bool = False) -> Schedule:
    """The schedule of ``seed`` for ``backend`` ("memcache", "file" or "redis").

    ``real_edge``: draw the real Edge's faults too (``REAL_EDGE_WEIGHTS``); a seed's
    schedule without them is unchanged by the option's existence.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    if not MIN_WORKERS <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be in [{MIN_WORKERS}, {MAX_WORKERS}]")
    rng = random.Random(seed * 2 + 1 if real_edge else seed)
    weights = dict(WEIGHTS if weights is None else weights)
    if real_edge:
        weights.update(REAL_EDGE_WEIGHTS)
    for other, kinds in BACKEND_KINDS.items():
        if other != backend:
            for kind in set(kinds) - set(BACKEND_KINDS[backend]):
                weights.pop(kind, None)
    unknown = set(weights) - set(WEIGHTS) - set(REAL_EDGE_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown step kind(s) {sorted(unknown)}")
    length = length if length is not None else rng.randint(25, 40)

    edge: dict[str, tuple[str, int]] = {}    # present key -> (id, version)
    generation: dict[str, int] = {}           # key -> times created so far
    count = workers
    paused = False
    pause_left = 0.0
    unsettled = False                         # a one-stream event since the last settle
    edge_fault: str | None = None             # the lasting Edge fault running, if any
    fault_left = 0.0
    steps: list[Step] = []

    def create(key: str, target: bool) -> Step:
        gen = generation.get(key, 0)
        generation[key] = gen + 1
        fid = f"{key}-{gen}"
        edge[key] = (fid, 1)
        return Step("create", key, fid, 1, rng.random() < 0.5, target, rng.randrange(1 << 16))

    initial = tuple(create(key, False) for key in KEYS[:INITIAL_KEYS])

    def allowed(kind: str) -> bool:
        if kind == "create":
            return len(edge) < len(KEYS)
        if kind == "update":
            return bool(edge)
        if kind == "delete":  # never empty: an absent store and an empty one would both be true
            return len(edge) > 1
        if kind in ("mc_flush", "mc_stop"):
            return not paused
        if kind in EDGE_FAULT_END:
            return edge_fault is None
        if kind == "ttin":
            return count < MAX_WORKERS
        if kind == "ttou":
            return count > MIN_WORKERS
        return True

    def end_edge_fault() -> None:
        if edge_fault is not None:
            emit(Step(EDGE_FAULT_END[edge_fault]))

    def emit(step: Step) -> None:
        nonlocal paused, pause_left, unsettled, edge_fault, fault_left
        steps.append(step)
        if step.kind in EDGE_FAULT_END:
            edge_fault, fault_left = step.kind, step.seconds
        elif step.kind in EDGE_FAULT_END.values():
            edge_fault = None
        elif step.kind == "sleep" and edge_fault is not None:
            fault_left -= step.seconds
            if fault_left <= 0:
                end_edge_fault()
        if step.kind in EDGE_KINDS and step.one_stream:
            unsettled = True
        elif step.kind == "settle":
            unsettled = False
        elif step.kind == "mc_stop":
            paused, pause_left = True, step.seconds
        elif step.kind in ("mc_cont", "mc_restart"):
            paused = False
        elif step.kind == "sleep" and paused:
            pause_left -= step.seconds
            if pause_left <= 0:
                emit(Step("mc_cont"))

    while len(steps) < length:
        possible = [k for k in weights if weights[k] > 0 and allowed(k)]
        if not possible:
            raise ValueError(f"no step kind is possible with weights {weights}")
        kind = rng.choices(possible, [weights[k] for k in possible])[0]
        target = rng.random() < one_stream
        if kind == "create":
            key = rng.choice([k for k in KEYS if k not in edge])
            emit(create(key, target))
        elif kind == "update":
            key = rng.choice(sorted(edge))
            fid, version = edge[key]
            edge[key] = (fid, version + 1)
            emit(Step("update", key, fid, version + 1, rng.random() < 0.5, target,
                      rng.randrange(1 << 16)))
        elif kind == "delete":
            key = rng.choice(sorted(edge))
            fid, version = edge.pop(key)
            emit(Step("delete", key, fid, version, False, target, rng.randrange(1 << 16)))
        elif kind == "sleep":
            emit(Step("sleep", seconds=round(rng.uniform(0.05, 0.6), 2)))
        elif kind == "mc_stop":
            emit(Step("mc_stop", seconds=round(rng.uniform(0.5, 3.0), 2)))
        elif kind == "kill_worker":
            emit(Step("kill_worker", pick=rng.randrange(1 << 16)))
        elif kind in EDGE_FAULT_END:
            emit(Step(kind, value=rng.random() < 0.5, pick=rng.randrange(1 << 16),
                      seconds=round(rng.uniform(0.5, EDGE_FAULT_MAX), 2)))
        elif kind == "ttou":
            if paused:
                emit(Step("mc_cont"))
            end_edge_fault()      # settle needs an Edge that tells every worker the truth
            if unsettled:
                emit(Step("settle"))
            count -= 1
            emit(Step("ttou"))
        else:
            if kind == "ttin":
                count += 1
            emit(Step(kind))
    end_edge_fault()
    return Schedule(seed, backend, workers, initial, tuple(steps), count)


def edge_after(schedule: Schedule) -> dict[str, tuple[str, int]]:
    """Edge's features (key -> (id, version)) once every step of ``schedule`` ran."""
    state = {s.key: (s.id, s.version) for s in schedule.initial}
    for step in schedule.steps:
        if step.kind in ("create", "update"):
            state[step.key] = (step.id, step.version)
        elif step.kind == "delete":
            state.pop(step.key, None)
    return state
