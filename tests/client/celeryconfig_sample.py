"""A Celery configuration module as a Celery project has it (for test_conf.py)."""

import os

broker_url = "grpc://broker.internal:7475"
result_backend = "redis://localhost:6379/1"  # Celery's; Celeriac keeps results at the broker
task_default_queue = "celery"
task_routes = {"proj.reports.*": {"queue": "reports"}}
worker_send_task_events = True  # a Celery worker setting: skipped with a warning
task_always_eager = False
timezone = "Europe/Paris"  # crontabs are read in it
HELPER_CONSTANT = os.sep  # not a setting: not read


class DjangoSettings:
    """What ``django.conf:settings`` looks like with ``namespace="CELERY"``."""

    CELERY_BROKER_URL = "localhost:9999"
    CELERY_TASK_ALWAYS_EAGER = True
    DEBUG = True  # another app's setting: not read
