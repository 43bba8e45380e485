"""gunicorn config for the plain-SDK probe app: no fh_prefork at all."""

from typing import Any

graceful_timeout = 10
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    from fh_prefork.bench import plain_app

    plain_app.start()
