"""What importing fh_prefork loads: the library, never its optional extras or other rooms."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_library_loads_no_optional_dependency_and_no_harness() -> None:
    """prometheus_client is the exception: when installed it is imported with the runtime,
    in the master before the fork (see runtime._metrics)."""
    _run("import sys, fh_prefork, fh_prefork.runtime, fh_prefork.gunicorn, fh_prefork.uwsgi\n"
         "from fh_prefork.store.file import FileSessionStore\n"
         "loaded = [m for m in ('pymemcache', 'redis', 'openfeature',\n"
         "                      'fh_prefork.bench', 'fh_prefork.testing') if m in sys.modules]\n"
         "assert not loaded, loaded\n")


def test_without_prometheus_client_nothing_is_imported() -> None:
    _run("import sys; sys.modules['prometheus_client'] = None\n"
         "import fh_prefork, fh_prefork.runtime as r\n"
         "assert not r._prometheus_installed()\n"
         "assert 'fh_prefork.prometheus' not in sys.modules\n")
