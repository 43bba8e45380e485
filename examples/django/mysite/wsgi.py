import os

from django.core.wsgi import get_wsgi_application

import fh_prefork.uwsgi  # noqa: F401  # wires uWSGI workers; does nothing under gunicorn

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
