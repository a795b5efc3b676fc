"""Celeriac with TLS and bearer tokens on: what security costs, measured beside plain Celeriac.

`python -m bench --secure` adds this system to the run: the same broker, workers and client,
with a TLS certificate from a throwaway CA (made by trustme at start) and a token per role.
The report's ratio column then reads celeriac over celeriac-tls.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import grpc

from bench.systems.base import Deployment, Unsupported
from bench.systems.celeriac_system import CeleriacSystem
from celeriac.connection import ChannelSecurity, open_channel


class CeleriacSecureSystem(CeleriacSystem):
    """Celeriac over TLS with producer, worker and admin tokens."""

    # The Node.js round trips (latency scenario) are skipped: the example has no TLS or token.
    plain_text = False

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="celeriac-bench-tls-")
        folder = Path(self._folder.name)
        self.ca = str(folder / "ca.pem")
        self.cert = str(folder / "server.pem")
        self.key = str(folder / "server.key")
        self.tokens_file = str(folder / "tokens")
        self.tokens = {role: secrets.token_urlsafe(32) for role in ("producer", "worker", "admin")}
        _write_certificates(self.ca, self.cert, self.key)
        entries = "".join(f"{role}:bench-{role}:{token}\n" for role, token in self.tokens.items())
        Path(self.tokens_file).write_text(entries)
        Path(self.tokens_file).chmod(0o600)
        tls = ("--tls-cert", self.cert, "--tls-key", self.key)
        super().__init__("celeriac-tls", (*tls, "--tokens-file", self.tokens_file))

    def start(self, deployment: Deployment) -> None:
        if deployment.fake_workers:
            raise Unsupported("the fake workers speak plain text without a token")
        super().start(deployment)

    def stop(self) -> None:
        super().stop()
        self._folder.cleanup()

    def url(self) -> str:
        return f"grpcs://{self.address}"

    def client_options(self) -> dict[str, str]:
        return {"tls_ca": self.ca, "token": self.tokens["producer"]}

    def worker_flags(self) -> list[str]:
        return ["--tls-ca", self.ca]

    def worker_env(self) -> dict[str, str]:
        return {"CELERIAC_TOKEN": self.tokens["worker"]}

    def admin_channel(self) -> grpc.Channel:
        security = ChannelSecurity(tls=True, ca_file=self.ca, token=self.tokens["admin"])
        return open_channel(self.address, security, ())


def _write_certificates(ca_path: str, cert_path: str, key_path: str) -> None:
    import trustme  # a dev dependency: only this variant needs it

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(ca_path)
    server.private_key_pem.write_to_path(key_path)
    for blob in server.cert_chain_pems:
        blob.write_to_path(cert_path, append=True)
