"""OpenFeature example: a Flask app that reads its flag only through the OpenFeature API.

    cd examples/openfeature
    FEATUREHUB_EDGE_URL=http://localhost:8085 FEATUREHUB_API_KEY='p/env/key*secret' \
        gunicorn -c gunicorn.conf.py app:app
    curl 'localhost:8000/?user=alice&country=new_zealand'

The provider is fh_prefork's: every gunicorn worker reads its own copy of the shared
state, with the same server hooks as any fh_prefork app (gunicorn.conf.py). Settings
come from the environment (FEATUREHUB_EDGE_URL, FEATUREHUB_API_KEY, FH_PREFORK_STORE,
...): see ``fh-prefork settings``.
"""

import logging
import os
from typing import Any

from flask import Flask, jsonify, request
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

import fh_prefork.uwsgi  # noqa: F401  # wires uWSGI workers; no-op elsewhere
from fh_prefork.openfeature import FeatureHubProvider

FLAG = os.environ.get("EXAMPLE_FLAG", "NEW_CHECKOUT")
log = logging.getLogger("example")

api.set_provider(FeatureHubProvider())
client = api.get_client()
changes = 0


def on_change(details: EventDetails) -> None:
    global changes
    changes += 1
    log.warning("worker %d: flags changed: %s", os.getpid(), details.flags_changed)


client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)

app = Flask(__name__)


@app.get("/")
def index() -> Any:
    # the targeting key is FeatureHub's user key; any other query parameter is an attribute
    attributes = {k: v for k, v in request.args.items() if k != "user"}
    context = EvaluationContext(request.args.get("user"), attributes)
    details = client.get_boolean_details(FLAG, False, context)
    return jsonify(pid=os.getpid(), flag=FLAG, value=details.value,
                   version=details.flag_metadata.get("version"), enabled=details.value,
                   reason=details.reason, variant=details.variant,
                   error=details.error_code, changes=changes)


@app.get("/health")
def health() -> Any:
    status = client.get_provider_status().value
    return jsonify(ok=status == "READY", status=status, pid=os.getpid()), \
        (200 if status == "READY" else 503)
