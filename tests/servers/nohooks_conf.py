"""gunicorn config that forgets fh_prefork's hooks: what a misconfigured deployment runs."""

graceful_timeout = 10
control_socket_disable = True
