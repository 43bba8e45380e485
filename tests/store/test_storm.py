"""Many OS processes released together by a barrier: concurrent writers never lose an update."""

from __future__ import annotations

import pytest

from fh_prefork.testing.storm import run_storm

#: process storms: many writer processes released together
pytestmark = pytest.mark.servers


@pytest.mark.parametrize("round_", range(3))
def test_distinct_writers_all_survive_and_shared_ends_at_highest(
        store_url: str, prefix: str, round_: int) -> None:
    result = run_storm(store_url, 12, prefix=f"{prefix}r{round_}")
    assert result.gave_up == 0
    assert result.surviving_distinct == result.sent_distinct == 12, result
    assert result.shared_stored == result.shared_max_sent
    assert result.fingerprint_ok
    assert not result.fingerprint_stale_at_end, "a delayed writer set its fingerprint over a newer"
    assert result.writes >= 1 and result.cas_conflicts == result.write_attempts - result.writes


def test_same_update_storm_writes_exactly_once(store_url: str, prefix: str) -> None:
    result = run_storm(store_url, 12, mode="same", prefix=prefix)
    assert result.gave_up == 0
    assert result.surviving_distinct == 20
    assert result.writes == 1, result.per_process
    assert result.fingerprint_ok


def test_writer_killed_mid_storm_loses_nothing_of_the_others(store_url: str,
                                                             prefix: str) -> None:
    result = run_storm(store_url, 12, prefix=prefix, crash_indexes=(3, 7))
    assert result.crashed == 2
    assert result.surviving_distinct == result.sent_distinct == 10
    assert result.shared_stored == result.shared_max_sent
    assert result.gave_up == 0
