"""FastAPI example, served by gunicorn with uvicorn's worker class.

    cd examples/fastapi
    FEATUREHUB_EDGE_URL=http://localhost:8085 FEATUREHUB_API_KEY='p/env/key*secret' \
        gunicorn -c gunicorn.conf.py app:app
"""

import os
from typing import Any

from fastapi import FastAPI

import fh_prefork

FLAG = os.environ.get("EXAMPLE_FLAG", "NEW_CHECKOUT")

app = FastAPI()


@app.get("/")
async def index() -> dict[str, Any]:
    feature = fh_prefork.context().feature(FLAG)  # memory only: safe inside the event loop
    return {"pid": os.getpid(), "flag": FLAG, "value": feature.get_value,
            "version": feature.get_version, "enabled": bool(feature.get_value)}
