"""Remote errors become local exceptions: builtins by type, others as RemoteTaskError."""

from __future__ import annotations

import pytest

from client.errors import (
    RemoteTaskError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from client.failures import rebuild_exception, revoked_exception
from client.records import RemoteError

TRACEBACK = 'Traceback (most recent call last):\n  File "tasks.py", line 3\nZeroDivisionError: x\n'


def test_a_builtin_exception_is_rebuilt_as_its_type_with_the_remote_traceback_noted() -> None:
    rebuilt = rebuild_exception(
        RemoteError("builtins.ZeroDivisionError", "division by zero", TRACEBACK)
    )
    assert type(rebuilt) is ZeroDivisionError and str(rebuilt) == "division by zero"
    assert any("tasks.py" in note for note in rebuilt.__notes__)


def test_an_unqualified_builtin_name_is_rebuilt_too_and_key_errors_are_not_double_quoted() -> None:
    rebuilt = rebuild_exception(RemoteError("KeyError", "'missing'"))
    assert type(rebuilt) is KeyError and rebuilt.args == ("missing",)


@pytest.mark.parametrize(
    "type_name",
    ["myapp.errors.Oops", "TaskExpired", "builtins.SystemExit", "builtins.print", "os.error"],
)
def test_other_types_become_remote_task_errors_with_their_details(type_name: str) -> None:
    rebuilt = rebuild_exception(RemoteError(type_name, "it broke", TRACEBACK))
    assert isinstance(rebuilt, RemoteTaskError)
    assert (rebuilt.type_name, rebuilt.message, rebuilt.remote_traceback) == (
        type_name,
        "it broke",
        TRACEBACK,
    )
    assert type_name in str(rebuilt)


@pytest.mark.parametrize(
    ("type_name", "kind"),
    [
        ("client.errors.TimeLimitExceeded", TimeLimitExceeded),  # the worker killed it
        ("TimeLimitExceeded", TimeLimitExceeded),  # the broker's lease ran out
        ("client.errors.SoftTimeLimitExceeded", SoftTimeLimitExceeded),  # not caught by the task
    ],
)
def test_celeriac_time_limits_come_back_as_celeriac_errors(
    type_name: str, kind: type[Exception]
) -> None:
    rebuilt = rebuild_exception(RemoteError(type_name, "too slow", TRACEBACK))
    assert type(rebuilt) is kind and str(rebuilt) == "too slow"
    assert any("tasks.py" in note for note in rebuilt.__notes__)


def test_a_builtin_whose_constructor_needs_more_falls_back_to_remote_task_error() -> None:
    rebuilt = rebuild_exception(RemoteError("builtins.UnicodeDecodeError", "bad byte"))
    assert isinstance(rebuilt, RemoteTaskError)


def test_revoked_tasks_say_why() -> None:
    revoked = revoked_exception("t1", RemoteError("Revoked", "purged"))
    assert isinstance(revoked, TaskRevokedError) and "purged" in str(revoked)
