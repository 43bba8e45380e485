"""A throwaway memcached on a free loopback port, started and stopped by pid.

Used by ``fh-prefork bench`` (and usable by tests): the benchmark never touches
a memcached it did not start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from .cluster import free_port, kill_tree, wait_until


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def available() -> bool:
    return shutil.which("memcached") is not None


class Memcached:
    def __init__(self, port: int | None = None, item_size: str = "8m") -> None:
        self.port = port or free_port()
        self.item_size = item_size
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"memcache://{self.address}"

    def start(self) -> Memcached:
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is not installed (apt-get install memcached)")
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
                "-I", self.item_size, "-t", "2"]
        if os.geteuid() == 0:  # memcached refuses to run as root without -u
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self.proc
        try:
            wait_until(lambda: _port_open(self.port) or proc.poll() is not None, 10,
                       f"memcached on port {self.port}")
        except TimeoutError:
            self.stop()
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"memcached exited with {proc.returncode}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def __enter__(self) -> Memcached:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
