"""Server matrices: the chosen cases by default, the full product on demand.

A full product of server variants and stores repeats what the store suites
already prove on every backend; the chosen cases keep every pair that can fail
on its own (see tests/README.md). ``FH_PREFORK_FULL_MATRIX=1`` runs every
combination again, e.g. in a nightly job.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

FULL = os.environ.get("FH_PREFORK_FULL_MATRIX") == "1"


def chosen(rows: Sequence[T], columns: Sequence[U], cases: Iterable[tuple[T, U]]
           ) -> list[tuple[T, U]]:
    """``cases`` (checked to be in ``rows`` x ``columns``, each row and column used), or the
    whole product with FH_PREFORK_FULL_MATRIX=1."""
    picked = list(cases)
    product = list(itertools.product(rows, columns))
    unknown = [case for case in picked if case not in product]
    if unknown:
        raise ValueError(f"cases outside the matrix: {unknown}")
    unused = [v for v in (*rows, *columns) if not any(v in case for case in picked)]
    if unused:
        raise ValueError(f"values no chosen case uses: {unused}")
    return product if FULL else picked


def pairwise(factors: Sequence[Sequence[object]], cases: Iterable[tuple[object, ...]]
             ) -> list[tuple[object, ...]]:
    """``cases`` over several factors, checked to cover every pair of values of every two
    factors (a failure that needs two settings at once is still met), or the whole product
    with FH_PREFORK_FULL_MATRIX=1."""
    picked = list(cases)
    product = list(itertools.product(*factors))
    unknown = [case for case in picked if case not in product]
    if unknown:
        raise ValueError(f"cases outside the matrix: {unknown}")
    missing = [(i, a, j, b)
               for i, j in itertools.combinations(range(len(factors)), 2)
               for a in factors[i] for b in factors[j]
               if not any(case[i] == a and case[j] == b for case in picked)]
    if missing:
        raise ValueError(f"pairs no chosen case covers (factor, value, factor, value): "
                         f"{missing}")
    return product if FULL else picked
