"""memcached over TLS: a real ``memcached -Z`` with a CA made by the test and client certificates.

Before: ``memcache://`` had no TLS; a URL with TLS parameters was refused as a bad port.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fh_prefork.store.memcache import make_client, parse_url
from fh_prefork.store.options import MemcacheSessionStoreOptions
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.faults.test_bad_settings import run_master
from tests.hardening.tls import Pki, TlsMemcached, make_pki, tls_available
from tests.support.procs import wait_for
from tests.support.servers import versions

pytestmark = pytest.mark.skipif(not tls_available(), reason="memcached without TLS, or no openssl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_memcached(pki: Pki) -> Iterator[TlsMemcached]:
    server = TlsMemcached(pki).start()
    yield server
    server.stop()


def client_params(pki: Pki) -> dict[str, str]:
    return {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}


def test_workers_share_state_through_tls_memcached(
        start_cluster: Callable[..., Cluster], edge: EdgeSimulator,
        tls_memcached: TlsMemcached, pki: Pki) -> None:
    url = tls_memcached.url(**client_params(pki))
    cluster = start_cluster("gunicorn", 3, env={"FH_PREFORK_STORE": url})
    assert edge.wait_for_streams(3, timeout=10)
    edge.push_feature(make_feature("FLAG", False, 2), stream_id=edge.streams()[0].id)
    wait_for(lambda: set(versions(cluster).values()) == {2}, 5, what="update through the store")
    for status in cluster.statuses().values():
        assert "(TLS)" in status["store"]["backend"], status["store"]
    wait_for(lambda: all(s["store"]["counters"]["refreshes"] >= 1
                         for s in cluster.statuses().values()), 10,
             what="every worker to refresh over TLS")

    # the state is in this memcached, readable only over TLS with a client certificate
    servers, tls = parse_url(url)
    reader = make_client(servers, MemcacheSessionStoreOptions(), tls)
    prefix = cluster.env["FH_PREFORK_PREFIX"]
    assert b'"FLAG"' in reader.get(f"{prefix}_env-srv")
    reader.close()


def test_hostname_is_checked_by_default(tls_memcached: TlsMemcached, pki: Pki) -> None:
    options = MemcacheSessionStoreOptions(timeout=2, connect_timeout=2)
    # the certificate names localhost, not 127.0.0.1
    servers, tls = parse_url(tls_memcached.url("127.0.0.1", **client_params(pki)))
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        make_client(servers, options, tls).get("x")
    servers, tls = parse_url(tls_memcached.url("127.0.0.1", check_hostname="false",
                                               **client_params(pki)))
    assert make_client(servers, options, tls).get("x") is None
    # without a client certificate the server (ssl_verify_mode=2) refuses the handshake
    servers, tls = parse_url(tls_memcached.url(ca=str(pki.ca)))
    with pytest.raises((ssl.SSLError, OSError)):
        make_client(servers, options, tls).get("x")


@pytest.mark.servers
@pytest.mark.parametrize("query, problem", [
    ("ca=/nonexistent/ca.pem", "does not exist"),
    ("key=/tmp/k.pem", "key= needs cert="),
    ("cafile=/x", "unknown"),
    ("ca=relative.pem", "absolute path"),
])
def test_master_refuses_bad_tls_settings_in_one_line(query: str, problem: str,
                                                     tmp_path: Path) -> None:
    result = run_master("gunicorn", {"FH_PREFORK_STORE": f"memcache://localhost:1?{query}"},
                        tmp_path)
    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if line.startswith("fh_prefork:")]
    assert result.returncode != 0 and len(ours) == 1, output
    assert "FH_PREFORK_STORE" in ours[0] and problem in ours[0], ours[0]
