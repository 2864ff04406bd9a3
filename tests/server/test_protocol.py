"""server/protocol.py: the envelope of PROTOCOL.md, without a socket."""

from __future__ import annotations

import json

import pytest

from server.protocol import (
    MAX_FRAME_BYTES,
    CloseCode,
    ErrorCode,
    ProtocolError,
    Request,
    bad_request,
    encode,
    error_response,
    ok_response,
    parse_request,
    readable_id,
)


def refused(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_request(text)
    return info.value


# --- parse_request ------------------------------------------------------------------------


def test_parse_request_reads_id_type_and_body():
    request = parse_request('{"id": 7, "type": "join", "channel": 3}')
    assert request.id == 7
    assert request.type == "join"
    assert request.body == {"id": 7, "type": "join", "channel": 3}


@pytest.mark.parametrize("text", ["", "not json", "{", '{"id": 1,}', "\x00", "[1, 2"])
def test_non_json_is_bad_request_without_id(text):
    exc = refused(text)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert "JSON" in exc.message
    assert getattr(exc, "request_id", None) is None


@pytest.mark.parametrize("text", ["[]", '[{"id": 1, "type": "hello"}]', "42", "1.5", '"hello"', "null", "true"])
def test_json_that_is_not_an_object_is_bad_request(text):
    exc = refused(text)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert "object" in exc.message
    assert exc.request_id is None


def test_deeply_nested_json_is_bad_request_not_a_crash():
    exc = refused('{"id": 1, "type": "x", "a": ' + "[" * 30_000 + "]" * 30_000 + "}")
    assert exc.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("id_json", ["missing", '"5"', "true", "false", "1.0", "1.5", "null", "[1]", "{}"])
def test_id_must_be_an_integer(id_json):
    text = '{"type": "join"}' if id_json == "missing" else f'{{"id": {id_json}, "type": "join"}}'
    exc = refused(text)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert "'id'" in exc.message
    assert exc.request_id is None


@pytest.mark.parametrize("type_json", ["missing", "5", "null", '""', "true", '["join"]'])
def test_type_must_be_a_non_empty_string_and_the_error_keeps_the_id(type_json):
    text = '{"id": 12}' if type_json == "missing" else f'{{"id": 12, "type": {type_json}}}'
    exc = refused(text)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert "'type'" in exc.message
    assert exc.request_id == 12


def test_ids_may_be_zero_negative_or_large():
    assert parse_request('{"id": 0, "type": "x"}').id == 0
    assert parse_request('{"id": -3, "type": "x"}').id == -3
    assert parse_request('{"id": 123456789012345678901234567890, "type": "x"}').id == 123456789012345678901234567890


def test_frame_limit_is_in_utf8_bytes():
    envelope = '{"id": 1, "type": "x", "pad": "%s"}'
    room = MAX_FRAME_BYTES - len(envelope % "")
    fits = envelope % ("a" * room)
    assert len(fits.encode()) == MAX_FRAME_BYTES
    assert parse_request(fits).id == 1
    # Same character count, but 'é' is two bytes in UTF-8: over the limit.
    too_big = envelope % ("é" * room)
    assert len(too_big) == MAX_FRAME_BYTES
    exc = refused(too_big)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert "larger" in exc.message
    exc = refused(envelope % ("a" * (room + 1)))
    assert "larger" in exc.message


def test_lone_surrogates_do_not_crash_the_size_check():
    # A text frame decoded leniently may hold a lone surrogate; it must be refused or
    # parsed, never raise something other than ProtocolError.
    try:
        request = parse_request('{"id": 1, "type": "x", "s": "\ud800"}')
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST
    else:
        assert request.id == 1


# --- field helpers ------------------------------------------------------------------------


def make(**body) -> Request:
    return Request(id=1, type="t", body={"id": 1, "type": "t", **body})


def test_int_field_accepts_integers():
    assert make(channel=5).int_field("channel") == 5
    assert make(channel=0).int_field("channel") == 0
    assert make(channel=-1).int_field("channel") == -1
    assert make(channel=2**63 - 1).int_field("channel") == 2**63 - 1


@pytest.mark.parametrize("value", ["1", True, False, 1.5, 1.0, None, [1], {"id": 1}])
def test_int_field_refuses_other_types(value):
    with pytest.raises(ProtocolError) as info:
        make(channel=value).int_field("channel")
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "'channel' must be an integer" == info.value.message


def test_int_field_missing_is_bad_request():
    with pytest.raises(ProtocolError, match="'channel' must be an integer"):
        make().int_field("channel")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_int_field_refuses_ids_beyond_64_bits(value):
    # Ids are SQLite INTEGERs: a larger number used to reach the directory and fail there
    # with OverflowError (an `internal` reply) instead of bad_request.
    with pytest.raises(ProtocolError) as info:
        make(channel=value).int_field("channel")
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "out of range" in info.value.message


def test_bool_field():
    assert make(muted=True).bool_field("muted") is True
    assert make(muted=False).bool_field("muted") is False
    for value in ("yes", "true", 1, 0, None, [], "false"):
        with pytest.raises(ProtocolError) as info:
            make(muted=value).bool_field("muted")
        assert info.value.code is ErrorCode.BAD_REQUEST
        assert "'muted'" in info.value.message
    with pytest.raises(ProtocolError):
        make().bool_field("muted")


def test_str_field():
    assert make(sdp="v=0").str_field("sdp") == "v=0"
    assert make(sdp="").str_field("sdp") == ""
    assert make().str_field("sdp", optional=True) is None
    assert make(sdp=None).str_field("sdp", optional=True) is None
    for value in (None, 1, True, ["x"], {"a": 1}):
        with pytest.raises(ProtocolError, match="'sdp' must be a string"):
            make(sdp=value).str_field("sdp")
    with pytest.raises(ProtocolError, match="'sdp' must be a string"):
        make(sdp=5).str_field("sdp", optional=True)
    assert make(name="x" * 10).str_field("name", max_len=10) == "x" * 10
    with pytest.raises(ProtocolError, match="longer than 10") as info:
        make(name="x" * 11).str_field("name", max_len=10)
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_choice_field():
    choices = ("normal", "emergency")
    assert make().choice_field("priority", choices, "normal") == "normal"
    assert make(priority=None).choice_field("priority", choices, "normal") == "normal"
    assert make(priority="emergency").choice_field("priority", choices, "normal") == "emergency"
    for value in ("urgent", "Normal", "", 1, True, ["normal"], {"x": 1}):
        with pytest.raises(ProtocolError) as info:
            make(priority=value).choice_field("priority", choices, "normal")
        assert info.value.code is ErrorCode.BAD_REQUEST
        assert "normal, emergency" in info.value.message


def test_readable_id():
    assert readable_id({"id": 3}) == 3
    assert readable_id({"id": True}) is None
    assert readable_id({"id": "3"}) is None
    assert readable_id({"id": 3.0}) is None
    assert readable_id({}) is None
    assert readable_id([{"id": 3}]) is None
    assert readable_id(None) is None


# --- responses ----------------------------------------------------------------------------


def test_ok_response_carries_id_and_fields():
    assert ok_response(4) == {"id": 4, "ok": True}
    assert ok_response(4, {}) == {"id": 4, "ok": True}
    assert ok_response(4, {"mid": "1", "muted": False}) == {"id": 4, "ok": True, "mid": "1", "muted": False}


def test_error_response_shape_matches_the_protocol():
    reply = error_response(9, ErrorCode.NOT_FOUND, "no channel 3")
    assert reply == {"id": 9, "ok": False, "error": {"code": "not_found", "message": "no channel 3"}}
    unknown = error_response(None, ErrorCode.BAD_REQUEST, "frame is not valid JSON")
    assert unknown["id"] is None and unknown["error"]["code"] == "bad_request"
    # Serializable as the wire's JSON, with the code as a plain string.
    assert json.loads(encode(reply)) == reply


def test_error_codes_and_close_codes_are_the_protocols():
    assert {c.value for c in ErrorCode} == {
        "bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "no_slot", "conflict", "internal",
        "unavailable",  # a compatible extension (docs/protocol.md): the state backend is down
    }
    assert CloseCode.UNAUTHORIZED == 4001
    assert CloseCode.RATE_LIMITED == 4008


def test_encode_is_compact_utf8_json():
    text = encode({"id": 1, "ok": True, "name": "Zoë"})
    assert text == '{"id":1,"ok":true,"name":"Zoë"}'


def test_bad_request_helper():
    exc = bad_request("nope")
    assert isinstance(exc, ProtocolError)
    assert exc.code is ErrorCode.BAD_REQUEST and exc.message == "nope" and str(exc) == "nope"
