"""The package's throwaway memcached, plus what only tests need: a restart on the same port."""

from __future__ import annotations

from fh_prefork.testing.memcached import Memcached as _Memcached

from .procs import port_open, wait_for


class Memcached(_Memcached):
    def __init__(self, port: int | None = None, item_size: str = "1m") -> None:
        super().__init__(port=port, item_size=item_size)

    def restart(self) -> None:
        """Stop and start empty on the same port (what a memcached restart looks like)."""
        self.stop()
        wait_for(lambda: not port_open(self.port), 5, what="memcached port to close")
        self.start()
