"""WSGI entry point (gunicorn workbench.wsgi)."""
import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")
application = get_wsgi_application()

# The objects made while loading the app live as long as the process; freezing
# them keeps full garbage collections from walking them again. Without it a
# full collection (~85k objects, 40-50 ms) landed on about one request in 300
# and set the next-item p99 (bench/queue).
gc.freeze()
