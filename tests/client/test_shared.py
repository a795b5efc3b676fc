"""shared_task: declared without an app, registered on every app, called through the newest."""

from __future__ import annotations

import gc

import pytest

from client import Celeriac, shared, shared_task
from client.eager import EagerResult
from client.errors import ConfigurationError


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    # The declarations are process-wide: keep this test's out of every other test's apps.
    monkeypatch.setattr(shared, "_declared", [])
    monkeypatch.setattr(shared, "_apps", [])


def test_a_shared_task_joins_every_app_and_calls_go_through_the_newest() -> None:
    with pytest.raises(ConfigurationError, match="before any Celeriac app exists"):
        shared.current_app()
    older = Celeriac("older", broker="127.0.0.1:1", task_always_eager=True)

    @shared_task(name="lib.double", max_retries=0)
    def double(x: int) -> int:
        return 2 * x

    newer = Celeriac("newer", broker="127.0.0.1:1", task_always_eager=True)
    assert "lib.double" in older.tasks and "lib.double" in newer.tasks
    assert newer.tasks["lib.double"].options.max_retries == 0
    result = double.delay(21)
    assert isinstance(result, EagerResult) and result.get() == 42
    assert double.task.app is newer and double(5) == 10 and double.name == "lib.double"


def test_a_dropped_app_is_not_current_any_more() -> None:
    kept = Celeriac("kept", broker="127.0.0.1:1")
    dropped = Celeriac("dropped", broker="127.0.0.1:1")
    assert shared.current_app() is dropped
    del dropped
    gc.collect()  # an app holds reference cycles (its control, its tasks)
    assert shared.current_app() is kept
