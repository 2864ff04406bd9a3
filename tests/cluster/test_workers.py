"""`vpserver --workers 2` as a real process tree on one port: both workers join the site,
the kernel spreads clients over them, a talker on one is heard on both, the floor stays
exclusive across them, and the supervisor stops, restarts and refuses as it should."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from server.config import ConfigError, ServerConfig
from server.workers import Supervisor, plan_workers, worker_count
from tests.audio_tools import TrackRecorder, WavTrack, aligned_correlation, read_wav, speech_wav
from tests.cluster.worker_processes import (
    WorkersProcess, registered_nodes, session_worker, stats_of_workers,
)
from tests.redis_server import free_port
from tests.server.harness import PASSWORD, PttClient, close_all, provision
from vpdesk.session.signaling import login

SPEECH = "Dispatch to all units. The north gate is open, the convoy leaves at nine."
USERS = 20


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    return read_wav(speech_wav(tmp_path_factory.mktemp("speech"), SPEECH, seconds_min=3.0))


@pytest.fixture
async def site(tmp_path, redis_server):
    """`vpserver --workers 2` (workers site-w1, site-w2) with users u0..u19 on 'alpha' and
    'bravo'; yields (server, channels)."""
    data = tmp_path / "data"
    channels = provision(data, USERS)
    server = WorkersProcess("site", data, redis_server.url, workers=2,
                            signaling_rate_per_s=10_000.0, signaling_burst=10_000)
    await server.start()
    try:
        yield server, channels
    finally:
        await server.stop()


async def placed_clients(server: WorkersProcess, count: int) -> dict[str, list[PttClient]]:
    """`count` signaling-only clients on the one URL, grouped by the worker each landed on."""
    by_worker: dict[str, list[PttClient]] = {name: [] for name in server.node_ids}
    clients = [await PttClient.connect(server.url, f"u{i % USERS}", media=False) for i in range(count)]
    workers = await asyncio.gather(*(session_worker(server.redis_url, c.session_id) for c in clients))
    for client, worker in zip(clients, workers):
        by_worker[worker].append(client)
    return by_worker


def everyone(by_worker: dict[str, list[PttClient]]) -> list[PttClient]:
    return [c for clients in by_worker.values() for c in clients]


async def test_workers_register_and_share_the_port(site):
    server, _ = site
    nodes = await registered_nodes(server.redis_url)
    assert sorted(nodes) == ["site-w1", "site-w2"]
    # One public URL for both; each its own relay port.
    assert {n["public_url"] for n in nodes.values()} == {server.url}
    assert len({n["relay"] for n in nodes.values()}) == 2
    assert set(server.worker_pids()) == {"site-w1", "site-w2"}

    by_worker = await placed_clients(server, 20)
    try:
        counts = {name: len(clients) for name, clients in by_worker.items()}
        assert sum(counts.values()) == 20
        assert min(counts.values()) >= 1, counts  # the kernel spread them
        for client in everyone(by_worker):
            assert client.hello["nodes"] == [server.url]  # the shared URL, once
    finally:
        await close_all(*everyone(by_worker))


async def test_talker_on_one_worker_is_heard_on_both(site, speech):
    server, channels = site
    alpha = channels["alpha"]
    by_worker = await placed_clients(server, 12)
    spare = everyone(by_worker)
    try:
        home = max(by_worker, key=lambda name: len(by_worker[name]))
        other = next(name for name in by_worker if name != home)
        assert len(by_worker[home]) >= 2 and by_worker[other], {k: len(v) for k, v in by_worker.items()}
        talker, near = by_worker[home][:2]
        far = by_worker[other][0]
        spare = [c for c in spare if c not in (talker, near, far)]
        await close_all(*spare)
        spare = []
        mic = WavTrack(speech, autostart=False)
        await talker.negotiate(1, mic)
        for listener in (near, far):
            await listener.negotiate(1, None)
            await listener.join(alpha)
        recorders = {home: TrackRecorder(near.track(alpha)).start(),
                     other: TrackRecorder(far.track(alpha)).start()}
        await asyncio.sleep(0.5)  # the far worker's listener reaches the talker's routes
        for recorder in recorders.values():
            recorder.clear()
        assert (await talker.talk(alpha))["granted"] is True
        mic.start()
        await asyncio.wait_for(mic.on_done.wait(), timeout=30)
        await asyncio.sleep(0.5)
        await talker.release(alpha)
        for name, recorder in recorders.items():
            score, _ = aligned_correlation(speech, await recorder.stop())
            assert score >= 0.9, f"listener on {name}: correlation {score:.3f}"
        dispatcher = (await login(server.url, "u0", PASSWORD))["token"]  # may read /api/stats
        stats = await stats_of_workers(server.url, dispatcher, server.node_ids)
        # The talker's worker relayed the talk to the other worker once per packet.
        assert stats[home]["relay_sent"] >= 100
        assert stats[other]["relay_received"] >= 0.95 * stats[home]["relay_sent"]
        assert stats[other]["relay_refused"] == 0
    finally:
        await close_all(*spare, *everyone(by_worker))


async def test_one_grant_per_round_across_workers(site):
    server, channels = site
    alpha = channels["alpha"]
    by_worker = await placed_clients(server, 8)
    clients = everyone(by_worker)
    worker_of = {id(c): name for name, cs in by_worker.items() for c in cs}
    try:
        assert all(by_worker.values()), {k: len(v) for k, v in by_worker.items()}
        wins: Counter[str] = Counter()
        for round_no in range(30):
            replies = await asyncio.gather(*(c.talk(alpha) for c in clients))
            winners = [c for c, r in zip(clients, replies) if r["granted"]]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} grants"
            winner = winners[0]
            wins[worker_of[id(winner)]] += 1
            for client, reply in zip(clients, replies):
                if client is not winner:
                    assert reply["reason"] == "busy", f"round {round_no}: {reply}"
            await winner.release(alpha)
            for client in clients:  # every member, on either worker, sees both
                taken = await client.signaling.next_event("floor_taken", timeout=5.0)
                assert taken["holder"]["name"] == winner.name, f"round {round_no}: {taken}"
                await client.signaling.next_event("floor_idle", timeout=5.0)
        assert sum(wins.values()) == 30
    finally:
        await close_all(*clients)


async def test_a_killed_worker_is_restarted(site):
    server, _ = site
    before = await registered_nodes(server.redis_url)
    pids = server.worker_pids()
    os.kill(pids["site-w2"], signal.SIGKILL)
    for _ in range(300):  # bounded: 30 s
        nodes = await registered_nodes(server.redis_url)
        # The new process announces a relay port of its own choosing (port 0).
        if "site-w2" in nodes and nodes["site-w2"]["relay"] != before["site-w2"]["relay"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"site-w2 not back: {nodes}\n{server.log_tail()}")
    assert nodes["site-w1"]["relay"] == before["site-w1"]["relay"]  # left alone
    after = server.worker_pids()
    assert after["site-w1"] == pids["site-w1"]
    assert after["site-w2"] != pids["site-w2"]
    assert server.process.poll() is None
    assert "worker site-w2 exited unexpectedly (killed by SIGKILL)" in server.log_tail(200)
    # The new worker serves: a client lands on it among a few.
    by_worker = await placed_clients(server, 12)
    try:
        assert by_worker["site-w2"], {k: len(v) for k, v in by_worker.items()}
    finally:
        await close_all(*everyone(by_worker))


async def test_sigterm_stops_every_worker_cleanly(site):
    server, _ = site
    pids = server.worker_pids()
    assert len(pids) == 2
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 30)
    assert code == 0, server.log_tail()
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the supervisor"
    assert await registered_nodes(server.redis_url) == {}  # records removed on the way out
    log = server.log_path.read_text()
    assert log.count("stopped (exit code 0)") == 2


async def test_workers_die_with_a_killed_supervisor(site):
    server, _ = site
    pids = server.worker_pids()
    server.kill()  # SIGKILL: the supervisor cannot forward anything
    for _ in range(300):  # bounded: 30 s
        if not any(os.path.exists(f"/proc/{pid}") for pid in pids.values()):
            break
        await asyncio.sleep(0.1)
    alive = [pid for pid in pids.values() if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"orphaned workers: {alive}"


def run_vpserver(tmp_path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "--data", str(tmp_path / "data"),
         "--listen", f"127.0.0.1:{free_port()}", *options],
        capture_output=True, text=True, timeout=60,
    )


def test_workers_without_redis_exit_2_with_the_reason(tmp_path):
    result = run_vpserver(tmp_path, "--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs --redis" in result.stderr


def test_a_bad_workers_value_exits_2(tmp_path):
    result = run_vpserver(tmp_path, "--workers", "many")
    assert result.returncode == 2
    assert "workers must be a number or 'auto'" in result.stderr


async def test_a_taken_port_is_refused(tmp_path, redis_server):
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "server", "--data", str(tmp_path / "data"),
             "--listen", f"127.0.0.1:{port}", "--redis", redis_server.url, "--workers", "2"],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_worker_count():
    cores = len(os.sched_getaffinity(0))
    assert worker_count(1) == 1 and worker_count("3") == 3
    assert worker_count(0) == worker_count("auto") == worker_count("AUTO") == cores
    for bad in (-1, "x", True, 2.5):
        with pytest.raises(ConfigError):
            worker_count(bad)


def test_worker_plans_name_and_place_each_worker():
    config = ServerConfig(node_id="a", relay_listen="10.0.0.5:7001", relay_announce="192.0.2.9:7101")
    plans = plan_workers(config, 3, 8443)
    assert [p.node_id for p in plans] == ["a-w1", "a-w2", "a-w3"]
    assert [p.relay_listen for p in plans] == ["10.0.0.5:7001", "10.0.0.5:7002", "10.0.0.5:7003"]
    assert [p.relay_announce for p in plans] == ["192.0.2.9:7101", "192.0.2.9:7102", "192.0.2.9:7103"]
    ephemeral = plan_workers(ServerConfig(), 2, 8443)
    assert [p.relay_listen for p in ephemeral] == ["127.0.0.1:0", "127.0.0.1:0"]
    assert ephemeral[0].node_id.endswith(":8443-w1") and ephemeral[0].relay_announce is None
    with pytest.raises(ConfigError, match="fixed ports"):
        plan_workers(ServerConfig(relay_announce="192.0.2.9:7101"), 2, 8443)


def exiting_with(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({code})"]


def test_a_worker_that_keeps_dying_stops_the_server():
    supervisor = Supervisor([("x-w1", exiting_with(3)), ("x-w2", exiting_with(3))],
                            first_backoff_s=0.01, max_restarts=2)
    assert supervisor.run() == 1
    # Started, restarted twice, then given up on (bounded), the other stopped with it.
    assert max(w.starts for w in supervisor.workers) == 3
    assert all(w.process.poll() is not None for w in supervisor.workers)


def test_a_rejected_configuration_is_not_retried():
    supervisor = Supervisor([("x-w1", exiting_with(2)), ("x-w2", exiting_with(2))],
                            first_backoff_s=0.01)
    assert supervisor.run() == 2
    assert [w.starts for w in supervisor.workers] == [1, 1]


def test_workers_take_consecutive_media_ports_when_one_is_fixed():
    fixed = plan_workers(ServerConfig(media_port=40000), 3, 8443)
    assert [p.media_port for p in fixed] == [40000, 40001, 40002]
    assert fixed[1].overrides("127.0.0.1:8443")[-3:] == ["--media-port", "40001", "--reuse-port"]
    for setting in (0, "auto", "off"):
        assert all(p.media_port is None for p in plan_workers(ServerConfig(media_port=setting), 2, 8443))
        assert "--media-port" not in plan_workers(ServerConfig(media_port=setting), 2, 8443)[0].overrides("x:1")
    with pytest.raises(ConfigError, match="media ports"):
        plan_workers(ServerConfig(media_port=65535), 2, 8443)
