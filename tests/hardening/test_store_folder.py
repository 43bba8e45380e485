"""The embedded store's folder under attack by a second local user (uid nobody), real gunicorn.

Before: a default folder created first by another user (or a symlink in its place) made the
master refuse to start; with umask 000 missing parents were created 0777; a folder swapped by
someone who can write its parent went unnoticed and later writes landed in theirs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import API_KEY
from tests.support.procs import wait_for
from tests.support.servers import versions

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second uid")

NOBODY = 65534
StartCluster = Callable[..., Cluster]
ENV_ID = API_KEY.split("/")[1]


def as_nobody(*command: str) -> None:
    """Run a command as the other local user."""
    subprocess.run(command, check=True, user=NOBODY, group=NOBODY, extra_groups=[], timeout=10)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder like /dev/shm: every user may create entries (mode 1777), outside pytest's
    own 0700 temp tree so the other user can reach it. Ask for it before start_cluster, so
    the servers are stopped before it is removed."""
    folder = Path(tempfile.mkdtemp(prefix="fh-hardening-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def store_version(folder: Path, prefix: str, key: str = "FLAG") -> int | None:
    try:
        data = json.loads((folder / f"{prefix}_{ENV_ID}.json").read_bytes())
    except (OSError, ValueError):
        return None
    return next((f["version"] for f in data if f["key"] == key), None)


@pytest.mark.parametrize("squat", ["folder", "symlink"])
def test_squatted_default_folder_gives_a_fresh_private_one(
        shared_tmp: Path, start_cluster: StartCluster, edge: EdgeSimulator, squat: str) -> None:
    usual = shared_tmp / "fh-prefork"
    if squat == "folder":
        as_nobody("mkdir", "-m", "0777", str(usual))
    else:
        as_nobody("mkdir", str(shared_tmp / "theirs"))
        as_nobody("ln", "-s", str(shared_tmp / "theirs"), str(usual))
    cluster = start_cluster("gunicorn", 2, env={"FH_PREFORK_STORE": None,
                                                "XDG_RUNTIME_DIR": str(shared_tmp)})
    assert edge.wait_for_streams(2, timeout=10)
    edge.push_feature(make_feature("FLAG", False, 2), stream_id=edge.streams()[0].id)
    wait_for(lambda: set(versions(cluster).values()) == {2}, 5, what="update through the store")

    backends = {s["store"]["backend"] for s in cluster.statuses().values()}
    assert len(backends) == 1, backends  # master and workers agree on one folder
    folder = Path(backends.pop().removeprefix("file://")).parent
    assert folder.parent == shared_tmp and folder.name.startswith("fh-prefork-"), folder
    st = folder.stat(follow_symlinks=False)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    assert store_version(folder, cluster.env["FH_PREFORK_PREFIX"]) == 2
    assert f"using the private folder {folder}" in cluster.log_text()
    squatted = shared_tmp / ("theirs" if squat == "symlink" else "fh-prefork")
    assert os.listdir(squatted) == []


def test_parents_are_created_private_under_umask_000(
        start_cluster: StartCluster, edge: EdgeSimulator, tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "store"
    old = os.umask(0)
    try:
        cluster = start_cluster("gunicorn", 2, env={"FH_PREFORK_STORE": f"file://{folder}"})
    finally:
        os.umask(old)
    wait_for(lambda: store_version(folder, cluster.env["FH_PREFORK_PREFIX"]) == 1, 10,
             what="the first write")
    for made in (tmp_path / "a", tmp_path / "a" / "b", folder):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    for file in folder.iterdir():
        if file.is_file():
            assert stat.S_IMODE(file.stat().st_mode) & 0o077 == 0, file


@pytest.mark.parametrize("swap", ["folder", "symlink"])
def test_a_swapped_folder_cannot_redirect_reads_or_writes(
        shared_tmp: Path, start_cluster: StartCluster, edge: EdgeSimulator, swap: str) -> None:
    parent = shared_tmp / "parent"
    as_nobody("mkdir", "-m", "0755", str(parent))   # the other user owns the folder's parent
    folder = parent / "store"
    cluster = start_cluster("gunicorn", 2, env={"FH_PREFORK_STORE": f"file://{folder}"})
    prefix = cluster.env["FH_PREFORK_PREFIX"]
    wait_for(lambda: store_version(folder, prefix) == 1, 10, what="the first write")

    moved, theirs = parent / "moved", shared_tmp / "theirs"
    as_nobody("mv", str(folder), str(moved))
    if swap == "folder":
        as_nobody("mkdir", "-m", "0777", str(folder))
        theirs = folder
    else:
        as_nobody("mkdir", "-m", "0777", str(theirs))
        as_nobody("ln", "-s", str(theirs), str(folder))

    edge.push_feature(make_feature("FLAG", False, 2), stream_id=edge.streams()[0].id)
    wait_for(lambda: set(versions(cluster).values()) == {2}, 5, what="update through the store")
    # a worker forked after the swap uses the folder the master opened, too
    old = cluster.worker_pids()
    os.kill(old[0], signal.SIGKILL)
    new = wait_for(lambda: set(cluster.worker_pids()) - set(old), 10, what="a new worker")
    # the new worker's own stream (the killed one's may still be listed for a moment):
    # what it hears must reach the other worker through the folder the master opened
    stream = wait_for(lambda: next((s for s in edge.streams() if edge.stream_pid(s) in new),
                                   None), 10, what="the new worker's stream")
    edge.push_feature(make_feature("FLAG", True, 3), stream_id=stream.id)
    wait_for(lambda: set(versions(cluster).values()) == {3}, 5, what="second update")

    wait_for(lambda: store_version(moved, prefix) == 3, 5, what="writes in the original folder")
    assert os.listdir(theirs) == [], "nothing may land in the other user's folder"
    assert "was moved, removed or replaced" in cluster.log_text()
