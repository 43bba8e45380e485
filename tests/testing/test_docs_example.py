# The pytest plugin example of docs/testing.md, which includes this file as it is:
# what the page shows is what the suite runs. An application's root conftest.py says
#     pytest_plugins = ["fh_prefork.testing.pytest_plugin"]
# (this suite's tests/testing/conftest.py imports the fixtures instead).
from __future__ import annotations

import flask
import pytest
from flask.testing import FlaskClient

import fh_prefork
from fh_prefork.testing.pytest_plugin import FeatureHubFlags

app = flask.Flask(__name__)


@app.get("/")
def index() -> dict[str, bool]:
    return {"enabled": fh_prefork.context().feature("NEW_CHECKOUT").is_enabled}


@pytest.fixture
def client() -> FlaskClient:
    return app.test_client()


def test_new_checkout(featurehub: FeatureHubFlags, client: FlaskClient) -> None:
    featurehub.set("NEW_CHECKOUT", True)      # returns once the app serves it
    assert client.get("/").json == {"enabled": True}
    featurehub.set("NEW_CHECKOUT", False)
    assert client.get("/").json == {"enabled": False}
    featurehub.delete("NEW_CHECKOUT")
    assert client.get("/").json == {"enabled": False}
