"""FeatureHub's own SDK end-to-end scenarios, replayed against the simulator with real workers.

The server repository's ``adks/e2e-sdk/features/*.feature`` drive a real FeatureHub through
its management API and check what an SDK receives. Here the Edge side of each scenario that
concerns what an SDK receives is played by the simulator (with the real Edge's defaults: the
events Edge would send for each management step), and the SDK side is a gunicorn cluster on a
real memcached. Each test names its scenario; "nothing lost" is checked on the whole state
after every step: every worker and the store hold exactly what Edge lists (``wait_converged``),
or, for a filtered service account, exactly what that key may see. Both transports run, as
the scenarios' ``@allvariants`` / ``@streamingvariants`` tags ask.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.faults.whole_state import StoreReader, data_key, memcached_reader, wait_converged
from tests.servers.conftest import (  # noqa: F401  # server_env, start_cluster: fixtures
    API_KEY,
    REFRESH,
    server_env,
    start_cluster,
)
from tests.support.procs import wait_for
from tests.support.state import State, describe, memcached_state, worker_states

StartCluster = Callable[..., Cluster]
SETTLE = 2 * REFRESH * 1.2 + 10.0
FAST = {"FH_PREFORK_EDGE_ABSENCE_SECONDS": "1", "FH_PREFORK_EDGE_BACKOFF_MAX": "2",
        "FEATUREHUB_POLL_INTERVAL": "1"}
TRANSPORTS = ["sse", "poll"]


@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    """A new environment (the scenarios' Background: new portfolio, application, service
    account): no features yet, Edge's defaults."""
    with EdgeSimulator() as sim:
        yield sim


@pytest.fixture
def store(memcached: Any, prefix: str) -> StoreReader:
    return memcached_reader(memcached.address, prefix)


def connect(start_cluster: StartCluster, transport: str, workers: int = 3,  # noqa: F811
            **env: str) -> Cluster:
    """"I connect to the feature server": a cluster of real workers on that transport."""
    return start_cluster("gunicorn", workers, env={**FAST, "FH_PREFORK_EDGE": transport, **env})


def new_feature(key: str, value: Any, type: str = "BOOLEAN", locked: bool = False
                ) -> dict[str, Any]:
    """A feature as the management API creates it: a new id, version 1."""
    return {**make_feature(key, value, 1, type=type, id=str(uuid.uuid4())), "l": locked}


def served(cluster: Cluster, key: str, user: str | None = None) -> set[tuple[Any, bool]]:
    """The (value, exists) pairs the workers serve for ``key`` (one pair: they agree)."""
    path = f"/flags?key={key}" + (f"&user={user}" if user else "")
    return {(a["flags"][key]["value"], a["flags"][key]["exists"])
            for a in cluster.sample(path).values()}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_flags_retired_feature_no_longer_exists(
        edge: EdgeSimulator, start_cluster: StartCluster, store: StoreReader,  # noqa: F811
        transport: str) -> None:
    """flags.feature, @retired: "A new portfolio with a boolean feature is retired and no
    longer exists". Retired: Edge sends ``delete_feature`` at the real version and lists leave
    it out, so it leaves every worker; an update while retired is another such delete;
    unretired, it comes back at a newer version, unlocked and on."""
    cluster = connect(start_cluster, transport)
    edge.push_feature(new_feature("FEATURE_FLAG", False, locked=True))  # a new feature flag
    wait_converged(edge, cluster, store, SETTLE, "the feature flag is locked and off")
    assert served(cluster, "FEATURE_FLAG") == {(False, True)}
    edge.retire_feature("FEATURE_FLAG")                                 # I retire the flag
    wait_converged(edge, cluster, store, SETTLE, "there are 0 features")
    assert served(cluster, "FEATURE_FLAG") == {(None, False)}
    edge.update_retired("FEATURE_FLAG", value=True, l=False)            # on and unlocked
    wait_converged(edge, cluster, store, SETTLE, "still 0 features")
    back = edge.unretire_feature("FEATURE_FLAG")                        # I unretire it
    assert back["value"] is True and back["l"] is False
    wait_converged(edge, cluster, store, SETTLE, "there are 1 features, unlocked and on")
    assert served(cluster, "FEATURE_FLAG") == {(True, True)}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lots_of_features(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                          store: StoreReader, transport: str) -> None:
    """lots_of_features.feature, @lotsoffeatures: "I setup the main scenario": 47 random flags,
    83 strings, 27 numbers and 62 JSON features, created one after another while connected."""
    cluster = connect(start_cluster, transport)
    rng = random.Random(4783)
    kinds: list[tuple[str, int, Callable[[], Any]]] = [
        ("BOOLEAN", 47, lambda: rng.random() < 0.5),
        ("STRING", 83, lambda: f"s-{rng.randrange(10**6)}"),
        ("NUMBER", 27, lambda: rng.randrange(-1000, 1000) / 8),
        ("JSON", 62, lambda: f'{{"n": {rng.randrange(100)}}}')]
    for kind, count, value in kinds:
        for i in range(count):
            edge.push_feature(new_feature(f"{kind}_{i:03d}", value(), kind))
    assert len(edge.features()) == 219
    wait_converged(edge, cluster, store, SETTLE + 10, "all 219 features")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_strings(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                 store: StoreReader, transport: str) -> None:
    """strings.feature, @strings: "A new portfolio with a strings feature": null, locked,
    junior, then a strategy giving senior to user1 only."""
    cluster = connect(start_cluster, transport)
    feature = new_feature("STRING_FEATURE", None, "STRING")
    edge.push_feature(feature)
    wait_converged(edge, cluster, store, SETTLE, "the string feature is unlocked and null")
    assert served(cluster, "STRING_FEATURE") == {(None, True)}

    def change(**fields: Any) -> None:
        nonlocal feature
        feature = {**feature, **fields, "version": feature["version"] + 1}
        edge.push_feature(feature)
        wait_converged(edge, cluster, store, SETTLE, f"after {fields}")

    change(l=True)                                   # I lock the feature
    change(l=False)                                  # I unlock the feature
    change(value="junior")                           # I set the value to junior
    assert served(cluster, "STRING_FEATURE") == {("junior", True)}
    change(l=True)
    change(l=False)
    change(strategies=[{"id": "x", "name": "X", "value": "senior", "attributes": [
        {"conditional": "EQUALS", "fieldName": "userkey", "type": "STRING",
         "values": ["user1@mailinator.com"]}]}])     # a strategy X, value senior
    assert served(cluster, "STRING_FEATURE") == {("junior", True)}
    assert served(cluster, "STRING_FEATURE", "user1@mailinator.com") == {("senior", True)}
    assert served(cluster, "STRING_FEATURE", "user2@mailinator.com") == {("junior", True)}


def wait_holds(cluster: Cluster, read_store: Callable[[], State | None], expected: State,
               what: str) -> None:
    """Every worker and the store hold exactly ``expected`` (a filtered key's view)."""
    last: list[str] = []

    def holds() -> bool:
        try:
            states = worker_states(cluster)
        except TimeoutError:
            return False
        held = read_store()
        last[:] = [describe(expected, states, held)]
        return len(states) == cluster.workers and all(
            s == expected for s in states.values()) and held == expected
    try:
        wait_for(holds, SETTLE, interval=0.1, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}:\n{last[0] if last else ''}") from None


def test_feature_filters_on_edge(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                                 memcached: Any, prefix: str) -> None:
    """feature-filters.feature, @filters_sa_edge: "I create a service account and flags and the
    filters work on edge as expected". Each service account's key sees only the features of
    its filters (no filters: all); after a filter change a new connection sees the new set.
    Polling, as the scenario connects "with poll 200"."""
    ling, orm = new_feature("ling", True), new_feature("orm", False)
    tofu = new_feature("tofu", "tofu", "STRING")
    edge.set_features([ling, orm, tofu])
    env = API_KEY.split("/")[1]
    keys = {name: f"portfolio/{env}/{name}*secret" for name in ("silent", "wonder", "maekoy")}
    edge.set_filter(keys["silent"], {"orm"})
    edge.set_filter(keys["wonder"], {"ling"})

    def state(*features: dict[str, Any]) -> State:
        return {f["key"]: (f["id"], f["version"]) for f in features}

    def cluster_for(name: str) -> tuple[Cluster, Callable[[], State | None]]:
        own_prefix = f"{prefix}{name}"
        cluster = connect(start_cluster, "poll", 2, FEATUREHUB_API_KEY=keys[name],
                          FH_PREFORK_PREFIX=own_prefix)
        return cluster, lambda: memcached_state(memcached.address, data_key(own_prefix))

    silent, silent_store = cluster_for("silent")
    wait_holds(silent, silent_store, state(orm), 'only "orm"')
    wonder, wonder_store = cluster_for("wonder")
    wait_holds(wonder, wonder_store, state(ling), 'only "ling"')
    edge.set_filter(keys["wonder"], {"ling", "orm"})     # always wonder, keep silent
    wait_holds(wonder, wonder_store, state(ling, orm), '"ling,orm"')
    maekoy, maekoy_store = cluster_for("maekoy")
    wait_holds(maekoy, maekoy_store, state(ling, orm, tofu), '"ling,orm,tofu": no filters')
    wait_holds(silent, silent_store, state(orm), 'still only "orm"')


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_environment_featuredelete(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                                   store: StoreReader, transport: str) -> None:
    """environment.feature, @featuredelete: "When I create multiple features and delete them,
    the MR list of features should match the Edge list of features". Every delete is Edge's
    (``delete_feature`` at version 0, no value); after each step every worker and the store
    hold exactly Edge's list ("there are N features")."""
    cluster = connect(start_cluster, transport)

    def there_are(n: int, what: str) -> None:
        assert len(edge.features()) == n
        wait_converged(edge, cluster, store, SETTLE, f"there are {n} features: {what}")

    edge.push_feature(new_feature("FLAG_1", False, locked=True))
    there_are(1, "a new feature flag")
    edge.delete_feature({"key": "FLAG_1"})
    there_are(0, "the flag deleted")
    edge.push_feature(new_feature("STRING_1", None, "STRING"))
    there_are(1, "a new string feature, null")
    edge.delete_feature({"key": "STRING_1"})
    there_are(0, "the string deleted")
    number = new_feature("NUMBER_1", None, "NUMBER")
    edge.push_feature(number)
    edge.push_feature({**number, "value": 15, "version": 2})
    there_are(1, "a number set to 15")
    edge.push_feature(new_feature("FLAG_2", False, locked=True))
    there_are(2, "another flag")
    edge.push_feature(new_feature("FLAG_3", False, locked=True))
    there_are(3, "a third flag")
    edge.delete_feature({"key": "FLAG_3"})
    there_are(2, "the third flag deleted")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_environment_deleted(edge: EdgeSimulator, start_cluster: StartCluster,  # noqa: F811
                             store: StoreReader, transport: str) -> None:
    """environment.feature, @environment: "When I delete an environment, it becomes unpublished
    from Edge": its key is no longer in Edge's cache, so the stream answers 200 + ``failure``
    "Unrecognized API key" and polls 404. Every worker says ``key_not_found`` and keeps
    answering requests."""
    cluster = connect(start_cluster, transport, 2)
    edge.push_feature(new_feature("FEATURE_FLAG", False, locked=True))
    wait_converged(edge, cluster, store, SETTLE, "the feature flag is locked and off")
    edge.keys_unknown = True                                # I delete the environment
    edge.drop_streams()
    wait_for(lambda: all(s["edge_state"] == "key_not_found"
                         for s in cluster.statuses().values()), SETTLE,
             what="the edge connection is no longer available: key_not_found")
    assert len(cluster.sample("/flags?key=FEATURE_FLAG")) == 2
