"""fh_prefork.gunicorn's hooks where no server is needed (tests/servers runs them in gunicorn)."""

from __future__ import annotations

import signal

from fh_prefork.gunicorn import STOP_SIGNALS, _keep_stop_signals


def test_the_stop_keeper_leaves_a_worker_without_init_signals_alone() -> None:
    """A worker class without gunicorn's init_signals (a stand-in, an odd subclass) starts
    as before: no handler is changed, nothing raises."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    _keep_stop_signals(object())
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
