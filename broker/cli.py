"""``python -m broker``: ``serve`` runs the daemon; the other commands talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from broker import admin_cli
from broker.collector import thaw_periodically, tune_collector
from broker.config import BrokerConfig
from broker.service.server import serve

RET_OK = 0
RET_USAGE = 2

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="python -m broker", description="Celeriac broker")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the broker daemon")
    serve_parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one")
    serve_parser.add_argument("--log-level", help="debug, info, warning or error")
    serve_parser.add_argument("--max-payload-bytes", type=int, help="largest task argument")
    serve_parser.add_argument("--max-message-bytes", type=int, help="largest gRPC message")
    serve_parser.add_argument("--result-ttl", type=float, help="seconds results are kept")
    serve_parser.add_argument("--max-results", type=int, help="most results kept in memory")
    serve_parser.add_argument("--max-queued", type=int, help="most unfinished tasks accepted")
    serve_parser.add_argument("--lease-grace", type=float, help="seconds before requeueing")
    serve_parser.add_argument("--ping-interval", type=float, help="seconds between pings")
    serve_parser.add_argument("--ping-timeout", type=float, help="seconds without a message")
    serve_parser.add_argument("--shutdown-grace", type=float, help="seconds to finish calls")
    serve_parser.add_argument(
        "--gc-thaw-interval", type=float, help="seconds between full garbage collections"
    )
    admin_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, configure logging once, and run the chosen command."""
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
        return admin_cli.run(args)
    try:
        config = BrokerConfig.from_env().replace(
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            max_payload_bytes=args.max_payload_bytes,
            max_message_bytes=args.max_message_bytes,
            result_ttl=args.result_ttl,
            max_results=args.max_results,
            max_queued=args.max_queued,
            lease_grace=args.lease_grace,
            ping_interval=args.ping_interval,
            ping_timeout=args.ping_timeout,
            shutdown_grace=args.shutdown_grace,
            gc_thaw_interval=args.gc_thaw_interval,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return RET_USAGE
    if config.gc_thaw_interval <= 0:
        print("error: the gc thaw interval must be a positive number of seconds", file=sys.stderr)
        return RET_USAGE
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    tune_collector()
    asyncio.run(_serve_daemon(config))
    return RET_OK


async def _serve_daemon(config: BrokerConfig) -> None:
    """Serve, with the collector's hourly full pass running beside (see broker.collector)."""
    thaw = asyncio.create_task(thaw_periodically(config.gc_thaw_interval))
    try:
        await serve(config)
    finally:
        thaw.cancel()
