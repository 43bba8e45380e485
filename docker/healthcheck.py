"""Container health check: the app answers /health and `fh-prefork status` finds the store healthy.

Exit 0 when both hold, 1 otherwise. ``HEALTH_URL`` names the endpoint; the store
check uses the same environment as the app (FH_PREFORK_STORE, FEATUREHUB_API_KEY).
Set ``HEALTH_SKIP_STORE=1`` to check only the HTTP endpoint.
"""

import json
import os
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("HEALTH_URL", "http://127.0.0.1:8000/health")
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            body = json.loads(resp.read())
    except Exception as err:  # refused, 503, timeout, not JSON: all unhealthy
        print(f"unhealthy: {url}: {err}", file=sys.stderr)
        return 1
    if not body.get("ok"):
        print(f"unhealthy: {url} answered {body}", file=sys.stderr)
        return 1
    if os.environ.get("HEALTH_SKIP_STORE") == "1":
        return 0
    from fh_prefork.cli import main as cli

    code = cli(["status", "--json"])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
