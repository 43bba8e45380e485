"""The capacity bench counts what the store server itself counted, and Edge's streams."""

from __future__ import annotations

import pytest

from fh_prefork.bench.capacity import measure, report
from fh_prefork.testing.memcached import available


@pytest.mark.servers
@pytest.mark.parametrize("mode, streams", [("every", 2), ("leader", 1)])
def test_capacity_counts_store_operations_bytes_and_edge_streams(
        mode: str, streams: int) -> None:
    if not available():
        pytest.skip("memcached is not installed")
    lines: list[str] = []
    row = measure("memcache", mode, workers=2, idle=3.0, updates=2, n_features=10,
                  log=lines.append, refresh=0.5)
    assert row["edge_streams"] == streams
    idle = row["idle_per_worker_per_second"]
    # a refresh every 0.5 s reads at least the fingerprint key: about 2 gets a second each
    assert 0.5 < idle["ops"] < 50, idle
    assert idle["bytes_out"] > 0
    update = row["per_update_all_workers"]
    assert update["writes"] >= 1, update       # the update was written to the store
    assert row["state_bytes"] > 10 * 50        # ten features of JSON
    assert f"| memcache | {mode} | 0.5 s | 2 |" in report([row])
