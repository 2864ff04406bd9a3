"""Fuzzing the signaling with hypothesis: tens of thousands of generated frames over real
WebSockets to a real in-process server.

The server (and every client of this test) runs on an event loop in a thread of its own;
hypothesis draws batches in the test's thread and hands each batch to that loop. A batch
is one connection (most say a valid `hello` first, some never do) and 40-60 frames of any
shape: envelopes with right and wrong `id`/`type`, every request type with fields of
random types and sizes, arbitrary JSON, raw text, deep nesting, huge numbers, binary.
Every reply is checked against the envelope; a witness on other connections keeps
talking and listening (real aiortc media) throughout; at the end the hub is back to its
baseline and memory has not grown.

Media runs on 127.0.0.1 only; run inside `unshare -n` (see the README).
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc.mediastreams import AudioStreamTrack
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import HypothesisDeprecationWarning
from hypothesis import strategies as st

from server.media import aiortc_hooks
from server.session import SessionState
from tests.server import harness

FRAMES_PER_RUN = 20_000
EXAMPLES = 420
# Hypothesis keeps every example of a run in memory until the run ends (~1 MiB per batch
# here), which would swamp the server's own figures: so the examples are drawn in seeded
# runs of EXAMPLES // CHUNKS each (deterministic, different per chunk).
CHUNKS = 20
BATCH = (48, 56)  # frames per example: 420 x >= 48 > 20,000
WAIT = 10.0  # seconds: the most one reply or witness step may take
WITNESS_EVERY = 40  # examples between witness checks
MEMORY_GROWTH_LIMIT = 20 * 1024 * 1024
MAX_FRAME_BYTES = 64 * 1024
# Frames nesting deeper than this are read by json.loads or not depending on the stack
# depth of the caller (Python's recursion limit is 1000): see inspect().
DEEP_NESTING = 800


@dataclass(frozen=True)
class MaybeUnreadable:
    """inspect()'s id for such a frame: `id` if the server read it, else null."""

    id: int
CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "no_slot", "conflict", "internal"}
KNOWN = ("hello", "offer", "join", "leave", "mute", "floor_request", "floor_release")
# Placeholders the player replaces before sending (tokens exist only once the site runs).
TOKEN = "<<TOKEN>>"
WITNESS_SESSION = "<<WITNESS_SESSION>>"
RAW = "<<RAW:{}>>"  # a JSON string marking where raw text goes (deep nesting, huge numbers)


# --- strategies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Text spliced into an encoded frame as it is (not valid as a Python value)."""

    text: str


def nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


# Lone surrogates go out \u-escaped (JSON allows it; UTF-8 cannot carry them raw).
with_surrogates = st.tuples(st.text(max_size=4), st.integers(0xD800, 0xDFFF)).map(lambda t: t[0] + chr(t[1]))
short_text = st.one_of(st.text(max_size=12), st.text(max_size=12), with_surrogates)
nan_like = st.sampled_from(
    ["NaN", "nan", "-NaN", "Infinity", "-Infinity", "1e999", "-0", "0x10", "1_000", "٣", "１", "null", "true", ""]
)
texts = st.one_of(short_text, short_text, nan_like)
# Frames near and above the 64 KiB limit, counted in characters and in UTF-8 bytes.
huge_strings = st.sampled_from([("x", 5000), ("x", 65_400), ("x", 65_600), ("é", 33_000), ("😀", 17_000), ("x", 150_000)])
big_ints = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**300), 10**4000])
raw_values = st.one_of(
    st.integers(2, 3000).map(nested),
    st.sampled_from([Raw("1" + "0" * 5000), Raw("-" + "9" * 4400), Raw("1e400"), Raw("NaN"), Raw("-Infinity")]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), big_ints, st.floats(), texts)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4),
    max_leaves=6,
)
weird = st.one_of(json_values, raw_values)
ABSENT = object()

FIELDS: dict[str, dict[str, st.SearchStrategy]] = {
    "hello": {
        "token": st.one_of(st.just(TOKEN), st.just(TOKEN), st.sampled_from(["", "eyJhbGciOiJub25lIn0.e30.", "x.y.z"]), weird),
        "client": st.one_of(st.fixed_dictionaries({"name": texts, "version": texts}), weird),
        "resume": st.one_of(st.none(), st.just(WITNESS_SESSION), st.just("s-" + "A" * 16), weird),
    },
    "offer": {
        "sdp": st.one_of(
            st.sampled_from(["", "v=0\r\n", "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"]),
            texts, weird,
        ),
    },
    "join": {"channel": st.one_of(st.integers(-2, 6), weird)},
    "leave": {"channel": st.one_of(st.integers(-2, 6), weird)},
    "mute": {"channel": st.one_of(st.integers(-2, 6), weird), "muted": st.one_of(st.booleans(), weird)},
    "floor_request": {
        "channel": st.one_of(st.integers(-2, 6), weird),
        "priority": st.one_of(st.sampled_from(["normal", "emergency", "EMERGENCY", None]), weird),
    },
    "floor_release": {"channel": st.one_of(st.integers(-2, 6), weird)},
}

request_ids = st.one_of(st.integers(0, 2**31), st.integers(0, 2**31), st.integers(), big_ints, weird, st.just(ABSENT))


@st.composite
def requests(draw) -> dict:
    kind = draw(st.sampled_from(KNOWN + ("unknown",)))
    if kind == "unknown":
        type_value = draw(st.one_of(texts, st.sampled_from(["HELLO", "join ", "floor-request", "ping", "__proto__"]), weird))
        fields: dict[str, Any] = {}
    else:
        type_value = draw(st.one_of(st.just(kind), st.just(kind), st.just(kind), st.just(kind.upper()), weird, st.just(ABSENT)))
        fields = draw(st.fixed_dictionaries({}, optional=FIELDS[kind]))
    fields.update(draw(st.dictionaries(short_text, weird, max_size=2)))
    message = {"id": draw(request_ids), "type": type_value, **fields}
    return {k: v for k, v in message.items() if v is not ABSENT}


def encode(value: Any, ascii_only: bool) -> str:
    """JSON text for `value`, with every Raw spliced in where it stands."""
    raws: list[str] = []

    def placeholder(obj: Any) -> Any:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return RAW.format(len(raws) - 1)
        if isinstance(obj, dict):
            return {k: placeholder(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [placeholder(v) for v in obj]
        return obj

    shaped = placeholder(value)
    text = json.dumps(shaped, ensure_ascii=ascii_only)
    if not ascii_only and not encodable(text):  # a lone surrogate: send it \u-escaped
        text = json.dumps(shaped, ensure_ascii=True)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(RAW.format(i)), raw, 1)
    return text


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Frame:
    text: str | None = None
    binary: bytes | None = None


def oversized(request: dict, field_name: str, huge: tuple[str, int]) -> Frame:
    return Frame(text=encode({**request, field_name: huge[0] * huge[1]}, False))


plain_text = st.text(st.characters(codec="utf-8"), max_size=60)  # raw frames: UTF-8 can carry them
encoded_requests = st.tuples(requests(), st.booleans()).map(lambda r: Frame(text=encode(*r)))
# one_of picks a branch uniformly: repeating one weights it.
frames = st.one_of(
    *[encoded_requests] * 7,
    st.builds(oversized, requests(), st.sampled_from(["channel", "sdp", "token", "type", "pad"]), huge_strings),
    st.tuples(weird, st.booleans()).map(lambda r: Frame(text=encode(*r))),
    plain_text.map(lambda t: Frame(text=t)),
    st.tuples(requests(), st.integers(0, 200)).map(lambda r: Frame(text=encode(r[0], True)[: r[1]])),
    st.binary(max_size=300).map(lambda b: Frame(binary=b)),
)


@dataclass(frozen=True)
class Batch:
    user: str
    hello: bool  # say a valid hello first
    frames: list[Frame]


batches = st.builds(
    Batch,
    user=st.sampled_from(["u3", "u4", "outsider", "admin"]),
    hello=st.sampled_from([True, True, True, True, False]),
    frames=st.lists(frames, min_size=BATCH[0], max_size=BATCH[1]),
)


# --- what a reply must be ----------------------------------------------------------------------


def inspect(text: str) -> tuple[int | None, str | None]:
    """What the server must answer a text frame with: PROTOCOL.md's id (the request's id
    when it can be read, else null), and the known request type it names, if any."""
    if len(text) > MAX_FRAME_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        return None, None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    value = obj.get("id")
    if not isinstance(value, int) or isinstance(value, bool):
        return None, None
    kind = obj.get("type")
    if nesting_depth(obj) > DEEP_NESTING:
        # Near Python's recursion limit, whether json.loads succeeds depends on how deep
        # the caller's stack already is: the server (in aiohttp's handler) may find the
        # frame unreadable where this test read it. Either answer is a correct one.
        return MaybeUnreadable(value), kind if kind in KNOWN else None
    return value, kind if kind in KNOWN else None


def nesting_depth(value: object) -> int:
    """How deep lists and objects nest in `value` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_response(reply: dict, request_id: int | None) -> None:
    assert isinstance(reply["ok"], bool), reply
    assert reply["id"] is None or type(reply["id"]) is int, reply
    if isinstance(request_id, MaybeUnreadable):
        if reply["id"] is None:
            assert not reply["ok"] and reply["error"]["code"] == "bad_request", reply
            return
        request_id = request_id.id
    assert reply["id"] == request_id, (reply, request_id)
    if not reply["ok"]:
        assert set(reply) == {"id", "ok", "error"}, reply
        error = reply["error"]
        assert set(error) == {"code", "message"}, reply
        assert error["code"] in CODES, reply
        assert isinstance(error["message"], str) and error["message"], reply
        assert error["code"] != "internal", reply  # a crash inside a handler


def check_event(event: dict) -> None:
    assert "id" not in event and "ok" not in event, event
    assert isinstance(event.get("type"), str) and event["type"], event


# --- the server's thread -----------------------------------------------------------------------


class LoopThread:
    """An event loop running in a thread; `run()` hands it a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Witness:
    """u1 talks on 'w-media' for the whole run and u2 listens (real aiortc media); u2
    also takes and releases the floor of 'w-signal' and joins again at every check.
    Neither user is on the fuzzers' channels."""

    def __init__(self, site: harness.Site, media: int, signal: int) -> None:
        self.site, self.media, self.signal = site, media, signal
        self.talker: harness.PttClient | None = None
        self.listener: harness.PttClient | None = None
        self.drain: asyncio.Task | None = None
        self.checks = 0

    async def start(self) -> None:
        self.talker = await harness.PttClient.connect(self.site.url, "u1", slots=1, microphone=AudioStreamTrack())
        self.listener = await harness.PttClient.connect(self.site.url, "u2", slots=2)
        await self.talker.join(self.media)
        await self.listener.join(self.media)
        # aiortc queues decoded frames until someone reads them: read, so they do not pile up.
        track = self.listener.track(self.media)
        self.drain = asyncio.create_task(self._drain(track))
        grant = await self.talker.talk(self.media)
        assert grant["granted"] is True, grant
        await self.check()

    @staticmethod
    async def _drain(track) -> None:
        while True:
            await track.recv()

    @property
    def session_ids(self) -> set[str]:
        return {self.talker.session_id, self.listener.session_id}

    async def packets(self) -> int:
        return await self.listener.inbound_packets(self.media)

    async def check(self) -> None:
        before = await self.packets()
        async with asyncio.timeout(WAIT):
            while await self.packets() < before + 5:
                await asyncio.sleep(0.02)
        sig = self.listener.signaling
        start = len(sig.events_seen)
        grant = await self.listener.talk(self.signal)
        assert grant["ok"] is True and grant["granted"] is True, grant
        await self._event(start, "floor_taken")
        assert (await self.listener.release(self.signal))["ok"] is True
        await self._event(start, "floor_idle")
        busy = await self.listener.talk(self.media)
        assert busy["granted"] is False and busy["holder"]["name"] == "u1", busy
        mid = self.listener.mids[self.media]
        rejoin = await self.listener.join(self.media)
        assert rejoin["mid"] == mid and rejoin["floor"]["state"] == "taken", rejoin
        self.checks += 1

    async def _event(self, start: int, kind: str) -> dict:
        sig = self.listener.signaling
        async with asyncio.timeout(WAIT):
            while True:
                for event in sig.events_seen[start:]:
                    if event.get("type") == kind and event.get("channel") == self.signal:
                        return event
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.drain is not None:
            self.drain.cancel()
        await harness.close_all(*(c for c in (self.talker, self.listener) if c is not None))


@dataclass
class Figures:
    frames_sent: int = 0
    replies_checked: int = 0
    events_checked: int = 0
    hellos: int = 0
    closed_by_failed_hello: int = 0
    connections: int = 0
    examples: int = 0
    rss_warm: int | None = None
    rss_end: int | None = None
    objects_warm: int | None = None
    objects_end: int | None = None
    notes: list[str] = field(default_factory=list)


class Fuzzer:
    """Plays batches on fresh connections and checks every reply. Runs on the site's loop."""

    def __init__(self, site: harness.Site, tokens: dict[str, str], witness: Witness) -> None:
        self.site = site
        self.tokens = tokens
        self.witness = witness
        self.http = aiohttp.ClientSession()
        self.figures = Figures()
        self.next_id = 0

    async def connect(self, user: str, hello: bool) -> tuple[aiohttp.ClientWebSocketResponse, bool]:
        ws = await self.http.ws_connect(self.site.url + "/ws")
        self.figures.connections += 1
        if hello:
            self.next_id += 1
            await ws.send_str(json.dumps({"id": self.next_id, "type": "hello", "token": self.tokens[user]}))
            reply = await self.response(ws, self.next_id)
            assert reply["ok"] is True, reply
            self.figures.hellos += 1
        return ws, hello

    async def play(self, batch: Batch) -> None:
        ws, has_session = await self.connect(batch.user, batch.hello)
        try:
            for frame in batch.frames:
                if frame.binary is not None:
                    await ws.send_bytes(frame.binary)
                    self.figures.frames_sent += 1
                    reply = await self.response(ws, None)
                    assert reply["error"]["code"] == "bad_request", reply
                    continue
                text = frame.text.replace(TOKEN, self.tokens[batch.user])
                text = text.replace(WITNESS_SESSION, self.witness.listener.session_id)
                await ws.send_str(text)
                self.figures.frames_sent += 1
                request_id, kind = inspect(text)
                reply = await self.response(ws, request_id)
                if isinstance(request_id, MaybeUnreadable) and reply["id"] is None:
                    kind = None  # the server could not read it: no request was made
                if kind == "hello" and reply["ok"]:
                    assert not has_session, reply
                    has_session = True
                    # Resuming someone else's session id gives a fresh session, never theirs.
                    assert reply["session"] not in self.witness.session_ids, reply
                elif kind == "hello" and has_session:
                    assert reply["error"]["code"] == "conflict", reply
                elif kind is not None and not has_session and kind != "hello":
                    assert reply["error"]["code"] == "unauthorized", reply
                if kind == "hello" and not has_session and reply["error"]["code"] == "unauthorized":
                    # A failed hello closes the connection (4001); go on with a fresh one.
                    closing = await ws.receive(timeout=WAIT)
                    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
                    assert ws.close_code == 4001, ws.close_code
                    self.figures.closed_by_failed_hello += 1
                    await ws.close()
                    ws, has_session = await self.connect(batch.user, False)
                assert not ws.closed
        finally:
            await ws.close()
        self.figures.examples += 1
        if self.figures.examples % WITNESS_EVERY == 0:
            await self.witness.check()

    async def response(self, ws: aiohttp.ClientWebSocketResponse, request_id: int | None) -> dict:
        """The next response on `ws`, checking every event that arrives before it."""
        for _ in range(1000):  # bounded: events interleave, but not a thousand of them
            msg = await ws.receive(timeout=WAIT)
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, ws.close_code)
            message = json.loads(msg.data)
            assert isinstance(message, dict), message
            if "ok" in message:
                check_response(message, request_id)
                self.figures.replies_checked += 1
                return message
            check_event(message)
            self.figures.events_checked += 1
        raise AssertionError("no response among 1000 frames")

    async def close(self) -> None:
        await self.http.close()


# --- the run -----------------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def expire_detached(site: harness.Site, witness: Witness) -> int:
    """End the resume grace of every detached session now (as the hub does after 60 s).

    Until then a fuzzer's session must be detached and idle: no media, no floor."""
    hub = site.hub
    detached = [s for s in hub.sessions.values() if s.id not in witness.session_ids]
    for session in detached:
        assert session.state is SessionState.DETACHED, session.id
        assert session.peer is None and not hub.floor.held_by(session.id), session.id
    for session in detached:
        await hub.close_session(session)
    return len(detached)


async def settle(site: harness.Site, witness: Witness) -> None:
    """Wait (bounded) until the server has closed its side of every fuzz connection."""
    async with asyncio.timeout(WAIT):
        while len(site.hub.websockets) > 2 or any(
            s.state is SessionState.ACTIVE and s.id not in witness.session_ids for s in site.hub.sessions.values()
        ):
            await asyncio.sleep(0.02)


def measure(lt: LoopThread, site: harness.Site, witness: Witness) -> tuple[int, int]:
    lt.run(settle(site, witness))
    lt.run(expire_detached(site, witness))
    gc.collect()
    return rss_bytes(), len(gc.get_objects())


async def setup_site(data_dir: Path) -> tuple[harness.Site, dict[str, str], Witness]:
    site = await harness.start_site(
        data_dir, users=6, max_talk_ms=600_000, signaling_rate_per_s=1e9, signaling_burst=10**9,
    )
    directory = site.directory
    # The witnesses get channels of their own, away from the fuzzers' alpha and bravo.
    media = directory.add_channel("w-media").id
    signal = directory.add_channel("w-signal").id
    for user in ("u1", "u2"):
        directory.remove_member(user, "alpha")
        directory.remove_member(user, "bravo")
        directory.add_member(user, "w-media")
        directory.add_member(user, "w-signal")
    await site.hub.apply_directory_changes()
    tokens = {}
    async with aiohttp.ClientSession() as http:
        for name in ("u3", "u4", "outsider", "admin"):
            async with http.post(site.url + "/api/login", json={"username": name, "password": harness.PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()
                tokens[name] = (await resp.json())["token"]
    witness = Witness(site, media, signal)
    await witness.start()
    return site, tokens, witness


async def make_fuzzer(site: harness.Site, tokens: dict[str, str], witness: Witness) -> Fuzzer:
    return Fuzzer(site, tokens, witness)  # on the loop: its HTTP session belongs there


async def health(site: harness.Site) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(site.url + "/api/health") as resp:
            assert resp.status == 200
            return await resp.json()


def test_fuzzed_signaling_never_hurts_the_server_or_other_sessions(tmp_path):
    lt = LoopThread()
    site = witness = fuzzer = None
    try:
        site, tokens, witness = lt.run(setup_site(tmp_path))
        fuzzer = lt.run(make_fuzzer(site, tokens, witness))
        figures = fuzzer.figures

        def play(batch: Batch) -> None:
            lt.run(fuzzer.play(batch), timeout=120)

        for chunk in range(CHUNKS):
            run_chunk = seed(chunk)(
                settings(
                    max_examples=EXAMPLES // CHUNKS,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )(given(batch=batches)(play))
            )
            with warnings.catch_warnings():
                # The server's thread uses the random module (aiohttp's WebSocket masks)
                # while hypothesis draws here; the strategies themselves do not.
                warnings.filterwarnings("ignore", "Do not use the `random` module", HypothesisDeprecationWarning)
                run_chunk()
            if figures.rss_warm is None and figures.frames_sent >= FRAMES_PER_RUN // 3:
                figures.rss_warm, figures.objects_warm = measure(lt, site, witness)
        figures.rss_end, figures.objects_end = measure(lt, site, witness)
        lt.run(witness.check())

        growth = figures.rss_end - figures.rss_warm
        print(
            f"\nfuzz figures: frames sent {figures.frames_sent}, replies checked {figures.replies_checked}, "
            f"events checked {figures.events_checked}, examples {figures.examples}, connections "
            f"{figures.connections}, valid hellos {figures.hellos}, closed by failed hello "
            f"{figures.closed_by_failed_hello}, witness checks {witness.checks}; RSS after warm-up third "
            f"{figures.rss_warm / 2**20:.1f} MiB, at end {figures.rss_end / 2**20:.1f} MiB "
            f"(growth {growth / 2**20:+.1f} MiB); gc objects {figures.objects_warm} -> {figures.objects_end}"
        )
        assert figures.frames_sent >= FRAMES_PER_RUN
        assert figures.replies_checked >= figures.frames_sent
        assert witness.checks >= EXAMPLES // WITNESS_EVERY
        assert growth < MEMORY_GROWTH_LIMIT

        # Back to the baseline: the witnesses alone, holding only their own floor.
        hub = site.hub
        assert set(hub.sessions) == witness.session_ids
        assert len(hub.websockets) == 2
        assert all(s.state is SessionState.ACTIVE for s in hub.sessions.values())
        for channel in (site.channels["alpha"], site.channels["bravo"], witness.signal):
            assert hub.floor.current(channel) is None, channel
        assert hub.floor.current(witness.media).session_id == witness.talker.session_id
        for channel_id, members in hub.members.items():
            assert {s.id for s in members} <= witness.session_ids, channel_id
        for channel_id, fanout in hub.fanouts.items():
            assert len(fanout.outputs) == (2 if channel_id == witness.media else 0), channel_id  # talker + listener
        status = lt.run(health(site))
        assert status == {"status": "ok", "sessions": 2}
    finally:
        if fuzzer is not None:
            lt.run(fuzzer.close())
        if witness is not None:
            lt.run(witness.close())
        if site is not None:
            lt.run(site.server.stop())
        aiortc_hooks.use_host_addresses(None)
        lt.stop()
