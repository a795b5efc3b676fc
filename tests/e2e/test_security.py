"""TLS, mutual TLS and bearer tokens end to end: a broker process, a worker process, a client.

Certificates are made at test time (trustme); tokens live in temporary files.
"""

from __future__ import annotations

import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from client import Celeriac
from client.errors import BrokerUnavailable
from tests.support import BrokerProcess, WorkerProcess, run_python

ADD = "tests.e2e.tasks.add"
WORKER = ("--pool", "thread", "--concurrency", "2", "--loglevel", "debug")


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("worker@celeriac.test")
    paths = {name: str(folder / f"{name}.pem") for name in Pki.__dataclass_fields__}
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other_ca"])
    server.private_key_pem.write_to_path(paths["server_key"])
    client.private_key_pem.write_to_path(paths["client_key"])
    for blob in server.cert_chain_pems:
        blob.write_to_path(paths["server_cert"], append=True)
    for blob in client.cert_chain_pems:
        blob.write_to_path(paths["client_cert"], append=True)
    return Pki(**paths)


@dataclass(frozen=True)
class Tokens:
    producer: str
    worker: str
    path: str


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    producer, worker = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# test tokens\nproducer:web:{producer}\nworker:pool:{worker}\n")
    path.chmod(0o600)
    return Tokens(producer, worker, str(path))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tokens: Tokens) -> Iterator[BrokerProcess]:
    flags = ("--tls-cert", pki.server_cert, "--tls-key", pki.server_key)
    with BrokerProcess(*flags, "--tokens-file", tokens.path, "--log-level", "debug") as broker:
        yield broker


def test_tls_and_tokens_end_to_end_and_no_token_in_any_log(
    tls_broker: BrokerProcess, pki: Pki, tokens: Tokens
) -> None:
    assert "(tls on, auth on (2 tokens))" in tls_broker.output
    url = f"grpcs://{tls_broker.address}"
    env = {"CELERIAC_TOKEN": tokens.worker}
    with WorkerProcess(url, "tests.e2e.tasks", "--tls-ca", pki.ca, *WORKER, env=env) as worker:
        app = Celeriac("tls-client", broker=url, tls_ca=pki.ca, token=tokens.producer)
        assert app.send_task(ADD, args=(2, 3)).get(timeout=20) == 5
        assert app.send_task(ADD, args=(4, 4)).get(timeout=20) == 8
        app.close()
        worker.stop()
        logs = tls_broker.output + worker.output
    assert "worker connected" in logs  # the logs were read, and at debug level
    assert tokens.producer not in logs
    assert tokens.worker not in logs


def test_a_plain_text_client_against_a_tls_broker_fails_fast(
    tls_broker: BrokerProcess, pki: Pki, tokens: Tokens
) -> None:
    plain = Celeriac("plain", broker=tls_broker.address, token=tokens.producer, connect_timeout=1)
    with pytest.raises(BrokerUnavailable, match="over plain text"):
        plain.send_task(ADD, args=(1, 1))
    plain.close()
    untrusting = Celeriac(
        "wrong-ca", broker=f"grpcs://{tls_broker.address}", tls_ca=pki.other_ca, connect_timeout=1
    )
    with pytest.raises(BrokerUnavailable, match="grpcs://"):
        untrusting.send_task(ADD, args=(1, 1))
    untrusting.close()


def test_a_worker_with_a_producer_token_is_refused(
    tls_broker: BrokerProcess, pki: Pki, tokens: Tokens
) -> None:
    url = f"grpcs://{tls_broker.address}"
    forged = WorkerProcess(
        url, "tests.e2e.tasks", "--tls-ca", pki.ca, "--token", tokens.producer, wait_ready=False
    )
    with forged:
        assert forged.wait() == 3
    assert "PERMISSION_DENIED" in forged.output
    assert "token 'web' has role producer" in forged.output


def test_mutual_tls_end_to_end(pki: Pki) -> None:
    flags = ("--tls-cert", pki.server_cert, "--tls-key", pki.server_key)
    with BrokerProcess(*flags, "--tls-client-ca", pki.ca) as broker:
        assert "(tls on (mutual), auth off)" in broker.output
        url = f"grpcs://{broker.address}"
        certs = ("--tls-ca", pki.ca, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key)
        with WorkerProcess(url, "tests.e2e.tasks", *certs, *WORKER):
            app = Celeriac(
                "mtls", broker=url, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key
            )
            assert app.send_task(ADD, args=(20, 22)).get(timeout=20) == 42
            app.close()
        anonymous = Celeriac("no-cert", broker=url, tls_ca=pki.ca, connect_timeout=1)
        with pytest.raises(BrokerUnavailable):
            anonymous.send_task(ADD, args=(1, 1))
        anonymous.close()


def test_the_broker_refuses_an_open_non_loopback_address_and_a_shared_tokens_file(
    tmp_path: Path,
) -> None:
    refused = run_python("-m", "broker", "serve", "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: refusing to listen on 0.0.0.0 with no tokens: anyone who reaches it could "
        "submit, read and purge tasks; give --tokens-file, or --insecure to allow it"
    ]
    shared = tmp_path / "tokens"
    shared.write_text(f"admin:ops:{secrets.token_urlsafe(24)}\n")
    shared.chmod(0o644)
    refused = run_python("-m", "broker", "serve", "--port", "0", "--tokens-file", str(shared))
    assert refused.returncode == 2
    assert "readable by every user" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_second_worker_with_a_live_workers_id_fences_it_off() -> None:
    with BrokerProcess() as broker:
        flags = ("--hostname", "twin@test", "--pool", "thread", "--concurrency", "1")
        first = WorkerProcess(broker.address, "tests.e2e.tasks", *flags)
        with first, WorkerProcess(broker.address, "tests.e2e.tasks", *flags):
            # The older session is the one fenced off; it stops instead of fencing back.
            assert first.wait() == 3
            assert "SESSION_FENCED" in first.output or "fenced" in first.output
            app = Celeriac("after-fencing", broker=broker.address)
            assert app.send_task(ADD, args=(1, 2)).get(timeout=20) == 3
            app.close()


def test_the_http_port_serves_https_with_the_brokers_certificate(pki: Pki) -> None:
    monitor = secrets.token_urlsafe(24)
    tls = ("--tls-cert", pki.server_cert, "--tls-key", pki.server_key)
    env = {"CELERIAC_BROKER_TOKENS": f"monitor:prom:{monitor}"}
    with BrokerProcess(*tls, "--memory-only", "--http-port", "0", env=env) as broker:
        url = broker.wait_for_line(r"metrics on (https://\S+/metrics)").group(1)
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {monitor}"})
        context = ssl.create_default_context(cafile=pki.ca)
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            assert b"celeriac_workers" in answer.read()
        with pytest.raises(OSError):  # plain text on the TLS port: the connection is closed
            urllib.request.urlopen(url.replace("https://", "http://"), timeout=10)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(url, context=context, timeout=10)
        output = broker.output
    assert monitor not in output
    assert "Traceback" not in output
