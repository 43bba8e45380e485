"""Settings: declared once, parsed once, errors that name the variable."""

from __future__ import annotations

import pytest

from fh_prefork import settings as s
from fh_prefork.store.file import default_directory

BASE = {"FEATUREHUB_EDGE_URL": "http://edge:8085", "FEATUREHUB_API_KEY": "p/env/c*s"}


def test_defaults() -> None:
    loaded = s.load(BASE)
    assert loaded.edge_url == "http://edge:8085/"
    assert loaded.store == f"file://{default_directory()}"
    assert loaded.prefix == "featurehub"
    assert loaded.refresh_seconds == 5.0 and loaded.refresh_jitter == 0.2
    assert (loaded.edge, loaded.edge_mode) == ("sse", "every")
    assert loaded.environment_id == "env"


def test_leader_mode_refreshes_faster_by_default() -> None:
    assert s.load({**BASE, "FH_PREFORK_EDGE_MODE": "leader"}).refresh_seconds == 1.0
    assert s.load({**BASE, "FH_PREFORK_EDGE_MODE": "leader",
                   "FH_PREFORK_REFRESH_SECONDS": "2.5"}).refresh_seconds == 2.5


def test_overrides_win_over_environment() -> None:
    loaded = s.load({**BASE, "FH_PREFORK_PREFIX": "env"}, {"prefix": "code", "store": "none"})
    assert (loaded.prefix, loaded.store) == ("code", "none")


@pytest.mark.parametrize("env, variable", [
    ({"FEATUREHUB_EDGE_URL": None}, "FEATUREHUB_EDGE_URL is required"),
    ({"FEATUREHUB_EDGE_URL": "ftp://x"}, "FEATUREHUB_EDGE_URL"),
    ({"FEATUREHUB_API_KEY": "p/env/server"}, "FEATUREHUB_API_KEY"),
    ({"FH_PREFORK_STORE": "memcache://h:port"}, "FH_PREFORK_STORE"),
    ({"FH_PREFORK_STORE": "valkey://h:1"}, "FH_PREFORK_STORE: unknown store 'valkey'"),
    ({"FH_PREFORK_STORE": "redis://h:port"}, "FH_PREFORK_STORE"),
    ({"FH_PREFORK_STORE": "redis+cluster:///tmp/sock"}, "FH_PREFORK_STORE"),
    ({"FH_PREFORK_STORE": "file://relative"}, "FH_PREFORK_STORE"),
    ({"FH_PREFORK_PREFIX": "a b"}, "FH_PREFORK_PREFIX"),
    ({"FH_PREFORK_PREFIX": "x" * 240}, "FH_PREFORK_PREFIX"),
    ({"FH_PREFORK_REFRESH_SECONDS": "0"}, "FH_PREFORK_REFRESH_SECONDS"),
    ({"FH_PREFORK_REFRESH_SECONDS": "nan"}, "FH_PREFORK_REFRESH_SECONDS"),
    ({"FH_PREFORK_REFRESH_JITTER": "1.5"}, "FH_PREFORK_REFRESH_JITTER"),
    ({"FH_PREFORK_EDGE": "websocket"}, "FH_PREFORK_EDGE"),
    ({"FEATUREHUB_POLL_INTERVAL": "0.5"}, "FEATUREHUB_POLL_INTERVAL"),
    ({"FH_PREFORK_EDGE_MODE": "all"}, "FH_PREFORK_EDGE_MODE"),
    ({"FH_PREFORK_LEASE_SECONDS": "1.5"}, "FH_PREFORK_LEASE_SECONDS"),
    ({"FH_PREFORK_LEASE_SECONDS": "6", "FH_PREFORK_LEASE_RENEW_SECONDS": "6"},
     "FH_PREFORK_LEASE_RENEW_SECONDS"),
])
def test_bad_values_name_the_variable_in_one_line(env: dict[str, str], variable: str) -> None:
    merged = {**BASE, **env}
    merged = {k: v for k, v in merged.items() if v is not None}
    with pytest.raises(s.SettingsError) as info:
        s.load(merged)
    assert variable in str(info.value)
    assert "\n" not in str(info.value)


def test_configure_names_unknown_settings() -> None:
    with pytest.raises(s.SettingsError, match="unknown setting"):
        s.load(BASE, {"refresh": 1})


def test_every_setting_is_documented() -> None:
    assert {x.name for x in s.SETTINGS} == set(s.Settings.__dataclass_fields__)
    assert all(x.help and x.env for x in s.SETTINGS)


def test_public_view_hides_the_key_secret() -> None:
    assert s.load(BASE).public()["api_key"] == "p/env/c*..."
