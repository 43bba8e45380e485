"""Minimal Django settings for the fh_prefork example.

Where the hooks go: not here. Django settings are imported in every worker,
after the fork; the prefork hooks belong to the server:

* gunicorn: ``gunicorn.conf.py`` imports ``fh_prefork.gunicorn``'s hooks
  (see ``examples/django/gunicorn.conf.py``);
* uWSGI: ``import = fh_prefork.uwsgi`` in the ini, or ``import fh_prefork.uwsgi``
  at the top of ``wsgi.py``.

fh_prefork reads its settings from the environment (FEATUREHUB_EDGE_URL,
FEATUREHUB_API_KEY, FH_PREFORK_STORE, ...). To set them from Django settings
instead, call ``fh_prefork.configure(...)`` here, e.g.::

    import fh_prefork
    fh_prefork.configure(store="memcache://cache:11211", refresh_seconds=2)
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
