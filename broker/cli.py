"""``python -m broker``: ``serve`` runs the daemon; the other commands talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Sequence

from broker import admin_cli
from broker.collector import thaw_periodically, tune_collector
from broker.config import FSYNC_POLICIES, BrokerConfig
from broker.journal import check
from broker.journal.store import StoreError
from broker.service.security import ServerSecurity, load_security
from broker.service.server import CannotListen, serve
from celeriac import logs
from celeriac.cli import (
    EXIT_USAGE,
    OneLineParser,
    add_log_flags,
    add_version,
    flag_values,
    program_name,
    usage_error,
)
from celeriac.settings import InvalidSetting

RET_OK = 0
RET_USAGE = EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = OneLineParser(prog=program_name("broker"), description="Celeriac broker")
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the broker daemon")
    serve_parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one")
    add_log_flags(serve_parser, default_level="info")
    serve_parser.add_argument("--max-payload-bytes", type=int, help="largest task argument")
    serve_parser.add_argument("--max-message-bytes", type=int, help="largest gRPC message")
    serve_parser.add_argument("--result-ttl", type=float, help="seconds results are kept")
    serve_parser.add_argument("--max-results", type=int, help="most results kept in memory")
    serve_parser.add_argument("--max-queued", type=int, help="most unfinished tasks accepted")
    serve_parser.add_argument("--max-held-bytes", type=int, help="most payload bytes held")
    serve_parser.add_argument("--max-queues", type=int, help="most queue names known at once")
    serve_parser.add_argument("--max-held-calls-per-stream", type=int, help="held GetResults")
    serve_parser.add_argument("--max-held-calls-per-peer", type=int, help="held GetResults")
    serve_parser.add_argument("--max-sessions-per-peer", type=int, help="sessions per address")
    serve_parser.add_argument("--max-dependencies", type=int, help="most parents of one task")
    serve_parser.add_argument("--max-workflow-depth", type=int, help="most links in a chain")
    serve_parser.add_argument("--lease-grace", type=float, help="seconds before requeueing")
    serve_parser.add_argument("--ping-interval", type=float, help="seconds between pings")
    serve_parser.add_argument("--ping-timeout", type=float, help="seconds without a message")
    serve_parser.add_argument("--shutdown-grace", type=float, help="seconds to finish calls")
    serve_parser.add_argument(
        "--gc-thaw-interval", type=float, help="seconds between full garbage collections"
    )
    serve_parser.add_argument(
        "--data-dir", help="where the journal lives (default ./celeriac-data)"
    )
    serve_parser.add_argument(
        "--memory-only",
        action="store_true",
        default=None,
        help="keep no journal: a restart loses every task and result",
    )
    serve_parser.add_argument(
        "--fsync",
        choices=FSYNC_POLICIES,
        help="when acknowledged changes reach the disk (default everysec)",
    )
    _add_store_flags(serve_parser)
    serve_parser.add_argument("--events-buffer", type=int, help="events a subscriber may lag")
    serve_parser.add_argument(
        "--http-port",
        "--metrics-port",
        dest="http_port",
        type=int,
        help="serve /metrics and the dashboard on this HTTP port (default off)",
    )
    serve_parser.add_argument(
        "--http-host",
        "--metrics-host",
        dest="http_host",
        help="interface of the HTTP port (default 127.0.0.1)",
    )
    check_parser = commands.add_parser("check", help="verify a data dir offline")
    check_parser.add_argument(
        "--data-dir", help="the data dir to verify (default: as serve would use)"
    )
    migrate_parser = commands.add_parser(
        "migrate", help="create or upgrade the PostgreSQL schema of --store"
    )
    migrate_parser.add_argument("--store", help="the PostgreSQL URL (default: as serve would use)")
    _add_security_flags(serve_parser)
    admin_cli.add_commands(commands)
    return parser


def _add_store_flags(serve_parser: argparse.ArgumentParser) -> None:
    serve_parser.add_argument(
        "--store",
        help="keep tasks in PostgreSQL (postgresql://user@host:port/db) instead of --data-dir",
    )
    serve_parser.add_argument(
        "--migrate",
        action="store_true",
        default=None,
        help="with a PostgreSQL --store: apply missing schema migrations at start",
    )
    serve_parser.add_argument(
        "--shared",
        action="store_true",
        default=None,
        help="share the PostgreSQL --store with other brokers (docs/postgresql.md)",
    )
    serve_parser.add_argument(
        "--broker-timeout",
        type=float,
        help="with --shared: seconds of silence before a broker's tasks are taken over",
    )


def _add_security_flags(serve_parser: argparse.ArgumentParser) -> None:
    flags = serve_parser.add_argument_group("security (see README: Security)")
    flags.add_argument("--tls-cert", help="PEM certificate chain: turns TLS on (with --tls-key)")
    flags.add_argument("--tls-key", help="PEM private key of --tls-cert")
    flags.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates")
    flags.add_argument("--tokens-file", help="bearer tokens with roles, ROLES:NAME:TOKEN lines")
    flags.add_argument(
        "--accept-content", help="argument content types accepted (default json; json,pickle)"
    )
    flags.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback --host with no tokens (anyone who reaches it may do anything)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, configure logging once, and run the chosen command."""
    args = build_parser().parse_args(argv)
    if args.command == "check":
        try:
            data_dir = args.data_dir or BrokerConfig.from_env().data_dir
        except InvalidSetting as error:
            return usage_error(error)
        return check.run(data_dir)
    if args.command == "migrate":
        logs.configure(logs.LogSettings(level="info"))
        try:
            store = args.store or BrokerConfig.from_env().store
            BrokerConfig(store=store)
        except InvalidSetting as error:
            return usage_error(error)
        if not store:
            return usage_error("migrate needs a PostgreSQL --store (or CELERIAC_BROKER_STORE)")
        try:
            from broker.journal.postgres_store import migrate_store

            migrate_store(store)
        except StoreError as error:
            return usage_error(error)
        return RET_OK
    if args.command != "serve":
        logs.configure(logs.LogSettings(level="warning"))
        return admin_cli.run(args)
    values, labels = flag_values(args, (field.name for field in dataclasses.fields(BrokerConfig)))
    try:
        config = BrokerConfig.from_env(values=values, labels=labels)
        security = load_security(config)
    except ValueError as error:  # InvalidSetting, unreadable certificates or tokens
        return usage_error(error)
    try:
        logs.configure(logs.LogSettings(config.log_level, config.logfile, config.log_format))
    except OSError as error:
        return usage_error(f"cannot open the log file: {error}")
    tune_collector()
    try:
        asyncio.run(_serve_daemon(config, security))
    except CannotListen as error:
        return usage_error(error)
    except StoreError as error:
        # Locked, corrupt or foreign data: one line, and nothing was served.
        return usage_error(error)
    return RET_OK


async def _serve_daemon(config: BrokerConfig, security: ServerSecurity) -> None:
    """Serve, with the collector's hourly full pass running beside (see broker.collector)."""
    thaw = asyncio.create_task(thaw_periodically(config.gc_thaw_interval))
    try:
        await serve(config, security)
    finally:
        thaw.cancel()
