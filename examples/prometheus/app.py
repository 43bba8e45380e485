"""A Flask app whose /metrics shows fh_prefork's metrics from every gunicorn worker.

Run: ``PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) gunicorn -c gunicorn.conf.py app:app``
(the folder must exist and be empty at start; gunicorn.conf.py clears a dead
worker's gauges).
"""

import os

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import fh_prefork
from fh_prefork.prometheus import MultiProcessCollector

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, object]:
    state = fh_prefork.context().feature("NEW_CHECKOUT")
    return {"flag": "NEW_CHECKOUT", "enabled": bool(state.get_flag), "value": state.get_value,
            "version": state.get_version, "pid": os.getpid()}


@app.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()           # a fresh one per scrape: multiprocess mode
    MultiProcessCollector(registry)          # the stock one, minus a 500 while a worker starts
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
