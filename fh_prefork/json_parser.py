"""The parser a whole store value goes through: orjson when it is installed, else :mod:`json`.

A worker's start, and every read of the store in full, parses the whole value: 64 KB
for 500 features, about a fifth of a fresh worker's store constructor with :mod:`json`.
orjson (the ``speedups`` extra) parses it in half the time. Whichever parses, the
value read is the one :func:`json.loads` reads, exactly:

- What orjson refuses goes to :func:`json.loads`, which reads it or names the problem
  in its own words: NaN and Infinity, numbers past a double, escaped lone surrogates,
  nesting past 1,024, every syntax error.
- orjson reads an integer past 64 bits as a float; :mod:`json` keeps it exact. A text
  with a run of 19 digits or more goes to :func:`json.loads` as well. Shorter runs
  are integers within 64 bits, or floats that both round alike.

Nesting about a thousand levels deep is the one place the two differ, and there json
differs from itself: it refuses what nests deeper than the interpreter's recursion
limit less the stack in use (so a read on the store thread and one in a post-fork hook
may disagree; an application that lowers ``sys.setrecursionlimit`` lowers it too),
orjson what nests past 1,024 levels. No feature state nests more than a
few levels, so an entry nested that deep is junk either way; orjson's reading keeps
the value's other entries, where json's refuses the whole value.

``tests/unit/test_json_parser.py`` holds the two to the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

try:
    import orjson
except ImportError:     # the optional speedups extra
    orjson = None  # type: ignore[assignment]

#: Every ASCII digit to ``9``, every other byte to a space: a run of digits stays a run.
_DIGITS_ONLY = bytes(b"9"[0] if b"0"[0] <= byte <= b"9"[0] else b" "[0] for byte in range(256))
#: The shortest run of digits that may be an integer past 64 bits (-9999999999999999999).
_LONG_RUN = b"9" * 19

#: What :func:`parser` says when orjson is not installed (or not in use).
STANDARD_LIBRARY = "json (standard library)"

_fast: Callable[[bytes], Any] | None = orjson.loads if orjson is not None else None


def parser() -> str:
    """The parser in use, as figures and reports name it."""
    if _fast is not None and orjson is not None:
        return f"orjson {orjson.__version__}"
    return STANDARD_LIBRARY


def loads(text: str) -> Any:
    """``json.loads(text)``'s value, parsed by orjson when it can give that very value."""
    fast = _fast
    if fast is not None:
        # surrogatepass: a lone surrogate (from an escape in a Ruby JSON string) becomes
        # bytes that are not UTF-8, which orjson refuses, and json then reads
        data = text.encode("utf-8", "surrogatepass")
        if _LONG_RUN not in data.translate(_DIGITS_ONLY):
            try:
                return fast(data)
            except ValueError:      # orjson.JSONDecodeError: json reads it or names why not
                pass
    return json.loads(text)


@contextmanager
def standard_library_only() -> Iterator[None]:
    """Parse with :mod:`json` alone while inside: the benchmark's figure beside orjson's.
    Not for a serving process (it is process-wide)."""
    global _fast
    saved, _fast = _fast, None
    try:
        yield
    finally:
        _fast = saved
