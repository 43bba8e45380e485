"""A worker's health at a glance: what the OpenFeature provider and the metrics ask.

``Worker.status()`` is the whole record, for people and the CLI, and costs a
look at the process (psutil). The provider's watcher and the Prometheus
exporter ask several times a second only whether Edge and the store answer,
which role the worker plays and how many features it holds: they read this
frozen snapshot, built from the worker's parts, instead of picking keys out
of the status record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .edge import EdgeView

#: Edge views in which this worker hears nothing from Edge.
EDGE_DOWN: frozenset[EdgeView] = frozenset({"backoff", "standby", "none", "closed", "stale"})


@dataclass(frozen=True)
class WorkerHealth:
    """One worker's health, read at one moment (see :meth:`fh_prefork.runtime.Worker.health`)."""

    pid: int
    #: leader, follower or fallback in leader mode; worker or master otherwise
    role: str
    edge_mode: str
    #: the store URL as shown (no secrets), ``none`` without a store
    store_url: str
    edge_state: EdgeView
    edge_error: str | None
    #: Edge connections opened: in leader mode those of the current term
    edge_connects: int
    #: leader mode: leadership terms begun (each has connections of its own)
    edge_terms: int
    #: the leader's Edge state as its lease says (followers never talk to Edge)
    lease_edge: str | None
    #: the repository holds a state (from the store or from Edge)
    ready: bool
    #: a store is open and its backend answers
    store_healthy: bool
    push_connected: bool
    last_refresh: float | None
    features: int
    counters: Mapping[str, int] = field(default_factory=dict)
    applied: Mapping[str, int] = field(default_factory=dict)

    @property
    def key_not_found(self) -> bool:
        """Edge says the API key does not exist (here, or at the leader)."""
        return "key_not_found" in (self.edge_state, self.lease_edge)

    @property
    def edge_down(self) -> bool:
        return self.edge_state in EDGE_DOWN

    @property
    def stale(self) -> bool:
        """Neither the store nor Edge answers: what is held may be old."""
        return not self.store_healthy and self.edge_down
