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

This is the only module of fh_prefork that imports ``openfeature``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from enum import Enum
from typing import Any, TypeVar

from featurehub_sdk.client_context import ClientContext
from featurehub_sdk.interceptors import InterceptorValue
from openfeature import _event_support
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagMetadata, FlagResolutionDetails, FlagValueType, Reason
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata, _registry

from . import runtime
from .listener import RawUpdateFeatureListener
from .ratelog import RateLimitedLog

__all__ = ["NOT_READY", "READY", "STALE", "FATAL", "FeatureHubProvider", "fh_context"]

log = logging.getLogger("fh_prefork.openfeature")

#: What the watcher sees in a worker (``FeatureHubProvider.state()``); FATAL: Edge does not
#: know the API key.
NOT_READY, READY, STALE, FATAL = "not_ready", "ready", "stale", "fatal"

#: The FeatureHub feature type each OpenFeature resolution reads.
_TYPE_OF = {"boolean": "BOOLEAN", "string": "STRING", "integer": "NUMBER", "float": "NUMBER",
            "object": "JSON"}

#: Edge connection states in which this worker hears nothing from Edge.
_EDGE_DOWN = frozenset({"backoff", "standby", "none", "closed", "stale"})

# Enum members looked up once: attribute access on an Enum class costs more than a global
_STATIC, _SPLIT, _TARGETING_MATCH, _DEFAULT, _ERROR, _STALE = (
    Reason.STATIC, Reason.SPLIT, Reason.TARGETING_MATCH, Reason.DEFAULT, Reason.ERROR,
    Reason.STALE)

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]

_providers: weakref.WeakSet[FeatureHubProvider] = weakref.WeakSet()
_executor_pid = os.getpid()


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
        _providers.add(self)

    def _init_runtime(self) -> None:
        """Per-process machinery: rebuilt in a forked child, since threads do not survive."""
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._worker: runtime.Worker | None = None   # the worker the listener is attached to
        self._pending: dict[str, None] = {}          # changed keys not announced yet (ordered)
        self._emitted: str | None = None             # the status last announced in this process
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
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

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

    def state(self) -> str:
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
            return _error(default, ErrorCode.PROVIDER_FATAL, _KEY_UNKNOWN)
        holder = repository.features.get(key)
        state = holder.internal_feature_state if holder is not None else None
        if not state:   # never sent, or deleted (the SDK leaves {} or None in the holder)
            if not repository.is_ready():
                return _error(default, ErrorCode.PROVIDER_NOT_READY,
                              "no feature state yet in this worker: the store holds none and "
                              "Edge has not answered")
            return _error(default, ErrorCode.FLAG_NOT_FOUND, f"no feature {key!r}")
        try:
            return _evaluate(kind, key, default, context, repository, holder, state,
                             _STALE if emitted == STALE else _STATIC)
        except Exception as err:  # a matcher raising on a context value, an SDK bug...
            self._errors.failure("fh_prefork: OpenFeature resolution of %r failed: %s: %s",
                                 key, type(err).__name__, err)
            return _error(default, ErrorCode.GENERAL, f"{type(err).__name__}: {err}",
                          _metadata(key, state))

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
        _fresh_openfeature(locks=False)
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
            self._thread.start()

    def _changed(self, keys: list[str]) -> None:
        """On the notifying thread (Edge or store): note the keys, wake the watcher."""
        with self._cond:
            for key in keys:
                self._pending[key] = None
            self._cond.notify_all()

    def _wait_for_state(self, worker: runtime.Worker) -> tuple[str, str | None]:
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


# -- evaluation -------------------------------------------------------------------------------


def _evaluate(kind: str, key: str, default: Any, context: EvaluationContext | None,
              repository: Any, holder: Any, state: dict[str, Any],
              static: str = _STATIC) -> FlagResolutionDetails[Any]:
    """Resolve one existing feature the way FeatureHubSDK's ``FeatureStateHolder`` does.

    ``static``: the reason of a value no strategy chose (STALE while the provider is).
    A percentage strategy the context has no key for (no targeting key, no ``session``)
    is TARGETING_KEY_MISSING, unless another strategy matched: the SDK would skip it
    and serve the feature's value to every user, which a percentage rollout never means.
    """
    feature_type = state.get("type") or _infer_type(state.get("value"))
    metadata = _metadata(key, state, feature_type)
    wanted = _TYPE_OF[kind]
    if feature_type != wanted:
        return _error(default, ErrorCode.TYPE_MISMATCH,
                      f"{key!r} is a {feature_type} feature; {kind} asks for {wanted}", metadata)
    raw: Any = state.get("value")
    reason: str = static
    variant: str | None = None
    intercepted = None if state.get("l") else repository.find_interceptor(key)
    if intercepted is not None:
        raw = intercepted.cast(feature_type)
        metadata["intercepted"] = True
    else:
        strategies = holder._encoded_strategies
        if strategies:
            fh = fh_context(repository, context)
            applied = repository.apply(_indexed(strategies), key, state["id"], fh)
            if applied.matched:
                strategy = strategies[applied.value]
                raw = _cast(strategy.value, feature_type)
                reason = _TARGETING_MATCH if strategy.has_attributes else _SPLIT
                variant = strategy.name or strategy.id
                if strategy.id:
                    metadata["strategy_id"] = str(strategy.id)
            elif fh.default_percentage_key is None and any(
                    s.percentage != 0 and not s.has_percentage_attributes for s in strategies):
                return _error(default, ErrorCode.TARGETING_KEY_MISSING,
                              f"{key!r} has a percentage rollout: it needs a targeting key "
                              "(or a 'session' attribute) to choose", metadata)
    if raw is None or (raw == "" and feature_type == "JSON"):  # no value: the caller's default
        return FlagResolutionDetails(value=default, reason=_DEFAULT, variant=variant,
                                     flag_metadata=metadata)
    value, problem, code = _convert(kind, raw)
    if problem is not None:
        return _error(default, code, f"{key!r}: {problem}", metadata)
    return FlagResolutionDetails(value=value, reason=reason, variant=variant,
                                 flag_metadata=metadata)


def _convert(kind: str, raw: Any) -> tuple[Any, str | None, ErrorCode]:
    """The OpenFeature value of a FeatureHub value, or why there is none (and its error code)."""
    mismatch = ErrorCode.TYPE_MISMATCH
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw, None, mismatch
        return None, f"value {raw!r} is not a boolean", mismatch
    if kind == "string":
        if isinstance(raw, str):
            return raw, None, mismatch
        return None, f"value {raw!r} is not a string", mismatch
    if kind in ("integer", "float"):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return None, f"value {raw!r} is not a number", mismatch
        if kind == "float":
            return float(raw), None, mismatch
        if isinstance(raw, float):
            if not raw.is_integer():
                return None, f"value {raw!r} is not an integer", mismatch
            return int(raw), None, mismatch
        return raw, None, mismatch
    if not isinstance(raw, str):
        return None, f"value {raw!r} is not JSON text", ErrorCode.PARSE_ERROR
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        return None, f"value is not valid JSON: {err}", ErrorCode.PARSE_ERROR
    if not isinstance(parsed, (dict, list)):
        return None, f"JSON value {raw[:50]!r} is not an object or an array", mismatch
    return parsed, None, mismatch


#: id(strategy list) -> (that list, copies of its strategies whose value is their position).
#: Holding the list keeps its id from being reused while cached; cleared when it grows past
#: _INDEXED_MAX (every feature update brings a new list). A plain dict: a weak-keyed one
#: makes a weak reference on every lookup, which costs more than the evaluation saves.
_INDEXED: dict[int, tuple[list[Any], list[Any]]] = {}
_INDEXED_MAX = 4096


def _indexed(strategies: list[Any]) -> list[Any]:
    """Copies of ``strategies`` whose value is their index, made once per strategy list.

    The SDK's matcher says only that a strategy matched and gives its value;
    run on these copies, its value names the strategy applied, for the
    variant and reason, in the one run that also gives the value.
    """
    cached = _INDEXED.get(id(strategies))
    if cached is not None and cached[0] is strategies:
        return cached[1]
    copies = []
    for index, strategy in enumerate(strategies):
        twin = copy.copy(strategy)
        twin._attr = {**strategy._attr, "value": index}
        copies.append(twin)
    if len(_INDEXED) >= _INDEXED_MAX:
        _INDEXED.clear()
    _INDEXED[id(strategies)] = (strategies, copies)
    return copies


def fh_context(repository: Any, context: EvaluationContext | None) -> ClientContext:
    """The FeatureHub client context for an OpenFeature evaluation context.

    The targeting key is the user key (``userkey``); every attribute is passed
    through under its own name (``country``, ``device``, ``platform``,
    ``version``, ``session``, anything else). Values become the strings the
    SDK's matchers compare: booleans ``true``/``false``, numbers ``str()``,
    dates ISO 8601, enums their value, lists one string per item. Nested
    mappings cannot be FeatureHub attributes and are left out.
    """
    fh = ClientContext(repository)
    if context is None:
        return fh
    for name, value in context.attributes.items():
        values = _attribute_values(value)
        if values:
            fh.attribute_values(name, values)
    if context.targeting_key:
        fh.user_key(context.targeting_key)
    return fh


def _attribute_values(value: Any) -> list[str] | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Mapping)):
        one = _scalar(value)
        return None if one is None else [one]
    if isinstance(value, Mapping):
        return None
    values = [_scalar(item) for item in value]
    return [v for v in values if v is not None]


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return None


def _infer_type(value: Any) -> str | None:
    """A feature without a ``type`` (which the SDK tolerates): judge by its value."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, (int, float)):
        return "NUMBER"
    return None


def _metadata(key: str, state: dict[str, Any],
              feature_type: str | None = None) -> dict[str, bool | int | float | str]:
    """The feature's key, version, id and type (states in the repository passed the shape
    check: ``id`` is a non-empty string and ``version`` an integer)."""
    meta: dict[str, bool | int | float | str] = {
        "key": key, "version": state.get("version", -1), "id": state.get("id", "")}
    if feature_type:
        meta["type"] = feature_type
    return meta


def _cast(value: Any, feature_type: str) -> Any:
    """The SDK's cast of a strategy value (``InterceptorValue.cast``), skipped when a no-op."""
    if isinstance(value, str) and feature_type in ("STRING", "JSON"):
        return value
    if isinstance(value, bool) and feature_type == "BOOLEAN":
        return value
    return InterceptorValue(value).cast(feature_type)


def _error(default: T, code: ErrorCode, message: str,
           metadata: FlagMetadata | None = None) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(value=default, reason=_ERROR, error_code=code,
                                 error_message=message, flag_metadata=metadata or {})


# -- the worker's health ----------------------------------------------------------------------

_KEY_UNKNOWN = ("Edge does not know the API key (HTTP 404, or 'Unrecognized API key'): it "
                "does not exist or was deleted")


def _observe(worker: runtime.Worker) -> tuple[str, str | None]:
    """ready / stale / error / not_ready, and why, from the worker's Edge, store and repository."""
    edge = _edge_status(worker)
    edge_state = edge.get("state")
    lease = (worker.election.status().get("lease") or {}) if worker.election is not None else {}
    if edge_state == "key_not_found" or lease.get("edge") == "key_not_found":
        return FATAL, _KEY_UNKNOWN
    if not worker.repository.is_ready():
        return NOT_READY, "no feature state yet: the store holds none and Edge has not answered"
    store = worker.store  # None: configured "none", or unusable (a store_error)
    store_down = store is None or not store.status()["healthy"]
    if store_down and edge_state in _EDGE_DOWN:
        error = edge.get("last_error") or edge_state
        return STALE, f"the store and Edge are both unreachable (Edge: {error})"
    return READY, None


def _versions(worker: runtime.Worker) -> dict[str, tuple[Any, ...]]:
    """Key -> (id, version, value) of every feature the worker holds, as one snapshot.

    The listener hears an update after the repository applied it, and a
    resend of what is held is not applied at all; comparing snapshots keeps the
    update that made a worker ready out of ``flags_changed``.
    """
    return {s["key"]: (s.get("id"), s.get("version"), repr(s.get("value")))
            for s in worker.repository.feature_states()}


def _edge_status(worker: runtime.Worker) -> dict[str, Any]:
    if worker.switch is not None:
        return worker.switch.status()
    if worker.edge is not None:
        return worker.edge.status()
    return {"state": "none"}


# -- fork -------------------------------------------------------------------------------------


def _fresh_openfeature(locks: bool) -> None:
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
    _fresh_openfeature(locks=True)
    for provider in list(_providers):
        try:
            provider._after_fork()
        except Exception:  # never break the fork for an event watcher
            log.exception("fh_prefork: OpenFeature provider failed to start after fork")


os.register_at_fork(after_in_child=_after_fork_in_child)
