"""Tombstones: deletions that travel explicitly, so absence never has to mean deletion.

A store can lose its data (restart, eviction, a node that comes back stale, a
foreign writer that overwrites): a feature missing from what a process reads
says nothing about whether anyone deleted it. So a deletion is recorded as a
tombstone ``(id, key, version, deleted_at)``: it removes that feature at that
version or older, and a later version (a re-created feature) beats it.

Tombstones live beside the shared array, in a key only fh_prefork reads, so the
array stays what the Ruby and JavaScript stores expect. Every process also
keeps the tombstones it has seen in memory and writes back any the store lost.

How long they are kept: a tombstone must outlive every process that could still
hold the deleted feature without having read the store since the delete. A
process that reads the store (every verify period at the latest, 60 s by
default) learns the tombstone and drops the feature, so the retention only has
to cover a process cut off from the store that long. The default, 7 days,
covers a partition over a long weekend; past that, a process that has not read
the store for a week could write the feature back (its own Edge connection's
full list then deletes it again). The count is bounded too (1,000 by default,
oldest first), which at ~100 bytes each keeps the key small.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .feature_shape import MAX_VERSION

#: Default retention (seconds) and count bound, see the module docstring.
KEEP_SECONDS = 7 * 24 * 3600.0
MAX_TOMBSTONES = 1000


@dataclass(frozen=True)
class Tombstone:
    """Feature ``id`` (``key``) deleted at ``version``; ``deleted_at`` is unix time.

    ``inferred``: an *absence mark*, made because Edge's view lacked the
    feature (:mod:`fh_prefork.absence`), not because Edge said it was deleted.
    It stops stale copies from the store and from peers like any tombstone,
    but never a state Edge itself sends: that lifts it. ``proposed``: a mark
    put to the fleet and not yet confirmed; it removes and refuses nothing,
    so every process whose own Edge view still names the feature has a
    refresh period or more to lift it first.
    """

    id: str
    key: str
    version: int
    deleted_at: float
    inferred: bool = False
    proposed: bool = False

    def covers(self, feature: Mapping[str, Any]) -> bool:
        """True when ``feature`` is this deleted feature at the deleted version or older."""
        return (not self.proposed and feature.get("id") == self.id
                and int(feature.get("version", 0)) <= self.version)

    def rank(self) -> tuple[int, bool, bool]:
        """What wins between two tombstones of one id: the higher version, then Edge's
        delete over an inference, then a confirmed mark over a proposal."""
        return self.version, not self.inferred, not self.proposed

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "key": self.key, "version": self.version,
                               "deleted_at": round(self.deleted_at, 3)}
        if self.inferred:
            out["inferred"] = True
        if self.proposed:
            out["proposed"] = True
        return out


Tombstones = dict[str, Tombstone]


def newer(a: Tombstone | None, b: Tombstone) -> Tombstone:
    """The tombstone that wins for one id: the higher :meth:`Tombstone.rank`, then the
    earlier deletion.

    Keeping the earlier time means rewriting a tombstone never extends its life.
    """
    if a is None or b.rank() > a.rank():
        return b
    if b.rank() < a.rank():
        return a
    return b if b.deleted_at < a.deleted_at else a


def explicit(tombs: Mapping[str, Tombstone]) -> Tombstones:
    """The tombstones Edge's own deletes made (they refuse every source)."""
    return {fid: t for fid, t in tombs.items() if not t.inferred}


def inferred(tombs: Mapping[str, Tombstone]) -> Tombstones:
    """The absence marks (they refuse stale copies, never Edge)."""
    return {fid: t for fid, t in tombs.items() if t.inferred}


def lift(tombs: Mapping[str, Tombstone], named_at: Mapping[str, float]) -> Tombstones:
    """``tombs`` without the absence marks Edge has named again since they were made.

    ``named_at``: id -> unix time this process last heard Edge name the feature
    (a list or an event). A mark made after that stays: the judge that made it
    saw Edge lack the feature later than we saw it named.
    """
    return {fid: t for fid, t in tombs.items()
            if not (t.inferred and named_at.get(fid, -math.inf) >= t.deleted_at)}


def union(*sets: Mapping[str, Tombstone]) -> Tombstones:
    out: Tombstones = {}
    for tombs in sets:
        for fid, tomb in tombs.items():
            out[fid] = newer(out.get(fid), tomb)
    return out


def prune(tombs: Mapping[str, Tombstone], now: float, keep_seconds: float,
          max_count: int) -> Tombstones:
    """Drop tombstones older than ``keep_seconds``, then the oldest beyond ``max_count``."""
    alive = [t for t in tombs.values() if now - t.deleted_at <= keep_seconds]
    alive.sort(key=lambda t: (t.deleted_at, t.id), reverse=True)
    return {t.id: t for t in alive[:max_count]}


def identity(tombs: Mapping[str, Tombstone]) -> set[tuple[str, int, bool, bool]]:
    """What two sets must share to be the same: ids, versions and kinds (times may differ)."""
    return {(t.id, t.version, t.inferred, t.proposed) for t in tombs.values()}


def encode(tombs: Iterable[Tombstone]) -> bytes:
    ordered = sorted(tombs, key=lambda t: t.id)
    # ASCII escapes: any id a writer sent, even one holding a lone surrogate, encodes
    return json.dumps([t.as_json() for t in ordered], separators=(",", ":"),
                      allow_nan=False).encode("ascii")


def decode(raw: bytes | None, max_bytes: int) -> tuple[Tombstones, int]:
    """Tombstones in ``raw`` and how many entries were unreadable (junk is skipped)."""
    if raw is None:
        return {}, 0
    if len(raw) > max_bytes:
        return {}, 1
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, 1
    if not isinstance(value, list):
        return {}, 1
    out: Tombstones = {}
    bad = 0
    for item in value:
        tomb = _tombstone(item)
        if tomb is None:
            bad += 1
        else:
            out[tomb.id] = newer(out.get(tomb.id), tomb)
    return out, bad


def _tombstone(item: Any) -> Tombstone | None:
    if not isinstance(item, dict):
        return None
    fid, key, version, at = (item.get("id"), item.get("key"), item.get("version"),
                             item.get("deleted_at"))
    guess, proposed = item.get("inferred", False), item.get("proposed", False)
    if not (isinstance(fid, str) and fid and isinstance(key, str)):
        return None
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        return None
    if not isinstance(guess, bool) or not isinstance(proposed, bool):
        return None
    # a time in the future (a writer's clock ahead, or a hand-made entry) would never expire
    # and would stay first in the count cut: it is taken as deleted now
    return Tombstone(fid, key, version, min(float(at), time.time()), guess, guess and proposed)
