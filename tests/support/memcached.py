"""A real memcached on a free loopback port, started and stopped by pid."""

from __future__ import annotations

import os
import shutil
import subprocess

from .procs import free_port, kill_tree, port_open, wait_for


class Memcached:
    def __init__(self, port: int | None = None, item_size: str = "1m") -> None:
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
            raise RuntimeError("memcached is not installed: run `bash scripts/test` or "
                               "`apt-get install memcached`")
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
                "-I", self.item_size, "-t", "2"]
        if os.geteuid() == 0:  # memcached refuses to run as root without -u
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 10,
                 what=f"memcached on port {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"memcached exited with {self.proc.returncode}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None

    def restart(self) -> None:
        """Stop and start empty on the same port (what a memcached restart looks like)."""
        self.stop()
        wait_for(lambda: not port_open(self.port), 5, what="memcached port to close")
        self.start()

    def __enter__(self) -> Memcached:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
