"""An OpenFeature provider backed by this worker's FeatureHub repository.

::

    from openfeature import api
    from fh_prefork.openfeature import FeatureHubProvider

    api.set_provider(FeatureHubProvider())
    client = api.get_client()
    if client.get_boolean_value("NEW_CHECKOUT", False, EvaluationContext("user-1")): ...

Install with ``pip install 'fh-prefork[openfeature]'``. The server hooks are the
ones fh_prefork already needs (:mod:`fh_prefork.gunicorn`, :mod:`fh_prefork.uwsgi`);
outside a prefork server the worker starts lazily, as ``fh_prefork.context()`` does.

Resolution reads the worker's repository in memory, like ``fh_prefork.context()``,
and evaluates rollout strategies with the FeatureHub SDK's own matcher, so a value
is the one the SDK would give for the same context. The evaluation context becomes
FeatureHub client context attributes: the targeting key is the user key, every
other attribute (``country``, ``device``, ``platform``, ``version``, ``session``
or any custom name) is passed through under its own name.

Lifecycle: ``initialize`` waits (bounded by ``ready_timeout``) until the worker has
a state, from the store or from Edge. A watcher thread per process then turns what
the worker sees into provider events: ``PROVIDER_READY`` once it has a state (again
after a fork, per worker), ``PROVIDER_STALE`` while both the store and Edge are
unreachable, ``PROVIDER_ERROR`` with the spec's ``PROVIDER_FATAL`` code (provider
status ``FATAL``) while Edge says it does not know the API key (``key_not_found``:
a poll's 404 or the stream's "Unrecognized API key"; READY again if Edge comes to
know it), and ``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed`` whenever features
change, whichever way the change arrived (this worker's Edge stream or another
worker's, through the store).

Fork safety: a provider created before a fork (``--preload``, uWSGI without
``lazy-apps``) attaches to each worker's own repository after the fork and
starts its watcher there; nothing of the parent's is used. The OpenFeature SDK's
event-handler thread pool does not survive a fork (work submitted in the child
waits forever for threads that exist only in the parent), so a child whose parent
had started that pool gets a fresh one.

This is the only package of fh_prefork that imports ``openfeature``: the provider
(:mod:`.provider`), resolution (:mod:`.evaluation`) and the SDK fork-safety shim
(:mod:`.fork`).
"""

from __future__ import annotations

from .evaluation import fh_context
from .provider import FATAL, NOT_READY, READY, STALE, FeatureHubProvider, ProviderState

__all__ = ["NOT_READY", "READY", "STALE", "FATAL", "FeatureHubProvider", "ProviderState",
           "fh_context"]
