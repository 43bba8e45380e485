"""A server program on a free loopback port, waited for with a bound and stopped by pid.

The common part of the throwaway memcached and Redis launchers, so both start,
fail and clean up the same way: a subclass only says which program to run and
with what arguments.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from typing import ClassVar, TypeVar

from .cluster import free_port, kill_tree, wait_until

_S = TypeVar("_S", bound="LocalServer")


def port_open(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class LocalServer:
    """One server process on 127.0.0.1; subclasses name the program and build its arguments."""

    #: the program, looked up on PATH at each start
    program: ClassVar[str]
    #: how to install it, for the error when it is missing
    install_hint: ClassVar[str]

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def prepare(self, binary: str) -> list[str]:
        """Make ready what one run needs and return its command line (``binary`` first)."""
        raise NotImplementedError

    def start(self: _S) -> _S:
        """Run the program and wait (10 s at most) until its port answers or it exits."""
        binary = shutil.which(self.program)
        if binary is None:
            raise RuntimeError(f"{self.program} is not installed ({self.install_hint})")
        self.proc = subprocess.Popen(self.prepare(binary), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        proc = self.proc
        try:
            wait_until(lambda: port_open(self.port) or proc.poll() is not None, 10,
                       f"{self.program} on port {self.port}")
        except TimeoutError:
            self.stop()
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"{self.program} exited with {proc.returncode}")
        return self

    def stop(self) -> None:
        """Kill the process and anything it started, by pid; a no-op when not running."""
        if self.proc is not None:
            kill_tree(self.proc.pid)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
