"""A throwaway Redis server on loopback for the Celery side: installed if missing, not persisted."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from bench.processes import ManagedProcess, free_port

logger = logging.getLogger(__name__)

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class RedisUnavailable(RuntimeError):
    """redis-server is missing and could not be installed."""


def ensure_installed() -> str:
    """Path of redis-server, installing the Debian package first if it is missing.

    Raises:
        RedisUnavailable: not installed, and this process cannot install it (not root, no apt).
    """
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RedisUnavailable("redis-server is missing; install it (apt-get install redis-server)")
    logger.info("redis-server is missing; installing it with apt-get")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "redis-server"],
    ):
        subprocess.run(command, check=True, env=APT_ENV, stdout=subprocess.DEVNULL)
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailable("apt-get installed redis-server but it is not on PATH")
    return found


class RedisServer:
    """`redis-server` on 127.0.0.1 on a free port, with snapshots and the AOF turned off."""

    def __init__(self) -> None:
        executable = ensure_installed()
        self.port = free_port()
        self.process = ManagedProcess(
            "redis",
            [
                executable,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--daemonize", "no",
                "--loglevel", "notice",
            ],
        )  # fmt: skip
        try:
            self.process.wait_for_line(r"Ready to accept connections")
        except BaseException:
            self.process.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()
