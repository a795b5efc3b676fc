"""Builders for core unit tests: a Broker on a ManualClock and workers without sockets."""

from __future__ import annotations

from broker.clock import ManualClock
from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.events import TaskEvent
from broker.core.model import (
    Assignment,
    Hello,
    Outcome,
    Payload,
    Report,
    TaskError,
    TaskSpec,
    TaskState,
)
from broker.core.sessions import Session

JSON = Payload("application/json", b"[[4, 4], {}]")
CONFIG = BrokerConfig(lease_grace=2.0, ping_timeout=6.0, lease_margin=1.0)


def make_broker(
    config: BrokerConfig = CONFIG, events: list[TaskEvent] | None = None
) -> tuple[Broker, ManualClock]:
    clock = ManualClock()
    sink = events.append if events is not None else None
    return Broker(config, clock, sink), clock


def spec(name: str = "tasks.add", **fields: object) -> TaskSpec:
    fields.setdefault("args", JSON)
    return TaskSpec(name=name, **fields)  # type: ignore[arg-type]


def connect(
    core: Broker, worker_id: str = "w1", queues: tuple[str, ...] = (), credit: int = 0
) -> Session:
    session, _ = core.workers.open(Hello(worker_id=worker_id, queues=queues))
    if credit:
        grant(core, session, credit)
    return session


def grant(core: Broker, session: Session, credit: int) -> None:
    core.workers.report(session, Report(credit=credit))
    core.dispatch()


def taken(session: Session) -> list[Assignment]:
    """Assignments written to the session's outbox since the last call."""
    return session.take_outbox().assignments


def outcome(
    core: Broker,
    session: Session,
    lease_id: str,
    state: TaskState = TaskState.SUCCESS,
    **fields: object,
) -> None:
    core.workers.report(session, Report(outcomes=(Outcome(lease_id, state, **fields),)))  # type: ignore[arg-type]
    core.dispatch()


def fail(
    core: Broker, session: Session, lease_id: str, retry: bool = False, **fields: object
) -> None:
    state = TaskState.RETRY if retry else TaskState.FAILURE
    error = TaskError("builtins.ValueError", "boom", "Traceback ...", True)
    outcome(core, session, lease_id, state, error=error, **fields)


def advance(core: Broker, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    core.fire_timers()
