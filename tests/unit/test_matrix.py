"""The chosen server matrices refuse a choice that drops a pair (tests/support/matrix.py)."""

from __future__ import annotations

import pytest

from tests.support import matrix


def test_pairwise_takes_a_covering_choice_and_refuses_one_that_drops_a_pair() -> None:
    factors = (("a", "b"), (1, 2), ("x", "y"))
    covering = [("a", 1, "x"), ("a", 2, "y"), ("b", 1, "y"), ("b", 2, "x")]
    if not matrix.FULL:
        assert matrix.pairwise(factors, covering) == covering
    with pytest.raises(ValueError, match="pairs no chosen case covers"):
        matrix.pairwise(factors, covering[:3])          # ("b", 2) is never met
    with pytest.raises(ValueError, match="outside the matrix"):
        matrix.pairwise(factors, [*covering, ("c", 1, "x")])
