"""A test CA, server and client certificates (openssl), and memcached started with TLS (-Z)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fh_prefork.testing.memcached import Memcached


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_pki(folder: Path, server_name: str = "localhost") -> Pki:
    """A CA made for this test, a server certificate for ``server_name``, a client one."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
         "-subj", "/CN=fh-prefork test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    for who, cn, ext in (("server", server_name, f"subjectAltName=DNS:{server_name}"),
                         ("client", "fh-prefork client", "extendedKeyUsage=clientAuth")):
        _run("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={cn}",
             cwd=folder)
        (folder / f"{who}.ext").write_text(ext + "\n")
        _run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{who}.pem", "-days", "1", "-extfile", f"{who}.ext",
             cwd=folder)
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key",
               folder / "client.pem", folder / "client.key")


def tls_available() -> bool:
    if shutil.which("openssl") is None or shutil.which("memcached") is None:
        return False
    out = subprocess.run(["memcached", "-h"], capture_output=True, text=True).stdout
    return "--enable-ssl" in out


class TlsMemcached(Memcached):
    """memcached that speaks only TLS and requires a client certificate from the test CA."""

    def __init__(self, pki: Pki) -> None:
        super().__init__(item_size="1m")
        self.pki = pki

    def start(self) -> TlsMemcached:
        binary = shutil.which("memcached")
        assert binary is not None
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
                "-t", "2", "-Z", "-o",
                f"ssl_chain_cert={self.pki.server_cert},ssl_key={self.pki.server_key},"
                f"ssl_ca_cert={self.pki.ca},ssl_verify_mode=2"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from fh_prefork.testing.memcached import _port_open
        from tests.support.procs import wait_for
        wait_for(lambda: _port_open(self.port) or self.proc is None
                 or self.proc.poll() is not None, 10, what="TLS memcached")
        assert self.proc.poll() is None, "memcached -Z exited"
        return self

    def url(self, host: str = "localhost", **params: str) -> str:  # type: ignore[override]
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"memcache://{host}:{self.port}" + (f"?{query}" if query else "")
