"""What the store should hold, given what it holds and what one process knows.

The one rule that keeps the shared state truthful, as a pure function every
backend shares: the store converges to the newest version of every live
feature any process holds, minus what a tombstone deleted.

* Absence is not deletion: a feature this process holds that the store lacks
  (or holds older) is written back. Only a tombstone deletes, and an absence
  mark (a tombstone inferred from Edge's silence) is lifted as soon as Edge
  names the feature again.
* Tombstones are the union of the store's and the process's, pruned by age
  and count; the process adopts the store's, the store the process's.
* A value that could not be read in any known form is rewritten from what the
  process knows, except one that is merely over our size limit: someone wrote
  it, and it is left alone rather than destroyed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import tombstones as ts
from ..features import Decoded, FeatureState
from ..tombstones import Tombstone, Tombstones


@dataclass
class Plan:
    """The outcome of one reconciliation."""

    live: dict[str, FeatureState]          # id -> entry the store should hold
    tombstones: Tombstones                  # what the store's tombstone key should hold
    write: bool                             # the store must be written
    tombstones_changed: bool                # ... including its tombstone key
    restored: list[str] = field(default_factory=list)   # ids written back (absent or older)
    buried: list[str] = field(default_factory=list)     # stored ids a tombstone removes
    replay: list[FeatureState] = field(default_factory=list)  # store entries newer than held
    deletes: list[Tombstone] = field(default_factory=list)    # held features to delete here


def reconcile(stored: Decoded, present: bool, stored_tombs: Mapping[str, Tombstone],
              held: list[FeatureState], local_tombs: Mapping[str, Tombstone], *,
              now: float, keep_seconds: float, max_tombstones: int,
              knows_state: bool, named_at: Mapping[str, float] | None = None) -> Plan:
    """Merge the store's value with one process's knowledge.

    ``present``: the data key exists. ``knows_state``: the process has had a
    full state from somewhere (Edge or the store), so writing an empty array
    into an absent key says something true. ``named_at``: id -> when this
    process last heard Edge name the feature; an absence mark made before that
    is lifted (Edge's state wins over an inference, see fh_prefork.absence).
    """
    tombs = ts.prune(ts.lift(ts.union(stored_tombs, local_tombs), named_at or {}), now,
                     keep_seconds, max_tombstones)
    live: dict[str, FeatureState] = stored.placed     # a fresh dict of its own
    held_by_id = {f["id"]: f for f in held}
    restored = []
    for fid, feature in held_by_id.items():
        current = live.get(fid)
        if current is None or feature["version"] > current["version"]:
            tomb = tombs.get(fid)
            if tomb is not None and tomb.covers(feature):
                continue
            live[fid] = feature
            restored.append(fid)
    buried = [fid for fid, tomb in tombs.items() if fid in live and tomb.covers(live[fid])]
    for fid in buried:
        del live[fid]
    if not held_by_id and not buried and not stored.unusable:
        # a worker's first read: live is the stored value itself, every state of it news
        replay = list(stored.by_id.values())
    else:
        replay = [f for fid, f in stored.by_id.items()
                  if live.get(fid) is f
                  and (fid not in held_by_id or held_by_id[fid]["version"] < f["version"])]
    deletes = [tombs[fid] for fid, f in held_by_id.items()
               if fid in tombs and tombs[fid].covers(f)]
    tombstones_changed = ts.identity(tombs) != ts.identity(stored_tombs)
    if stored.too_large:
        write = False      # unreadable to us only: not ours to destroy
    elif not present:
        write = bool(live or tombs) or knows_state
    else:
        write = bool(restored or buried or tombstones_changed or stored.problem
                     or stored.dropped)
    return Plan(live=live, tombstones=tombs, write=write,
                tombstones_changed=tombstones_changed, restored=restored, buried=buried,
                replay=replay, deletes=deletes)
