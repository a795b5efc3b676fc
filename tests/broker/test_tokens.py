"""The tokens file: its format, its refusals, and that no token shows in a repr or an error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from broker.config import BrokerConfig
from broker.service.security import is_loopback, load_security
from broker.tokens import Principal, Role, TokensError, load_tokens, parse_tokens

SECRET = "s3cret-token-abcdefgh"


def write_private(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_entries_carry_roles_and_names_and_comments_are_skipped(tmp_path: Path) -> None:
    path = write_private(
        tmp_path,
        "# the operators' tokens\n"
        f"admin:ops:{SECRET}-1   # the on-call\n"
        "\n"
        f"producer,worker:batch:{SECRET}-2 worker:gpu:{SECRET}:with:colons\n",
    )
    table = load_tokens(path)
    assert len(table) == 3
    assert table.authenticate(f"{SECRET}-1") == Principal("ops", frozenset({Role.ADMIN}))
    assert table.authenticate(f"{SECRET}-2") == Principal(
        "batch", frozenset({Role.PRODUCER, Role.WORKER})
    )
    assert table.authenticate(f"{SECRET}:with:colons") == Principal("gpu", frozenset({Role.WORKER}))
    assert table.authenticate(SECRET) is None
    assert table.authenticate("") is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (f"root:ops:{SECRET}", "role 'root' is not one of"),
        (f"admin::{SECRET}", "ROLES:NAME:TOKEN"),
        ("admin:ops", "ROLES:NAME:TOKEN"),
        ("admin:ops:short", "shorter than 16"),
        (f"admin:ops:{SECRET}\nproducer:web:{SECRET}", "listed twice"),
    ],
)
def test_a_malformed_entry_is_refused_without_quoting_its_token(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(TokensError, match=complaint) as refused:
        load_tokens(write_private(tmp_path, text))
    assert SECRET not in str(refused.value)
    assert "short" not in str(refused.value).replace("shorter", "")


def test_a_world_readable_tokens_file_is_refused(tmp_path: Path) -> None:
    path = write_private(tmp_path, f"admin:ops:{SECRET}", mode=0o644)
    with pytest.raises(TokensError, match="readable by every user"):
        load_tokens(path)
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP)  # 0440: the owner and its group only
    assert len(load_tokens(path)) == 1


def test_a_missing_tokens_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokensError, match="cannot read tokens file"):
        load_tokens(str(tmp_path / "absent"))


def test_inline_tokens_come_from_the_environment_and_never_show_in_a_repr() -> None:
    config = BrokerConfig.from_env({"CELERIAC_BROKER_TOKENS": f"producer:web:{SECRET}"})
    assert SECRET not in repr(config)
    security = load_security(config)
    assert SECRET not in repr(security)
    assert security.tokens.authenticate(SECRET) == Principal("web", frozenset({Role.PRODUCER}))
    assert security.describe() == "tls off, auth on (1 tokens)"


def test_parse_names_the_line_of_a_bad_entry() -> None:
    with pytest.raises(TokensError, match="env line 2"):
        parse_tokens(f"admin:ops:{SECRET}\nnope", "env")


def test_no_tokens_beyond_loopback_is_refused_unless_insecure() -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 with no tokens"):
        load_security(BrokerConfig(host="0.0.0.0"))
    assert load_security(BrokerConfig(host="0.0.0.0", insecure=True)).describe() == (
        "tls off, auth off"
    )
    assert len(load_security(BrokerConfig(host="0.0.0.0", tokens=f"admin:o:{SECRET}")).tokens)
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")] == [
        True
    ] * 5
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


def test_half_configured_tls_is_refused() -> None:
    with pytest.raises(ValueError, match="go together"):
        load_security(BrokerConfig(tls_cert="cert.pem"))
    with pytest.raises(ValueError, match="needs --tls-cert"):
        load_security(BrokerConfig(tls_client_ca="ca.pem"))
    with pytest.raises(ValueError, match="cannot read"):
        load_security(BrokerConfig(tls_cert="/nonexistent.pem", tls_key="/nonexistent.key"))


def test_accept_content_takes_short_names_and_media_types() -> None:
    assert BrokerConfig().accepted_content_types() == {"application/json"}
    assert BrokerConfig(accept_content="json, pickle").accepted_content_types() == {
        "application/json",
        "application/x-python-pickle",
    }
    assert BrokerConfig(accept_content="application/msgpack").accepted_content_types() == {
        "application/msgpack"
    }
    with pytest.raises(ValueError, match="'yaml', which is not json, pickle or a media type"):
        BrokerConfig(accept_content="json,yaml")
