"""The suite's fixtures are in one plugin module, tests/support/fixtures.py; the testing kit's
pytest plugin (what an application registers) is loaded too, for tests/testing."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.support")

from tests.support.fixtures import API_KEY, make_config  # noqa: E402  # after the line above

pytest_plugins = ["tests.support.fixtures", "fh_prefork.testing.pytest_plugin"]

__all__ = ["API_KEY", "make_config"]
