"""Prometheus support is optional: without prometheus_client nothing is imported."""

from __future__ import annotations


def test_without_prometheus_client_nothing_is_imported() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import fh_prefork, fh_prefork.runtime as r\n"
            "assert not r._prometheus_installed()\n"
            "assert 'fh_prefork.prometheus' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
