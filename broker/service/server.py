"""The gRPC server: wiring services, health and reflection, and graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import uuid

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker.clock import Clock
from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.journal.datadir import DataDir
from broker.journal.journal import WHAT_A_CRASH_LOSES, Journal
from broker.journal.sqlite_store import SQLiteStore
from broker.journal.store import Store, StoreError
from broker.journal.store_url import is_postgres, redacted
from broker.service.admin_service import AdminService
from broker.service.auth import AuthInterceptor
from broker.service.decoding import add_service
from broker.service.runtime import Runtime
from broker.service.security import ServerSecurity, exposure_warnings, load_security
from broker.service.task_service import TaskService
from broker.service.web import WebServer
from broker.service.worker_service import WorkerService
from celeriac.address import bracketed
from celeriac.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    client_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


def keepalive_options(config: BrokerConfig) -> list[tuple[str, int]]:
    """Keepalive: HTTP/2 pings from gRPC itself on every connection.

    A peer that stops answering them for ``ping_timeout`` (a dead host, a cut network, a frozen
    process) loses its connection, so its streams end and a worker's leases are requeued after
    the grace period.

    These pings are sent and answered inside gRPC's C core, without waking Python at either
    end, so an idle worker costs the broker almost nothing. Pinging 100 idle workers from
    Python every 2 s took ~2% of a core here; these take ~0.3%. Python-level pings remain for
    workers holding tasks (see WorkerService), where a live connection is not enough: their
    event loop must be alive too.
    """
    interval_ms = max(1, round(config.ping_interval * 1000))
    # Answer due within the rest of the ping timeout (at least one interval).
    answer_ms = max(interval_ms, round((config.ping_timeout - config.ping_interval) * 1000))
    return [
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", answer_ms),
        # Newer gRPC cores wait this long for any ping's answer, keepalive or not (default 60 s).
        ("grpc.http2.ping_timeout_ms", answer_ms),
        # By default gRPC stops pinging a connection after two pings with no data in between.
        ("grpc.http2.max_pings_without_data", 0),
        # Clients' own keepalive pings (every 2 min from ours, client/transport.py) on a session
        # stream that carries nothing for a while: gRPC's default policy (5 min) counts them as
        # abuse and ends the connection with "too_many_pings". Accept one every 10 s.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


# How long gRPC waits for handlers after the shutdown grace, once they have been told to end.
_STOP_MARGIN = 1.0


# gRPC sizes each stream's flow-control window by probing the bandwidth-delay product with extra
# HTTP/2 pings while data flows. On a round trip of small messages those pings cost 40-80 µs
# of p50 here (A/B, 4 rounds each, same minutes; throughput unchanged). A fixed 1 MiB window
# stands in for the tuning: a group chunk or a result batch is not held back by it unless the
# link's bandwidth-delay product is over 1 MiB (8 ms at 1 Gbit/s). The worker and the client
# set the same on their channels.
FLOW_CONTROL_OPTIONS = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1 << 20))


class BrokerServer:
    """One broker: the core, its runtime and the grpc.aio server, on the running loop.

    Args:
        config: What to bind and every limit.
        clock: Time source for the core (the system clock when omitted).
        store: The journal's store; SQLite in the data dir when omitted (unused when
            ``config.memory_only``).
        security: TLS credentials and tokens (read from ``config`` when omitted).
    """

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock | None = None,
        store: Store | None = None,
        security: ServerSecurity | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._store = store
        self._data_dir: DataDir | None = None
        self._security = security
        self._server: grpc.aio.Server | None = None
        # grpc-stubs does not declare the asyncio servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.address = ""
        self.runtime: Runtime | None = None
        self.web: WebServer | None = None
        # This broker's id among brokers sharing a database (the owner of its rows).
        self._broker_id = uuid.uuid4().hex[:16]

    async def start(self) -> str:
        """Bind, start serving and return the address actually bound ("host:port").

        Raises:
            StoreError: The data dir is locked by another broker, or its journal is corrupt or
                of an unknown format version (nothing is served then).
        """
        config = self.config
        security = self._security or load_security(config)
        runtime = Runtime(Broker(config, self._clock), asyncio.get_running_loop())
        self.runtime = runtime
        # No interceptor without tokens: it would only cost every call its turn.
        auth = (
            [AuthInterceptor(security.tokens, runtime.refusals)] if len(security.tokens) else None
        )
        server = grpc.aio.server(
            options=[
                # Two brokers must never share a port by accident (tests bind port 0).
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                *keepalive_options(config),
                *FLOW_CONTROL_OPTIONS,
            ],
            interceptors=auth,
        )
        refusals = runtime.refusals
        add_service(
            server,
            client_pb2_grpc.add_TaskServiceServicer_to_server,
            TaskService(runtime),
            refusals,
        )
        add_service(
            server,
            worker_pb2_grpc.add_WorkerServiceServicer_to_server,
            WorkerService(runtime),
            refusals,
        )
        add_service(
            server,
            admin_pb2_grpc.add_AdminServiceServicer_to_server,
            AdminService(runtime),
            refusals,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        bind_host = bracketed(config.host.removeprefix("[").removesuffix("]"))
        port = _bind(server, bind_host, config.port, security.credentials)
        if config.shared:  # periodic ticks run on the cluster's leader only (broker.cluster)
            runtime.broker.periodic.follow()
        # After binding (a taken port is the one error line) and before serving anyone.
        self._open_journal(runtime)
        self.address = f"{bind_host}:{port}"
        if config.shared:
            await self._join_cluster(runtime)
        if config.http_port >= 0:
            # After recovery, so that replayed tasks are not counted as new events.
            self.web = _serve_http(runtime, config, security)
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info("celeriac broker listening on %s (%s)", self.address, security.describe())
        for warning in exposure_warnings(config, security):
            logger.warning("%s", warning)
        return self.address

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully; the grace only waits for tasks that workers are running.

        At once: new calls and submits are refused with UNAVAILABLE (reason SHUTTING_DOWN),
        held result waits are answered the same way and client session streams end, so
        clients ask the restarted broker; health turns NOT_SERVING and workers are told to
        drain. Outcomes that arrive meanwhile are applied. Once every worker stream has ended,
        or the grace is over (those streams are then ended with UNAVAILABLE), the server stops.

        Args:
            grace: Seconds workers may take to finish; the configured shutdown grace when None.
        """
        if self._server is None or self.runtime is None:
            return
        server, runtime, self._server = self._server, self.runtime, None
        grace = self.config.shutdown_grace if grace is None else grace
        runtime.begin_shutdown()
        runtime.broker.workers.drain("broker shutting down")
        runtime.changed()
        await self._health.enter_graceful_shutdown()
        # gRPC refuses new calls and closes the listener at once; its own grace is a backstop
        # behind ours, which ends the worker streams cleanly instead of cancelling handlers.
        stopping = asyncio.ensure_future(server.stop(grace + _STOP_MARGIN))
        if not await runtime.wait_streams_closed(grace):
            logger.warning(
                "shutdown grace (%.1f s) over: ending %d worker streams with unfinished tasks",
                grace,
                runtime.stream_count,
            )
            runtime.end_streams("the broker stopped before this worker finished")
        await stopping
        if self.web is not None:
            self.web.stop()
        runtime.close()
        if runtime.journal is not None:
            await runtime.journal.close()
        if runtime.cluster is not None:
            await runtime.cluster.stop()
        if self._data_dir is not None:
            self._data_dir.unlock()
        logger.info("celeriac broker stopped")

    async def _join_cluster(self, runtime: Runtime) -> None:
        """Take this broker's part among the brokers sharing the database (``--shared``)."""
        from broker.cluster.coordinator import Cluster
        from broker.cluster.database import ClusterDatabase

        database = ClusterDatabase(self.config.store, self._broker_id)
        cluster = Cluster(runtime, database, self.address, self.config.broker_timeout)
        try:
            await cluster.start()
        except Exception as error:
            await database.close()
            raise StoreError(f"cannot join the brokers sharing {database.shown}: {error}") from None
        runtime.cluster = cluster

    def _journal_store(self) -> tuple[DataDir | None, Store, str]:
        """The store to open (PostgreSQL for a ``--store`` URL), its data dir, and where it is.

        The data dir is locked here; a PostgreSQL store takes its own lock when opened.
        """
        config = self.config
        if is_postgres(config.store):
            try:
                from broker.journal.postgres_store import PostgresStore
            except ImportError:
                raise StoreError(
                    "--store postgresql://... needs psycopg: pip install 'celeriac[postgresql]'"
                ) from None
            store = self._store or PostgresStore(
                config.store,
                config.fsync,
                migrate_on_start=config.migrate,
                owner=self._broker_id if config.shared else None,
            )
            return None, store, redacted(config.store)
        data_dir = DataDir(config.data_dir)
        data_dir.lock()
        return data_dir, self._store or SQLiteStore(data_dir.path, config.fsync), str(data_dir.path)

    def _open_journal(self, runtime: Runtime) -> None:
        """Lock the data dir, open the store and restore what it holds (not in memory-only)."""
        config = self.config
        if config.memory_only:
            logger.info(
                "memory-only mode: nothing is written to disk; a restart or crash loses every "
                "task and result"
            )
            return
        data_dir, store, where = self._journal_store()
        try:
            store.open()
            logger.info(
                "durable mode: journal in %s, fsync=%s: %s",
                where,
                config.fsync,
                WHAT_A_CRASH_LOSES[config.fsync],
            )
            journal = Journal(store, runtime.broker, config.fsync, asyncio.get_running_loop())
            recovered = journal.recover()
        except BaseException:
            if data_dir is not None:
                data_dir.unlock()
            raise
        self._data_dir = data_dir
        runtime.journal = journal
        runtime.changed()  # arms the loop timer for what recovery scheduled
        logger.info(
            "recovered %d tasks in %.2f s: %d queued, %d scheduled, %d leased, %d finished, "
            "%d waiting",
            recovered.total,
            recovered.seconds,
            recovered.queued,
            recovered.scheduled,
            recovered.leased,
            recovered.finished,
            recovered.waiting,
        )


class CannotListen(RuntimeError):
    """The broker cannot bind its address (the port is taken, or the host is not this machine's)."""


def _serve_http(runtime: Runtime, config: BrokerConfig, security: ServerSecurity) -> WebServer:
    host = config.http_host.removeprefix("[").removesuffix("]")
    address = f"{bracketed(host)}:{config.http_port}"
    try:
        web = WebServer.start(runtime, config, security.tokens)
    except OSError as error:
        raise CannotListen(f"cannot serve HTTP on {address}: {error.strerror}") from None
    url = f"{web.scheme}://{bracketed(host)}:{web.port}"
    logger.info("dashboard on %s/ and metrics on %s/metrics", url, url)
    return web


def _bind(
    server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind ``host:port`` and return the port bound, or raise CannotListen naming the address.

    The address is tried with a plain socket first: gRPC's own failure is a generic
    RuntimeError, after its C core logged lines of its own to stderr.
    """
    address = f"{host}:{port}"
    if port != 0:
        _probe(host.removeprefix("[").removesuffix("]"), port, address)
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        raise CannotListen(f"cannot listen on {address}") from None


def _probe(host: str, port: int, address: str) -> None:
    try:
        candidates = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as error:
        raise CannotListen(f"cannot listen on {address}: {error.strerror}") from None
    for family, kind, proto, _, sockaddr in candidates:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a port left in TIME_WAIT by an earlier broker is free to use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                reason = "the port is in use" if error.errno == errno.EADDRINUSE else error.strerror
                raise CannotListen(f"cannot listen on {address}: {reason}") from None


async def serve(config: BrokerConfig, security: ServerSecurity | None = None) -> None:
    """Run a broker until SIGTERM or SIGINT, then shut it down gracefully."""
    server = BrokerServer(config, security=security)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("shutting down (grace %.1f s)", config.shutdown_grace)
    await server.stop()
