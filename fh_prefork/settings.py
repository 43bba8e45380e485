"""Every setting, declared once: name, environment variable, parser, default, meaning.

Settings come from the environment and can be overridden in code with
``fh_prefork.configure(**settings)`` (in ``gunicorn.conf.py``, before the
fork). They are parsed and validated here and nowhere else, and a bad value
raises ``SettingsError`` with one line naming the variable, so a master can
refuse to start instead of N workers each printing a traceback.

The README's settings table is generated from ``SETTINGS`` (``fh-prefork settings``).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from .apikey import check_shape, environment_id, redact, require_client_evaluated
from .store.file import default_directory, parse_file_url
from .store.memcache import parse_servers
from .store.options import validate_key
from .store.redis import describe_url, is_redis_url


class SettingsError(ValueError):
    """A setting is missing or invalid; the message is one line that names it."""


def _edge_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) URL of FeatureHub Edge, got {text!r}")
    return text if text.endswith("/") else text + "/"


def _api_key(text: str) -> str:
    check_shape(text)
    require_client_evaluated(text)
    return text


def _store(text: str) -> str:
    if text in ("", "default"):
        return f"file://{default_directory()}"
    if text == "none":
        return text
    if text.startswith("memcache://"):
        parse_servers(text)
        return text
    if is_redis_url(text):
        describe_url(text)  # redis-py's own parse: a URL it refuses is refused here
        return text
    if text.startswith("file://"):
        parse_file_url(text)
        return text
    scheme = text.split("://", 1)[0] if "://" in text else text
    raise ValueError(f"unknown store {scheme!r}: expected memcache://host:port[,host:port], "
                     "redis://[:password@]host:port[/db], rediss://..., "
                     "redis+cluster://host:port, file:///path or none")


def _prefix(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    validate_key(f"{text}_{'x' * 40}_sha")
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {text!r}")
    return value


def _whole_seconds(text: str) -> float:
    """The FeatureHub SDK itself does int(FEATUREHUB_POLL_INTERVAL) at import: keep to that."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected whole seconds (the FeatureHub SDK reads it with int()), "
                         f"got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1 second, got {text!r}")
    return float(value)


def _lease_seconds(text: str) -> float:
    """memcached expires keys on a one-second clock: a shorter lease could vanish at once."""
    value = _positive_float(text)
    if value < 2:
        raise ValueError(f"must be at least 2 seconds (memcached expiry has one-second "
                         f"resolution), got {text!r}")
    return value


def _seconds_or_auto(text: str) -> float | None:
    return None if text.strip().lower() == "auto" else _positive_float(text)


def _count_or_auto(text: str) -> int | None:
    return None if text.strip().lower() == "auto" else _count(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise ValueError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return value
    return parse


@dataclass(frozen=True)
class Setting:
    name: str               # attribute of Settings and keyword of configure()
    env: str                # environment variable
    parse: Callable[[str], Any]
    default: str | None     # None: required
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("edge_url", "FEATUREHUB_EDGE_URL", _edge_url, None,
            "URL of FeatureHub Edge, e.g. http://edge:8085"),
    Setting("api_key", "FEATUREHUB_API_KEY", _api_key, None,
            "client-evaluated API key (contains '*'); server-evaluated keys are refused"),
    Setting("store", "FH_PREFORK_STORE", _store, "default",
            "memcache://host:port[,host:port], redis:// or rediss:// (as redis-py reads them), "
            "redis+cluster://host:port (Redis Cluster), file:///folder, or none; default: the "
            "embedded file store in a per-user runtime folder"),
    Setting("prefix", "FH_PREFORK_PREFIX", _prefix, "featurehub",
            "key prefix in the store (keys are {prefix}_{environment_id})"),
    Setting("refresh_seconds", "FH_PREFORK_REFRESH_SECONDS", _seconds_or_auto, "auto",
            "seconds between a worker's store refreshes; auto: 5, or 1 in leader mode"),
    Setting("refresh_jitter", "FH_PREFORK_REFRESH_JITTER", _fraction, "0.2",
            "spread of each refresh period, as a fraction (0.2 = +/-20%)"),
    Setting("verify_every", "FH_PREFORK_VERIFY_EVERY", _count, "12",
            "a full read every N refreshes even when the fingerprint says nothing changed: "
            "bounds how long a stale or foreign-overwritten store goes unhealed"),
    Setting("edge_absence_seconds", "FH_PREFORK_EDGE_ABSENCE_SECONDS", _positive_float, "300",
            "a feature Edge's current view (its last full list and the events since) keeps "
            "lacking this long was deleted while no stream heard it: removed, and back as "
            "soon as Edge names it again. Longer than an Edge restart or a replica's lag; "
            "a list naming less than half of what is held (an empty one included) counts "
            "only after 6 times this (see fh_prefork.absence)"),
    Setting("edge", "FH_PREFORK_EDGE", _choice("sse", "poll"), "sse",
            "how workers talk to Edge: sse (streaming) or poll"),
    Setting("poll_interval", "FEATUREHUB_POLL_INTERVAL", _whole_seconds, "30",
            "seconds between polls when FH_PREFORK_EDGE=poll (the SDK's variable)"),
    Setting("edge_backoff_max", "FH_PREFORK_EDGE_BACKOFF_MAX", _positive_float, "30",
            "longest wait, in seconds, between two Edge connection attempts while Edge is down"),
    Setting("edge_mode", "FH_PREFORK_EDGE_MODE", _choice("every", "leader"), "every",
            "every: each worker holds an Edge connection; leader: one per store"),
    Setting("lease_seconds", "FH_PREFORK_LEASE_SECONDS", _lease_seconds, "10",
            "leader mode: time to live of the leader lease"),
    Setting("lease_renew_seconds", "FH_PREFORK_LEASE_RENEW_SECONDS", _seconds_or_auto, "auto",
            "leader mode: seconds between the leader's lease renewals; auto: a third of the "
            "lease time to live"),
    Setting("memcache_timeout", "FH_PREFORK_MEMCACHE_TIMEOUT", _positive_float, "0.5",
            "seconds bounding every memcached connect and read"),
    Setting("redis_timeout", "FH_PREFORK_REDIS_TIMEOUT", _positive_float, "0.5",
            "seconds bounding every Redis connect and command"),
    Setting("max_item_bytes", "FH_PREFORK_MAX_ITEM_BYTES", _count_or_auto, "auto",
            "largest state written to the store, in bytes; auto: the server's own limit "
            "(memcached's item_size_max less 1 KiB, read once per worker), else 1 MiB - 1 KiB"),
    Setting("push", "FH_PREFORK_PUSH", _choice("on", "off"), "on",
            "on: a write wakes the other workers at once (Redis pub/sub; inotify on the "
            "embedded store; memcached polls), the refresh timer stays as a safety poll; "
            "off: the refresh timer only"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    edge_url: str
    api_key: str
    store: str
    prefix: str
    refresh_seconds: float
    refresh_jitter: float
    verify_every: int
    edge_absence_seconds: float
    edge: str
    poll_interval: float
    edge_backoff_max: float
    edge_mode: str
    lease_seconds: float
    lease_renew_seconds: float
    memcache_timeout: float
    redis_timeout: float
    max_item_bytes: int | None
    push: str

    @property
    def environment_id(self) -> str:
        return environment_id(self.api_key)

    def store_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"prefix": self.prefix, "refresh_timeout": self.refresh_seconds,
                                "refresh_jitter": self.refresh_jitter,
                                "verify_every": self.verify_every,
                                "edge_absence_seconds": self.edge_absence_seconds}
        if self.store.startswith("memcache://"):
            opts.update(timeout=self.memcache_timeout, connect_timeout=self.memcache_timeout)
        if is_redis_url(self.store):
            opts.update(timeout=self.redis_timeout, connect_timeout=self.redis_timeout)
        if self.max_item_bytes is not None:
            opts["max_item_bytes"] = self.max_item_bytes
        opts["push"] = self.push == "on"
        return opts

    @property
    def store_display(self) -> str:
        """The store URL safe to log and show: a Redis password is never in it."""
        return describe_url(self.store) if is_redis_url(self.store) else self.store

    def public(self) -> dict[str, Any]:
        """Settings safe to show: the API key's secret part is cut off."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["api_key"] = redact(self.api_key)
        shown["store"] = self.store_display
        return shown


def check_names(overrides: Mapping[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(_BY_NAME))
    if unknown:
        raise SettingsError(f"fh_prefork.configure(): unknown setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(_BY_NAME)}")


#: Variables in fh_prefork's namespace: a name that starts so and is not a setting is a typo.
NAMESPACE = "FH_PREFORK_"
#: Unknown variables already named by this process (a forked worker inherits its master's).
_warned_unknown: set[str] = set()
log = logging.getLogger("fh_prefork.settings")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``FH_PREFORK_*`` variable that is no setting, naming the closest one.

    A misspelled setting would otherwise be ignored without a word (its default applies).
    """
    known = [s.env for s in SETTINGS if s.env.startswith(NAMESPACE)]
    lines = []
    for name in sorted(n for n in environ if n.startswith(NAMESPACE) and n not in known):
        # compared without the shared prefix, which would make every name look close
        close = difflib.get_close_matches(name[len(NAMESPACE):],
                                          [k[len(NAMESPACE):] for k in known], n=1, cutoff=0.6)
        hint = (f"did you mean {NAMESPACE}{close[0]}?" if close
                else f"known: {', '.join(known)}")
        lines.append(f"fh_prefork: unknown setting {name} is ignored: {hint}")
    return lines


def _warn_unknown(environ: Mapping[str, str]) -> None:
    """Log each unknown variable once per process (and not again in its forked workers)."""
    for line in unknown_variables(environ):
        if line not in _warned_unknown:
            _warned_unknown.add(line)
            log.warning("%s", line)


def load(environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Settings:
    """Parse every setting from ``overrides`` (configure()) over ``environ``.

    An unknown ``FH_PREFORK_*`` variable is logged as a warning naming the closest setting.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    check_names(overrides)
    _warn_unknown(environ)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw, origin = overrides[setting.name], f"configure({setting.name}=...)"
        else:
            raw, origin = environ.get(setting.env), setting.env
        if raw is None:
            if setting.default is None:
                raise SettingsError(f"{setting.env} is required: {setting.help}")
            raw, origin = setting.default, f"{setting.env} (default)"
        try:
            values[setting.name] = setting.parse(raw if isinstance(raw, str) else str(raw))
        except ValueError as err:
            raise SettingsError(f"{origin}: {err}") from None
    if values["refresh_seconds"] is None:
        values["refresh_seconds"] = 1.0 if values["edge_mode"] == "leader" else 5.0
    if values["lease_renew_seconds"] is None:
        values["lease_renew_seconds"] = values["lease_seconds"] / 3
    if values["lease_renew_seconds"] >= values["lease_seconds"]:
        raise SettingsError(f"FH_PREFORK_LEASE_RENEW_SECONDS ({values['lease_renew_seconds']:g}) "
                            f"must be shorter than FH_PREFORK_LEASE_SECONDS "
                            f"({values['lease_seconds']:g})")
    return Settings(**values)
