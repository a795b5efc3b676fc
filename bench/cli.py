"""`python -m bench [--compare] [--postgres] [--quick] [--scenario NAME ...] [--runs N]`."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from bench import bar, report, wakeups
from bench.config import BenchConfig
from bench.runner import Runner, SystemFactory
from bench.scenarios import SCENARIOS

logger = logging.getLogger(__name__)

RET_OK = 0
JOURNAL_VARIANTS: dict[str, tuple[str, ...]] = {
    "celeriac-memory-only": ("--memory-only",),
    "celeriac-fsync-always": ("--fsync", "always"),
}
RET_INTERRUPTED = 130
# Brokers sharing one PostgreSQL database in the --postgres systems (celeriac-pg1, -pg2, -pg3).
CLUSTER_SIZES = (1, 2, 3)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark Celeriac, optionally against Celery."
    )
    parser.add_argument(
        "--compare", action="store_true", help="also run Celery on Redis, alternating runs"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="also run Celeriac with TLS and tokens on (system celeriac-tls), alternating runs",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run 1, 2 and 3 brokers sharing one PostgreSQL database (celeriac-pgN)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--tasks", type=int, help="tasks per end-to-end throughput run")
    parser.add_argument(
        "--time-limit",
        type=float,
        help="seconds a workflow or rate-limit run may take before it reads 'did not finish' "
        "(default 300, quick 60)",
    )
    parser.add_argument("--out", type=Path, default=report.DEFAULT_OUT, help="JSON output folder")
    parser.add_argument(
        "--journal-variants",
        action="store_true",
        help="also run Celeriac with --memory-only and with --fsync always (journal cost)",
    )
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig.quick() if args.quick else BenchConfig()
    overrides = {
        "runs": args.runs,
        "throughput_tasks": args.tasks,
        "run_time_limit": args.time_limit,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def factories(
    compare: bool, journal_variants: bool = False, secure: bool = False, postgres: bool = False
) -> dict[str, SystemFactory]:
    from bench.systems.celeriac_system import CeleriacSystem

    systems: dict[str, SystemFactory] = {"celeriac": CeleriacSystem}
    if journal_variants:
        # The report's celeriac/<variant> ratios are then the default journal's cost.
        for name, flags in JOURNAL_VARIANTS.items():
            systems[name] = functools.partial(CeleriacSystem, name, flags)
    if secure:
        from bench.systems.celeriac_secure import CeleriacSecureSystem

        systems["celeriac-tls"] = CeleriacSecureSystem
    if postgres:
        from bench.systems.celeriac_cluster import CeleriacClusterSystem

        for count in CLUSTER_SIZES:
            systems[f"celeriac-pg{count}"] = functools.partial(CeleriacClusterSystem, count)
    if compare:
        from bench.systems.celery_system import CelerySystem

        systems["celery"] = CelerySystem
    return systems


def install_interrupt_handlers(interrupted: threading.Event) -> None:
    """Make SIGTERM behave like Ctrl-C, and remember either in `interrupted`."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # The first signal unwinds the run, stopping every started process on the way out;
        # later ones are ignored so that they cannot cut that cleanup short.
        interrupted.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    # A SIGINT ignored by whoever started us (a background job) stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    interrupted = threading.Event()
    install_interrupt_handlers(interrupted)
    config = build_config(args)
    systems = factories(args.compare, args.journal_variants, args.secure, args.postgres)
    scenarios = [SCENARIOS[name] for name in (args.scenario or SCENARIOS)]
    # Measured before and after: a VM's wake cost drifts, and every latency here sits on it.
    wakeups_before = wakeups.describe()
    try:
        results = Runner(systems, config, interrupted).run(scenarios)
    except KeyboardInterrupt:
        logger.warning("interrupted; every started process has been stopped")
        return RET_INTERRUPTED
    document = report.build(results, list(systems), config, args.quick)
    document["meta"]["wakeups"] = {"before": wakeups_before, "after": wakeups.describe()}
    document["bar"] = bar.check(document)
    path = report.write(document, args.out)
    print(report.table(document))
    print("\n" + bar.render(document["bar"]))
    print(f"\nJSON: {path}", file=sys.stderr)
    return RET_OK
