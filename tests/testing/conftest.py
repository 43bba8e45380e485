"""An application would write ``pytest_plugins = ["fh_prefork.testing.pytest_plugin"]`` in its
root conftest.py; a subfolder's conftest may not, so the fixtures are imported here."""

from fh_prefork.testing.pytest_plugin import featurehub, featurehub_edge  # noqa: F401
