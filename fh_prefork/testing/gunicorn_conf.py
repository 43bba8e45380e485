"""gunicorn config used by the demo, the benchmark and the tests: exactly what users write."""

from fh_prefork.gunicorn import on_reload, on_starting, post_fork, worker_exit  # noqa: F401

graceful_timeout = 10
# gunicorn >= 24 opens a control socket at a fixed per-user path; two masters on one
# host (the two-"host" tests) would fight over it. Older gunicorn ignores the name.
control_socket_disable = True
