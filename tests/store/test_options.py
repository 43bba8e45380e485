"""Options, keys and connection strings: bad input is refused at construction, clearly."""

from __future__ import annotations

from typing import Any

import pytest

from fh_prefork.apikey import environment_id, redact, require_client_evaluated
from fh_prefork.store.memcache import parse_servers
from fh_prefork.store.options import (
    MemcacheSessionStoreOptions,
    SessionStoreOptions,
    validate_key,
)


def test_defaults_are_valid() -> None:
    opts = MemcacheSessionStoreOptions()
    assert opts.prefix == "featurehub"
    assert opts.refresh_timeout > 0 and 0 <= opts.refresh_jitter < 1


def test_coerce_accepts_dict_object_and_none() -> None:
    assert MemcacheSessionStoreOptions.coerce(None) == MemcacheSessionStoreOptions()
    assert MemcacheSessionStoreOptions.coerce({"prefix": "x"}).prefix == "x"
    base = SessionStoreOptions(prefix="y", refresh_timeout=2.0)
    converted = MemcacheSessionStoreOptions.coerce(base)
    assert (converted.prefix, converted.refresh_timeout) == ("y", 2.0)


@pytest.mark.parametrize("opts, message", [
    ({"prefx": "x"}, "unknown store option"),
    ({"prefix": ""}, "prefix"),
    ({"prefix": "has space"}, "spaces or control"),
    ({"prefix": "ctl\x01"}, "spaces or control"),
    ({"refresh_timeout": 0}, "refresh_timeout"),
    ({"refresh_timeout": -1.0}, "refresh_timeout"),
    ({"refresh_jitter": 1.0}, "refresh_jitter"),
    ({"retry_update_count": 0}, "retry_update_count"),
    ({"backoff_timeout": -5}, "backoff_timeout"),
    ({"timeout": 0}, "timeout"),
])
def test_bad_options_raise_value_error(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemcacheSessionStoreOptions.coerce(opts)


def test_keys_longer_than_250_bytes_are_refused() -> None:
    validate_key("a" * 250)
    with pytest.raises(ValueError, match="longer than 250"):
        validate_key("a" * 251)


@pytest.mark.parametrize("key, env", [("a/b/c*d", "b"), ("b/c*d", "b")])
def test_environment_id_from_api_key(key: str, env: str) -> None:
    assert environment_id(key) == env


@pytest.mark.parametrize("key", ["nokey", "a/b/c/d", "/c*d"])
def test_environment_id_refuses_malformed_keys(key: str) -> None:
    with pytest.raises(ValueError, match="environment id"):
        environment_id(key)


def test_server_evaluated_key_is_refused() -> None:
    with pytest.raises(ValueError, match="only client-evaluated API keys"):
        require_client_evaluated("a/b/serverkey")


@pytest.mark.parametrize("text, servers", [
    ("127.0.0.1:11311", [("127.0.0.1", 11311)]),
    ("memcache://a:1,b:2", [("a", 1), ("b", 2)]),
    ("host", [("host", 11211)]),
    ("memcache://[::1]:5000/", [("::1", 5000)]),
])
def test_parse_servers(text: str, servers: list[tuple[str, int]]) -> None:
    assert parse_servers(text) == servers


@pytest.mark.parametrize("text", ["redis://a:1", "a:notaport", "a:1,,b:2", "a:70000", ":11211"])
def test_parse_servers_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError, match="memcache address"):
        parse_servers(text)


@pytest.mark.parametrize("key, shown", [
    ("portfolio/env/client*secret", "portfolio/env/client*..."),
    ("portfolio/env/serversecret", "portfolio/env/..."),
    ("nokey", "..."),
])
def test_redact_never_shows_the_secret(key: str, shown: str) -> None:
    assert redact(key) == shown
