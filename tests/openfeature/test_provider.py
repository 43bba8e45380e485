"""FeatureHubProvider in a plain process: the real openfeature-sdk, the Edge simulator, a store."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from featurehub_sdk.interceptors import InterceptorValue, ValueInterceptor
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

import fh_prefork
from fh_prefork import runtime
from fh_prefork.openfeature import FATAL, NOT_READY, READY, STALE, FeatureHubProvider
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.support.memcached import Memcached
from tests.support.procs import wait_for
from tests.support.runtime import worker_status

from .conftest import Events, attribute, feature, set_and_wait


def ready_client(**options: Any) -> tuple[FeatureHubProvider, OpenFeatureClient]:
    provider = FeatureHubProvider(**options)
    set_and_wait(provider)
    return provider, api.get_client()


def test_every_type_resolves_with_static_reason_and_metadata() -> None:
    _, client = ready_client()
    assert client.get_provider_status() == ProviderStatus.READY
    assert api.get_provider_metadata().name == "fh-prefork FeatureHub"

    details = client.get_boolean_details("BOOL_FLAG", False)
    assert details.value is True and details.reason == Reason.STATIC
    assert details.error_code is None and details.variant is None
    assert details.flag_metadata["key"] == "BOOL_FLAG" and details.flag_metadata["version"] == 3
    assert details.flag_metadata["type"] == "BOOLEAN" and details.flag_metadata["id"]

    assert client.get_string_details("STR_FLAG", "x").value == "blue"
    integer = client.get_integer_details("INT_FLAG", 0)
    assert integer.value == 42 and type(integer.value) is int
    number = client.get_float_details("FLOAT_FLAG", 0.0)
    assert number.value == 2.5 and number.reason == Reason.STATIC
    whole = client.get_float_details("INT_FLAG", 0.0)  # a whole NUMBER is a float too
    assert whole.value == 42.0 and type(whole.value) is float
    assert client.get_object_value("OBJ_FLAG", {}) == {"a": 1, "b": [1, 2]}
    assert client.get_object_value("LIST_FLAG", {}) == [1, 2, 3]
    for other in (client.get_string_details("STR_FLAG", "x"),
                  client.get_object_details("OBJ_FLAG", {})):
        assert other.reason == Reason.STATIC and other.flag_metadata["version"] in (1, 2)


def test_async_resolution() -> None:
    _, client = ready_client()

    async def read() -> tuple[bool, str]:
        return (await client.get_boolean_value_async("BOOL_FLAG", False),
                await client.get_string_value_async("STR_FLAG", ""))

    assert asyncio.run(read()) == (True, "blue")


def test_a_feature_without_a_value_gives_the_default_with_reason_default() -> None:
    _, client = ready_client()
    details = client.get_string_details("NULL_STR", "fallback")
    assert details.value == "fallback" and details.reason == Reason.DEFAULT
    assert details.error_code is None and details.flag_metadata["key"] == "NULL_STR"


def test_error_codes() -> None:
    _, client = ready_client()
    missing = client.get_boolean_details("NO_SUCH_FLAG", True)
    assert missing.value is True and missing.reason == Reason.ERROR
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND and "NO_SUCH_FLAG" in \
        (missing.error_message or "")

    for details in (client.get_boolean_details("STR_FLAG", False),
                    client.get_string_details("BOOL_FLAG", "d"),
                    client.get_integer_details("FLOAT_FLAG", 7),    # 2.5 is no integer
                    client.get_object_details("SCALAR_JSON", {}),    # 5 is no object
                    client.get_float_details("OBJ_FLAG", 1.0)):
        assert details.error_code == ErrorCode.TYPE_MISMATCH, details
        assert details.reason == Reason.ERROR and details.error_message
        assert details.flag_metadata["key"] == details.flag_key  # which feature, what version
    assert client.get_integer_value("FLOAT_FLAG", 7) == 7  # the caller's default

    # GENERAL: the SDK's IP matcher raises on a context value that is no IP address
    general = client.get_string_details("BY_IP", "d", EvaluationContext("u", {"ip": "nope"}))
    assert general.error_code == ErrorCode.GENERAL and general.value == "d"
    assert "ValueError" in (general.error_message or "")
    ok = client.get_string_details("BY_IP", "d", EvaluationContext("u", {"ip": "10.1.2.3"}))
    assert ok.value == "office" and ok.reason == Reason.TARGETING_MATCH


def test_parse_error_from_an_interceptor() -> None:
    """Edge's JSON is validated on arrival; an interceptor's override is not."""

    class Broken(ValueInterceptor):  # type: ignore[misc]
        def intercepted_value(self, feature_key: str) -> InterceptorValue | None:
            return InterceptorValue("{not json") if feature_key == "OBJ_FLAG" else None

    _, client = ready_client()
    fh_prefork.config().repository().register_interceptor(Broken())
    details = client.get_object_details("OBJ_FLAG", {"d": 1})
    assert details.error_code == ErrorCode.PARSE_ERROR and details.value == {"d": 1}


def test_not_ready_until_a_state_is_known(edge: EdgeSimulator, events: Events) -> None:
    edge.go_down()  # an empty store and no Edge: nothing is known
    events.listen(ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_ERROR)
    provider = FeatureHubProvider(ready_timeout=0.3)
    with pytest.raises(ProviderNotReadyError):
        set_and_wait(provider)
    client = api.get_client()
    assert client.get_provider_status() == ProviderStatus.ERROR
    error = events.wait(ProviderEvent.PROVIDER_ERROR)[0]
    assert error.error_code == ErrorCode.PROVIDER_NOT_READY
    details = client.get_boolean_details("BOOL_FLAG", False)
    assert details.error_code == ErrorCode.PROVIDER_NOT_READY and details.value is False
    assert provider.state() == NOT_READY

    edge.come_up()
    ready = events.wait(ProviderEvent.PROVIDER_READY)[0]
    assert ready.provider_name == "fh-prefork FeatureHub"
    wait_for(lambda: client.get_provider_status() == ProviderStatus.READY, 5, what="READY")
    assert client.get_boolean_value("BOOL_FLAG", False) is True


def test_ready_from_the_store_while_edge_is_down(edge: EdgeSimulator) -> None:
    """A worker that starts with Edge down serves (and is READY with) what the store holds."""
    fh_prefork.start_worker()
    wait_for(lambda: fh_prefork.context().feature("BOOL_FLAG").exists, 10, what="Edge state")
    assert runtime.current_worker() is not None
    fh_prefork.stop_worker()        # flushes the state to the store
    edge.go_down()
    _, client = ready_client(ready_timeout=2)
    assert client.get_provider_status() == ProviderStatus.READY
    assert client.get_string_value("STR_FLAG", "x") == "blue"
    assert worker_status()["edge_state"] in ("connecting", "backoff")


def test_initialize_waits_for_edge() -> None:
    """set_provider_and_wait returns once the first state arrived (no store, fresh Edge)."""
    _, client = ready_client(ready_timeout=10)
    assert client.get_boolean_value("BOOL_FLAG", False) is True


@pytest.mark.parametrize("context, value, variant, strategy_id", [
    (EvaluationContext("user-7"), "mine", "one-user", "s-user"),
    (EvaluationContext("u1", {"country": "new_zealand"}), "kiwi", "kiwis", "s-nz"),
    (EvaluationContext("u1", {"platform": "ios", "version": "2.1.0"}), "ios", "ios-2", "s-ios"),
    (EvaluationContext("u1", {"device": "mobile"}), "small", "mobile", "s-mobile"),
    (EvaluationContext("u1", {"plan": "gold", "seats": 12, "beta": True}), "gold", "gold-plan",
     "s-gold"),
])
def test_targeting_by_attribute(context: EvaluationContext, value: str, variant: str,
                                strategy_id: str) -> None:
    _, client = ready_client()
    details = client.get_string_details("TARGETED", "d", context)
    assert details.value == value and details.reason == Reason.TARGETING_MATCH
    assert details.variant == variant and details.flag_metadata["strategy_id"] == strategy_id
    assert details.flag_metadata["version"] == 4


@pytest.mark.parametrize("country", ["australia", "united_kingdom", "new_zealand", "ireland"])
def test_the_strategy_applied_is_named_among_strategies_sharing_a_value(
        country: str, edge: EdgeSimulator) -> None:
    _, client = ready_client()
    context = EvaluationContext("u1", {"country": country})
    details = client.get_boolean_details("SHARED", False, context)
    assert details.value is True and details.reason == Reason.TARGETING_MATCH
    assert details.variant == country and details.flag_metadata["strategy_id"] == f"s-{country}"
    assert client.get_boolean_details("SHARED", True, EvaluationContext("u1", {
        "country": "france"})).reason == Reason.STATIC
    # new strategies for the same feature: the names follow them
    renamed = feature("SHARED", False, 2, "BOOLEAN", [
        {"id": "s-new", "name": "renamed", "value": True,
         "attributes": [attribute("country", "EQUALS", [country])]}])
    edge.push_feature(renamed)
    wait_for(lambda: client.get_boolean_details("SHARED", False, context).variant == "renamed",
             5, what="the new strategy's name")


@pytest.mark.parametrize("attributes", [
    {}, {"country": "australia"}, {"platform": "ios", "version": "1.9.9"},
    {"plan": "gold", "seats": 5, "beta": True}, {"plan": "gold", "seats": 12, "beta": False},
])
def test_no_strategy_matches_gives_the_feature_value(attributes: dict[str, Any]) -> None:
    _, client = ready_client()
    details = client.get_string_details("TARGETED", "d", EvaluationContext("u1", attributes))
    assert details.value == "default" and details.reason == Reason.STATIC
    assert details.variant is None


def test_evaluation_matches_the_featurehub_sdk() -> None:
    """For many contexts the provider's value is the SDK's, and the reason says why."""
    _, client = ready_client()
    seen = set()
    contexts: list[tuple[EvaluationContext, Any]] = []
    for n in range(200):
        attrs: dict[str, Any] = {"country": ["new_zealand", "australia"][n % 2],
                                 "platform": ["ios", "android"][n % 3 % 2],
                                 "version": f"{n % 4}.0.0",
                                 "device": ["mobile", "desktop"][n % 5 % 2]}
        sdk = fh_prefork.context().user_key(f"user-{n}")
        for name, value in attrs.items():
            sdk.attribute_values(name, [value])
        contexts.append((EvaluationContext(f"user-{n}", attrs), sdk))
    for context, sdk in contexts:
        for key in ("TARGETED", "ROLLOUT"):
            details = (client.get_string_details(key, "?", context) if key == "TARGETED"
                       else client.get_boolean_details(key, None, context))  # type: ignore[arg-type]
            assert details.value == sdk.feature(key).get_value, (key, context)
            if key == "ROLLOUT":
                # a percentage-only strategy is a pseudorandom split, per the specification
                assert details.reason == (Reason.SPLIT if details.value else Reason.STATIC)
                assert details.variant == ("half" if details.value else None)
                seen.add(details.value)
    assert seen == {True, False}  # both sides of the 50% split were hit


def test_context_values_reach_featurehub_as_strings() -> None:
    from datetime import datetime, timezone

    from fh_prefork.openfeature import fh_context

    repo = fh_prefork.config().repository()
    ctx = fh_context(repo, EvaluationContext("k", {
        "flag": True, "n": 3, "x": 1.5, "when": datetime(2024, 1, 2, tzinfo=timezone.utc),
        "tags": ["a", 2, False], "nested": {"a": 1}, "userkey": "ignored"}))
    assert ctx.get_attr("userkey") == "k"  # the targeting key wins
    assert ctx.get_attr("flag") == "true" and ctx.get_attr("n") == "3"
    assert ctx.get_attr("x") == "1.5" and ctx.get_attr("when") == "2024-01-02T00:00:00+00:00"
    assert ctx._attributes["tags"] == ["a", "2", "false"]
    assert ctx.get_attr("nested") is None


def test_configuration_changed_on_update_and_delete(edge: EdgeSimulator, events: Events) -> None:
    events.listen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    _, client = ready_client()
    edge.push_feature(feature("STR_FLAG", "green", 3, "STRING"))
    changed = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, flag="STR_FLAG")[0]
    assert changed.flags_changed == ["STR_FLAG"]
    assert client.get_string_value("STR_FLAG", "x") == "green"

    edge.delete_feature(feature("BOOL_FLAG", True, 3))
    events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, flag="BOOL_FLAG")
    assert client.get_boolean_details("BOOL_FLAG", False).error_code == \
        ErrorCode.FLAG_NOT_FOUND

    edge.push_feature(feature("NEW_ONE", True, 1))
    events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, flag="NEW_ONE")
    assert client.get_boolean_value("NEW_ONE", False) is True


def test_an_unchanged_resend_is_no_change(edge: EdgeSimulator, events: Events) -> None:
    events.listen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    ready_client()
    edge.push_feature(feature("STR_FLAG", "blue", 2, "STRING"))  # what we hold already
    edge.push_feature(feature("INT_FLAG", 43, 2, "NUMBER"))
    changed = events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, flag="INT_FLAG")
    everything = [k for d in events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
                  for k in d.flags_changed or []]
    assert "STR_FLAG" not in everything and changed


def test_fatal_while_edge_says_the_key_is_gone(edge: EdgeSimulator, events: Events) -> None:
    """The spec's fatal state while Edge does not know the key (before: GENERAL, ERROR)."""
    events.listen(ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_READY)
    provider, client = ready_client(watch_interval=0.1)
    edge.set_failure(404)
    edge.go_down()
    edge.come_up()  # the stream reconnects and hears 404: the key was deleted
    error = events.wait(ProviderEvent.PROVIDER_ERROR)[0]
    assert "404" in (error.message or "") and error.error_code == ErrorCode.PROVIDER_FATAL
    assert client.get_provider_status() == ProviderStatus.FATAL and provider.state() == FATAL
    details = client.get_boolean_details("BOOL_FLAG", False)
    assert details.error_code == ErrorCode.PROVIDER_FATAL and details.value is False
    direct = provider.resolve_boolean_details("BOOL_FLAG", False)
    assert direct.error_code == ErrorCode.PROVIDER_FATAL

    edge.set_failure(None)
    events.wait(ProviderEvent.PROVIDER_READY, count=2)  # READY once at start, once recovered
    assert client.get_provider_status() == ProviderStatus.READY
    assert client.get_boolean_value("BOOL_FLAG", False) is True


def test_stale_while_store_and_edge_are_unreachable(edge: EdgeSimulator, events: Events,
                                                    own_memcached: Memcached,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FH_PREFORK_STORE", own_memcached.url)
    events.listen(ProviderEvent.PROVIDER_STALE, ProviderEvent.PROVIDER_READY)
    provider, client = ready_client(watch_interval=0.1)
    edge.go_down()
    assert provider.state() == READY or provider.state() == STALE
    # the store alone still answers: ready
    wait_for(lambda: worker_status()["edge_state"] == "backoff", 10, what="Edge backoff")
    assert provider.state() == READY
    own_memcached.stop()
    stale = events.wait(ProviderEvent.PROVIDER_STALE)[0]
    assert "unreachable" in (stale.message or "")
    assert client.get_provider_status() == ProviderStatus.STALE
    assert client.get_boolean_value("BOOL_FLAG", False) is True  # served from memory

    own_memcached.start()
    events.wait(ProviderEvent.PROVIDER_READY, count=2)
    assert client.get_provider_status() == ProviderStatus.READY


def test_shutdown_detaches_and_stops_the_watcher() -> None:
    provider, _ = ready_client()
    worker = runtime.current_worker()
    assert worker is not None
    assert any(isinstance(listener, type(provider._listener))
               for listener in worker.repository.raw_update_listeners)
    api.clear_providers()
    assert not any(t.name == "fh-prefork-openfeature" and t.is_alive()
                   for t in threading.enumerate())
    assert not any(isinstance(listener, type(provider._listener))
                   for listener in worker.repository.raw_update_listeners)
    assert runtime.current_worker() is worker  # the worker belongs to the server hooks


def test_a_restarted_worker_is_followed(edge: EdgeSimulator, events: Events) -> None:
    events.listen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    _, client = ready_client()
    fh_prefork.stop_worker()
    fh_prefork.start_worker()
    assert client.get_boolean_value("BOOL_FLAG", False) is True  # attaches to the new one
    edge.push_feature(feature("BOOL_FLAG", False, 4))
    events.wait(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, flag="BOOL_FLAG")
    assert client.get_boolean_value("BOOL_FLAG", True) is False
