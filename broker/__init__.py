"""The Celeriac broker: one gRPC daemon holding queues, leases and results in memory.

Run it with ``python -m broker serve``; test against it with :mod:`broker.testing`.
"""

from __future__ import annotations

from broker.config import BrokerConfig

__version__ = "0.1.0"

__all__ = ["BrokerConfig", "__version__"]
