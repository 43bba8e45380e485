"""Flask example: one endpoint that serves a flag from the shared store.

    cd examples/flask
    FEATUREHUB_EDGE_URL=http://localhost:8085 FEATUREHUB_API_KEY='p/env/key*secret' \
        gunicorn -c gunicorn.conf.py app:app

Settings come from the environment (FEATUREHUB_EDGE_URL, FEATUREHUB_API_KEY,
FH_PREFORK_STORE, ...): see ``fh-prefork settings``.
"""

import os
from typing import Any

from flask import Flask, jsonify

import fh_prefork
import fh_prefork.uwsgi  # wires uWSGI workers (examples/uwsgi); no-op elsewhere

FLAG = os.environ.get("EXAMPLE_FLAG", "NEW_CHECKOUT")

app = Flask(__name__)


@app.get("/")
def index() -> Any:
    feature = fh_prefork.context().feature(FLAG)  # memory only: no I/O on the request path
    return jsonify(pid=os.getpid(), flag=FLAG, value=feature.get_value,
                   version=feature.get_version, enabled=bool(feature.get_value))


@app.get("/health")
def health() -> Any:
    status = fh_prefork.status()
    ok = status.get("role") == "worker" and status.get("features", 0) > 0
    return jsonify(ok=ok, pid=os.getpid(), edge=status.get("edge_state"),
                   features=status.get("features")), (200 if ok else 503)
