"""The Celeriac broker: one gRPC daemon holding queues, leases and results in memory.

Run it with ``python -m broker serve``; test against it with :mod:`broker.testing`.
"""

from __future__ import annotations

import os

# Before any module of ours imports grpc (why: broker/grpc_stack.py).
from broker.grpc_stack import LEGACY_TCP_EXPERIMENTS

os.environ.setdefault("GRPC_EXPERIMENTS", LEGACY_TCP_EXPERIMENTS)

from broker.config import BrokerConfig

__version__ = "0.1.0"

__all__ = ["BrokerConfig", "__version__"]
