"""What waking another process costs on this machine: the floor under every message we send.

`python -m bench.wakeups`

A round trip crosses six process boundaries (client, broker, worker, pool child and back), and
each crossing wakes a process that was asleep. On bare metal that costs a few microseconds. On a
virtual machine whose idle vCPUs halt at once, the wake is an inter-processor interrupt that
the hypervisor has to deliver to a halted vCPU, and it can cost tens of microseconds: on the
2-core KVM guests these benchmarks run on, with the guest's cpuidle ``haltpoll`` driver at
``guest_halt_poll_ns=0``, a pipe ping-pong between two processes took 48-80 µs per round trip,
9 µs with both pinned to one CPU, and 6-11 µs with ``guest_halt_poll_ns=200000`` (the guest polls
for up to 200 µs before it halts). The same setting took 0.05-0.45 ms off Celeriac's
``add.delay(1, 2).get()`` round trip p50 (five alternating pairs of runs, bench/README.md).

So every report records this figure and the machine's halt-polling setting beside its
latencies: round trips from two runs compare only when their wake costs do. The harness never
changes the setting; it is the operator's (see the README's Performance section).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
_PINGS = 3000
_MESSAGE = b"x" * 256


def pipe_round_trip_us(pings: int = _PINGS) -> float:
    """Median microseconds for a small message to go to a forked child and back over pipes.

    The child sleeps in ``read`` between pings, as a worker does between tasks, so every ping
    wakes it and every answer wakes us. With two CPUs or more the two processes are pinned to
    different ones, as the scheduler mostly places a round trip's processes on a busy machine;
    left to itself it sometimes puts both on one CPU, where a wake costs a few microseconds, and
    the figure would jump between runs.
    """
    cpus = sorted(os.sched_getaffinity(0))
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: echo until the parent closes its end
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[1]})
        os.close(to_child_w)
        os.close(to_parent_r)
        while data := os.read(to_child_r, 4096):
            os.write(to_parent_w, data)
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    samples = []
    try:
        for _ in range(pings):
            started = time.perf_counter_ns()
            os.write(to_child_w, _MESSAGE)
            os.read(to_parent_r, 4096)
            samples.append(time.perf_counter_ns() - started)
    finally:
        os.sched_setaffinity(0, cpus)
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)
    return statistics.median(samples) / 1000


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def describe() -> dict[str, Any]:
    """The wake cost and what sets it: cpuidle driver and guest halt polling, where present."""
    return {
        "pipe round trip us": round(pipe_round_trip_us(), 1),
        "cpus": len(os.sched_getaffinity(0)),
        "cpuidle driver": _read(CPUIDLE_DRIVER),
        "guest_halt_poll_ns": _read(HALT_POLL),
    }


def summary(wakeups: dict[str, Any]) -> str:
    """One line for the report's footer."""
    where = "across CPUs" if wakeups.get("cpus", 2) > 1 else "on one CPU"
    line = f"process wake-up round trip {where} {wakeups['pipe round trip us']:.0f} us"
    if wakeups.get("guest_halt_poll_ns") is not None:
        line += f" (cpuidle {wakeups['cpuidle driver']}, guest_halt_poll_ns "
        line += f"{wakeups['guest_halt_poll_ns']})"
    return line


def main() -> int:
    """Print the figures."""
    print(summary(describe()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
