"""NodeList: the nodes of a site in order, the one in use, failover rounds, learning the
server's list; and the URL helpers it rests on. Pure: no server, no loop."""

from __future__ import annotations

import pytest

from vpdesk.core.connection import ConnectionState, Reconnector
from vpdesk.core.nodes import NodeList, host_port, normalize_url, parse_url_list

A, B, C = "https://a.site:8443", "https://b.site:8443", "https://c.site:8443"


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        ("HTTPS://Node-1.Example:8443/", "https://node-1.example:8443"),
        (" http://127.0.0.1:8080 ", "http://127.0.0.1:8080"),
        ("https://host:443", "https://host"),
        ("http://host:80/", "http://host"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://host/vp/", "https://host/vp"),
    ],
)
def test_normalize_url(given, wanted):
    assert normalize_url(given) == wanted


@pytest.mark.parametrize("bad", ["", "host:8080", "ftp://host", "https://", "http://host:notaport", "ws://h:1"])
def test_normalize_url_refuses_what_is_no_server_address(bad):
    with pytest.raises(ValueError):
        normalize_url(bad)


def test_parse_url_list_splits_normalises_and_drops_duplicates():
    text = "https://A.site:8443/, https://b.site:8443 ,, https://a.site:8443"
    assert parse_url_list(text) == (A, B)
    assert parse_url_list("http://one:8080") == ("http://one:8080",)


@pytest.mark.parametrize("bad", ["", " , ", "https://a.site:8443, b.site:8443"])
def test_parse_url_list_refuses_an_empty_list_or_a_bad_entry(bad):
    with pytest.raises(ValueError):
        parse_url_list(bad)


def test_host_port():
    assert host_port(A) == "a.site:8443"
    assert host_port("https://host") == "host"


def test_starts_on_the_first_configured_node():
    nodes = NodeList([A + "/", B])
    assert nodes.urls == (A, B) and nodes.current == A and nodes.position == 1 and len(nodes) == 2
    with pytest.raises(ValueError):
        NodeList([])


def test_advance_goes_round_and_says_when_every_node_failed_in_a_row():
    nodes = NodeList([A, B, C])
    assert nodes.advance() is False and nodes.current == B
    assert nodes.advance() is False and nodes.current == C
    assert nodes.advance() is True and nodes.current == A  # all three failed: back off
    assert nodes.failures == 3
    # The next round ends after three more failures, not at once.
    assert [nodes.advance() for _ in range(3)] == [False, False, True]


def test_a_connection_starts_a_new_round():
    nodes = NodeList([A, B])
    nodes.advance()  # A failed; B is next
    nodes.connected()  # B answered
    assert nodes.failures == 0
    assert nodes.advance() is False and nodes.current == A  # B lost: A at once
    assert nodes.advance() is True and nodes.current == B


def test_a_single_node_completes_a_round_on_every_failure():
    nodes = NodeList([A])
    assert nodes.advance() is True and nodes.current == A
    assert nodes.advance() is True


def test_learn_adds_the_servers_nodes_after_the_configured_ones():
    nodes = NodeList([B])
    assert nodes.learn([B + "/", "HTTPS://A.SITE:8443", C]) is True
    assert nodes.urls == (B, A, C)  # the user's first, then the server's order
    assert nodes.current == B and nodes.position == 1
    assert nodes.learn([B, A, C]) is False  # nothing new


def test_learn_replaces_what_an_earlier_hello_taught_but_keeps_the_configured():
    nodes = NodeList([A])
    nodes.learn([A, B, C])
    nodes.learn([A, C])  # B is no longer alive
    assert nodes.urls == (A, C)
    nodes.learn([])
    assert nodes.urls == (A,)


def test_learn_never_drops_the_node_in_use():
    nodes = NodeList([A])
    nodes.learn([A, B])
    nodes.advance()
    assert nodes.current == B
    nodes.learn([C])  # B answered with a list that does not name it
    assert B in nodes.urls and nodes.current == B
    assert nodes.urls == (A, B, C)


def test_learn_ignores_entries_that_are_no_urls():
    nodes = NodeList([A])
    assert nodes.learn([None, 3, "not a url", {"url": B}, B]) is True
    assert nodes.urls == (A, B)


def test_a_round_counts_nodes_learned_mid_round():
    nodes = NodeList([A, B])
    assert nodes.advance() is False  # A failed
    nodes.learn([B, C])  # B's hello (before it dropped) named C too
    assert nodes.urls == (A, B, C)
    assert nodes.advance() is False  # B failed, C is still to try
    assert nodes.current == C
    assert nodes.advance() is True  # C failed too: every node has failed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reconnector_failover_waits_briefly_and_does_not_grow_the_back_off():
    clock = FakeClock()
    r = Reconnector(clock, base=1.0, jitter=lambda: 1.0)
    r.on_connecting()
    r.on_connected("s-1")
    assert r.on_failover(0.1) == 0.1
    assert r.state is ConnectionState.RECONNECTING and r.retry_at == pytest.approx(100.1)
    assert r.attempts == 0
    assert r.on_lost() == 1.0  # the round is over: the back-off starts at its base
    assert r.on_lost() == 2.0
    assert r.resume_plan().session_id == "s-1"  # still resumable on the next node


def test_reconnector_failover_after_a_stable_link_resets_the_back_off():
    clock = FakeClock()
    r = Reconnector(clock, base=1.0, jitter=lambda: 1.0, stable_s=10.0)
    for _ in range(3):
        r.on_lost()
    r.on_connected()
    clock.now += 60
    r.on_failover(0.1)
    assert r.on_lost() == 1.0
