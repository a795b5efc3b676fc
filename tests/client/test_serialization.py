"""Payload encoding: JSON by default, pickle only when allowed, errors that name the type."""

from __future__ import annotations

import datetime

import pytest

from client.errors import ContentTypeRefused, SerializationError
from client.serialization import JSON, PICKLE, decode, decode_args, encode, encode_args


def test_json_round_trip_keeps_values_and_uses_compact_separators() -> None:
    value = {"n": 1, "f": 1.5, "s": "é", "l": [1, None, True], "d": {"k": "v"}}
    body = encode(value)
    assert b", " not in body and b": " not in body
    assert decode(body, JSON) == value


def test_args_are_the_two_item_array_of_the_contract() -> None:
    body = encode_args((1, "a"), {"k": [2]})
    assert body == b'[[1,"a"],{"k":[2]}]'
    assert decode_args(body, JSON) == ([1, "a"], {"k": [2]})


def test_a_non_serializable_value_is_refused_with_its_type_named() -> None:
    with pytest.raises(SerializationError, match=r"datetime\.datetime"):
        encode_args((datetime.datetime.now(),), {})
    with pytest.raises(SerializationError, match="set"):
        encode({1, 2})


def test_serialization_error_is_also_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode(object())


def test_nan_is_refused_because_it_is_not_json() -> None:
    with pytest.raises(SerializationError):
        encode(float("nan"))


def test_pickle_is_refused_unless_allowed_on_both_encode_and_decode() -> None:
    with pytest.raises(ContentTypeRefused, match="allow_pickle"):
        encode({1, 2}, PICKLE)
    body = encode({1, 2}, PICKLE, allow_pickle=True)
    with pytest.raises(ContentTypeRefused):
        decode(body, PICKLE)
    assert decode(body, PICKLE, allow_pickle=True) == {1, 2}


def test_pickled_args_round_trip_when_allowed() -> None:
    body = encode_args(({1},), {"when": datetime.date(2024, 1, 2)}, "pickle", allow_pickle=True)
    args, kwargs = decode_args(body, PICKLE, allow_pickle=True)
    assert args == [{1}] and kwargs == {"when": datetime.date(2024, 1, 2)}


def test_unknown_content_type_is_refused() -> None:
    with pytest.raises(ContentTypeRefused, match="text/yaml"):
        decode(b"a: 1", "text/yaml")


@pytest.mark.parametrize(
    "body", [b"{", b"[1]", b'{"a": 1}', b"[{}, {}]", b'[[], {"1": 1, "x": []}, 3]']
)
def test_malformed_args_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(SerializationError):
        decode_args(body, JSON)


def test_keyword_names_must_be_strings() -> None:
    with pytest.raises(SerializationError, match="int"):
        encode_args((), {1: "x"})  # type: ignore[dict-item]


def test_json_bodies_are_utf8_with_or_without_a_bom() -> None:
    assert decode('["é"]'.encode(), JSON) == ["é"]
    assert decode(b"\xef\xbb\xbf[1]", JSON) == [1]
    for not_utf8 in (b"\xff[1]", "[1]".encode("utf-16")):
        with pytest.raises(SerializationError, match="not valid JSON"):
            decode(not_utf8, JSON)
