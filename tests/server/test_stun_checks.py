"""Reading and building the binding messages of consent checks (server/media/stun_checks.py),
checked against aioice's own STUN codec."""

from __future__ import annotations

import os

import aioice.stun as stun
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.media.stun_checks import (
    ICE_CONTROLLING, USE_CANDIDATE, USERNAME, XOR_MAPPED_ADDRESS, binding_request, binding_success, parse_binding_request,
    parse_binding_success, request_attributes,
)

KEY = b"the-servers-ice-password"


def aioice_request(*, username="srvufrag1234:cli1", key=KEY, fingerprint=True, nominate=True) -> stun.Message:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1853817087
    request.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    if nominate:
        request.attributes["USE-CANDIDATE"] = None
    if fingerprint:
        request.add_message_integrity(key)
    else:
        request.attributes["MESSAGE-INTEGRITY"] = stun.message_integrity(bytes(request), key)
    return request


def aioice_success(*, key=KEY, transaction_id=None) -> stun.Message:
    response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                            transaction_id=transaction_id or os.urandom(12))
    response.attributes["XOR-MAPPED-ADDRESS"] = ("10.203.0.2", 40000)
    response.add_message_integrity(key)
    return response


@pytest.mark.parametrize("make, parse, attributes", [
    (aioice_request, parse_binding_request, {USERNAME, ICE_CONTROLLING, USE_CANDIDATE}),
    (aioice_success, parse_binding_success, {XOR_MAPPED_ADDRESS}),
])
def test_a_message_reads_as_aioice_reads_it(make, parse, attributes):
    message = make()
    parsed = parse(bytes(message))
    assert parsed is not None
    assert parsed.transaction_id == message.transaction_id
    assert parsed.username == message.attributes.get("USERNAME")
    assert attributes <= parsed.attributes
    assert parsed.check(KEY)
    assert not parsed.check(b"another password")
    # aioice agrees on both.
    again = stun.parse_message(bytes(message))
    assert again.check_message_integrity(KEY) and not again.check_message_integrity(b"another password")


def test_a_request_without_fingerprint_is_read_too():
    request = aioice_request(fingerprint=False)
    parsed = parse_binding_request(bytes(request))
    assert parsed is not None and parsed.check(KEY)


@pytest.mark.parametrize("addr", [("10.203.0.1", 50123), ("127.0.0.1", 1), ("::1", 40000),
                                  ("2001:db8::17", 65535)])
def test_the_success_response_is_byte_for_byte_aioices(addr):
    transaction_id = os.urandom(12)
    ours = binding_success(transaction_id, addr, KEY)
    theirs = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                          transaction_id=transaction_id)
    theirs.attributes["XOR-MAPPED-ADDRESS"] = addr
    theirs.add_message_integrity(KEY)
    assert ours == bytes(theirs)
    parsed = stun.parse_message(ours)
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert parsed.check_message_integrity(KEY)


def _tampered() -> dict[str, bytes]:
    good = bytes(aioice_request())
    no_integrity = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    no_integrity.attributes["USERNAME"] = "a:b"
    no_integrity.add_fingerprint()
    no_username = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    no_username.attributes["PRIORITY"] = 1
    no_username.add_message_integrity(KEY)
    response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    response.attributes["USERNAME"] = "a:b"
    response.add_message_integrity(KEY)
    bad_utf8 = bytearray(good)
    bad_utf8[24] = 0xFF  # the first byte of USERNAME's value
    return {
        "short": good[:19],
        "truncated": good[:-4],
        "length field too long": good[:2] + (len(good) - 16).to_bytes(2, "big") + good[4:],
        "wrong cookie": good[:4] + b"\x00\x00\x00\x00" + good[8:],
        "a response": bytes(response),
        "bad fingerprint": good[:-1] + bytes([good[-1] ^ 1]),
        "no integrity": bytes(no_integrity),
        "no username": bytes(no_username),
        "username not UTF-8": bytes(bad_utf8),
        "attribute overruns": good[:20] + b"\x00\x06\x04\x00" + good[24:],
    }


@pytest.mark.parametrize("name", list(_tampered()))
def test_malformed_requests_read_as_nothing(name):
    assert parse_binding_request(_tampered()[name]) is None


def test_a_changed_byte_under_the_integrity_fails_the_check():
    data = bytearray(bytes(aioice_request(fingerprint=False)))
    data[-30] ^= 0x01  # inside PRIORITY / ICE-CONTROLLING, covered by MESSAGE-INTEGRITY
    parsed = parse_binding_request(bytes(data))
    assert parsed is None or not parsed.check(KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_never_raise(data):
    parse_binding_request(b"\x00\x01" + data[:2] + b"\x21\x12\xa4\x42" + data[2:])
    parse_binding_request(data)


@pytest.mark.parametrize("controlling", [False, True])
def test_a_consent_check_is_byte_for_byte_aioices(controlling):
    transaction_id = os.urandom(12)
    tie_breaker = 0x0123456789ABCDEF
    ours = binding_request(transaction_id, request_attributes("cli1:srvufrag1234", 1862270975, controlling, tie_breaker), KEY)
    theirs = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                          transaction_id=transaction_id)
    # aioice's Connection.build_request(pair, nominate=False), then its request() signing.
    theirs.attributes["USERNAME"] = "cli1:srvufrag1234"
    theirs.attributes["PRIORITY"] = 1862270975
    theirs.attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = tie_breaker
    theirs.add_message_integrity(KEY)
    assert ours == bytes(theirs)
    parsed = stun.parse_message(ours)
    assert parsed.check_message_integrity(KEY)
    assert "USE-CANDIDATE" not in parsed.attributes  # a consent check never nominates


def test_an_odd_length_username_is_padded():
    ours = binding_request(os.urandom(12), request_attributes("abc:de", 1, False, 2), KEY)
    assert len(ours) % 4 == 0
    assert stun.parse_message(ours).attributes["USERNAME"] == "abc:de"


def test_our_own_success_reads_back():
    transaction_id = os.urandom(12)
    parsed = parse_binding_success(binding_success(transaction_id, ("::1", 5), KEY))
    assert parsed is not None and parsed.transaction_id == transaction_id and parsed.check(KEY)


def test_a_success_is_not_a_request_nor_the_other_way_round():
    assert parse_binding_request(bytes(aioice_success())) is None
    assert parse_binding_success(bytes(aioice_request())) is None


def test_a_success_without_integrity_or_with_a_bad_fingerprint_reads_as_nothing():
    unsigned = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    unsigned.attributes["XOR-MAPPED-ADDRESS"] = ("10.203.0.2", 40000)
    unsigned.add_fingerprint()
    assert parse_binding_success(bytes(unsigned)) is None
    good = bytes(aioice_success())
    assert parse_binding_success(good[:-1] + bytes([good[-1] ^ 1])) is None
    assert parse_binding_success(good[:-4]) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_never_raise_as_a_success(data):
    parse_binding_success(b"\x01\x01" + data[:2] + b"\x21\x12\xa4\x42" + data[2:])
    parse_binding_success(data)
