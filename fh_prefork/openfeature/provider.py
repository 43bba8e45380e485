"""The OpenFeature provider: lifecycle, events and the watcher, over a worker's repository.

Resolution itself is in :mod:`.evaluation`; the SDK's fork-safety patches in
:mod:`.fork`. Health comes from the worker's typed :meth:`~fh_prefork.runtime.Worker.health`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, Literal

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata

from .. import runtime
from ..listener import RawUpdateFeatureListener
from ..ratelog import RateLimitedLog
from ..threads import start_without_signals, wait_for_end
from .evaluation import STALE_REASON, STATIC, ObjectValue, error, evaluate, feature_metadata
from .fork import fresh_openfeature, providers

__all__ = ["FATAL", "NOT_READY", "READY", "STALE", "FeatureHubProvider", "ProviderState"]

log = logging.getLogger("fh_prefork.openfeature")

#: What the watcher sees in a worker (``FeatureHubProvider.state()``); FATAL: Edge does not
#: know the API key.
ProviderState = Literal["not_ready", "ready", "stale", "fatal"]
NOT_READY: Final = "not_ready"
READY: Final = "ready"
STALE: Final = "stale"
FATAL: Final = "fatal"


class _Changes(RawUpdateFeatureListener):
    """Tells the provider which keys a worker's repository applied (on the notifying thread)."""

    def __init__(self, provider: FeatureHubProvider) -> None:
        self._provider = weakref.ref(provider)

    def _tell(self, keys: list[str]) -> None:
        provider = self._provider()
        if provider is not None and keys:
            provider._changed(keys)

    def process_updates(self, features: list[dict[str, Any]], source: str) -> None:
        self._tell([f["key"] for f in features if isinstance(f.get("key"), str)])

    def process_update(self, feature: dict[str, Any], source: str) -> None:
        self._tell([feature["key"]] if isinstance(feature.get("key"), str) else [])

    def delete_feature(self, feature: dict[str, Any], source: str) -> None:
        self._tell([feature["key"]] if isinstance(feature.get("key"), str) else [])


class FeatureHubProvider(AbstractProvider):
    """OpenFeature provider reading this worker's fh_prefork repository.

    ``ready_timeout``: seconds ``initialize`` waits for a first state before it
    fails with ``PROVIDER_NOT_READY`` (the provider still turns ready later, with a
    ``PROVIDER_READY`` event). ``watch_interval``: seconds between two looks at the
    store's and Edge's health; flag changes are announced as soon as they arrive.
    """

    def __init__(self, *, ready_timeout: float = 5.0, watch_interval: float = 0.5,
                 name: str = "fh-prefork FeatureHub") -> None:
        super().__init__()
        if ready_timeout < 0 or watch_interval <= 0:
            raise ValueError("ready_timeout must be >= 0 and watch_interval > 0")
        self.ready_timeout = float(ready_timeout)
        self.watch_interval = float(watch_interval)
        self._metadata = Metadata(name=name)
        self._listener = _Changes(self)
        self._errors = RateLimitedLog(log)
        self._active = False          # set on an OpenFeature API (attach/initialize) until shutdown
        self._initialized = False     # initialize() settled the first status
        self._init_runtime()
        providers.add(self)

    def _init_runtime(self) -> None:
        """Per-process machinery: rebuilt in a forked child, since threads do not survive."""
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._worker: runtime.Worker | None = None   # the worker the listener is attached to
        self._pending: dict[str, None] = {}          # changed keys not announced yet (ordered)
        self._emitted: ProviderState | None = None   # the status last announced here
        self._known: dict[str, tuple[Any, ...]] = {}  # key -> (id, version, value) announced
        self._known_for: runtime.Worker | None = None  # the worker _known describes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- OpenFeature provider interface ---------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return self._metadata

    def get_provider_hooks(self) -> list[Hook]:
        return []

    def attach(self, on_emit: Callable[[FeatureProvider, ProviderEvent, ProviderEventDetails],
                                       None]) -> None:
        """The API registered us; ``initialize`` follows on a thread of its own."""
        super().attach(on_emit)
        self._active = True

    def detach(self) -> None:
        super().detach()
        self._active = False

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Attach to this process's worker and wait (bounded) until it knows a state.

        In a prefork master (flags read while the app is imported with
        ``--preload``) nothing waits and no thread starts: each worker turns
        ready on its own after the fork.
        """
        self._active = True
        if runtime.is_master():
            # a prefork master, where set_provider() runs us on a thread that the server's
            # fork can cut anywhere: no I/O, no import, no wait; each worker announces itself
            master = runtime.current_worker()
            state, message = _observe(master) if master is not None else (
                NOT_READY, "no feature state in the prefork master")
            if state == NOT_READY:
                message = f"{message}: each worker turns ready after the fork"
            with self._cond:
                self._emitted, self._initialized = state, True
            if state == NOT_READY:
                raise ProviderNotReadyError(message)
            return
        worker = runtime.worker()
        self._attach(worker)
        state, message = self._wait_for_state(worker)
        known = _versions(worker)     # waits for an update being applied (the repository's lock)
        with self._cond:
            # what the API announces for us when we return (READY) or raise: the watcher
            # announces only what differs from it (a STALE worker: STALE right after READY)
            self._emitted = READY if state == STALE else state
            self._known, self._known_for = known, worker  # the state changes are measured from
            self._initialized = True
        if state == FATAL:
            raise ProviderFatalError(message)
        if state == NOT_READY:
            raise ProviderNotReadyError(message)

    def shutdown(self) -> None:
        """Stop the watcher and detach from the worker; the worker itself stays (server hooks)."""
        self._active = False
        self._initialized = False
        self._check_fork()
        with self._cond:
            thread, self._thread = self._thread, None
            worker, self._worker = self._worker, None
            self._stop.set()
            self._cond.notify_all()
        if worker is not None:
            worker.repository.remove_raw_update_listener(self._listener)
        wait_for_end(thread, 2.0)

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None,
                                ) -> FlagResolutionDetails[bool]:
        return self._resolve("boolean", flag_key, default_value, evaluation_context)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None,
                               ) -> FlagResolutionDetails[str]:
        return self._resolve("string", flag_key, default_value, evaluation_context)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None,
                                ) -> FlagResolutionDetails[int]:
        return self._resolve("integer", flag_key, default_value, evaluation_context)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None,
                              ) -> FlagResolutionDetails[float]:
        return self._resolve("float", flag_key, default_value, evaluation_context)

    def resolve_object_details(self, flag_key: str, default_value: ObjectValue,
                               evaluation_context: EvaluationContext | None = None,
                               ) -> FlagResolutionDetails[ObjectValue]:
        return self._resolve("object", flag_key, default_value, evaluation_context)

    # -- introspection --------------------------------------------------------------------------

    def state(self) -> ProviderState:
        """What this process's worker is now: ``ready``, ``stale``, ``fatal`` or ``not_ready``."""
        worker = runtime.current_worker()
        return NOT_READY if worker is None else _observe(worker)[0]

    # -- resolution -----------------------------------------------------------------------------

    def _resolve(self, kind: str, key: str, default: Any,
                 context: EvaluationContext | None) -> FlagResolutionDetails[Any]:
        worker = runtime.worker()
        if worker is not self._worker:
            self._attach(worker)
        repository = worker.repository
        emitted = self._emitted
        if emitted == FATAL:
            return error(default, ErrorCode.PROVIDER_FATAL, _KEY_UNKNOWN)
        holder = repository.features.get(key)
        state = holder.internal_feature_state if holder is not None else None
        if not state:   # never sent, or deleted (the SDK leaves {} or None in the holder)
            if not repository.is_ready():
                return error(default, ErrorCode.PROVIDER_NOT_READY,
                              "no feature state yet in this worker: the store holds none and "
                              "Edge has not answered")
            return error(default, ErrorCode.FLAG_NOT_FOUND, f"no feature {key!r}")
        try:
            return evaluate(kind, key, default, context, repository, holder, state,
                             STALE_REASON if emitted == STALE else STATIC)
        except Exception as err:  # a matcher raising on a context value, an SDK bug...
            self._errors.failure("fh_prefork: OpenFeature resolution of %r failed: %s: %s",
                                 key, type(err).__name__, err)
            return error(default, ErrorCode.GENERAL, f"{type(err).__name__}: {err}",
                          feature_metadata(key, state))

    # -- worker, listener, watcher --------------------------------------------------------------

    def _check_fork(self) -> None:
        """In a child no at-fork hook told (uWSGI without fork hooks): start over here."""
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """A child of the process the provider was set in.

        Whatever initialize() does or did in the parent (``set_provider`` runs it on
        a thread, which a fork can cut short), its outcome never reaches the
        child's copy of the API, whose status stays what it was at the fork, often
        NOT_READY. So each child announces its own status: READY once its worker
        has a state.
        """
        fresh_openfeature(locks=False)
        self._init_runtime()
        if self._active:
            self._initialized = True
            self._start_watcher()

    def _attach(self, worker: runtime.Worker) -> None:
        """Listen to ``worker``'s repository (a new worker after a fork or a restart)."""
        self._check_fork()
        with self._cond:
            if worker is self._worker:
                return
            old, self._worker = self._worker, worker
            self._pending.clear()
        if old is not None and old.pid == os.getpid():
            old.repository.remove_raw_update_listener(self._listener)
        worker.repository.register_raw_update_listener(self._listener)
        known = _versions(worker)  # after registering: a later change is heard and compared
        with self._cond:
            if self._worker is worker:
                self._known, self._known_for = known, worker
        if self._active and worker.role != runtime.MASTER:
            self._start_watcher()

    def _start_watcher(self) -> None:
        with self._cond:
            if self._thread is not None or not self._active:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, args=(self._stop,),
                                            name="fh-prefork-openfeature", daemon=True)
            start_without_signals(self._thread)

    def _changed(self, keys: list[str]) -> None:
        """On the notifying thread (Edge or store): note the keys, wake the watcher."""
        with self._cond:
            for key in keys:
                self._pending[key] = None
            self._cond.notify_all()

    def _wait_for_state(self, worker: runtime.Worker) -> tuple[ProviderState, str | None]:
        """Bounded wait until the worker has a state, or Edge said the key does not exist.

        ``_observe`` takes the store's lock, so it is never called under ours (the
        store thread holds its lock while it tells our listener about replays).
        """
        timeout = 0.0 if worker.role == runtime.MASTER else self.ready_timeout
        deadline = time.monotonic() + timeout
        state, message = _observe(worker)
        while state == NOT_READY:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._cond:
                self._cond.wait(min(remaining, 0.05))
            state, message = _observe(worker)
        if state == NOT_READY:
            message = (f"{message}; waited {timeout:.1f} s"
                       + (" (prefork master: each worker turns ready after the fork)"
                          if worker.role == runtime.MASTER else ""))
        return state, message

    def _watch(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._cond:
                if not self._pending:
                    self._cond.wait(self.watch_interval)
                changed = list(self._pending)
                self._pending.clear()
            if stop.is_set():
                return
            try:
                worker = runtime.current_worker()
                if worker is None:
                    continue              # the post-fork hook has not started it yet
                if worker is not self._worker:
                    self._attach(worker)
                    changed = []
                self._step(worker, changed)
            except Exception:  # the watcher must outlive any bug
                log.exception("fh_prefork: OpenFeature watcher error")

    def _step(self, worker: runtime.Worker, changed: list[str]) -> None:
        """Announce a new status, and the keys whose state differs from what was announced."""
        state, message = _observe(worker)
        with self._cond:
            if not self._initialized:
                return                    # initialize() announces the first status
            previous, self._emitted = self._emitted, state
        details = ProviderEventDetails(message=message, metadata={"pid": os.getpid()})
        if state != previous:
            if state == READY:
                self.emit_provider_ready(details)
            elif state == STALE:
                self.emit_provider_stale(details)
            elif state == FATAL:
                details.error_code = ErrorCode.PROVIDER_FATAL
                self.emit_provider_error(details)
            log.info("fh_prefork: OpenFeature provider in worker %d: %s -> %s%s", os.getpid(),
                     previous, state, f" ({message})" if message else "")
        if state == NOT_READY:
            return
        if self._known_for is not worker or previous in (None, NOT_READY):
            # a first state (a fresh worker, after a fork): READY says it, no change does
            self._known, self._known_for = _versions(worker), worker
            return
        if changed:
            current = _versions(worker)
            flags = sorted(k for k in set(changed) if current.get(k) != self._known.get(k))
            self._known = current
            if flags:
                self.emit_provider_configuration_changed(ProviderEventDetails(
                    flags_changed=flags, metadata={"pid": os.getpid()}))


# -- the worker's health ----------------------------------------------------------------------

_KEY_UNKNOWN = ("Edge does not know the API key (HTTP 404, or 'Unrecognized API key'): it "
                "does not exist or was deleted")


def _observe(worker: runtime.Worker) -> tuple[ProviderState, str | None]:
    """ready / stale / fatal / not_ready, and why, from the worker's typed health."""
    health = worker.health()
    if health.key_not_found:
        return FATAL, _KEY_UNKNOWN
    if not health.ready:
        return NOT_READY, "no feature state yet: the store holds none and Edge has not answered"
    if health.stale:    # no store (configured "none", or unusable), or it fails; Edge down
        why = health.edge_error or health.edge_state
        return STALE, f"the store and Edge are both unreachable (Edge: {why})"
    return READY, None


def _versions(worker: runtime.Worker) -> dict[str, tuple[Any, ...]]:
    """Key -> (id, version, value) of every feature the worker holds, as one snapshot.

    The listener hears an update after the repository applied it, and a
    resend of what is held is not applied at all; comparing snapshots keeps the
    update that made a worker ready out of ``flags_changed``.
    """
    return {s["key"]: (s.get("id"), s.get("version"), repr(s.get("value")))
            for s in worker.repository.feature_states()}

