"""Several brokers over one PostgreSQL database (``serve --store postgresql://... --shared``).

``coordinator`` is a broker's part in the cluster (the shared pool of queued tasks, claims,
results for waiters on other brokers, heartbeats and take-over); ``database`` holds its SQL.
docs/postgresql.md describes the design and what it does not keep yet.
"""
