"""The Signal mechanism, and the task signals around an eager run (no broker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from client import Celeriac
from client.signals import (
    Signal,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
)

app = Celeriac("signals-unit", broker="127.0.0.1:1")


@app.task(autoretry_for=(KeyError,), max_retries=1)
def lookup(key: str) -> str:
    if key == "missing":
        raise KeyError(key)
    return key.upper()


def test_receivers_get_keyword_arguments_and_may_filter_by_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signal = Signal("demo")
    seen: list[str] = []

    @signal.connect
    def everything(sender: object, value: int, **kwargs: object) -> str:
        seen.append(f"all {sender} {value}")
        return "answer"

    @signal.connect(sender="only-me")
    def picky(sender: object, **kwargs: object) -> None:
        seen.append(f"picky {sender}")

    def broken(**kwargs: object) -> None:
        raise RuntimeError("receiver bug")

    signal.connect(broken)
    answers = signal.send("someone", value=1)
    signal.send("only-me", value=2)
    assert seen == ["all someone 1", "all only-me 2", "picky only-me"]
    assert answers[0] == (everything, "answer") and isinstance(answers[1][1], RuntimeError)
    assert "receiver bug" in caplog.text  # logged, and the other receivers still ran
    assert signal.disconnect(broken) and not signal.disconnect(broken)
    assert signal.disconnect(picky, sender="only-me")


@pytest.fixture
def recorded() -> Iterator[list[str]]:
    events: list[str] = []
    receivers: list[tuple[Signal, Callable[..., object]]] = [
        (task_prerun, lambda task_id, **kw: events.append(f"prerun {task_id}")),
        (task_retry, lambda reason, request, **kw: events.append(f"retry {reason!r} {request.id}")),
        (task_failure, lambda exception, **kw: events.append(f"failure {exception!r}")),
        (task_success, lambda result, **kw: events.append(f"success {result}")),
        (task_postrun, lambda state, retval, **kw: events.append(f"postrun {state} {retval!r}")),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver, sender=lookup)
    yield events
    for signal, receiver in receivers:
        signal.disconnect(receiver, sender=lookup)


def test_task_signals_follow_an_attempt_in_celerys_order(recorded: list[str]) -> None:
    lookup.apply(("abc",), task_id="t1")
    lookup.apply(("missing",), task_id="t2")
    assert recorded == [
        "prerun t1",
        "success ABC",
        "postrun SUCCESS 'ABC'",
        "prerun t2",
        "retry KeyError('missing') t2",
        "postrun RETRY KeyError('missing')",
        "prerun t2",
        "failure KeyError('missing')",
        "postrun FAILURE KeyError('missing')",
    ]
