"""A Celery-shaped project: `celery.py` creates the app and autodiscovers its packages' tasks."""
