"""The Edge simulator speaks the Edge protocol over real sockets and misbehaves on demand."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from fh_prefork.testing.edge_simulator import EdgeSimulator, environment_id, make_feature
from tests.support.edge import serve_edge
from tests.support.procs import wait_for

KEY = "portfolio/env-1/client*secret"
TIMEOUT = urllib3.Timeout(connect=2.0, read=5.0)


class SseReader:
    """Blocking SSE reader for tests; every read is bounded by the socket read timeout."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.http = urllib3.PoolManager()
        self.resp: Any = self.http.request(
            "GET", url, preload_content=False, retries=False, timeout=TIMEOUT,
            headers={"Accept": "text/event-stream", **(headers or {})},
        )
        self.buf = b""

    def next_event(self) -> tuple[str, str, str]:
        """(id, event, data) of the next event, skipping comments."""
        while True:
            m = re.search(rb"\r?\n\r?\n", self.buf)
            if m:
                block, self.buf = self.buf[: m.start()], self.buf[m.end():]
                fields: dict[str, list[str]] = {}
                for line in block.decode().splitlines():
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(": ")
                    fields.setdefault(name, []).append(value)
                if "data" in fields:
                    event_id = fields.get("id", [""])[0]
                    return (event_id, fields["event"][0], "\n".join(fields["data"]))
                continue
            chunk = self.resp.read1(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buf += chunk

    def close(self) -> None:
        self.resp.close()
        self.http.clear()


@pytest.fixture
def sim() -> Iterator[EdgeSimulator]:
    yield from serve_edge([make_feature("FLAG_A", True), make_feature("FLAG_B", False)],
                          keepalive_interval=0.3, api_keys=[KEY])


def get(url: str, **headers: str) -> Any:
    return urllib3.request("GET", url, headers=headers, retries=False, timeout=TIMEOUT)


def test_make_feature_and_environment_id() -> None:
    a1, a2 = make_feature("A", True), make_feature("A", False, version=2)
    assert a1["id"] == a2["id"] != make_feature("B", True)["id"]
    assert a1 == {"id": a1["id"], "key": "A", "l": False, "version": 1, "type": "BOOLEAN",
                  "value": True, "strategies": []}
    assert environment_id("a/b/c*d") == "b"
    assert environment_id("b/c*d") == "b"


def test_stream_sends_ack_then_features_then_pushed_events(sim: EdgeSimulator) -> None:
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        assert reader.resp.status == 200
        assert reader.resp.headers["content-type"] == "text/event-stream"
        id1, name, data = reader.next_event()
        assert (id1, name, json.loads(data)) == ("", "ack", {"status": "discover"})
        id2, name, data = reader.next_event()
        assert name == "features"
        assert id2 and not id2.startswith('"')   # the etag, unquoted
        assert {f["key"]: f["value"] for f in json.loads(data)} == {"FLAG_A": True, "FLAG_B": False}
        assert sim.wait_for_streams(1, 5)
        sim.push_feature(make_feature("FLAG_A", False, version=2))
        id3, name, data = reader.next_event()
        assert (name, json.loads(data)["value"]) == ("feature", False)
        flag_b = next(f for f in sim.features() if f["key"] == "FLAG_B")
        sim.delete_feature({"key": "FLAG_B"})
        _, name, data = reader.next_event()
        assert (name, json.loads(data)) == ("delete_feature", {
            "id": flag_b["id"], "key": "FLAG_B", "l": False, "version": 0, "type": "BOOLEAN"})
        sim.send_config({"edge.stale": True})
        _, name, data = reader.next_event()
        assert (name, json.loads(data)) == ("config", {"edge.stale": True})
        assert id3 == ""   # only a full list carries an id
        assert [f["key"] for f in sim.features()] == ["FLAG_A"]
        # idle streams get keepalive comments, which the reader skips
        deadline = time.monotonic() + 5
        while b": keepalive" not in reader.buf and time.monotonic() < deadline:
            reader.buf += reader.resp.read1(65536)
        assert b": keepalive" in reader.buf
    finally:
        reader.close()
    assert sim.wait_until(lambda: sim.open_streams == 0, 5)


def test_push_to_one_stream_only_reaches_that_stream(sim: EdgeSimulator) -> None:
    readers = [SseReader(f"{sim.url}features/{KEY}") for _ in range(2)]
    try:
        for reader in readers:
            assert [reader.next_event()[1] for _ in range(2)] == ["ack", "features"]
        assert sim.wait_for_streams(2, 5)
        streams = sim.streams()
        assert sim.max_concurrent_streams == 2 and sim.total_stream_connections == 2
        local_ports = [r.resp.connection.sock.getsockname()[1] for r in readers]
        target = next(s for s in streams if s.peer[1] == local_ports[0])
        assert target.api_key == KEY
        sim.push_feature(make_feature("FLAG_C", True), stream_id=target.id)
        sim.push_feature(make_feature("FLAG_D", True))  # to everyone
        assert json.loads(readers[0].next_event()[2])["key"] == "FLAG_C"
        assert json.loads(readers[0].next_event()[2])["key"] == "FLAG_D"
        assert json.loads(readers[1].next_event()[2])["key"] == "FLAG_D"
        with pytest.raises(KeyError):
            sim.push_feature(make_feature("FLAG_E", True), stream_id=999)
    finally:
        for reader in readers:
            reader.close()


def test_polling_etag_gives_304(sim: EdgeSimulator) -> None:
    url = f"{sim.url}features?apiKey={KEY}&contextSha=0"
    first = get(url)
    assert first.status == 200
    body = json.loads(first.data)
    assert body[0]["id"] == "env-1" and len(body[0]["features"]) == 2
    etag = first.headers["etag"]
    assert get(url, **{"If-None-Match": etag}).status == 304
    sim.push_feature(make_feature("FLAG_A", False, version=2))
    changed = get(url, **{"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["etag"] != etag
    sim.poll_max_age = 7
    assert get(url).headers["cache-control"] == "max-age=7"
    assert sim.total_poll_requests == 4


def test_unknown_key_is_404_on_poll_and_a_failure_event_on_the_stream(sim: EdgeSimulator
                                                                       ) -> None:
    reader = SseReader(f"{sim.url}features/other/key*x")
    try:
        assert reader.resp.status == 200
        assert [reader.next_event()[1:] for _ in range(2)] == [
            ("ack", '{"status": "discover"}'),
            ("failure", '{"status": "Unrecognized API key. Please stop requesting."}')]
        with pytest.raises(EOFError):
            reader.next_event()
    finally:
        reader.close()
    assert get(f"{sim.url}features?apiKey=other/key*x").status == 404
    sim.legacy_unknown_key_404 = True
    assert get(f"{sim.url}features/other/key*x").status == 404


def test_go_down_refuses_and_come_up_listens_on_same_port(sim: EdgeSimulator) -> None:
    reader = SseReader(f"{sim.url}features/{KEY}")
    port = sim.port
    try:
        assert [reader.next_event()[1] for _ in range(2)] == ["ack", "features"]
        sim.go_down()
        assert reader.next_event()[1] == "bye"
        with pytest.raises(EOFError):
            reader.next_event()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert sim.open_streams == 0
        sim.come_up()
        assert sim.port == port and sim.url == f"http://127.0.0.1:{port}/"
        assert get(f"{sim.url}features?apiKey={KEY}").status == 200
    finally:
        reader.close()


@pytest.mark.parametrize("status", [500, 404, 503])
def test_set_failure(sim: EdgeSimulator, status: int) -> None:
    sim.set_failure(status)
    assert get(f"{sim.url}features/{KEY}").status == status
    assert get(f"{sim.url}features?apiKey={KEY}").status == status
    assert get(f"{sim.url}_sim/state").status == 200  # control API keeps working
    sim.set_failure(None)
    assert get(f"{sim.url}features?apiKey={KEY}").status == 200


def test_close_after_each_event(sim: EdgeSimulator) -> None:
    sim.close_after_each_event = True
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        assert [reader.next_event()[1] for _ in range(2)] == ["ack", "features"]
        with pytest.raises(EOFError):
            reader.next_event()
    finally:
        reader.close()


def test_http_control_api(sim: EdgeSimulator) -> None:
    def post(path: str, body: Any = None) -> Any:
        return urllib3.request("POST", f"{sim.url}_sim/{path}", json=body, retries=False,
                               timeout=TIMEOUT)

    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        assert [reader.next_event()[1] for _ in range(2)] == ["ack", "features"]
        assert sim.wait_for_streams(1, 5)
        state = json.loads(get(f"{sim.url}_sim/state").data)
        assert state["open_streams"] == 1
        stream = state["streams"][0]
        assert stream["peer"][1] == reader.resp.connection.sock.getsockname()[1]
        assert post(f"feature?stream={stream['id']}", make_feature("X", True)).status == 200
        assert reader.next_event()[1:] == ("feature", json.dumps(make_feature("X", True)))
        assert post("delete", {"key": "X"}).status == 200
        assert reader.next_event()[1] == "delete_feature"
        assert post("features", [make_feature("Y", False)]).status == 200
        assert reader.next_event()[1] == "features"
        assert [f["key"] for f in sim.features()] == ["Y"]
        assert post("failure?status=500").status == 200
        assert get(f"{sim.url}features?apiKey={KEY}").status == 500
        assert post("failure?status=none").status == 200
        assert post("down?seconds=0.3").status == 202
        assert reader.next_event()[1] == "bye"
    finally:
        reader.close()
    def answers() -> int | None:
        try:
            return int(get(f"{sim.url}features?apiKey={KEY}").status)
        except urllib3.exceptions.HTTPError:
            return None

    assert wait_for(answers, 5, what="the simulator back after down?seconds") == 200


# -- the real Edge's behaviours and the faults tests need --------------------------------------
def keys_listed(sim: EdgeSimulator) -> list[str]:
    return sorted(f["key"] for f in json.loads(get(f"{sim.url}features?apiKey={KEY}").data)[0]
                  ["features"])


def test_drop_after_says_bye_closed_and_heartbeat_acks() -> None:
    with EdgeSimulator([KEY], drop_after=0.6, heartbeat_period=0.2) as sim:
        reader = SseReader(f"{sim.url}features/{KEY}")
        try:
            seen = []
            while True:
                try:
                    seen.append(reader.next_event()[1:])
                except EOFError:
                    break
        finally:
            reader.close()
    assert seen[:2] == [("ack", '{"status": "discover"}'), ("features", "[]")]
    assert seen[-1] == ("bye", '{"status": "closed"}')
    assert ("ack", '"❤️"') in seen[2:-1]


def test_quoted_last_event_id_is_honoured_and_unquoted_is_not(sim: EdgeSimulator) -> None:
    sim.drop_after = 0.5
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        etag = [reader.next_event() for _ in range(2)][1][0]
    finally:
        reader.close()
    expected = {etag: ["ack", "features", "bye"], f'"{etag}"': ["bye"],
                '"old"': ["features", "bye"]}
    for last, names in expected.items():
        reader = SseReader(f"{sim.url}features/{KEY}", {"Last-Event-ID": last})
        try:
            assert [reader.next_event()[1] for _ in names] == names, last
        finally:
            reader.close()
    assert list(sim.seen_last_event_ids)[-3:] == list(expected)


def test_retire_update_retired_and_unretire(sim: EdgeSimulator) -> None:
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        [reader.next_event() for _ in range(2)]
        assert sim.wait_for_streams(1, 5)
        retired = sim.retire_feature("FLAG_A")
        assert retired["version"] == 2 and retired["value"] is True
        assert reader.next_event()[1:] == ("delete_feature", json.dumps(retired))
        assert keys_listed(sim) == ["FLAG_B"] and "FLAG_A" not in {f["key"] for f in
                                                                    sim.features()}
        updated = sim.update_retired("FLAG_A", value=False)
        assert reader.next_event()[1:] == ("delete_feature", json.dumps(updated))
        back = sim.unretire_feature("FLAG_A")
        assert (back["version"], back["value"]) == (4, False)
        assert reader.next_event()[1:] == ("feature", json.dumps(back))
        assert keys_listed(sim) == ["FLAG_A", "FLAG_B"]
    finally:
        reader.close()


def test_old_behaviours_are_explicit_options(sim: EdgeSimulator) -> None:
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        [reader.next_event() for _ in range(2)]
        assert sim.wait_for_streams(1, 5)
        held = sim.features()[0]
        sim.delete_feature({"key": held["key"]}, held_version=True)
        assert reader.next_event()[1:] == ("delete_feature", json.dumps(held))
    finally:
        reader.close()
    sim.legacy_unknown_key_404 = True
    assert get(f"{sim.url}features/nope").status == 404


def test_not_ready_poll_only_and_stagnant(sim: EdgeSimulator) -> None:
    sim.not_ready, sim.not_ready_bye_after = True, (0.1, 0.3)
    assert get(f"{sim.url}features?apiKey={KEY}").status == 503
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        assert [reader.next_event()[1] for _ in range(2)] == ["ack", "bye"]
    finally:
        reader.close()
    sim.not_ready, sim.poll_only = False, True
    assert get(f"{sim.url}features/{KEY}").status == 501
    assert get(f"{sim.url}features?apiKey={KEY}").status == 200
    sim.stagnant = True
    assert get(f"{sim.url}features?apiKey={KEY}").status == 236


def test_empty_and_short_lists_keep_the_features(sim: EdgeSimulator) -> None:
    sim.hide(["FLAG_A"])
    assert keys_listed(sim) == ["FLAG_B"]
    sim.serve_empty()
    assert keys_listed(sim) == []
    assert sorted(f["key"] for f in sim.features()) == ["FLAG_A", "FLAG_B"]
    sim.serve_empty(False)
    sim.hide([])
    assert keys_listed(sim) == ["FLAG_A", "FLAG_B"]


def test_replicas_share_the_environment_and_one_can_lag() -> None:
    with EdgeSimulator([KEY], keepalive_interval=0.3) as a:
        a.set_features([make_feature("A", True, 1)])
        with a.replica() as b:
            reader = SseReader(f"{b.url}features/{KEY}")
            try:
                [reader.next_event() for _ in range(2)]
                assert b.wait_for_streams(1, 5)
                a.push_feature(make_feature("A", False, 2))
                assert json.loads(reader.next_event()[2])["version"] == 2
                b.freeze()
                a.push_feature(make_feature("NEW", True, 1))
                a.delete_feature({"key": "A"})
                assert keys_listed(b) == ["A"] and keys_listed(a) == ["NEW"]
                assert b.features() == a.features()          # the same truth
                b.catch_up()
                caught = {reader.next_event()[1] for _ in range(2)}
                assert caught == {"feature", "delete_feature"}
                assert keys_listed(b) == ["NEW"]
            finally:
                reader.close()


def test_feature_filters_per_key(sim: EdgeSimulator) -> None:
    sim.set_filter(KEY, {"FLAG_B"})
    assert keys_listed(sim) == ["FLAG_B"]
    reader = SseReader(f"{sim.url}features/{KEY}")
    try:
        _, (_, _, data) = [reader.next_event() for _ in range(2)]
        assert [f["key"] for f in json.loads(data)] == ["FLAG_B"]
        assert sim.wait_for_streams(1, 5)
        sim.push_feature(make_feature("FLAG_A", False, 5))   # not visible: not sent
        sim.push_feature(make_feature("FLAG_B", True, 5))
        assert json.loads(reader.next_event()[2])["key"] == "FLAG_B"
    finally:
        reader.close()
    sim.set_filter(KEY, None)
    assert keys_listed(sim) == ["FLAG_A", "FLAG_B"]


def test_http_switches_for_edge_faults(sim: EdgeSimulator) -> None:
    def post(path: str, body: Any = None) -> int:
        return int(urllib3.request("POST", f"{sim.url}_sim/{path}", json=body, retries=False,
                                   timeout=TIMEOUT).status)

    assert post("unknown_key?enabled=1") == 200 and sim.keys_unknown
    assert get(f"{sim.url}features?apiKey={KEY}").status == 404
    assert post("unknown_key?enabled=0") == 200 and not sim.keys_unknown
    assert post("empty") == 200 and keys_listed(sim) == []
    assert post("empty?enabled=0") == 200
    assert post("hide", ["FLAG_A"]) == 200 and keys_listed(sim) == ["FLAG_B"]
    assert post("hide", "FLAG_A") == 400
    assert post("hide", []) == 200
    assert post("retire", {"key": "FLAG_A"}) == 200 and keys_listed(sim) == ["FLAG_B"]
    assert post("unretire", {"key": "FLAG_A"}) == 200
    assert post("poll_only") == 200 and sim.poll_only
    assert post("not_ready") == 200 and sim.not_ready
    assert post("drop_streams") == 200
