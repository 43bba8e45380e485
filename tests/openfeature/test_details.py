"""OpenFeature details (issue 20, point 6; issue 19, point 4): READY once, FLAG_NOT_FOUND for a
deleted feature, the STALE reason while stale, TARGETING_KEY_MISSING for a percentage rollout
without a key, PROVIDER_FATAL while Edge does not know the API key (its real SSE answer)."""

from __future__ import annotations

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

import fh_prefork
from fh_prefork import runtime
from fh_prefork.openfeature import FATAL, STALE, FeatureHubProvider
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.edge.scripted import UNKNOWN_KEY_FAILURE, ScriptedEdge, sse
from tests.support.memcached import Memcached
from tests.support.procs import hold_for, wait_for
from tests.support.runtime import worker_status

from .conftest import Events, set_and_wait


def test_ready_once_then_stale_when_set_while_the_worker_is_stale(
        edge: EdgeSimulator, events: Events, own_memcached: Memcached,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Set while store and Edge are both down: READY (the API's, when initialize returns),
    then STALE at once, evaluations with reason STALE; READY again on recovery. Before: the
    status stayed READY while stale, evaluations said STATIC, and recovery sent a second
    READY with no STALE between."""
    monkeypatch.setenv("FH_PREFORK_STORE", own_memcached.url)
    fh_prefork.start_worker()
    worker = runtime.current_worker()
    assert worker is not None
    wait_for(worker.repository.is_ready, 10, what="a first state")
    edge.go_down()
    own_memcached.stop()
    provider = FeatureHubProvider(watch_interval=0.1)
    wait_for(lambda: provider.state() == STALE, 10, what="the worker stale")

    events.listen(ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_STALE)
    set_and_wait(provider)
    client = api.get_client()
    events.wait(ProviderEvent.PROVIDER_STALE)
    assert client.get_provider_status() == ProviderStatus.STALE
    details = client.get_boolean_details("BOOL_FLAG", False)
    assert details.value is True and details.reason == Reason.STALE, details
    assert details.error_code is None

    own_memcached.start()
    edge.come_up()
    events.wait(ProviderEvent.PROVIDER_READY, count=2)
    assert [e for e, _ in events.seen] == [ProviderEvent.PROVIDER_READY,
                                           ProviderEvent.PROVIDER_STALE,
                                           ProviderEvent.PROVIDER_READY]
    assert client.get_boolean_details("BOOL_FLAG", False).reason == Reason.STATIC


def test_ready_exactly_once_on_set_provider_and_wait(events: Events) -> None:
    events.listen(ProviderEvent.PROVIDER_READY)
    set_and_wait(FeatureHubProvider(watch_interval=0.05))
    hold_for(1.0)   # twenty watcher steps
    assert len(events.of(ProviderEvent.PROVIDER_READY)) == 1, events.seen


def test_a_deleted_feature_is_flag_not_found_in_every_form() -> None:
    """A deleted feature is FLAG_NOT_FOUND, whichever way it was deleted (the SDK's holder
    reset, a ``delete_feature``); the deleted API key is PROVIDER_FATAL (tests below and
    test_provider.test_fatal_while_edge_says_the_key_is_gone), no longer GENERAL."""
    set_and_wait(FeatureHubProvider())
    client = api.get_client()
    worker = runtime.current_worker()
    assert worker is not None
    worker.repository.features["STR_FLAG"].set_feature_state(None)   # the SDK's delete
    details = client.get_string_details("STR_FLAG", "d")
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND and details.value == "d", details
    worker.repository.notify("delete_feature", {"id": worker.repository.features["INT_FLAG"]
                                                .internal_feature_state["id"],
                                                "key": "INT_FLAG", "version": 1})
    assert client.get_integer_details("INT_FLAG", 7).error_code == ErrorCode.FLAG_NOT_FOUND


def test_targeting_key_missing_for_a_percentage_rollout() -> None:
    """ROLLOUT is a 50% rollout: without a key the SDK skips it and serves every user the
    feature's value (before: reason STATIC, as if there were no rollout)."""
    set_and_wait(FeatureHubProvider())
    client = api.get_client()
    missing = client.get_boolean_details("ROLLOUT", True)
    assert missing.error_code == ErrorCode.TARGETING_KEY_MISSING, missing
    assert missing.value is True and missing.reason == Reason.ERROR
    assert missing.flag_metadata["key"] == "ROLLOUT"
    attributes_only = client.get_boolean_details("ROLLOUT", True, EvaluationContext(
        None, {"country": "new_zealand"}))
    assert attributes_only.error_code == ErrorCode.TARGETING_KEY_MISSING
    for context in (EvaluationContext("user-1"), EvaluationContext(None, {"session": "s-9"})):
        keyed = client.get_boolean_details("ROLLOUT", True, context)
        assert keyed.error_code is None and keyed.reason in (Reason.SPLIT, Reason.STATIC), keyed
    # a feature without a percentage strategy needs no key
    assert client.get_string_details("TARGETED", "x").reason == Reason.STATIC


def test_fatal_at_start_when_edge_does_not_know_the_key(
        events: Events, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Edge's answer to an unknown key (HTTP 200, ack, failure "Unrecognized API
    key", close): the provider is FATAL. Before: Edge's answer counted as data, the worker
    stayed "connected" and the provider NOT_READY forever."""
    answer = sse(("ack", '{"status":"discover"}'), ("failure", UNKNOWN_KEY_FAILURE))
    with ScriptedEdge(lambda path, headers: answer) as server:
        monkeypatch.setenv("FEATUREHUB_EDGE_URL", server.url)
        monkeypatch.setenv("FH_PREFORK_STORE", "none")
        events.listen(ProviderEvent.PROVIDER_ERROR)
        provider = FeatureHubProvider(ready_timeout=5.0)
        with pytest.raises(ProviderFatalError):
            set_and_wait(provider)
        error = events.wait(ProviderEvent.PROVIDER_ERROR)[0]
        assert error.error_code == ErrorCode.PROVIDER_FATAL
        client = api.get_client()
        assert client.get_provider_status() == ProviderStatus.FATAL
        assert provider.state() == FATAL
        assert worker_status()["edge_state"] == "key_not_found"
        details = client.get_boolean_details("BOOL_FLAG", False)
        assert details.error_code == ErrorCode.PROVIDER_FATAL and details.value is False
        api.shutdown()
        runtime.stop_worker()
