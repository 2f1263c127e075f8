"""The Django project: settings, URLs, the Celery app and the embedded services."""
from workbench.celery import app as celery_app

__all__ = ["celery_app"]
