"""Configuration settings: each field's rules beside its default, checked in one place.

The broker, the worker and the client each have one frozen dataclass. A field declared with
:func:`setting` carries its checks (and, when it differs from the package's naming, its
environment variable); :func:`validate`, called from the dataclass's ``__post_init__``, runs
them all, so the environment, command-line flags and constructor arguments get the same
answers. :func:`load` builds a config from the environment and explicit values and names a bad
value the way the user gave it (``--port 99999``, ``CELERIAC_BROKER_PORT=99999`` or
``port 99999``).

To add a setting, declare it with its default and its checks::

    max_widgets: int = setting(100, at_least(1))
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac.address import FORMS, AddressError, host_problem, parse_address

# A check gets the value and the whole config (for rules between fields) and returns what is
# wrong, phrased to follow "<setting> <value>", or None. None values are never checked.
Check = Callable[[Any, Any], str | None]
Config = TypeVar("Config")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")


class InvalidSetting(ValueError):
    """A configuration value that cannot work.

    Attributes:
        setting: The setting as the user gave it (``--port``, ``CELERIAC_BROKER_PORT=``, ``port``);
            empty for an error that is not about one value.
        value: The refused value.
        problem: What is wrong, phrased to follow the setting and value.
    """

    def __init__(
        self, message: str, *, setting: str = "", value: object = None, problem: str = ""
    ) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value
        self.problem = problem

    @classmethod
    def about(cls, setting: str, value: object, problem: str) -> Self:
        """The error for one value: ``"<setting> <value> <problem>"``."""
        return cls(
            f"{_named(setting, value)} {problem}", setting=setting, value=value, problem=problem
        )

    def renamed(self, label: str) -> Self:
        """The same error, naming the setting as ``label`` (a flag or ``VARIABLE=``)."""
        return type(self).about(label, self.value, self.problem) if self.setting else self


def setting(default: Any, *checks: Check, env: str | None = None) -> Any:
    """A dataclass field with its default, its checks and, optionally, its own variable.

    Args:
        default: The default value.
        *checks: Rules the value must pass (see the functions below).
        env: The variable that sets it, when not the package's ``<PREFIX><FIELD>``; an empty
            string means no variable.
    """
    return dataclasses.field(default=default, metadata={"checks": checks, "env": env})


def computed_setting(factory: Callable[[], Any], *checks: Check, env: str | None = None) -> Any:
    """Like :func:`setting`, for a default computed when the config is built."""
    return dataclasses.field(default_factory=factory, metadata={"checks": checks, "env": env})


def validate(config: object, error: type[InvalidSetting] = InvalidSetting) -> None:
    """Run every field's checks, in declaration order; raise ``error`` for the first failure."""
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if value is None:
            continue
        for check in field.metadata.get("checks", ()):
            problem = check(value, config)
            if problem is not None:
                raise error.about(field.name, value, problem)


def load(
    cls: Callable[..., Config],
    environ: Mapping[str, str] | None = None,
    *,
    prefix: str = "",
    values: Mapping[str, object] | None = None,
    labels: Mapping[str, str] | None = None,
    error: type[InvalidSetting] = InvalidSetting,
) -> Config:
    """Build ``cls`` from its defaults, the environment, then explicit values (None ignored).

    Args:
        cls: The config dataclass.
        environ: The environment; ``os.environ`` when omitted.
        prefix: Fields without their own ``env`` are read from ``<prefix><FIELD>`` (none when
            empty).
        values: Explicit values (flags, constructor arguments); they win over the environment.
        labels: How the user spelled each explicit value's setting (``{"port": "--port"}``);
            the field's name when absent.
        error: The error class raised.

    Raises:
        InvalidSetting: A variable does not parse, or a value breaks its field's rules; the
            message names the flag or variable it came from.
    """
    env = os.environ if environ is None else environ
    given: dict[str, object] = {}
    names: dict[str, str] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        variable = field.metadata.get("env")
        variable = f"{prefix}{field.name.upper()}" if variable is None and prefix else variable
        raw = env.get(variable) if variable else None
        if raw is not None and raw.strip():
            given[field.name] = _parse(str(field.type), raw, f"{variable}=", error)
            names[field.name] = f"{variable}="
    for name, value in (values or {}).items():
        if value is not None:
            given[name] = value
            names[name] = (labels or {}).get(name, name)
    try:
        return cls(**given)
    except InvalidSetting as exc:
        raise exc.renamed(names.get(exc.setting, exc.setting)) from None


def parse_bool(text: str) -> bool:
    """Read 1/true/yes/on or 0/false/no/off (any case).

    Raises:
        ValueError: Anything else.
    """
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def split_names(text: str) -> tuple[str, ...]:
    """Split "a, b,c" into ("a", "b", "c"), dropping empty items."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


# --- checks -------------------------------------------------------------------------------------


def in_range(low: int, high: int) -> Check:
    """The value lies in ``low..high``."""
    return lambda value, _: None if low <= value <= high else f"is out of range ({low}-{high})"


def at_least(low: float) -> Check:
    """The value is ``low`` or more."""
    return lambda value, _: None if value >= low else f"must be at least {low}"


def positive(value: float, _config: object) -> str | None:
    """The value is greater than zero."""
    return None if value > 0 else "must be greater than 0"


def not_negative(value: float, _config: object) -> str | None:
    """The value is zero or more."""
    return None if value >= 0 else "must not be negative"


def not_empty(value: Iterable[object], _config: object) -> str | None:
    """The string or collection has something in it."""
    return None if value else "must not be empty"


def one_of(*choices: str) -> Check:
    """The value is one of ``choices`` (ignoring case)."""
    allowed = {choice.lower() for choice in choices}
    return lambda value, _: (
        None if str(value).lower() in allowed else f"is not one of {', '.join(choices)}"
    )


def is_log_level(value: str, _config: object) -> str | None:
    """The value names a logging level (any case)."""
    if value.lower() in LOG_LEVELS:
        return None
    return f"is not a log level ({', '.join(LOG_LEVELS)})"


def greater_than(other: str) -> Check:
    """The value is greater than the field ``other`` (rules between two settings)."""

    def check(value: float, config: object) -> str | None:
        bound = getattr(config, other)
        if bound is None or value > bound:
            return None
        return f"must be greater than the {other.replace('_', ' ')} ({_shown(bound)})"

    return check


def not_below(other: str) -> Check:
    """The value is at least the field ``other`` (a cap that must not be under its start)."""

    def check(value: float, config: object) -> str | None:
        bound = getattr(config, other)
        if bound is None or value >= bound:
            return None
        return f"must be at least the {other.replace('_', ' ')} ({_shown(bound)})"

    return check


def is_address(value: str, _config: object) -> str | None:
    """The value is a broker address in an accepted form (see :mod:`celeriac.address`)."""
    try:
        parse_address(value)
    except AddressError as exc:
        return f"{exc.problem}; accepted forms: {FORMS}"
    return None


def is_host(value: str, _config: object) -> str | None:
    """The value is a host name or IP literal to bind."""
    return host_problem(value)


def is_time_zone(value: str, _config: object) -> str | None:
    """An IANA time zone name ("Europe/Paris"), or empty for none."""
    if not value:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return "is not a known IANA time zone (such as 'Europe/Paris' or 'UTC')"
    return None


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log or show in an error)."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", url)


def _named(setting: str, value: object) -> str:
    shown = _shown(value)
    return f"{setting}{shown}" if setting.endswith("=") else f"{setting} {shown}"


def _shown(value: object) -> str:
    if isinstance(value, str) and "://" in value:
        value = redacted_url(value)  # never show a URL's password
    if isinstance(value, str) and (not value or any(char.isspace() for char in value)):
        return repr(value)
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "''"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse(type_name: str, raw: str, label: str, error: type[InvalidSetting]) -> object:
    kind = type_name.removesuffix(" | None")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return parse_bool(raw)
    except ValueError:
        raise error.about(label, raw, f"is not a valid {kind}") from None
    if kind.startswith("tuple[str"):
        return split_names(raw)
    return raw
