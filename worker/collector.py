"""How the worker and its pool children set Python's cycle collector.

A round trip allocates a few hundred short-lived objects in the worker and its child. With
CPython's defaults the collector walks the young generation every 700 net allocations and
every object that survived them every 7,000, including everything imported at start (gRPC,
protobuf, the task modules): in a latency run the worker paused 0.1-0.15 ms in ~3% of round
trips and ~1 ms in ~0.3%, which is what the p99 is made of.

So once the task modules are imported, what exists is collected, then frozen (never scanned
again: it lives as long as the process), and the young generation is collected every 10,000 net
allocations. Tasks that make cyclic garbage (an exception kept with its traceback, say) still
have it collected, a little later: a task that leaves big buffers in cycles holds up to some
10,000 objects' worth more memory between collections than under CPython's defaults. The
broker collects even less often (50,000), since it runs no user code.
"""

from __future__ import annotations

import gc

# Net allocations between young-generation collections (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Freeze everything alive now and collect the young generation less often."""
    gc.collect()  # garbage left by the imports must not be frozen with the rest
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
