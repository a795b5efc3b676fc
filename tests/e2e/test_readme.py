"""The README says what is true: its quick start runs as written, its configuration table is whole.

The quick start's files (Python blocks whose first line is ``# NAME.py``) are written to an
empty directory, its commands run there as real processes, and the output it shows is compared
with what the call prints. The one liberty taken: the broker binds a free port
(``CELERIAC_BROKER_PORT=0``) and the others find it through ``CELERIAC_BROKER``, which the
quick start's app reads, so parallel test runs never meet on port 7475.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from pathlib import Path

from broker.cli import build_parser as build_broker_parser
from broker.config import ENV_PREFIX as BROKER_PREFIX
from broker.config import BrokerConfig
from client.config import ENV_PREFIX as CLIENT_PREFIX
from client.config import ClientConfig
from tests.support import LISTENING, ROOT, LoggedProcess, run_python
from worker.cli import build_parser as build_worker_parser
from worker.config import ENV_PREFIX as WORKER_PREFIX
from worker.config import WorkerConfig

README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def section(heading: str) -> str:
    """The README's text under ``## heading`` up to the next ``## `` heading."""
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else len(README)]


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def commands(text: str) -> list[tuple[str, list[str]]]:
    """The section's ``celeriac-*`` command lines: the installed script to run and its args."""
    found = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].startswith("celeriac-"):
                found.append((str(Path(sys.executable).parent / words[0]), words[1:]))
    return found


def test_the_quick_start_runs_as_written_in_a_project_of_its_own(tmp_path: Path) -> None:
    quick_start = section("Quick start in your own project")
    for source in blocks(quick_start, "python"):
        name = source.splitlines()[0].removeprefix("# ")
        assert re.fullmatch(r"\w+\.py", name), f"a quick-start block names no file: {source!r}"
        (tmp_path / name).write_text(source)
    (broker_script, serve), (worker_script, worker) = commands(quick_start)
    console = blocks(quick_start, "console")[0].splitlines()
    call, shown_output = shlex.split(console[0].removeprefix("$ python ")), console[1:]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CELERIAC_")}
    with LoggedProcess(
        serve, {**env, "CELERIAC_BROKER_PORT": "0"}, cwd=tmp_path, program=broker_script
    ) as broker:
        address = broker.wait_for_line(LISTENING.pattern).group(1)
        at_broker = {**env, "CELERIAC_BROKER": address}
        with LoggedProcess(worker, at_broker, cwd=tmp_path, program=worker_script) as running:
            running.wait_for_line("worker ready")
            result = run_python(*call, env=at_broker, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == shown_output
            running.wait_for_line(r"Task tasks\.add\[.*\] succeeded")
    assert (tmp_path / "celeriac-data").is_dir()  # the plain command journals where it runs


def test_the_configuration_tables_name_every_setting_with_its_variable_and_flag() -> None:
    rows = [line for line in section("Configuration").splitlines() if line.startswith("| ")]
    configs: tuple[tuple[type, str, dict[str, str]], ...] = (
        (BrokerConfig, BROKER_PREFIX, flags(build_broker_parser(), "serve")),
        (WorkerConfig, WORKER_PREFIX, flags(build_worker_parser())),
        (ClientConfig, CLIENT_PREFIX, {}),
    )
    missing = []
    for config, prefix, options in configs:
        for field in dataclasses.fields(config):
            variable = field.metadata.get("env")
            variable = prefix + field.name.upper() if variable is None else variable
            names = [f"`{variable}`"] if variable else []
            if config is ClientConfig:
                names.append(f"`{field.name}=`")
            elif field.name in options:
                names.append(f"`{options[field.name]}`")
            if not any(all(name in row for name in names) for row in rows):
                missing.append(f"{config.__name__}.{field.name} ({', '.join(names)})")
    assert not missing, "README.md's Configuration tables lack a row for: " + "; ".join(missing)


def flags(parser: argparse.ArgumentParser, command: str | None = None) -> dict[str, str]:
    """Config field -> its long flag, from the program's own parser."""
    if command is not None:
        subparsers = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        parser = subparsers.choices[command]
    renames = {"log_level": "loglevel"} if command is None else {}
    return {
        renames.get(action.dest, action.dest): action.option_strings[0]
        for action in parser._actions
        if action.option_strings and action.dest not in {"help", "version"}
    }
