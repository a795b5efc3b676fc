"""Benchmarks for Celeriac, side by side with Celery on Redis (`python -m bench --help`)."""
