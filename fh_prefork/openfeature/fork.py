"""Fork safety for the OpenFeature SDK: the one place that touches its private internals.

The SDK keeps a module-level event thread pool and locks that a fork copies in
whatever state a parent thread left them; a child would wait forever on them.
Isolated here so an SDK upgrade that moves these internals breaks one small
module, and the provider never reaches into the SDK itself.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from openfeature import _event_support
from openfeature.provider import _registry

if TYPE_CHECKING:
    from .provider import FeatureHubProvider

__all__ = ["fresh_openfeature", "providers"]

log = logging.getLogger("fh_prefork.openfeature")

#: Every provider of this process: each is restarted in a forked child.
providers: weakref.WeakSet[FeatureHubProvider] = weakref.WeakSet()
_executor_pid = os.getpid()


def fresh_openfeature(locks: bool) -> None:
    """Give a forked child a working OpenFeature SDK (once per process).

    * ``openfeature._event_support`` runs every event handler on one module-level
      ``ThreadPoolExecutor``. A child's copy believes the parent's idle threads
      exist, starts none, and every handler submitted waits forever: a child whose
      parent had started the pool gets a fresh one.
    * The API's locks (the provider registry's, the handler lists') may have been
      held by a parent thread at the fork (``set_provider`` initialises on a
      thread), and would then never be released in the child. They are replaced
      only from the at-fork hook (``locks=True``), while the child has one thread.
    """
    global _executor_pid
    if _executor_pid == os.getpid():
        return
    _executor_pid = os.getpid()
    executor = getattr(_event_support, "_event_executor", None)
    if isinstance(executor, ThreadPoolExecutor) and getattr(executor, "_threads", None):
        _event_support._event_executor = ThreadPoolExecutor(
            thread_name_prefix="openfeature-event-handler")
    if locks:
        _event_support._global_lock = threading.RLock()
        _event_support._client_lock = threading.RLock()
        registry = getattr(_registry, "provider_registry", None)
        if registry is not None and hasattr(registry, "_lock"):
            registry._lock = threading.RLock()


def _after_fork_in_child() -> None:
    fresh_openfeature(locks=True)
    for provider in list(providers):
        try:
            provider._after_fork()
        except Exception:  # never break the fork for an event watcher
            log.exception("fh_prefork: OpenFeature provider failed to start after fork")


os.register_at_fork(after_in_child=_after_fork_in_child)
