"""The absence judge: when Edge's silence about a feature may be taken as a deletion.

Edge tells a connected stream about a deletion with ``delete_feature``. A
deletion that happened while nobody was connected shows only as a feature
missing from Edge's next full list, and so does a fault: an Edge restarting
with an empty cache, a misconfigured replica, one replica lagging behind the
others. So the rule this module keeps, for the listener and the store alike:

**An absence never refuses Edge.** A feature removed because Edge's lists
lacked it is recorded as an *absence mark* (an inferred tombstone, see
:mod:`fh_prefork.tombstones`), which stops stale copies (the store, a peer
that missed the removal) but never Edge itself: the moment any Edge list or
event names the feature again, at any version, it is back, and the mark is
lifted for the whole fleet. Only Edge's explicit ``delete_feature`` leaves a
tombstone that refuses.

When silence counts:

* only while this process's Edge view is current (an SSE stream connected,
  or a poll answered within its interval);
* only for features this process knew before the full list its view starts
  from: a feature first seen through a peer after that list may be one Edge
  pushed to the peer's stream and not yet to ours;
* only once the feature has been missing for ``grace`` seconds (300 by
  default: longer than an Edge restart or a replica's lag);
* a list that names less than half of what this process held just before it,
  or none of it, is *suspect* (an Edge that lost most of its cache, or all
  of it): its silence counts only after ``SUSPECT_FACTOR`` times the grace
  (30 minutes by default), so a bad Edge list does not empty the fleet
  unless it lasts that long, and even then Edge naming the features again
  brings them all back at once;
* with a shared store, what one process finds absent is only *proposed*; it
  takes effect only if no process whose own Edge view names the feature
  lifts the proposal within a few refresh periods. So one replica's lagging
  list never removes a flag another live Edge connection in the fleet lists.

So a feature deleted while no process was connected (or, in poll mode, where
Edge sends no deletes at all) is removed within the grace (``SUSPECT_FACTOR``
graces when most of the environment went at once) after the first full list
that lacks it, plus three refresh periods for the proposal and one to reach
every worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

#: How many graces the silence of a suspect list (one naming less than half of what was
#: held) must last before it counts.
SUSPECT_FACTOR = 6


@dataclass(frozen=True)
class EdgeView:
    """What Edge's stream says exists now: its last full list, plus what it sent since."""

    ids: frozenset[str]
    #: the number of the full list the view starts from (1 for the first)
    lists: int
    #: the list named less than half of what was held before it (see the module docstring)
    suspect: bool
    #: the list was empty while features were held (it is suspect too)
    empty: bool


def list_is_suspect(listed: Iterable[str], held_before: Iterable[str]) -> tuple[bool, bool]:
    """(suspect, empty) for a full list, given the ids held just before it arrived."""
    held = set(held_before)
    if not held:
        return False, False
    listed = set(listed)
    if not listed:
        return True, True
    return len(held & listed) * 2 < len(held), False


class AbsenceJudge:
    """Keeps, per feature id, since when the current Edge view has lacked it.

    One judge per process, shared by the listener (on every Edge list or 304)
    and the store (on every read, for what the store holds). The clock is
    injectable so every rule can be tested without sleeping.
    """

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._missing_since: dict[str, float] = {}
        #: id -> the number of the list current when this process first knew the feature
        self._known: dict[str, int] = {}

    def know(self, ids: Iterable[str], lists: int) -> None:
        """Note features this process holds or saw stored (kept while the store is refilled)."""
        if not self._known:     # a worker's first read: hundreds of ids at once, at C speed
            self._known = dict.fromkeys(ids, lists)
            return
        for fid in ids:         # the first number noted for an id stays
            self._known.setdefault(fid, lists)

    def forget(self, fid: str) -> None:
        """The feature was deleted or marked: it is judged again only after a new full list."""
        self._known.pop(fid, None)
        self._missing_since.pop(fid, None)

    def absent(self, view: EdgeView | None, live: bool,
               candidates: Mapping[str, object]) -> list[str]:
        """The candidates Edge's view has lacked long enough to be taken as deleted.

        ``candidates``: ids this process holds or saw stored. Their clocks start
        on the first call that finds them missing and reset when the view names
        them. While the view is not current nothing is
        judged, but the clocks run on: the real Edge ends every stream after
        30 s, and a clock reset at each reconnect would never reach the grace.
        """
        if view is None:
            self._missing_since.clear()
            return []
        if not live:
            return []
        now = self.clock()
        grace = self.grace * (SUSPECT_FACTOR if view.suspect else 1)
        missing = {fid for fid in candidates
                   if fid not in view.ids and self._known.get(fid, view.lists) < view.lists}
        for fid in [f for f in self._missing_since if f not in missing]:
            del self._missing_since[fid]
        gone = []
        for fid in missing:
            since = self._missing_since.setdefault(fid, now)
            if now - since >= grace:
                gone.append(fid)
        for fid in gone:
            self.forget(fid)
        return gone

    def missing_for(self, fid: str) -> float | None:
        """Seconds the current view has lacked ``fid`` (None when it is not missing)."""
        since = self._missing_since.get(fid)
        return None if since is None else self.clock() - since
