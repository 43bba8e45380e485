"""A throwaway memcached on a free loopback port, started and stopped by pid.

Used by ``fh-prefork bench`` (and usable by tests): the benchmark never touches
a memcached it did not start.
"""

from __future__ import annotations

import os
import shutil

from ._server import LocalServer, port_open

#: the old private name, still imported by tests that start memcached their own way
_port_open = port_open


def available() -> bool:
    return shutil.which("memcached") is not None


class Memcached(LocalServer):
    program = "memcached"
    install_hint = "apt-get install memcached"

    def __init__(self, port: int | None = None, item_size: str = "8m") -> None:
        super().__init__(port)
        self.item_size = item_size

    @property
    def url(self) -> str:
        return f"memcache://{self.address}"

    def prepare(self, binary: str) -> list[str]:
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
                "-I", self.item_size, "-t", "2"]
        if os.geteuid() == 0:  # memcached refuses to run as root without -u
            args += ["-u", "root"]
        return args
