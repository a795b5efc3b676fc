"""The broker's state machine in plain Python: no gRPC, no protobuf, an injected clock."""

from __future__ import annotations

from broker.core.broker import Broker

__all__ = ["Broker"]
