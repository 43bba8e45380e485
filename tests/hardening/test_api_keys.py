"""API keys and environment ids whose shape cannot work are refused by the master, in one line.

Before: a key holding ``#``, ``?``, ``%2F`` or a space reached Edge as another path and was
reported as "the key does not exist or was deleted"; a space or non-ASCII character in the
environment id passed the master, after which every store call failed as if memcached were down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fh_prefork.edge import SupervisedEdge
from fh_prefork.listener import ListeningRepository
from tests.faults.test_bad_settings import run_master

BAD_KEYS = {
    "hash-in-secret": ("portfolio/env/client*sec#ret", "'#'"),
    "question-mark": ("portfolio/env/cli?ent*secret", "'?'"),
    "encoded-slash": ("portfolio/env/client%2Fx*secret", "'%'"),
    "space-in-secret": ("portfolio/env/client*sec ret", "a space"),
    "space-in-environment": ("portfolio/env x/client*secret", "a space"),
    "non-ascii-environment": ("portfolio/envé/client*secret", "a non-ASCII character"),
}


@pytest.mark.servers
@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_master_refuses_a_key_of_the_wrong_shape_in_one_line(
        case: str, memcached: Any, tmp_path: Path) -> None:
    key, problem = BAD_KEYS[case]
    result = run_master("gunicorn", {"FEATUREHUB_API_KEY": key,
                                     "FH_PREFORK_STORE": memcached.url}, tmp_path)
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if line.startswith("fh_prefork:")]
    assert result.returncode != 0, output
    assert len(ours) == 1, output
    assert "FEATUREHUB_API_KEY" in ours[0] and problem in ours[0], ours[0]
    assert "refusing to start" in ours[0]
    assert key.rpartition("*")[2] not in ours[0], ours[0]  # the secret is never shown
    assert "Traceback" not in output and "unreachable" not in output, output


@pytest.mark.servers
def test_uwsgi_master_refuses_too(tmp_path: Path) -> None:
    result = run_master("uwsgi", {"FEATUREHUB_API_KEY": "portfolio/env x/client*secret"},
                        tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert [line for line in output.splitlines()
            if line.startswith("fh_prefork:") and "a space" in line], output


def test_edge_paths_are_encoded_for_a_key_given_in_code() -> None:
    edge = SupervisedEdge("http://127.0.0.1:9/", ["p/e/c#x?y*s e"], ListeningRepository())
    assert edge._sse_path == "/features/p/e/c%23x%3Fy*s%20e"
    assert "apiKey=p/e/c%23x%3Fy*s%20e&" in edge._poll_path


@pytest.mark.servers
def test_master_refuses_a_non_ascii_prefix_instead_of_reporting_memcached_down(
        memcached: Any, tmp_path: Path) -> None:
    result = run_master("gunicorn", {"FH_PREFORK_PREFIX": "flägs",
                                     "FH_PREFORK_STORE": memcached.url}, tmp_path)
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if line.startswith("fh_prefork:")]
    assert result.returncode != 0 and len(ours) == 1, output
    assert "FH_PREFORK_PREFIX" in ours[0] and "non-ASCII" in ours[0], ours[0]
