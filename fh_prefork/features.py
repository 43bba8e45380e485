"""Feature-state values: validation, fingerprints and the JSON codec of the shared array.

Everything here is pure and shared by every store backend. The wire format is
the one FeatureHub Edge sends and the other FeatureHub SDKs' stores write: a
JSON array of feature-state objects, nothing executable. It reaches us in three
forms, and all three are read (:func:`decode`):

* plain JSON bytes (fh_prefork, the JavaScript Redis store);
* a JSON string holding the array (Ruby's Dalli with its JSON serializer);
* zlib-compressed bytes of either (Dalli compresses values of 4 KiB and more),
  inflated with a bound so a zip bomb is refused rather than expanded.

Each entry is judged once per distinct content, not per read and per layer:
:func:`decode` parses the array entry by entry and looks each entry's exact
JSON text up in :data:`VERDICTS` (see :mod:`fh_prefork.verdicts`), so a verify
read of an unchanged state judges nothing; and the usable entries a decode
hands on are vouched for to :func:`feature_problem` on the same thread, so the
listener does not judge them a second time when they are replayed.
"""

from __future__ import annotations

import hashlib
import json
import operator
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import json_parser
from .feature_shape import MAX_VERSION, plain_states, shape_problem
from .verdicts import USABLE, Verdict, VerdictCache

FeatureState = dict[str, Any]

#: Largest value read (and largest a zlib value may inflate to). Reading is bounded apart
#: from writing (``max_item_bytes``): a value another writer stored past our write limit
#: is still read and, if junk, repaired; only one past this bound is left alone.
MAX_READ_BYTES = 32 * 1024 * 1024

#: Verdicts by entry text, shared by every store in the process (and inherited by forks).
VERDICTS = VerdictCache()

#: The usable entries the last :func:`decode` on this thread produced, by feature id, each
#: vouched for once and only as that very object (see :func:`feature_problem`).
_handoff = threading.local()


def identity_problem(item: Any) -> str | None:
    """Why ``item`` cannot even be placed (no string id and key, no integer version), or None.

    Looser than the shape check's identity part on purpose: an entry placed
    by id but unusable here (an id no UTF-8 can carry) is kept verbatim for
    the writer that made it, not discarded as junk.
    """
    if not isinstance(item, dict):
        return f"expected an object, found {type(item).__name__}"
    fid, key, version = item.get("id"), item.get("key"), item.get("version")
    if not isinstance(fid, str) or not fid:
        return "id: not a non-empty string"
    if not isinstance(key, str) or not key:
        return "key: not a non-empty string"
    if isinstance(version, bool) or not isinstance(version, int):
        return "version: not an integer"
    if version < 0 or version > MAX_VERSION:
        return "version: out of range"
    return None


def feature_problem(item: Any) -> str | None:
    """Why the SDK could not hold and evaluate ``item``, or None when it is usable.

    An entry the last :func:`decode` on this thread found usable is not judged
    again, once: the store replays what it just decoded, and the listener checks
    what it is given. Only that very object is vouched for (the handoff holds it,
    and ``is`` compares), and feature states are never changed in place here.
    """
    return feature_problems([item])[0]


def feature_problems(items: Iterable[Any]) -> list[str | None]:
    """:func:`feature_problem` of each item, in order (one look at the decode's handoff)."""
    vouched: dict[str, Any] | None = getattr(_handoff, "items", None)
    given = items if isinstance(items, list) else list(items)
    if vouched and len(given) == len(vouched) and all(map(operator.is_, given,
                                                          vouched.values())):
        # the replay of a whole decode, in its order (a worker's first read): every entry
        # is the very object vouched for, so the handoff is spent at once
        _handoff.items = None
        return [None] * len(given)
    unvouched: list[int] = []
    for index, item in enumerate(given):
        fid = item.get("id") if vouched and isinstance(item, dict) else None
        if not (isinstance(fid, str) and vouched and vouched.pop(fid, None) is item):
            unvouched.append(index)
    problems: list[str | None] = [None] * len(given)
    verdicts = _judge_all([given[index] for index in unvouched])
    for index, (identity, shape) in zip(unvouched, verdicts, strict=True):
        problems[index] = identity or shape
    return problems


def _judge_all(items: list[Any]) -> list[Verdict]:
    """The verdict of each item: plain states at once, the rest by the full checks."""
    plain = plain_states(items)
    if all(plain):
        return [USABLE] * len(items)
    return [USABLE if usable else _judge(item)
            for item, usable in zip(items, plain, strict=True)]


def _judge(item: Any) -> Verdict:
    shape = shape_problem(item)
    if shape is None:
        return USABLE       # usable holds the looser identity too
    identity = identity_problem(item)
    return (identity, None) if identity is not None else (None, shape)


def fingerprint(features: Iterable[Mapping[str, Any]]) -> str:
    """Cross-SDK fingerprint: hex SHA-256 of ``id:version`` sorted by id, joined by ``|``."""
    pairs = sorted((str(f["id"]), f["version"]) for f in features)
    return fingerprint_in_order(pairs)


def fingerprint_in_order(pairs: Iterable[tuple[str, int]]) -> str:
    """The Ruby store's formula: the same hash over the array in its own order (no sort)."""
    return hashlib.sha256("|".join(f"{i}:{v}" for i, v in pairs).encode()).hexdigest()


@dataclass
class Decoded:
    """A store value turned into feature states, with what could not be used.

    ``by_id``: entries the SDK can evaluate (highest version per id).
    ``unusable``: entries with an id and a version but a shape the SDK would
    raise on; never replayed, but kept verbatim when the value is rewritten,
    unless superseded, so another SDK's entry is not deleted because we
    cannot evaluate it.
    ``order``: ``(id, version)`` of every placed entry in array order, for
    the Ruby fingerprint (``placed_order``; None when it is ``by_id``'s own
    order: every entry usable, no id twice). ``dropped``: entries with no
    usable id or version.
    """

    by_id: dict[str, FeatureState] = field(default_factory=dict)
    unusable: dict[str, FeatureState] = field(default_factory=dict)
    placed_order: list[tuple[str, int]] | None = None
    dropped: int = 0
    problems: list[str] = field(default_factory=list)   # one per unusable or dropped entry
    problem: str | None = None      # why the value as a whole was unreadable
    too_large: bool = False         # unreadable because of our size bound, not junk
    form: str = "absent"            # absent, plain, json-string, zlib
    digest: bytes | None = None     # SHA-256 of the (inflated) bytes the entries came from
    #: each entry's verdict, kept only when the digest was left out (see decode)
    verdicts: tuple[Verdict, ...] | None = None

    @property
    def order(self) -> list[tuple[str, int]]:
        """``(id, version)`` of every placed entry, in array order."""
        if self.placed_order is not None:
            return self.placed_order
        return [(fid, feature["version"]) for fid, feature in self.by_id.items()]

    @property
    def features(self) -> list[FeatureState]:
        return list(self.by_id.values())

    @property
    def placed(self) -> dict[str, FeatureState]:
        """Every entry with an id and version, usable or not (what a rewrite keeps); a fresh
        dict at each call, the caller's to change."""
        if not self.unusable:
            return dict(self.by_id)
        out = dict(self.unusable)
        for fid, feature in self.by_id.items():
            held = out.get(fid)
            if held is None or feature["version"] >= held["version"]:
                out[fid] = feature
        return out

    def fingerprint(self) -> str:
        """:func:`fingerprint` of :attr:`placed`, worked out once per distinct value."""
        digest = self.digest
        known = VERDICTS.fingerprint(digest) if digest is not None else None
        if known is None:
            known = fingerprint(self.placed.values())
            if digest is not None:
                VERDICTS.remember_fingerprint(digest, known)
        return known

    def consistent_fingerprints(self) -> set[str]:
        """Fingerprints that agree with this array: sorted (ours, JS) or array order (Ruby)."""
        return {self.fingerprint(), fingerprint_in_order(self.order)}

    def agrees_with(self, token: str | None) -> bool:
        """``token in consistent_fingerprints()``, without the second formula when the first
        matches (it does for every value fh_prefork and the JavaScript store write)."""
        if token is None:
            return False
        return token == self.fingerprint() or token == fingerprint_in_order(self.order)


def inflate(raw: bytes, max_bytes: int) -> bytes:
    """Decompress a zlib value, refusing one that would grow past ``max_bytes``."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as err:
        raise ValueError(f"zlib value is corrupt: {err}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise OverflowError(f"zlib value inflates past the {max_bytes}-byte limit")
    if not inflater.eof:
        raise ValueError("zlib value is truncated")
    return out


def is_zlib(raw: bytes) -> bool:
    """A zlib header (RFC 1950): deflate method, valid check bits. JSON never starts so."""
    return (len(raw) >= 2 and raw[0] & 0x0F == 8 and raw[0] >> 4 <= 7
            and ((raw[0] << 8) | raw[1]) % 31 == 0)


def decode(raw: bytes | None, max_bytes: int, *, entry_texts: bool = True) -> Decoded:
    """Parse a store value in any form a FeatureHub store writes, without trusting it.

    ``entry_texts=False`` (a worker's start): parse the value whole, not entry
    by entry, and when this process has judged no value yet (a fresh worker:
    nothing to look up) leave even the value's digest out; its verdicts are
    then in :attr:`Decoded.verdicts`. The store thread calls
    :func:`remember_entry_texts` right after, so the next read of the value
    judges nothing and the next value, which differs in a few entries, is
    judged only there.
    """
    read = _text_of(raw, max_bytes)
    if isinstance(read, Decoded):
        return read
    text, form, inflated = read
    digest = (hashlib.sha256(inflated).digest() if entry_texts or VERDICTS.holds_values()
              else None)
    known = VERDICTS.value(digest) if digest is not None else None
    parsed = _parse(text, form, by_entry=known is None and entry_texts)
    if isinstance(parsed, Decoded):
        return parsed
    texts, items, form = parsed
    decoded = _place_usable(items, form, known) if known is not None else None
    if decoded is None:
        decoded, verdicts = _place(texts, items, form, known)
        if digest is None:
            decoded.verdicts = verdicts     # for remember_entry_texts
        elif known is None:
            VERDICTS.remember_value(digest, verdicts)
    decoded.digest = digest
    _handoff.items = dict(decoded.by_id)
    return decoded


def remember_entry_texts(raw: bytes | None, max_bytes: int,
                         verdicts: tuple[Verdict, ...] | None = None, *,
                         fingerprint: str | None = None) -> None:
    """Remember a value decoded with ``entry_texts=False``: its entries' verdicts by each
    entry's text, and by its digest the value's, given as ``verdicts`` when the decode
    left the digest out (and its ``fingerprint``, when that was worked out already).
    Nothing when the value was not judged or is not an array."""
    read = _text_of(raw, max_bytes)
    if isinstance(read, Decoded):
        return
    text, form, inflated = read
    digest = hashlib.sha256(inflated).digest()
    if fingerprint is not None:
        VERDICTS.remember_fingerprint(digest, fingerprint)
    known = VERDICTS.value(digest, count=False)
    if known is None and verdicts is not None:
        VERDICTS.remember_value(digest, verdicts)
        known = verdicts
    if known is None:
        return
    parsed = _parse(text, form, by_entry=True)
    texts = None if isinstance(parsed, Decoded) else parsed[0]
    if texts is not None and len(texts) == len(known):
        VERDICTS.remember(zip(texts, known, strict=True))


def _text_of(raw: bytes | None, max_bytes: int) -> tuple[str, str, bytes] | Decoded:
    """A store value's JSON text, its form and its (inflated) bytes, or a Decoded that says
    why there is none."""
    if raw is None:
        return Decoded()
    form = "plain"
    if len(raw) > max_bytes:
        return Decoded(problem=f"value of {len(raw)} bytes exceeds the {max_bytes}-byte limit",
                       too_large=True, form=form)
    if is_zlib(raw):
        form = "zlib"
        try:
            raw = inflate(raw, max_bytes)
        except OverflowError as err:
            return Decoded(problem=str(err), form=form)
        except ValueError as err:
            return Decoded(problem=str(err), form=form)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Decoded(problem="value is neither UTF-8 JSON nor zlib (a pickle is never loaded)",
                       form=form)
    return text, form, raw


def _parse(text: str, form: str, by_entry: bool
           ) -> tuple[list[str] | None, list[Any], str] | Decoded:
    """The array's entries (with each one's text when ``by_entry``) and its form, or why not."""
    entries = _array_entries(text) if by_entry else None
    if entries is not None:
        return entries[0], entries[1], form
    try:
        value = json_parser.loads(text)
        if isinstance(value, str):  # Ruby/Dalli JSON serializer wraps the array in a string
            form = "json-string" if form == "plain" else form
            entries = _array_entries(value) if by_entry else None
            if entries is not None:
                return entries[0], entries[1], form
            value = json_parser.loads(value)
    except RecursionError:
        return Decoded(problem="JSON nested too deeply", form=form)
    except ValueError:
        return Decoded(problem="value is not JSON", form=form)
    if not isinstance(value, list):
        return Decoded(problem=f"expected a JSON array, found {type(value).__name__}", form=form)
    return None, value, form


def _place_usable(items: list[Any], form: str, known: tuple[Verdict, ...]) -> Decoded | None:
    """The common case of a value read before, quickly: every entry usable, no id twice.

    None when it is not that case (:func:`_place` then places the value entry by entry).
    """
    if len(known) != len(items) or known.count(USABLE) != len(known):
        return None
    by_id = dict(zip(map(operator.itemgetter("id"), items), items, strict=True))
    if len(by_id) != len(items):
        return None
    return Decoded(by_id=by_id, form=form)     # its order is by_id's (see Decoded.order)


def _place(texts: list[str] | None, items: list[Any], form: str,
           known: tuple[Verdict, ...] | None) -> tuple[Decoded, tuple[Verdict, ...]]:
    """Judge each entry (unless its text, or the whole value, was judged before); place it."""
    if known is not None and len(known) == len(items):
        final = known
    elif texts is None:     # parsed whole: nothing to look up by, every entry judged
        final = tuple(_judge_all(items))
        VERDICTS.missed(len(items))
    else:
        verdicts = VERDICTS.lookup(texts)
        unknown = [index for index, verdict in enumerate(verdicts) if verdict is None]
        judged = _judge_all([items[index] for index in unknown])
        for index, verdict in zip(unknown, judged, strict=True):
            verdicts[index] = verdict
        VERDICTS.remember(zip([texts[index] for index in unknown], judged, strict=True))
        final = tuple(v for v in verdicts if v is not None)    # every one judged by now
    usable = _place_usable(items, form, final)
    if usable is not None:
        return usable, final
    decoded = Decoded(form=form, placed_order=[])
    for index, item in enumerate(items):
        problem, shape = final[index]
        if problem is not None:
            decoded.dropped += 1
            decoded.problems.append(f"[{index}] {problem}")
            continue
        decoded.order.append((item["id"], item["version"]))   # placed_order, a list here
        target = decoded.by_id if shape is None else decoded.unusable
        if shape is not None:
            decoded.problems.append(f"[{index}] {item['key']!r}: {shape}")
        held = decoded.by_id.get(item["id"]) or decoded.unusable.get(item["id"])
        if held is not None:
            decoded.dropped += 1
            decoded.problems.append(f"[{index}] {item['key']!r}: duplicate id {item['id']!r}")
            if held["version"] >= item["version"]:
                continue
            decoded.by_id.pop(item["id"], None)
            decoded.unusable.pop(item["id"], None)
        target[item["id"]] = item
    return decoded, final


#: ``json.loads``'s own (C) scanner, one value at a time (set in ``JSONDecoder.__init__``,
#: which typeshed does not declare)
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_SPACE = " \t\n\r"                     # JSON's whitespace, as that scanner skips it


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def _array_entries(text: str) -> tuple[list[str], list[Any]] | None:
    """A JSON array's entries and the exact text of each, or None if ``text`` is not one.

    Parsed by the scanner ``json.loads`` uses, so each entry is the value
    ``json.loads`` would give; anything irregular (not an array, a syntax
    error, too deep) returns None and is left to ``json.loads`` to name.
    """
    at = _skip_space(text, 0)
    if text[at:at + 1] != "[":
        return None
    at = _skip_space(text, at + 1)
    texts: list[str] = []
    items: list[Any] = []
    if text[at:at + 1] == "]":
        return (texts, items) if _skip_space(text, at + 1) == len(text) else None
    try:
        while True:
            item, end = _SCAN(text, at)
            texts.append(text[at:end])
            items.append(item)
            end = _skip_space(text, end)
            char = text[end:end + 1]
            if char == ",":
                at = _skip_space(text, end + 1)
            elif char == "]":
                return (texts, items) if _skip_space(text, end + 1) == len(text) else None
            else:
                return None
    except (StopIteration, ValueError, RecursionError):
        return None


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
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in some writer's JSON): escape it
        return json.dumps(ordered, separators=(",", ":")).encode("ascii")
