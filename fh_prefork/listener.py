"""Raw update listeners, and the repository that feeds them.

The FeatureHub Python SDK's repository applies updates but tells nobody what
arrived. A shared store must see every update from Edge *with its source*, so
that it persists what Edge sent and never writes its own replays back. This
module adds that hook without changing how flags are read: reads still go
straight to ``FeatureHubRepository.features`` with no extra cost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from featurehub_sdk.featurehub_repository import FeatureHubRepository

from .features import sanitize_feature

log = logging.getLogger("fh_prefork")

#: Source tag used for updates that came from FeatureHub Edge.
EDGE_SOURCE = "edge"


class RawUpdateFeatureListener:
    """Receives the raw feature states applied to a repository.

    Methods are called on the thread that notified the repository (usually the
    Edge thread), so implementations must return quickly: queue, don't do I/O.
    """

    def process_updates(self, features: list[dict[str, Any]], source: str) -> None:
        """A full set of feature states arrived (Edge ``features`` event)."""

    def process_update(self, feature: dict[str, Any], source: str) -> None:
        """One feature state arrived (Edge ``feature`` event)."""

    def delete_feature(self, feature: dict[str, Any], source: str) -> None:
        """A feature was deleted (Edge ``delete_feature`` event)."""

    def config_changed(self) -> None:
        """The owning config changed; listeners may re-read what they need."""

    def close(self) -> None:
        """The repository is going away; release resources."""


class ListeningRepository(FeatureHubRepository):  # type: ignore[misc]
    """A ``FeatureHubRepository`` that validates updates and tells listeners.

    Invalid feature states (no key or id, a version that is not a
    non-negative integer) are dropped with a warning instead of raising inside
    the SDK's comparison code, so junk from any source cannot corrupt flags.
    """

    def __init__(self) -> None:
        super().__init__()
        self._listeners: list[RawUpdateFeatureListener] = []
        self._notify_lock = threading.RLock()

    def register_raw_update_listener(self, listener: RawUpdateFeatureListener) -> None:
        with self._notify_lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_raw_update_listener(self, listener: RawUpdateFeatureListener) -> None:
        with self._notify_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def raw_update_listeners(self) -> list[RawUpdateFeatureListener]:
        return list(self._listeners)

    def notify(self, status: str, data: Any, source: str = EDGE_SOURCE) -> None:
        """Apply an update like the SDK does, then pass it to every listener."""
        if status in ("features", "feature", "delete_feature"):
            data = _validated(status, data, source)
            if data is None:
                return
        with self._notify_lock:
            super().notify(status, data)
            for listener in list(self._listeners):
                try:
                    if status == "features":
                        listener.process_updates(data, source)
                    elif status == "feature":
                        listener.process_update(data, source)
                    elif status == "delete_feature":
                        listener.delete_feature(data, source)
                except Exception:  # a listener must never break flag updates
                    log.exception("fh_prefork: listener %r failed on %s", listener, status)

    def feature_states(self) -> list[dict[str, Any]]:
        """Snapshot of every feature state currently held (for seeding a store).

        Request threads add holders for unknown keys without any lock, so the
        dict is copied in one C-level step before it is walked.
        """
        with self._notify_lock:
            holders = list(self.features.values())
        return [dict(state) for state in (h.internal_feature_state for h in holders) if state]

    def known_features(self) -> int:
        """How many features hold a state (unknown keys asked for by requests do not count)."""
        return sum(1 for holder in list(self.features.values()) if holder.exists)

    def close(self) -> None:
        with self._notify_lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener.close()
            except Exception:
                log.exception("fh_prefork: listener %r failed to close", listener)


def _validated(status: str, data: Any, source: str) -> Any:
    """Keep only well-formed feature states; warn once per bad batch."""
    if status == "features":
        if not isinstance(data, list):
            log.warning("fh_prefork: ignored %s update from %s: not a list", status, source)
            return None
        good = [f for f in (sanitize_feature(item) for item in data) if f is not None]
        if len(good) != len(data):
            log.warning(
                "fh_prefork: ignored %d malformed feature state(s) from %s",
                len(data) - len(good), source,
            )
        return good
    if status == "delete_feature":
        if isinstance(data, dict) and isinstance(data.get("key"), str):
            return data
        log.warning("fh_prefork: ignored malformed delete_feature from %s", source)
        return None
    feature = sanitize_feature(data)
    if feature is None:
        log.warning("fh_prefork: ignored malformed feature state from %s", source)
    return feature
