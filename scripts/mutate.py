"""Revert a past fix at its core, to show the suite still catches it (tests/README.md).

    python scripts/mutate.py NAME CHECKOUT     # then, in CHECKOUT: bash scripts/test -x

Run it in a throwaway worktree, never in your own checkout. It exits 2 when the text it
reverts is no longer there (the code moved on: the mutation would be a no-op, so update it).
"""
import pathlib
import sys

MUTATIONS = {
    # issue 19: the real Edge deletes with version 0 (no value); before the fix such a
    # delete was taken as stale and ignored, so a deleted flag stayed served
    "version0-delete-ignored": ("fh_prefork/listener.py",
        """        if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
            version = MAX_VERSION
""",
        """        if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
            return None     # MUTATION: a version-0 delete taken as stale (before issue 19)
"""),
    # issue 20: a retry time left in the past by a failed write made the store thread wait
    # Condition.wait(0) in a loop (a core spun after a memcached restart)
    "retry-time-spin": ("fh_prefork/store/wake.py",
        """    if state.dirty:
        wake = min(wake, state.retry_at if state.retry_at is not None else now)
""",
        """    if state.retry_at is not None:      # MUTATION: the retry time counted while clean
        wake = min(wake, state.retry_at)
    if state.dirty and state.retry_at is None:
        wake = min(wake, now)
"""),
    # issue 19: the stream's 200 + failure "Unrecognized API key" was taken as a normal end of
    # stream, so every worker reconnected every second and said "connecting"
    "unknown-key-no-backoff": ("fh_prefork/edge.py",
        """            if _UNKNOWN_KEY in status.lower():
                raise _KeyNotFound(f"failure {status!r}: API key not found", repr(status))
            raise _EdgeFailure(f"Edge sent failure {status!r}")
""",
        """            self._delivered = True   # MUTATION: a failure taken as a normal end of stream
            del status
"""),
}

# issue 20, the whole fix reverted: the retry time also outlives a successful flush
MUTATIONS["retry-time-spin-whole"] = [MUTATIONS["retry-time-spin"], (
    "fh_prefork/store/core.py",
    """                self._retry_at = (time.monotonic() + self._period() / 4 if outcome == _RETRY
                                  else None)
""",
    """                if outcome == _RETRY:   # MUTATION: a success leaves the retry time in place
                    self._retry_at = time.monotonic() + self._period() / 4
""")]

if len(sys.argv) != 3 or sys.argv[1] not in MUTATIONS:
    sys.exit(f"usage: mutate.py NAME CHECKOUT; NAME is one of {', '.join(MUTATIONS)}")
name, root = sys.argv[1], pathlib.Path(sys.argv[2])
edits = MUTATIONS[name]
for path, old, new in (edits if isinstance(edits, list) else [edits]):
    f = root / path
    text = f.read_text()
    if text.count(old) != 1:
        sys.exit(2)
    f.write_text(text.replace(old, new))
    print(f"mutated {path}: {name}")
