"""`python -m worker`: parse flags into a `WorkerConfig`, set up logging once, run the worker."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from celeriac import logs
from celeriac.cli import (
    OneLineParser,
    add_log_flags,
    add_version,
    flag_values,
    program_name,
    usage_error,
)
from celeriac.settings import split_names
from client import signals
from worker import loader, pools
from worker.collector import tune_collector
from worker.config import DEFAULT_BROKER, POOLS, WorkerConfig, worker_id
from worker.errors import SessionRefused, WorkerError
from worker.execution import ExecutionSettings
from worker.logcontext import TaskContext
from worker.runner import Worker

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_COLD_SHUTDOWN = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_FAILED = 4


def build_parser() -> argparse.ArgumentParser:
    """The worker's command-line flags (Celery's names where Celery has them)."""
    parser = OneLineParser(prog=program_name("worker"), description="Run Celeriac tasks.")
    add_version(parser)
    parser.add_argument("--tasks", "-A", required=True, help="task module(s), comma-separated")
    parser.add_argument(
        "--broker",
        "-b",
        help=f"host[:port], grpc://, grpcs:// or [ipv6]:port (default {DEFAULT_BROKER})",
    )
    parser.add_argument("--concurrency", "-c", type=int, help="tasks run at once (default: CPUs)")
    parser.add_argument("--pool", "-P", choices=POOLS, help="execution pool (default: process)")
    parser.add_argument("--queues", "-Q", help="queues to consume, comma-separated")
    add_log_flags(parser, default_level="info")
    parser.add_argument("--hostname", "-n", help="worker id (default: celeriac@HOST:PID)")
    parser.add_argument("--time-limit", type=float, help="default hard time limit (s)")
    parser.add_argument("--soft-time-limit", type=float, help="default soft time limit (s)")
    parser.add_argument("--shutdown-grace", type=float, help="seconds to finish tasks on SIGTERM")
    parser.add_argument(
        "--prefetch-max",
        type=int,
        help="most tasks taken beyond free slots when tasks are short (default 500; 0: none)",
    )
    parser.add_argument(
        "--prefetch-window",
        type=float,
        help="seconds of work (at the measured completion rate) kept prefetched (default 0.1)",
    )
    parser.add_argument(
        "--prefetch-hold", type=float, help="seconds a prefetched task waits before handed back"
    )
    parser.add_argument("--allow-pickle", action="store_true", default=None, help="accept pickle")
    parser.add_argument(
        "--no-redirect-stdouts",
        dest="redirect_stdouts",
        action="store_false",
        default=None,
        help="leave tasks' print() output on stdout/stderr instead of logging it",
    )
    parser.add_argument("--tls-ca", help="PEM CA bundle for the broker's certificate (TLS on)")
    parser.add_argument("--tls-cert", help="PEM client certificate (for mutual TLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--token", help="bearer token of the worker role (CELERIAC_TOKEN keeps it out of ps)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until SIGTERM/SIGINT; returns the process exit code."""
    args = build_parser().parse_args(argv)
    args.tasks = split_names(args.tasks)
    args.queues = split_names(args.queues) if args.queues is not None else None
    fields = [field.name for field in dataclasses.fields(WorkerConfig)]
    flags = flag_values(args, fields, renames={"loglevel": "log_level"})
    try:
        config = WorkerConfig.from_env(flags=flags)
    except ValueError as exc:
        return usage_error(exc)
    log_settings = logs.LogSettings(
        config.loglevel, config.logfile, config.log_format, config.redirect_stdouts
    )
    try:
        logs.configure(log_settings, filters=[TaskContext()])
    except OSError as exc:
        return usage_error(f"cannot open the log file: {exc}")
    try:
        registry = loader.load(config.tasks)
    except WorkerError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    tune_collector()
    try:
        return asyncio.run(_serve(config, registry, log_settings))
    except SessionRefused as exc:
        logger.error("%s", exc)
        return EXIT_REFUSED
    except WorkerError as exc:
        logger.error("worker failed: %s", exc)
        return EXIT_FAILED
    finally:
        pools.stop_helper_processes()  # the fork server too: nothing outlives the worker


async def _serve(
    config: WorkerConfig, registry: loader.Registry, log_settings: logs.LogSettings
) -> int:
    address = config.broker or registry.broker_address() or DEFAULT_BROKER
    worker: Worker | None = None

    def on_event(event: object) -> None:
        assert worker is not None
        worker.on_task_event(event)  # type: ignore[arg-type]

    context = pools.PoolContext(
        modules=config.tasks,
        tasks=registry.tasks,
        settings=ExecutionSettings(hostname=worker_id(config), allow_pickle=config.allow_pickle),
        on_event=on_event,
        logs=log_settings,
    )
    pool = pools.create(config.pool, config.concurrency, context)
    worker = Worker(config, registry, pool, address)
    warm = await worker.run(handle_signals=True)
    signals.worker_shutdown.send(sender=worker)
    logger.info("worker stopped id=%s", worker.worker_id)
    return EXIT_OK if warm else EXIT_COLD_SHUTDOWN
