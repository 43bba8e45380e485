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
from dataclasses import replace
from operator import itemgetter
from typing import Any

from featurehub_sdk.featurehub_repository import FeatureHubRepository

from . import tombstones as ts
from .absence import SUSPECT_FACTOR, AbsenceJudge, EdgeView, list_is_suspect
from .feature_shape import MAX_VERSION
from .features import feature_problems, identity_problem
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

    def marks_changed(self) -> None:
        """An absence mark was proposed here, and no feature state changed (the store writes it)."""

    def close(self) -> None:
        """The repository is going away; release resources."""


class ListeningRepository(FeatureHubRepository):  # type: ignore[misc]
    """A ``FeatureHubRepository`` that validates updates, remembers deletions and tells listeners.

    * Feature states the SDK would raise on (see :mod:`fh_prefork.feature_shape`)
      are dropped with a rate-limited warning, one entry at a time: one bad
      entry never costs the others.
    * Edge's ``delete_feature`` deletes, whatever version it carries. The
      real Edge sends a deleted feature with version 0 and no value (and a
      retired one with its real version): a delete without a usable version
      removes the feature id for good, since FeatureHub never brings a deleted
      feature's id back (a re-created feature gets a new one). The deletion is
      remembered as a tombstone (:mod:`fh_prefork.tombstones`), so a lagging
      stream, the store or a peer re-sending the deleted version cannot bring
      it back; a later version (an unretired feature) still can.
    * A feature Edge's view keeps lacking is removed by the absence judge
      (:mod:`fh_prefork.absence`) and recorded as an absence mark, which never
      refuses Edge: any Edge list or event naming the feature again brings it
      back at once, and the store spreads that to every worker.
    * A state whose id differs from the one held under its key replaces it
      when it comes from Edge or when the held one was deleted: FeatureHub
      gives a re-created feature a new id, whose version restarts.
    """

    def __init__(self) -> None:
        super().__init__(apply_feature())   # REGEX strategies on RE2 (fh_prefork.regex)
        self._listeners: list[RawUpdateFeatureListener] = []
        self._notify_lock = threading.RLock()
        self._tombstones: ts.Tombstones = {}
        #: absence marks this process made that no store read has shown yet (it writes them)
        self._own_marks: ts.Tombstones = {}
        #: id -> time of each absence proposal this process made (it alone confirms them)
        self._proposed: dict[str, float] = {}
        self._junk_log = RateLimitedLog(log)
        self._suspect_log = RateLimitedLog(log)
        #: feature states applied and deletions made, by source (for metrics and status)
        self.applied: dict[str, int] = {}
        #: what Edge's stream says exists now (None until a full list arrived)
        self._view: EdgeView | None = None
        #: id -> unix time Edge last named the feature (a list or an event)
        self._named_at: dict[str, float] = {}
        #: the judge of what Edge's silence means (see fh_prefork.absence)
        self.judge = AbsenceJudge(grace=300.0)
        #: () -> unix time of what is remembered here: namings, deletions, proposals
        self.now: Callable[[], float] = time.time
        #: () -> whether this process's Edge view is current; set by the runtime. None: it
        #: is current once a full list arrived (a repository fed by hand, in tests)
        self.edge_live: Callable[[], bool] | None = None
        #: a shared store carries this process's absence marks to its peers: a mark is then
        #: proposed first, and confirmed only if no peer's Edge view lifts it in time
        self.shared = False

    # -- settings and views ------------------------------------------------------------------

    @property
    def absence_seconds(self) -> float:
        """Seconds a held feature must stay missing from Edge's view to count as deleted."""
        return self.judge.grace

    @absence_seconds.setter
    def absence_seconds(self, seconds: float) -> None:
        self.judge.grace = seconds

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read ``clock`` for every time judged here, the absence grace and the unix times
        alike, so a test steps over both at once (fh_prefork.testing.clock.ManualClock)."""
        self.judge.clock = clock
        self.now = clock

    @property
    def edge_ids(self) -> set[str] | None:
        """The ids Edge's stream says exist now (None until a full list arrived)."""
        view = self._view
        return None if view is None else set(view.ids)

    @property
    def edge_lists(self) -> int:
        """Full lists Edge has sent this process."""
        view = self._view
        return 0 if view is None else view.lists

    def _live(self) -> bool:
        return self.edge_live() if self.edge_live is not None else self._view is not None

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

    # -- what Edge says ------------------------------------------------------------------------

    def notify(self, status: str, data: Any, source: str = EDGE_SOURCE) -> None:
        """Apply an update like the SDK does, then pass what was applied to every listener."""
        if status == "features":
            if not isinstance(data, list):
                self._junk_log.failure("fh_prefork: ignored features update from %s: not a list",
                                       source)
                return
            with self._notify_lock:
                if source == EDGE_SOURCE:
                    self._new_list(data)
                applied = self._apply_all(data, source)
                self._ready = True
                self._tell("features", applied, source)
                if source == EDGE_SOURCE:
                    self._judge_held()
        elif status == "feature":
            with self._notify_lock:
                if source == EDGE_SOURCE and isinstance(data, dict) and isinstance(
                        data.get("id"), str):
                    self._named(data["id"])
                applied_one = self._apply_one(data, source)
                if applied_one is not None:
                    self._tell("feature", applied_one, source)
        elif status == "delete_feature":
            with self._notify_lock:
                if source == EDGE_SOURCE and self._view is not None and isinstance(data, dict):
                    fid = data.get("id")
                    self._view = replace(self._view, ids=self._view.ids - {fid})
                gone_one = self._delete(data, source)
                if gone_one is not None:
                    self._tell("delete_feature", gone_one, source)
        else:
            with self._notify_lock:
                super().notify(status, data)

    def edge_list_unchanged(self) -> None:
        """Edge answered that its full list is the one it sent last (a poll's 304).

        It counts as Edge's last list seen again: what it names is named now,
        and the absence judge's clocks run on.
        """
        with self._notify_lock:
            view = self._view
            if view is None:
                return
            now = self.now()
            for fid in view.ids:
                self._named_at[fid] = now
            self._judge_held()

    def _new_list(self, data: list[Any]) -> None:
        ids = frozenset(item["id"] for item in data
                        if isinstance(item, dict) and isinstance(item.get("id"), str))
        held = [f["id"] for f in self._held_states()]
        suspect, empty = list_is_suspect(ids, held)
        lists = (self._view.lists if self._view is not None else 0) + 1
        self.judge.know(held, lists - 1)
        self._view = EdgeView(ids, lists, suspect, empty)
        now = self.now()
        for fid in ids:
            self._named_at[fid] = now
        if not suspect:
            self._suspect_log.recovered("fh_prefork: Edge's full list names what this process "
                                        "holds again")
            return
        self._suspect_log.failure(
                "fh_prefork: Edge's full list names %d of the %d features this process holds; "
                "not taken as deletions for %.0f s (an Edge that lost its cache?)",
                len(set(held) & ids), len(held),
                self.judge.grace * SUSPECT_FACTOR)

    def _named(self, fid: str) -> None:
        self._named_at[fid] = self.now()
        if self._view is not None and fid not in self._view.ids:
            self._view = replace(self._view, ids=self._view.ids | {fid})
        self.judge.forget(fid)
        self.judge.know([fid], self.edge_lists)

    def named_at(self) -> dict[str, float]:
        """id -> unix time Edge last named the feature; now for what a current view names."""
        with self._notify_lock:
            named = dict(self._named_at)
            view = self._view
            if view is not None and self._live():
                now = self.now()
                for fid in view.ids:
                    named[fid] = now
            return named

    # -- absence --------------------------------------------------------------------------------

    def judge_absent(self, stored: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """Mark what Edge's view has lacked long enough; return the ids marked absent.

        ``stored``: id -> entry the store holds (the store thread passes what it
        read), judged with what this process holds. With a shared store the
        mark is a proposal (see :meth:`confirm_marks`); alone, it removes at once.
        """
        with self._notify_lock:
            if self._view is None:      # no Edge list yet (a worker's start): nothing to judge
                self.judge.know(stored or (), 0)
                return []
            candidates: dict[str, dict[str, Any]] = dict(stored or {})
            for state in self._held_states():
                candidates[state["id"]] = state
            self.judge.know(candidates, self.edge_lists)
            for fid in [fid for fid in candidates if fid in self._tombstones
                        and (self._tombstones[fid].covers(candidates[fid])
                             or self._tombstones[fid].proposed)]:
                del candidates[fid]          # deleted, marked or proposed already
            gone = self.judge.absent(self._view, self._live(), candidates)
            for fid in gone:
                self._mark_absent(candidates[fid], proposed=self.shared)
            if gone and not self.shared:
                log.info("fh_prefork: %d feature(s) missing from Edge's view for %.0f s removed "
                         "until Edge names them again: %s", len(gone), self.judge.grace,
                         ", ".join(sorted(candidates[f]["key"] for f in gone)[:10]))
            return gone

    def confirm_marks(self, stored: ts.Tombstones, after: float) -> list[str]:
        """Confirm the store's proposed absence marks that stood ``after`` seconds unlifted.

        Every process whose Edge view names a feature lifts a proposal for it
        at its next read, so a proposal still standing after a few refresh
        periods was lacked by every live view. The proposer confirms its own:
        a peer confirming a proposal it read just before the proposer's own
        Edge named the feature again would race that lift. A proposal whose
        proposer is gone (it stood two graces longer) is confirmed by anyone.
        The confirmed mark keeps the proposal's time, so any Edge naming since
        the proposal still lifts it.
        """
        with self._notify_lock:
            named = self.named_at()
            now = self.now()
            done = []
            for fid in [f for f in self._proposed if f not in self._own_marks
                        and (f not in stored or not stored[f].proposed)]:
                del self._proposed[fid]      # written, then lifted or confirmed
            for tomb in stored.values():
                # the store keeps times to the millisecond
                mine = abs(self._proposed.get(tomb.id, -1.0) - tomb.deleted_at) < 0.01
                orphan = now - tomb.deleted_at >= after + 2 * self.judge.grace
                if (tomb.proposed and now - tomb.deleted_at >= after and (mine or orphan)
                        and named.get(tomb.id, -1.0) < tomb.deleted_at
                        and not (tomb.id in self._own_marks
                                 and not self._own_marks[tomb.id].proposed)):
                    self._mark_absent({"id": tomb.id, "key": tomb.key,
                                       "version": tomb.version}, proposed=False,
                                      at=tomb.deleted_at)
                    self._proposed.pop(tomb.id, None)
                    done.append(tomb.key)
            if done:
                log.info("fh_prefork: %d feature(s) missing from every Edge view for %.0f s "
                         "removed until Edge names them again: %s", len(done),
                         self.judge.grace, ", ".join(sorted(done)[:10]))
            return done

    def _judge_held(self) -> None:
        self.judge_absent()

    def _mark_absent(self, state: dict[str, Any], proposed: bool,
                     at: float | None = None) -> None:
        tomb = Tombstone(state["id"], state["key"], state["version"],
                         self.now() if at is None else at, inferred=True, proposed=proposed)
        if proposed:
            self._proposed[tomb.id] = tomb.deleted_at
        self._own_marks[tomb.id] = ts.newer(self._own_marks.get(tomb.id), tomb)
        self._tombstones[tomb.id] = ts.newer(self._tombstones.get(tomb.id), tomb)
        if proposed:
            log.debug("fh_prefork: feature %r (id %s, version %s) has been missing from Edge's "
                      "view for %.0f s; proposed as deleted (a peer whose Edge names it lifts "
                      "the proposal)", state["key"], state["id"], state["version"],
                      self.judge.grace)
            for listener in list(self._listeners):
                try:
                    listener.marks_changed()
                except Exception:  # a listener must never break flag updates
                    log.exception("fh_prefork: listener %r failed on marks_changed", listener)
            return
        holder = self.features.get(state["key"])
        held = holder.internal_feature_state if holder is not None else None
        if held and tomb.covers(held):
            self._guarded(super().notify, "delete_feature", {"id": tomb.id, "key": tomb.key})
        self._tell("delete_feature", {"id": tomb.id, "key": tomb.key, "version": tomb.version},
                   EDGE_SOURCE)

    # -- what the store says ------------------------------------------------------------------

    def shared_tombstones(self) -> ts.Tombstones:
        """What this process adds to the store's tombstones: Edge's deletes it heard, and the
        absence marks it made. Marks read from the store are the store's to keep or lift,
        so they are not written back from memory."""
        with self._notify_lock:
            return ts.union(ts.explicit(self._tombstones), self._own_marks)

    def apply_shared(self, features: list[dict[str, Any]], tombstones: ts.Tombstones, *,
                     source: str, keep_seconds: float = ts.KEEP_SECONDS,
                     max_tombstones: int = ts.MAX_TOMBSTONES) -> None:
        """Adopt what a shared store knows: its tombstones first, then its newer states.

        Edge's deletes are kept as a union; absence marks follow the store's
        current set (plus this process's own marks not written yet), so a mark
        lifted anywhere is lifted here too.
        """
        with self._notify_lock:
            marks = ts.union(ts.inferred(tombstones), self._own_marks)
            merged = ts.union(ts.explicit(self._tombstones), ts.explicit(tombstones), marks)
            merged = ts.lift(merged, self.named_at())
            self._tombstones = ts.prune(merged, self.now(), keep_seconds, max_tombstones)
            for tomb in self._tombstones.values():
                holder = self.features.get(tomb.key)
                state = holder.internal_feature_state if holder is not None else None
                if state and tomb.covers(state):
                    self._guarded(super().notify, "delete_feature", {"id": tomb.id,
                                                                     "key": tomb.key})
                    self._tell("delete_feature", {"id": tomb.id, "key": tomb.key,
                                                  "version": tomb.version}, source)
            applied = self._apply_all(features, source)
            if applied:
                self._tell("features", applied, source)

    def shared_written(self, tombstones: ts.Tombstones) -> None:
        """The store now holds ``tombstones``: own marks it holds need no more writing."""
        with self._notify_lock:
            for fid in [fid for fid, t in self._own_marks.items()
                        if fid in tombstones and tombstones[fid].rank() >= t.rank()]:
                del self._own_marks[fid]

    def bury(self, fid: str, key: str, version: int, source: str) -> None:
        """Record that feature ``fid`` is deleted at ``version``, and delete it here if held."""
        with self._notify_lock:
            gone = self._delete({"id": fid, "key": key, "version": version}, source)
            if gone is not None:
                self._tell("delete_feature", gone, source)

    def edge_view(self) -> tuple[frozenset[str], int] | None:
        """The ids Edge's view names and the number of the list it starts from (None before
        Edge's first full list)."""
        with self._notify_lock:
            view = self._view
            return None if view is None else (view.ids, view.lists)

    def tombstones(self) -> ts.Tombstones:
        """The deletions and absence marks this process knows (a copy)."""
        with self._notify_lock:
            return dict(self._tombstones)

    # -- applying -----------------------------------------------------------------------------

    def _held_states(self) -> list[dict[str, Any]]:
        out = []
        for holder in list(self.features.values()):
            held = holder.internal_feature_state
            if held and identity_problem(held) is None:
                out.append(held)
        return out

    def _apply_one(self, item: Any, source: str) -> dict[str, Any] | None:
        """Apply one state if it is usable and not deleted; return it when the SDK took it."""
        applied = self._apply_all([item], source)
        return applied[0] if applied else None

    def _apply_all(self, items: list[Any], source: str) -> list[dict[str, Any]]:
        """Apply states in order, each on its own (one bad state costs only itself); return
        the ones the SDK took.

        The store replays hundreds of states at a worker's start: a first list, all new,
        goes to the SDK in one call (see ``_all_new``); otherwise each state takes the SDK's
        own call and one look at what it kept.
        """
        features = self.features
        sdk_notify = FeatureHubRepository.notify
        problems = feature_problems(items)
        if self._all_new(items, problems):
            # a worker's first read: every state usable, no tombstone, no key held or repeated.
            # The SDK makes a holder of each very state, in one call; should it still raise,
            # each state is applied on its own below (again: the SDK keeps what it holds)
            try:
                sdk_notify(self, "features", items)
                return list(items)
            except Exception as err:
                self._refused(err)
        applied: list[dict[str, Any]] = []
        for item, problem in zip(items, problems, strict=True):
            if problem is not None:
                key = item.get("key") if isinstance(item, dict) else None
                self._junk_log.failure("fh_prefork: ignored unusable feature state %r from %s: "
                                       "%s", key, source, problem)
                continue
            if item["id"] in self._tombstones and not self._passes_tombstone(item, source):
                continue
            holder = features.get(item["key"])
            held = holder.internal_feature_state if holder is not None else None
            if held and held.get("id") != item["id"]:
                taken = self._take_key(item, holder, held, source)
                if taken is not None:
                    applied.append(taken)
                continue
            try:
                sdk_notify(self, "feature", item)
            except Exception as err:
                self._refused(err)
                continue
            after = features.get(item["key"])
            # the SDK keeps the dict it accepts: anything else means it kept what it held
            if after is not None and after.internal_feature_state is item:
                applied.append(item)
        return applied

    def _all_new(self, items: list[Any], problems: list[str | None]) -> bool:
        """Whether every item is usable, untombstoned, and under a key not held here nor
        repeated in ``items`` (so the SDK takes each as it is)."""
        if len(items) < 2 or problems.count(None) != len(problems):
            return False
        keys = set(map(itemgetter("key"), items))
        return (len(keys) == len(items) and self.features.keys().isdisjoint(keys)
                and (not self._tombstones
                     or self._tombstones.keys().isdisjoint(map(itemgetter("id"), items))))

    def _passes_tombstone(self, item: dict[str, Any], source: str) -> bool:
        """Whether ``item`` may be applied over the tombstone held for its id."""
        tomb = self._tombstones[item["id"]]
        if tomb.inferred and source == EDGE_SOURCE:
            # Edge names it again: the absence was not a deletion (see fh_prefork.absence)
            del self._tombstones[item["id"]]
            self._own_marks.pop(item["id"], None)
            log.info("fh_prefork: Edge names feature %r (id %s) again; it is back", item["key"],
                     item["id"])
            return True
        return not tomb.covers(item)

    def _take_key(self, item: dict[str, Any], holder: Any, held: Any,
                  source: str) -> dict[str, Any] | None:
        """A state whose key is held under another id: Edge's word (or a deleted holder) wins."""
        held_tomb = self._tombstones.get(held.get("id"))
        if source != EDGE_SOURCE and not (held_tomb and held_tomb.covers(held)):
            return None     # two ids for one key and no sign which is current: keep ours
        if not self._guarded(holder.set_feature_state, item):
            return None
        if identity_problem(held) is None and not (held_tomb and held_tomb.covers(held)):
            # Edge says the key is another feature now: the one we held was deleted
            self._bury(held)
        return dict(item)

    def _delete(self, data: Any, source: str) -> dict[str, Any] | None:
        """Apply an Edge/store delete and remember it as a tombstone.

        A delete without a usable version (the real Edge sends 0) removes the
        id at every version: FeatureHub never reuses a deleted feature's id,
        and a tombstone at the held version only would let a newer copy that
        reached the store first bring it back. A delete at a version older than
        the one held is stale: remembered, but what is held stays.
        """
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            self._junk_log.failure("fh_prefork: ignored malformed delete_feature from %s", source)
            return None
        key = data["key"]
        holder = self.features.get(key)
        held = holder.internal_feature_state if holder is not None else None
        fid = data.get("id") if isinstance(data.get("id"), str) and data.get("id") else None
        fid = fid or (held.get("id") if held else None)
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
            version = MAX_VERSION
        if fid:
            tomb = Tombstone(fid, key, min(int(version), MAX_VERSION), self.now())
            self._tombstones[fid] = ts.newer(self._tombstones.get(fid), tomb)
            self._own_marks.pop(fid, None)
            self.judge.forget(fid)
            tomb = self._tombstones[fid]
            if held and not tomb.covers(held):
                return None     # we hold a newer or another feature under this key
        elif held:
            return None         # no id anywhere: cannot tell what was deleted
        self._guarded(super().notify, "delete_feature", data)
        return {"id": fid, "key": key, "version": version}

    def _bury(self, state: dict[str, Any]) -> Tombstone:
        tomb = Tombstone(state["id"], state["key"], state["version"], self.now())
        self._tombstones[tomb.id] = ts.newer(self._tombstones.get(tomb.id), tomb)
        return self._tombstones[tomb.id]

    def _guarded(self, apply: Any, *args: Any) -> bool:
        """Run one SDK call; a state it still raises on costs only itself."""
        try:
            apply(*args)
            return True
        except Exception as err:
            self._refused(err)
            return False

    def _refused(self, err: Exception) -> None:
        self._junk_log.failure("fh_prefork: the FeatureHub SDK refused a feature state: %s", err)

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
