"""Status records of a whole server: one private file per worker, written by its store thread."""

from __future__ import annotations

import os
from pathlib import Path

from fh_prefork import workers


def test_a_worker_that_exits_before_its_first_step_removes_nothing_and_does_not_raise(
        tmp_path: Path) -> None:
    publisher = workers.Publisher(lambda: {}, os.getppid(), base=tmp_path)
    publisher.remove()        # worker_exit before the store thread ran: no record, no error
    assert not (tmp_path / "workers").exists()
