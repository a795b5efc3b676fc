"""Several Celeriac brokers sharing one PostgreSQL database (``serve --store ... --shared``).

`python -m bench --postgres` adds ``celeriac-pg1``, ``celeriac-pg2`` and ``celeriac-pg3``: one,
two and three brokers over one PostgreSQL server started for the system (the tests' own
throwaway server, tests/postgres.py, from Debian's packages). The client and the workers take
the list of brokers, each starting from a different one (client: the first; worker i: broker i
modulo the count), so submits, claims and results cross brokers. One server serves the whole
run, a fresh database per start. The report's ratio column then reads the embedded broker over
each; the database's size per task is logged at stop.
"""

from __future__ import annotations

import atexit
import logging

import psycopg

from bench.processes import ManagedProcess
from bench.systems.celeriac_system import LISTENING, CeleriacSystem
from tests.postgres import PostgresServer

logger = logging.getLogger(__name__)

# One server for the whole run (each start takes a fresh database on it), removed at exit.
_SERVERS: list[PostgresServer] = []


def _server() -> PostgresServer:
    if not _SERVERS:
        _SERVERS.append(PostgresServer())
        atexit.register(_SERVERS[0].destroy)
    return _SERVERS[0]


class CeleriacClusterSystem(CeleriacSystem):
    """``brokers`` brokers with --shared over one PostgreSQL database."""

    def __init__(self, brokers: int) -> None:
        super().__init__(f"celeriac-pg{brokers}")
        self.count = brokers
        self.database = ""
        self.others: list[ManagedProcess] = []
        self.addresses: list[str] = []

    def start_broker(self) -> None:
        self.database = _server().new_database()
        migrate = ManagedProcess.python(
            "migrate", ["-m", "broker", "migrate", "--store", self.database]
        )
        migrate.wait_for_line(r"at schema version")
        flags = ["--store", self.database, "--shared", "--log-level", "info"]
        brokers = [
            ManagedProcess.python(
                f"broker-{index}", ["-m", "broker", "serve", "--port", "0", *flags]
            )
            for index in range(self.count)
        ]
        self.addresses = [broker.wait_for_line(LISTENING).group(1) for broker in brokers]
        self.broker, self.others = brokers[0], brokers[1:]
        self.address = self.addresses[0]

    def url(self) -> str:
        return ",".join(self.addresses)

    def worker_url(self, index: int) -> str:
        start = index % self.count
        return ",".join(self.addresses[start:] + self.addresses[:start])

    def stop(self) -> None:
        super().stop()
        for broker in self.others:
            broker.stop()
        self.others = []
        if self.database:
            self._log_size()
            self.database = ""

    def _log_size(self) -> None:
        try:
            with psycopg.connect(self.database) as conn:
                row = conn.execute(
                    "SELECT pg_total_relation_size('celeriac_tasks'), count(*) FROM celeriac_tasks"
                ).fetchone()
        except psycopg.Error:
            return
        if row is not None and row[1]:
            logger.info(
                "%s: celeriac_tasks holds %d rows in %d bytes (%.0f bytes per row, indexes "
                "included)",
                self.name,
                row[1],
                row[0],
                row[0] / row[1],
            )
