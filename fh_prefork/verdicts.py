"""The feature-state check's verdicts, remembered by the exact JSON text of each entry.

A store is read at start and again at every verify read and change, and each
read used to judge every entry's whole shape (twice: once here, once in the
listener), although nearly all of them are the same entries as last time. A
verdict is a pure function of the entry's content, and an entry's content is a
pure function of its JSON text (the same text always parses to the same
value), so the text is a key no two different contents can share. Texts that
differ only in spacing or key order get a verdict each: that costs one more
check, never a wrong verdict.

Whole values are remembered too, by the SHA-256 of their bytes: a verify read
of a value read before (the common case: nothing changed) skips the per-entry
lookups as well and parses the value whole, and the value's fingerprint (also
a pure function of its bytes) is worked out once, not at every read.

The cache is bounded in entries, in characters held and in values, and evicts
the least recently used; an entry too large to keep is simply judged each time.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence

#: (identity problem, shape problem) of one entry: both None when the SDK can use it.
Verdict = tuple[str | None, str | None]

#: The verdict of a usable entry (one shared tuple: most verdicts are this one).
USABLE: Verdict = (None, None)

#: Entries remembered (a few times the largest environment one process serves).
MAX_ENTRIES = 8192
#: Characters of entry text held at most, over all remembered entries.
MAX_CHARS = 4 * 1024 * 1024
#: Whole values remembered (by digest: one verdict per entry, in array order).
MAX_VALUES = 16


class VerdictCache:
    """A bounded, thread-safe LRU of verdicts keyed by an entry's exact JSON text."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_chars: int = MAX_CHARS) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._values: OrderedDict[bytes, tuple[Verdict, ...]] = OrderedDict()
        self._fingerprints: OrderedDict[bytes, str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        # a fork while another thread holds the lock must not leave the child's copy held
        own = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _new_lock(own))
        #: checks the cache answered, and the ones it could not (for tests and the bench)
        self.hits = 0
        self.misses = 0

    def lookup(self, texts: Sequence[str | None]) -> list[Verdict | None]:
        """The remembered verdict for each text (None: judge it), one lock for the batch."""
        found: list[Verdict | None] = []
        with self._lock:
            verdicts = self._verdicts
            for text in texts:
                verdict = verdicts.get(text) if text is not None else None
                if verdict is not None:
                    verdicts.move_to_end(text)  # type: ignore[arg-type]  # not None here
                found.append(verdict)
            hits = sum(1 for verdict in found if verdict is not None)
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def missed(self, count: int) -> None:
        """Count checks no verdict could answer (entries of a value parsed whole)."""
        with self._lock:
            self.misses += count

    def remember(self, judged: Iterable[tuple[str, Verdict]]) -> None:
        """Keep new verdicts, evicting the least recently used past either bound."""
        with self._lock:
            for text, verdict in judged:
                if len(text) > self.max_chars // 16 or text in self._verdicts:
                    continue
                self._verdicts[text] = verdict
                self._chars += len(text)
            while self._verdicts and (len(self._verdicts) > self.max_entries
                                      or self._chars > self.max_chars):
                old, _ = self._verdicts.popitem(last=False)
                self._chars -= len(old)

    def value(self, digest: bytes, count: bool = True) -> tuple[Verdict, ...] | None:
        """The verdicts of every entry of the value with this digest, if it was judged
        (``count``: as checks the cache answered)."""
        with self._lock:
            verdicts = self._values.get(digest)
            if verdicts is not None:
                self._values.move_to_end(digest)
                if count:
                    self.hits += len(verdicts)
            return verdicts

    def holds_values(self) -> bool:
        """Whether any value's verdicts are remembered (a fresh worker's cache holds none)."""
        return bool(self._values)

    def remember_value(self, digest: bytes, verdicts: tuple[Verdict, ...]) -> None:
        with self._lock:
            self._values[digest] = verdicts
            self._values.move_to_end(digest)
            while len(self._values) > MAX_VALUES:
                self._values.popitem(last=False)

    def fingerprint(self, digest: bytes) -> str | None:
        """The fingerprint remembered for the value with this digest, if any."""
        with self._lock:
            found = self._fingerprints.get(digest)
            if found is not None:
                self._fingerprints.move_to_end(digest)
            return found

    def remember_fingerprint(self, digest: bytes, fingerprint: str) -> None:
        with self._lock:
            self._fingerprints[digest] = fingerprint
            self._fingerprints.move_to_end(digest)
            while len(self._fingerprints) > MAX_VALUES:
                self._fingerprints.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._verdicts.clear()
            self._values.clear()
            self._fingerprints.clear()
            self._chars = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._verdicts)


def _new_lock(cache: weakref.ref[VerdictCache]) -> None:
    alive = cache()
    if alive is not None:
        alive._lock = threading.Lock()
