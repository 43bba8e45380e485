"""The ``servers`` mark follows what a test uses, not where its file lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import cluster_starter

pytest_plugins = ["pytester"]


def test_a_test_using_a_server_fixture_is_marked_wherever_it_is(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.support.fixtures"]')
    pytester.makepyfile(test_anywhere="""
        import pytest

        @pytest.fixture
        def wrapped(start_cluster):          # through another fixture counts too
            return start_cluster

        def test_direct(start_cluster):
            pass

        def test_through_a_fixture(wrapped):
            pass

        def test_plain(prefix):
            pass
    """)
    result = pytester.runpytest_inprocess("--collect-only", "-q", "-m", "servers")
    collected = [line for line in result.outlines if "::" in line]
    assert collected == ["test_anywhere.py::test_direct",
                         "test_anywhere.py::test_through_a_fixture"], result.outlines


def test_a_test_that_starts_a_cluster_unmarked_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="not marked 'servers'"), \
            cluster_starter({}, tmp_path):
        pass


def test_every_server_fixture_exists() -> None:
    from tests.examples import conftest as examples
    from tests.support import fixtures

    for name in fixtures.SERVER_FIXTURES:
        assert hasattr(fixtures, name) or hasattr(examples, name), name
