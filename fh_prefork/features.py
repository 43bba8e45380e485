"""Feature-state values: validation, merge by version, fingerprint, JSON codec.

Everything here is pure and shared by every store backend. The wire format is
the one FeatureHub Edge sends and the other FeatureHub SDKs' stores write: a
JSON array of feature-state objects: plain JSON bytes, nothing executable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FeatureState = dict[str, Any]

#: Largest version accepted: anything above is junk, not a real counter.
MAX_VERSION = 2**63 - 1


def sanitize_feature(item: Any) -> FeatureState | None:
    """Return ``item`` if it is a usable feature state, else ``None``.

    Usable means: a JSON object with a non-empty string ``id`` and ``key`` and
    an integer ``version`` in [0, 2**63). Booleans are not integers here.
    """
    if not isinstance(item, dict):
        return None
    fid, key, version = item.get("id"), item.get("key"), item.get("version")
    if not isinstance(fid, str) or not fid or not isinstance(key, str) or not key:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        return None
    if version < 0 or version > MAX_VERSION:
        return None
    return item


def fingerprint(features: Iterable[Mapping[str, Any]]) -> str:
    """Cross-SDK fingerprint: hex SHA-256 of ``id:version`` sorted by id, joined by ``|``."""
    pairs = sorted((str(f["id"]), f["version"]) for f in features)
    return hashlib.sha256("|".join(f"{i}:{v}" for i, v in pairs).encode()).hexdigest()


@dataclass
class Decoded:
    """A store value turned into feature states (by id), with what had to be dropped."""

    by_id: dict[str, FeatureState] = field(default_factory=dict)
    dropped: int = 0
    problem: str | None = None  # why the value as a whole was unusable

    @property
    def features(self) -> list[FeatureState]:
        return list(self.by_id.values())


def decode(raw: bytes | None, max_bytes: int) -> Decoded:
    """Parse a store value without trusting it.

    Accepts the plain form (a JSON array) and the Ruby store's form (a JSON
    string holding the JSON array). Duplicate ids keep the highest version.
    """
    if raw is None:
        return Decoded()
    if len(raw) > max_bytes:
        return Decoded(problem=f"value of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Decoded(problem="value is not UTF-8 (not JSON; pickled data is never loaded)")
    try:
        value = json.loads(text)
        if isinstance(value, str):  # Ruby/Dalli JSON serializer wraps the array in a string
            value = json.loads(value)
    except RecursionError:
        return Decoded(problem="JSON nested too deeply")
    except ValueError:
        return Decoded(problem="value is not JSON")
    if not isinstance(value, list):
        return Decoded(problem=f"expected a JSON array, found {type(value).__name__}")
    by_id: dict[str, FeatureState] = {}
    dropped = 0
    for item in value:
        feature = sanitize_feature(item)
        if feature is None:
            dropped += 1
            continue
        held = by_id.get(feature["id"])
        if held is not None:
            dropped += 1
            if held["version"] >= feature["version"]:
                continue
        by_id[feature["id"]] = feature
    return Decoded(by_id, dropped=dropped)


def decode_fingerprint(raw: bytes | None) -> str | None:
    """Read a fingerprint key written plainly or as a JSON string (Ruby store)."""
    if raw is None:
        return None
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        text = text[1:-1]
    return text or None


def encode(features: Iterable[FeatureState]) -> bytes:
    """Plain form: compact UTF-8 JSON array, sorted by id for stable bytes."""
    ordered = sorted(features, key=lambda f: str(f["id"]))
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class Merge:
    """Result of merging local changes into what a store holds."""

    features: list[FeatureState]
    changed: bool


def merge(
    stored: Mapping[str, FeatureState],
    updates: Mapping[str, FeatureState],
    deletes: Mapping[str, int],
) -> Merge:
    """Merge updates (by id, higher version wins) and deletes into ``stored``.

    A delete removes the stored feature unless the store already holds a
    version newer than the one that was deleted: a re-created feature is not
    lost to a late delete.
    """
    result = dict(stored)
    changed = False
    for fid, feature in updates.items():
        held = result.get(fid)
        if held is None or feature["version"] > held["version"]:
            result[fid] = feature
            changed = True
    for fid, version in deletes.items():
        held = result.get(fid)
        if held is not None and held["version"] <= version:
            del result[fid]
            changed = True
    return Merge(list(result.values()), changed)

