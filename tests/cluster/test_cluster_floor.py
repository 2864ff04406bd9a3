"""Floor control across two node processes sharing one Redis: one talker per channel,
whichever node the clients are on, and every member told wherever they are."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.server.harness import PttClient, close_all

ROUNDS = 1000
CLIENTS = 10


async def test_exactly_one_grant_per_round_across_two_nodes(two_nodes):
    a, b, channels = two_nodes
    alpha = channels["alpha"]
    clients = [
        await PttClient.connect((a if i % 2 == 0 else b).url, f"u{i}", media=False)
        for i in range(CLIENTS)
    ]
    node_of = {c.name: ("a" if i % 2 == 0 else "b") for i, c in enumerate(clients)}
    wins: Counter[str] = Counter()
    try:
        for round_no in range(ROUNDS):
            replies = await asyncio.gather(*(c.talk(alpha) for c in clients))
            winners = [c for c, r in zip(clients, replies) if r["granted"]]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} grants"
            winner = winners[0]
            wins[node_of[winner.name]] += 1
            for client, reply in zip(clients, replies):
                if client is not winner:
                    assert reply["reason"] == "busy", f"round {round_no}: {reply}"
                    assert reply["holder"]["name"] == winner.name, f"round {round_no}: {reply}"
            await winner.release(alpha)
            # Every member, on either node, hears of the grant and of the release
            # before the next round presses.
            for client in clients:
                taken = await client.signaling.next_event("floor_taken", timeout=5.0)
                assert (taken["channel"], taken["holder"]["name"]) == (alpha, winner.name), (
                    f"round {round_no}: {client.name} saw {taken}"
                )
                idle = await client.signaling.next_event("floor_idle", timeout=5.0)
                assert idle["channel"] == alpha
        # Both nodes' clients won rounds: the store, not one node's view, decided.
        assert wins["a"] > 0 and wins["b"] > 0, wins
    finally:
        await close_all(*clients)


async def test_hello_lists_the_sites_nodes(two_nodes):
    a, b, _ = two_nodes
    client = await PttClient.connect(b.url, "u1", media=False)
    try:
        assert client.hello["nodes"][0] == b.url  # this node first
        assert sorted(client.hello["nodes"]) == sorted([a.url, b.url])
    finally:
        await client.close()
