"""The benchmark's section names, apart from the benchmark: the CLI's parser lists them on
every run, and ``fh-prefork status`` (the Docker health check) must not load the benchmark."""

from __future__ import annotations

SECTIONS = ("storm", "same", "propagation", "cold", "memory", "read", "edge", "openfeature",
            "push")
