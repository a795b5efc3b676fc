"""Remote errors become local exceptions: builtins by type, others as RemoteTaskError."""

from __future__ import annotations

import sys

import pytest

from client.errors import (
    RemoteTaskError,
    SoftTimeLimitExceeded,
    TaskExpired,
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
    ["myapp.errors.Oops", "TaskExpired", "builtins.SystemExit", "builtins.print", "os.getcwd"],
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


class PaymentDeclined(Exception):
    """A user's own exception type, importable in this process."""

    class Nested(Exception):
        pass


class NeedsTwoArguments(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)


@pytest.mark.parametrize(
    ("type_name", "kind"),
    [
        (f"{__name__}.PaymentDeclined", PaymentDeclined),
        (f"{__name__}.PaymentDeclined.Nested", PaymentDeclined.Nested),
    ],
)
def test_a_type_of_an_already_imported_module_is_rebuilt_as_itself(
    type_name: str, kind: type[Exception]
) -> None:
    rebuilt = rebuild_exception(RemoteError(type_name, "card expired", TRACEBACK))
    assert type(rebuilt) is kind and str(rebuilt) == "card expired"
    assert any("tasks.py" in note for note in rebuilt.__notes__)


def test_a_type_whose_constructor_needs_more_than_a_message_stays_remote() -> None:
    rebuilt = rebuild_exception(RemoteError(f"{__name__}.NeedsTwoArguments", "402 nope"))
    assert isinstance(rebuilt, RemoteTaskError) and rebuilt.type_name.endswith("NeedsTwoArguments")


def test_a_module_named_by_the_remote_is_never_imported() -> None:
    name = "tests.client.remote_only_errors"  # exists and is importable, but nothing imports it
    assert name not in sys.modules
    rebuilt = rebuild_exception(RemoteError(f"{name}.Oops", "boom"))
    assert isinstance(rebuilt, RemoteTaskError)
    assert name not in sys.modules


def test_an_expired_task_comes_back_as_task_expired_which_is_a_revoke() -> None:
    expired = revoked_exception("t1", RemoteError("TaskExpired", "task expired at 12:00"))
    assert isinstance(expired, TaskExpired) and isinstance(expired, TaskRevokedError)
    assert "expired at 12:00" in str(expired)
