"""Pick gRPC's socket layer for this process. It must run before anything imports grpc.

grpcio reads ``GRPC_EXPERIMENTS`` once, when grpc is imported. In grpcio 1.85 the default TCP
client and listener come from the EventEngine; the older iomgr layer is still shipped and is
selected by turning two experiments off. On iomgr each message between two processes costs us
about 50 µs less (latency, and CPU with it).

Measured on a 2-core VM, in alternating runs in the same minutes:
- a bare grpcio bidi-stream ping-pong: p50 ~300 -> ~200 µs;
- Celeriac's ``add.delay(1, 2).get()`` round trip, process pool: p50 1.52 ms with every process
  on the EventEngine, 1.43 with the broker and the worker on iomgr, 1.31 with the client too;
- end-to-end throughput: about +10%.
The whole test suite passes on both layers.

So the broker and the worker, daemons that own their processes, set ``GRPC_EXPERIMENTS`` when
their package is imported, before anything imports grpc. A value already set always wins:
``GRPC_EXPERIMENTS=`` (empty) keeps gRPC's default.

The client library does not: the choice would apply to every other gRPC channel in the user's
process, and iomgr is less forgiving of a fork. A child forked after its parent used gRPC failed
its call 20 times in 20 on iomgr without ``GRPC_ENABLE_FORK_SUPPORT=1``, against 2 in 20 on the
EventEngine (with it, 0 in 20 on both). A service that wants the last ~0.1 ms sets the variable
itself (see the README).
"""

from __future__ import annotations

# worker/__init__.py sets the same value. A test checks both against the pinned grpcio: an
# unknown name only logs an error at import and gives back the slower layer.
LEGACY_TCP_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
