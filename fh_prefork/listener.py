"""Raw update listeners, and the repository that feeds them.

The FeatureHub Python SDK's repository applies updates but tells nobody what
arrived. A shared store must see every update from Edge *with its source*, so
that it persists what Edge sent and never writes its own replays back. This
module adds that hook without changing how flags are read: reads still go
straight to ``FeatureHubRepository.features`` with no extra cost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from featurehub_sdk.featurehub_repository import FeatureHubRepository

from . import tombstones as ts
from .feature_shape import MAX_VERSION
from .features import feature_problem, identity_problem
from .ratelog import RateLimitedLog
from .regex import apply_feature
from .tombstones import Tombstone

log = logging.getLogger("fh_prefork")

#: Source tag used for updates that came from FeatureHub Edge.
EDGE_SOURCE = "edge"


class RawUpdateFeatureListener:
    """Receives the raw feature states applied to a repository.

    Methods are called on the thread that notified the repository (usually the
    Edge thread), so implementations must return quickly: queue, don't do I/O.
    """

    def process_updates(self, features: list[dict[str, Any]], source: str) -> None:
        """A full set of feature states arrived (Edge ``features`` event)."""

    def process_update(self, feature: dict[str, Any], source: str) -> None:
        """One feature state arrived (Edge ``feature`` event)."""

    def delete_feature(self, feature: dict[str, Any], source: str) -> None:
        """A feature was deleted (Edge ``delete_feature`` event)."""

    def close(self) -> None:
        """The repository is going away; release resources."""


class ListeningRepository(FeatureHubRepository):  # type: ignore[misc]
    """A ``FeatureHubRepository`` that validates updates, remembers deletions and tells listeners.

    * Feature states the SDK would raise on (see :mod:`fh_prefork.feature_shape`)
      are dropped with a rate-limited warning, one entry at a time: one bad
      entry never costs the others.
    * Deletions are remembered as tombstones (:mod:`fh_prefork.tombstones`),
      so a lagging stream or store re-sending the deleted version cannot bring
      the feature back; a later version (a re-created feature) still can.
    * A full ``features`` list from Edge is the whole environment: a feature
      this process holds that Edge's full lists keep lacking for
      ``absence_seconds`` was deleted while we were not listening, and is
      deleted here too. One list is not enough: a poll behind a peer's (or a
      lagging Edge replica) lacks what was created a moment ago, and a
      tombstone made from it would refuse that feature everywhere.
    * A state whose id differs from the one held under its key replaces it
      when it comes from Edge or when the held one was deleted: FeatureHub
      gives a re-created feature a new id, whose version restarts.
    """

    def __init__(self) -> None:
        super().__init__(apply_feature())   # REGEX strategies on RE2 (fh_prefork.regex)
        self._listeners: list[RawUpdateFeatureListener] = []
        self._notify_lock = threading.RLock()
        self._tombstones: ts.Tombstones = {}
        self._junk_log = RateLimitedLog(log)
        #: feature states applied and deletions made, by source (for metrics and status)
        self.applied: dict[str, int] = {}
        #: the ids Edge's stream says exist now: its last full list, plus the features it sent
        #: since, minus the ones it deleted (None until a full list arrived)
        self.edge_ids: set[str] | None = None
        #: full lists Edge has sent this process: a list numbered N is evidence only about
        #: features that existed before it arrived
        self.edge_lists = 0
        #: seconds a held feature must stay missing from Edge's full lists to count as deleted
        self.absence_seconds = 10.0
        self._unlisted_since: dict[str, float] = {}   # id -> monotonic, first missing list
        self._clock: Callable[[], float] = time.monotonic   # tests step it past the grace

    def register_raw_update_listener(self, listener: RawUpdateFeatureListener) -> None:
        with self._notify_lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_raw_update_listener(self, listener: RawUpdateFeatureListener) -> None:
        with self._notify_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def raw_update_listeners(self) -> list[RawUpdateFeatureListener]:
        return list(self._listeners)

    def notify(self, status: str, data: Any, source: str = EDGE_SOURCE) -> None:
        """Apply an update like the SDK does, then pass what was applied to every listener."""
        if status == "features":
            if not isinstance(data, list):
                self._junk_log.failure("fh_prefork: ignored features update from %s: not a list",
                                       source)
                return
            with self._notify_lock:
                if source == EDGE_SOURCE:
                    self.edge_lists += 1
                    self.edge_ids = {item["id"] for item in data
                                     if isinstance(item, dict) and isinstance(item.get("id"), str)}
                applied = [f for f in (self._apply_one(item, source) for item in data) if f]
                deleted = self._delete_unlisted(data) if source == EDGE_SOURCE else []
                self._ready = True
                self._tell("features", applied, source)
                for gone in deleted:
                    self._tell("delete_feature", gone, source)
        elif status == "feature":
            with self._notify_lock:
                if source == EDGE_SOURCE and isinstance(data, dict) and isinstance(
                        data.get("id"), str):
                    self._unlisted_since.pop(data["id"], None)
                    if self.edge_ids is not None:
                        self.edge_ids.add(data["id"])
                applied_one = self._apply_one(data, source)
                if applied_one is not None:
                    self._tell("feature", applied_one, source)
        elif status == "delete_feature":
            with self._notify_lock:
                if source == EDGE_SOURCE and self.edge_ids is not None and isinstance(data, dict):
                    self.edge_ids.discard(data.get("id"))
                gone_one = self._delete(data, source)
                if gone_one is not None:
                    self._tell("delete_feature", gone_one, source)
        else:
            with self._notify_lock:
                super().notify(status, data)

    def apply_shared(self, features: list[dict[str, Any]], tombstones: ts.Tombstones, *,
                     source: str, keep_seconds: float = ts.KEEP_SECONDS,
                     max_tombstones: int = ts.MAX_TOMBSTONES) -> None:
        """Adopt what a shared store knows: its tombstones first, then its newer states."""
        with self._notify_lock:
            merged = ts.union(self._tombstones, tombstones)
            self._tombstones = ts.prune(merged, time.time(), keep_seconds, max_tombstones)
            for tomb in tombstones.values():
                holder = self.features.get(tomb.key)
                state = holder.internal_feature_state if holder is not None else None
                if state and tomb.covers(state):
                    self._guarded(super().notify, "delete_feature", {"id": tomb.id,
                                                                     "key": tomb.key})
                    self._tell("delete_feature", {"id": tomb.id, "key": tomb.key,
                                                  "version": tomb.version}, source)
            applied = [f for f in (self._apply_one(item, source) for item in features) if f]
            if applied:
                self._tell("features", applied, source)

    def bury(self, fid: str, key: str, version: int, source: str) -> None:
        """Record that feature ``fid`` is deleted at ``version``, and delete it here if held."""
        with self._notify_lock:
            gone = self._delete({"id": fid, "key": key, "version": version}, source)
            if gone is not None:
                self._tell("delete_feature", gone, source)

    def edge_list_unchanged(self) -> None:
        """Edge answered that its full list is the one it sent last (a poll's 304).

        It counts as Edge's last list seen again: the absence judge's clock runs on it.
        """

    def edge_view(self) -> tuple[frozenset[str], int] | None:
        """A copy of :attr:`edge_ids` and the number of the list it starts from (None before
        Edge's first full list)."""
        with self._notify_lock:
            return None if self.edge_ids is None else (frozenset(self.edge_ids), self.edge_lists)

    def tombstones(self) -> ts.Tombstones:
        """The deletions this process remembers (a copy)."""
        with self._notify_lock:
            return dict(self._tombstones)

    # -- applying -----------------------------------------------------------------------------

    def _apply_one(self, item: Any, source: str) -> dict[str, Any] | None:
        """Apply one state if it is usable and not deleted; return it when the SDK took it."""
        problem = feature_problem(item)
        if problem is not None:
            key = item.get("key") if isinstance(item, dict) else None
            self._junk_log.failure("fh_prefork: ignored unusable feature state %r from %s: %s",
                                   key, source, problem)
            return None
        tomb = self._tombstones.get(item["id"])
        if tomb is not None and tomb.covers(item):
            return None
        holder = self.features.get(item["key"])
        held = holder.internal_feature_state if holder is not None else None
        if held and held.get("id") != item["id"]:
            held_tomb = self._tombstones.get(held.get("id"))
            if source != EDGE_SOURCE and not (held_tomb and held_tomb.covers(held)):
                return None     # two ids for one key and no sign which is current: keep ours
            if not self._guarded(holder.set_feature_state, item):
                return None
            if identity_problem(held) is None and not (held_tomb and held_tomb.covers(held)):
                # Edge says the key is another feature now: the one we held was deleted
                self._bury(held)
            return dict(item)
        if not self._guarded(super().notify, "feature", item):
            return None
        after = self.features.get(item["key"])
        # the SDK keeps the dict it accepts: anything else means it kept what it held
        return item if after is not None and after.internal_feature_state is item else None

    def _delete(self, data: Any, source: str) -> dict[str, Any] | None:
        """Apply an Edge/store delete and remember it as a tombstone."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            self._junk_log.failure("fh_prefork: ignored malformed delete_feature from %s", source)
            return None
        key = data["key"]
        holder = self.features.get(key)
        held = holder.internal_feature_state if holder is not None else None
        fid = data.get("id") if isinstance(data.get("id"), str) and data.get("id") else None
        fid = fid or (held.get("id") if held else None)
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            version = held.get("version") if held and held.get("id") == fid else MAX_VERSION
        if fid:
            tomb = Tombstone(fid, key, min(int(version), MAX_VERSION), time.time())
            self._tombstones[fid] = ts.newer(self._tombstones.get(fid), tomb)
            tomb = self._tombstones[fid]
            if held and not tomb.covers(held):
                return None     # we hold a newer or another feature under this key
        elif held:
            return None         # no id anywhere: cannot tell what was deleted
        self._guarded(super().notify, "delete_feature", data)
        return {"id": fid, "key": key, "version": version}

    def _bury(self, state: dict[str, Any]) -> Tombstone:
        tomb = Tombstone(state["id"], state["key"], state["version"], time.time())
        self._tombstones[tomb.id] = ts.newer(self._tombstones.get(tomb.id), tomb)
        return self._tombstones[tomb.id]

    def _delete_unlisted(self, listed: list[Any]) -> list[dict[str, Any]]:
        """Edge's full lists are the environment: what we hold and they keep lacking was deleted.

        Missing from one list starts the clock; missing from a list at least
        ``absence_seconds`` later (and never listed or sent between) deletes.
        """
        now = self._clock()
        ids = {item.get("id") for item in listed if isinstance(item, dict)}
        unlisted: dict[str, dict[str, Any]] = {}
        for holder in list(self.features.values()):
            held = holder.internal_feature_state
            if held and identity_problem(held) is None and held["id"] not in ids:
                unlisted[held["id"]] = dict(held)
        self._unlisted_since = {fid: self._unlisted_since.get(fid, now) for fid in unlisted}
        gone = []
        for fid, held in unlisted.items():
            if now - self._unlisted_since[fid] >= self.absence_seconds:
                del self._unlisted_since[fid]
                deleted = self._delete(held, EDGE_SOURCE)
                if deleted is not None:
                    gone.append(deleted)
        return gone

    def _guarded(self, apply: Any, *args: Any) -> bool:
        """Run one SDK call; a state it still raises on costs only itself."""
        try:
            apply(*args)
            return True
        except Exception as err:
            self._junk_log.failure("fh_prefork: the FeatureHub SDK refused a feature state: %s",
                                   err)
            return False

    def _tell(self, status: str, data: Any, source: str) -> None:
        self.applied[source] = self.applied.get(source, 0) + (
            len(data) if status == "features" else 1)
        for listener in list(self._listeners):
            try:
                if status == "features":
                    listener.process_updates(data, source)
                elif status == "feature":
                    listener.process_update(data, source)
                elif status == "delete_feature":
                    listener.delete_feature(data, source)
            except Exception:  # a listener must never break flag updates
                log.exception("fh_prefork: listener %r failed on %s", listener, status)

    def feature_states(self) -> list[dict[str, Any]]:
        """Snapshot of every feature state currently held (for writing the store).

        Request threads add holders for unknown keys without any lock, so the
        dict is copied in one C-level step before it is walked.
        """
        with self._notify_lock:
            holders = list(self.features.values())
        return [dict(state) for state in (h.internal_feature_state for h in holders) if state]

    def known_features(self) -> int:
        """How many features hold a state (unknown keys asked for by requests do not count)."""
        return sum(1 for holder in list(self.features.values()) if holder.exists)

    def close(self) -> None:
        with self._notify_lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener.close()
            except Exception:
                log.exception("fh_prefork: listener %r failed to close", listener)
