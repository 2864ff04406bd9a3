"""The console's session with one server: log in, stay connected, monitor, talk.

`ConsoleSession` ties the pure state of `vpdesk.core` (channel board, PTT controller,
reconnect memory) to the network (signaling, one aiortc peer) and to the audio devices
(a microphone track gated by the PTT state, one playback sink per channel). It knows no
Qt: the view model listens through `SessionListener` and calls the action methods.

Life of a session: `start()` runs a task that logs in, opens the WebSocket, says `hello`
(with `resume` after a drop), offers one microphone m-line plus a receive slot per
channel (and spares), joins every channel the user has (a dispatcher monitors them all),
restores mutes, and then waits for the link to drop. On a drop it waits the back-off the
`Reconnector` gives and starts again; `stop()` ends it.

A site of several nodes (`Credentials.urls`, and the nodes its `hello` lists): a drop or
a failed attempt moves to the next node at once (`FAILOVER_DELAY_S`), where `hello`
resumes the site-wide session, or, when that node cannot resume it, a fresh session gets
the channels, mutes and target back. Only when every node has failed in a row does the
back-off apply. Everything that talks to the server (sign-in, token refresh, the
management panel's REST calls) goes to the node in use.

Everything here runs on the console's one event loop (qasync's under Qt, a test's loop
otherwise). Action methods are plain functions that return at once; the requests they
cause run as tasks of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from ssl import SSLContext
from typing import Any, Protocol

import aiohttp

from vpdesk.core.channels import ChannelBoard
from vpdesk.core.connection import ConnectionState, Reconnector
from vpdesk.core.nodes import NodeList, host_port
from vpdesk.core.ptt import (
    Effect,
    PlayTone,
    PressRefused,
    PttController,
    PttMode,
    ReleaseFloor,
    RequestFloor,
    ShowMessage,
    StartMicrophone,
    StopMicrophone,
    TxState,
)
from vpdesk.media.peer import ClientPeer, PeerError
from vpdesk.media.receive import ChannelReceiver, ReceiveRouter
from vpdesk.session.admin_api import ApiRefused
from vpdesk.session.signaling import (
    ConnectionClosed,
    RequestError,
    SignalingClient,
    SignalingError,
    login,
)
from vpdesk.session.tokens import TokenKeeper, TokenRefused

logger = logging.getLogger(__name__)

# Receive slots offered beyond the channel count, so channels added later join at once.
SPARE_SLOTS = 4
# A channels_changed that outgrows the spares re-offers this many more at a time.
SLOT_GROWTH = 4
# How long stop() lets a floor_release reach the server before closing the link.
RELEASE_GRACE_S = 1.0
# The wait before trying the next node of a site after a drop or a failed attempt: long
# enough not to spin, short enough that a dead node costs the dispatcher no audible time.
FAILOVER_DELAY_S = 0.1
# With several nodes, one that does not answer the sign-in, WebSocket and hello within
# this long counts as failed, leaving time to reach another within the 5 s of a failover.
NODE_HANDSHAKE_TIMEOUT_S = 3.0

_NETWORK_ERRORS = (SignalingError, aiohttp.ClientError, OSError, TimeoutError, PeerError)


class SessionListener(Protocol):
    """What the session tells the layer above. Called on the event loop."""

    def connection_changed(self) -> None: ...
    def channels_reset(self) -> None: ...
    def channel_changed(self, channel_id: int) -> None: ...
    def tx_state_changed(self) -> None: ...
    def show_message(self, text: str) -> None: ...
    def tone_played(self, name: str) -> None: ...


class MicrophoneLike(Protocol):
    """vpdesk.audio.capture.Microphone, or a test's stand-in."""

    gate: bool

    @property
    def track(self) -> Any: ...


class SinkLike(Protocol):
    gain: float

    def write(self, pcm: Any) -> None: ...


class SpeakerLike(Protocol):
    """vpdesk.audio.playback.Speaker, or a test's stand-in."""

    def sink(self, key: object) -> SinkLike: ...
    def remove_sink(self, key: object) -> None: ...


@dataclass(frozen=True)
class Credentials:
    """Who logs in where. `token_source` replaces the password login: the embedded
    server's own console mints its token locally (whoever can run the console on this
    PC can read the server's data folder anyway). `ssl`: the TLS context for an https
    URL, for every request and the WebSocket (the embedded server's pinned certificate,
    or `--server-cert`); None: the system's CAs.

    `urls`: every known node of the site, in order of preference (default: `url` alone);
    `url` is the one in use (the first, until a failover). A session replaces its
    credentials with a copy naming the node in use."""

    url: str
    username: str
    password: str = ""
    token_source: Callable[[], str] | None = field(default=None, compare=False)
    label: str = ""  # how the status line names the server; the URL when empty
    ssl: SSLContext | None = field(default=None, compare=False, repr=False)
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        urls = tuple(self.urls)
        if self.url not in urls:
            urls = (self.url, *urls)
        object.__setattr__(self, "urls", urls)

    @property
    def server_label(self) -> str:
        """The status line's name for the server; with several nodes, which one is in
        use ("site (node 2 of 3: host:port)")."""
        if len(self.urls) < 2:
            return self.label or self.url
        place = f"node {self.urls.index(self.url) + 1} of {len(self.urls)}"
        return f"{self.label or 'site'} ({place}: {host_port(self.url)})"


class LoginRefused(Exception):
    """The server refused the credentials: retrying with them cannot help."""


@dataclass(frozen=True)
class ChannelPreference:
    """What the dispatcher chose for a channel last time (from the settings file)."""

    muted: bool = False
    volume: float = 1.0


async def check_login(credentials: Credentials, timeout: float = 10.0) -> dict:
    """Log in once, for the login dialog: the body on success. With several nodes, the
    first one that answers decides; one that cannot be reached is skipped.

    Raises LoginRefused with a sentence for the dispatcher on wrong credentials, and
    OSError / aiohttp.ClientError / TimeoutError (the last node's) when no node can be
    reached.
    """
    unreachable: BaseException | None = None
    for url in credentials.urls:
        try:
            return await login(
                url, credentials.username, credentials.password,
                timeout=timeout, ssl=credentials.ssl,
            )
        except RequestError as exc:
            if exc.status == 401 or exc.code == "unauthorized":
                raise LoginRefused("Wrong user name or password") from exc
            if exc.status is not None and exc.status >= 500 and url != credentials.urls[-1]:
                unreachable = exc  # this node cannot serve now (its Redis is down): next
                continue
            raise LoginRefused(f"The server refused the login: {exc.message or exc.code}") from exc
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            logger.info("check_login: %s cannot be reached: %s", url, exc or type(exc).__name__)
            unreachable = exc
    assert unreachable is not None
    raise unreachable


class ConsoleSession:
    """One logged-in console on one server (see the module docstring)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        listener: SessionListener,
        speaker: SpeakerLike,
        microphone: MicrophoneLike | None = None,
        play_tone: Callable[[str], bool] | None = None,
        ptt_mode: PttMode = PttMode.HOLD,
        preferences: Callable[[int], ChannelPreference] | None = None,
        target: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        reconnector: Reconnector | None = None,
    ) -> None:
        self.credentials = credentials
        self.nodes = NodeList(credentials.urls)
        self.listener = listener
        self.speaker = speaker
        self.microphone = microphone
        self._play_tone = play_tone
        self._preferences = preferences or (lambda cid: ChannelPreference())
        self.clock = clock
        self.board = ChannelBoard(clock)
        self.ptt = PttController(ptt_mode, clock)
        self.reconnector = reconnector or Reconnector(clock)
        self._wanted_target = target
        self.user: dict[str, Any] | None = None
        self.hello: dict[str, Any] = {}
        self.detail = ""
        self._token: str | None = None
        self._tokens: TokenKeeper | None = None  # standalone: refreshes the access token
        self._http: aiohttp.ClientSession | None = None
        self._client: SignalingClient | None = None
        self._peer: ClientPeer | None = None
        self._router: ReceiveRouter | None = None
        self._mids: dict[int, str] = {}
        self._run_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        # Press → talk-permit tone, for the access-time benchmark (clock seconds).
        self._press_at: float | None = None
        self.access_times: list[float] = []

    # --- reading -------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.reconnector.state

    @property
    def connected(self) -> bool:
        return self.reconnector.state is ConnectionState.CONNECTED

    @property
    def target(self) -> int | None:
        return self.ptt.target

    @property
    def session_id(self) -> str | None:
        return self.hello.get("session")

    def mid_of(self, channel_id: int) -> str | None:
        return self._mids.get(channel_id)

    def receiver_of(self, channel_id: int) -> ChannelReceiver | None:
        return self._router.receiver_for(channel_id) if self._router else None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._run_task is None:
            self._stopping = False
            self._run_task = asyncio.get_running_loop().create_task(self._run(), name="console-session")

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def stop(self) -> None:
        """Release the floor if held, close the link and stop reconnecting."""
        self._stopping = True
        self._run_effects(self.ptt.release_all())
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=RELEASE_GRACE_S)
        self._wake.set()
        if self._client is not None:
            await self._client.close()
        if self._run_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
            self._run_task = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.reconnector.stop()
        self.detail = "Disconnected"
        self.listener.connection_changed()

    async def drop_connection(self) -> None:
        """Close the WebSocket as a network failure would (tests and "reconnect now")."""
        if self._client is not None:
            await self._client.close()

    async def _run(self) -> None:
        # The connector carries the TLS context, so every call on this session (the
        # login, the WebSocket) trusts what the credentials say.
        tls = self.credentials.ssl if self.credentials.ssl is not None else True
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
        try:
            while not self._stopping:
                self._sync_credentials()
                self.reconnector.on_connecting()
                self.detail = f"Connecting to {self.credentials.server_label}…"
                self.listener.connection_changed()
                try:
                    await self._connect_and_serve()
                except LoginRefused as exc:
                    self.reconnector.on_auth_failed()
                    self.detail = str(exc)
                    self.listener.show_message(str(exc))
                    self.listener.connection_changed()
                    return
                except _NETWORK_ERRORS as exc:
                    logger.info("session %s: link lost: %s", self.credentials.url, exc or type(exc).__name__)
                except Exception:
                    logger.exception("session %s: unexpected failure", self.credentials.url)
                finally:
                    await self._teardown()
                if self._stopping:
                    break
                delay = self._after_failure()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            await self._http.close()
            self._http = None

    def _after_failure(self) -> float:
        """The node in use was lost (or refused us): choose the next one and the wait
        before trying it. Within a round of the site's nodes the wait is short; once every
        node has failed in a row, the Reconnector's back-off."""
        failed = self.nodes.current
        round_done = self.nodes.advance()
        self._sync_credentials()
        if len(self.nodes) > 1 and not round_done:
            delay = self.reconnector.on_failover(FAILOVER_DELAY_S)
            logger.info(
                "session: node %s failed; failing over to %s (node %d of %d)",
                failed, self.nodes.current, self.nodes.position, len(self.nodes),
            )
            self.detail = f"Connection lost; trying {self.credentials.server_label}…"
        else:
            delay = self.reconnector.on_lost()
            self.detail = f"Connection lost; retrying in {delay:.0f} s (attempt {self.reconnector.attempts})"
        self.listener.connection_changed()
        return delay

    def _sync_credentials(self) -> None:
        """Make `credentials` name the node in use and every known node."""
        if self.credentials.url != self.nodes.current or self.credentials.urls != self.nodes.urls:
            self.credentials = replace(self.credentials, url=self.nodes.current, urls=self.nodes.urls)

    async def _connect_and_serve(self) -> None:
        assert self._http is not None
        plan = self.reconnector.resume_plan()
        if len(self.nodes) > 1:
            # A node that hangs must not use up the failover's time: count it as failed.
            async with asyncio.timeout(NODE_HANDSHAKE_TIMEOUT_S):
                client, hello = await self._open_link(plan.session_id)
        else:
            client, hello = await self._open_link(plan.session_id)
        self.hello = hello
        nodes = hello.get("nodes")
        if isinstance(nodes, list) and self.nodes.learn(nodes):
            self._sync_credentials()
            logger.info("session: the site's nodes are %s", ", ".join(self.nodes.urls))
        self.user = hello.get("user") or {}
        self.board.self_user_id = self.user.get("id")
        changes = self.board.apply_channels(hello.get("channels") or ())
        self.reconnector.forget_channels(changes.removed)
        self.listener.channels_reset()

        self._peer = ClientPeer(
            len(self.board) + SPARE_SLOTS,
            self.microphone.track if self.microphone is not None else None,
            ice_servers=hello.get("ice_servers") or [],
        )
        answer = await client.request("offer", sdp=await self._peer.create_offer())
        await self._peer.apply_answer(answer["sdp"])
        self._router = ReceiveRouter(self._peer.pc, ReceiveRouter.extension_id_of(self._peer.pc))
        for binding in answer.get("bindings") or ():
            self._bound(binding["channel"], binding["mid"], binding)

        await self._restore(plan, hello)
        self.reconnector.on_connected(hello.get("session"))
        self.nodes.connected()
        if self.target is None:
            self.set_target(self._pick_target(plan.target))
        self._run_effects(self.ptt.set_connected(True))
        name = self.user.get("name", self.credentials.username)
        self.detail = f"Connected to {self.credentials.server_label} as {name}"
        self._connected.set()
        self.listener.connection_changed()
        logger.info("session %s: %s, %d channels", hello.get("session"), self.detail, len(self.board))
        if self._stopping:  # stop() came while connecting, before it had a link to close
            return
        await client.wait_closed()

    async def _open_link(self, resume: str | None) -> tuple[SignalingClient, dict]:
        """WebSocket and hello on the node in use; returns the client and hello's answer.

        A token refused there (expired; or issued by another node that this one's login
        store does not know) is dropped and a fresh sign-in tried once on the same node,
        so that a failover does not wait a whole round for it.
        """
        assert self._http is not None
        for last_try in (False, True):
            token = await self._get_token()
            self._client = client = await SignalingClient.connect(
                self.credentials.url, session=self._http, on_event=self._on_event
            )
            try:
                return client, await client.hello(token, resume=resume)
            except RequestError as exc:
                if exc.code != "unauthorized" or last_try:
                    if exc.code == "unauthorized":
                        self._token = None  # the next attempt signs in again
                    raise
                logger.info(
                    "session %s: token refused (%s); signing in again", self.credentials.url, exc.message
                )
                self._token = None
                self._client = None
                await client.close()
        raise AssertionError("unreachable")

    async def _get_token(self) -> str:
        """An access token good for a while yet (the session's hello, the management
        panel's REST calls). Embedded: minted by the server's own key. Standalone: a
        TokenKeeper refreshes it (access tokens live minutes) and signs in again with the
        password when the refresh is refused. Loop only."""
        if self.credentials.token_source is not None:
            return self.credentials.token_source()
        if self._tokens is None:
            self._tokens = TokenKeeper(
                self.credentials.url, self.credentials.username, self.credentials.password,
                ssl=self.credentials.ssl,
            )
        elif self._token is None:
            # _open_link clears _token when hello refused it (expired, revoked):
            # whatever the keeper still holds is no good either.
            self._tokens.forget_access_token()
        self._tokens.base_url = self.credentials.url  # the node in use
        self._tokens.session = self._http
        try:
            self._token = await self._tokens.access_token()
        except TokenRefused as exc:
            raise LoginRefused(f"Login refused: {exc}") from exc
        except ApiRefused as exc:  # 429, 5xx: passing; the reconnect loop tries again
            raise RequestError(exc.code, exc.message, status=exc.status) from exc
        return self._token

    async def access_token(self) -> str:
        """A valid access token for REST calls as this console's user (the management
        panel). Raises LoginRefused when signing in again is needed. Loop only."""
        return await self._get_token()

    async def _restore(self, plan, hello: dict) -> None:
        """Join every channel not yet bound; apply the mutes wanted."""
        actions = plan.restore_actions(hello)
        self.reconnector.forget_channels(actions.dropped)
        for cid in self.board.ids():
            if cid not in self._mids:
                await self._join(cid)
        for cid, muted in actions.mute:
            if cid in self._mids:
                await self._send_mute(cid, muted)

    def _pick_target(self, remembered: int | None) -> int | None:
        for candidate in (remembered, self._wanted_target):
            if candidate is not None and candidate in self.board:
                return candidate
        ids = self.board.ids()
        return ids[0] if ids else None

    async def _teardown(self) -> None:
        self._connected.clear()
        self._run_effects(self.ptt.on_connection_lost())
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        peer, self._peer = self._peer, None
        self._router = None
        if peer is not None:
            await peer.close()
        for cid in list(self._mids):
            self.speaker.remove_sink(cid)
        self._mids.clear()
        for cid in self.board.ids():
            state = self.board.get(cid)
            if state.joined or state.floor.taken:
                self.board.set_joined(cid, False)
                self.board.set_muted(cid, state.muted)  # keep the dispatcher's choice visible
                self.board.on_floor_idle({"channel": cid})
        self.listener.channels_reset()

    # --- joins, mutes, media -------------------------------------------------------

    async def _join(self, cid: int) -> None:
        assert self._client is not None
        try:
            reply = await self._client.request("join", channel=cid)
        except RequestError as exc:
            if exc.code != "no_slot":
                self.listener.show_message(f"Cannot monitor {self._name(cid)}: {exc.message or exc.code}")
                return
            await self._grow_slots()
            reply = await self._client.request("join", channel=cid)
        plan = self.reconnector.resume_plan()
        pref = self._preferences(cid)
        # A channel joined before keeps this run's choice; a first join takes the saved one.
        want_muted = cid in plan.muted if cid in plan.joined else pref.muted
        if cid not in plan.joined:
            self.board.set_volume(cid, pref.volume)
        self._bound(cid, reply["mid"], reply)
        self.reconnector.remember_join(cid)
        if want_muted != bool(reply.get("muted")):
            await self._send_mute(cid, want_muted)
        self._apply_gain(cid)
        self.listener.channel_changed(cid)

    def _bound(self, cid: int, mid: str, reply: dict) -> None:
        if cid not in self.board or self._router is None:
            return
        self.board.on_joined(cid, reply)
        self._mids[cid] = mid
        receiver = ChannelReceiver(cid, self.speaker.sink(cid), self._on_audio, self.clock)
        self._router.bind(mid, receiver)
        self._apply_gain(cid)
        self.listener.channel_changed(cid)

    async def _grow_slots(self) -> None:
        assert self._client is not None and self._peer is not None
        offer = await self._peer.add_receive_slots(SLOT_GROWTH)
        answer = await self._client.request("offer", sdp=offer)
        await self._peer.apply_answer(answer["sdp"])

    async def _send_mute(self, cid: int, muted: bool) -> None:
        assert self._client is not None
        await self._client.request("mute", channel=cid, muted=muted)
        self.board.set_muted(cid, muted)
        self.reconnector.remember_mute(cid, muted)
        self._apply_gain(cid)
        self.listener.channel_changed(cid)

    def _apply_gain(self, cid: int) -> None:
        if cid not in self._mids or cid not in self.board:
            return
        state = self.board.get(cid)
        # Muting is server-side; the zero gain also silences what is already buffered.
        self.speaker.sink(cid).gain = 0.0 if state.muted else state.volume

    def _end_of_burst(self, cid: int) -> None:
        receiver = self.receiver_of(cid)
        end = getattr(receiver.sink, "end_of_burst", None) if receiver is not None else None
        if end is not None:
            end()

    def _on_audio(self, cid: int) -> None:
        self.board.note_audio(cid)
        self.listener.channel_changed(cid)

    def _name(self, cid: int) -> str:
        return self.board.get(cid).name if cid in self.board else f"channel {cid}"

    # --- events --------------------------------------------------------------------

    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "floor_taken":
            if self.board.on_floor_taken(event):
                cid = event["channel"]
                self._end_of_burst(cid)  # a pre-emption hands over without an idle
                self.listener.channel_changed(cid)
                self._maybe_incoming_tone(cid, event)
        elif kind == "floor_idle":
            if self.board.on_floor_idle(event):
                self._end_of_burst(event["channel"])
                self.listener.channel_changed(event["channel"])
        elif kind == "floor_revoked":
            cid = event.get("channel")
            if isinstance(cid, int):
                self._run_effects(self.ptt.on_revoked(cid, str(event.get("reason", ""))))
        elif kind == "channels_changed":
            self._on_channels_changed(event.get("channels") or [])

    def _maybe_incoming_tone(self, cid: int, event: dict) -> None:
        holder = event.get("holder") or {}
        state = self.board.get(cid)
        if holder.get("user_id") != self.board.self_user_id and state.joined and not state.muted:
            self._tone("incoming")

    def _on_channels_changed(self, channels: list) -> None:
        changes = self.board.apply_channels(channels)
        for cid in changes.removed:
            if self._router is not None:
                self._router.unbind_channel(cid)
            if self._mids.pop(cid, None) is not None:
                self.speaker.remove_sink(cid)
        self.reconnector.forget_channels(changes.removed)
        if self.target in changes.removed:
            self.set_target(self._pick_target(None))
        if changes.added and self._client is not None:
            self._spawn(self._join_all(changes.added))
        self.listener.channels_reset()

    async def _join_all(self, ids) -> None:
        for cid in ids:
            if cid in self.board and cid not in self._mids:
                await self._join(cid)

    # --- dispatcher actions --------------------------------------------------------

    def press(self, source: str, *, emergency: bool = False) -> None:
        if self.microphone is None and self.ptt.state is TxState.IDLE:
            self.listener.show_message("Cannot talk: no microphone")
            self._tone("busy")
            return
        if self.ptt.state is TxState.IDLE:
            self._press_at = self.clock()
        self._run_effects(self.ptt.press(source, emergency=emergency))

    def release(self, source: str) -> None:
        self._run_effects(self.ptt.release(source))

    def release_all(self) -> None:
        self._run_effects(self.ptt.release_all())

    def set_ptt_mode(self, mode: PttMode) -> None:
        self._run_effects(self.ptt.set_mode(mode))

    def set_target(self, channel_id: int | None) -> None:
        if channel_id is not None and channel_id not in self.board:
            return
        self.ptt.target = channel_id
        self.reconnector.remember_target(channel_id)
        self.listener.tx_state_changed()

    def set_muted(self, channel_id: int, muted: bool) -> None:
        if channel_id not in self.board:
            return
        self.reconnector.remember_mute(channel_id, muted)
        self.board.set_muted(channel_id, muted)
        self._apply_gain(channel_id)
        self.listener.channel_changed(channel_id)
        if self._client is not None and channel_id in self._mids:
            self._spawn(self._mute_request(channel_id, muted))

    async def _mute_request(self, cid: int, muted: bool) -> None:
        try:
            await self._send_mute(cid, muted)
        except RequestError as exc:
            self.listener.show_message(f"Could not change mute on {self._name(cid)}: {exc.message or exc.code}")

    def set_audio(self, speaker: SpeakerLike, microphone: MicrophoneLike | None) -> None:
        """New audio devices (the preferences changed): move every channel's sink to
        the new speaker and send the new microphone's track from now on."""
        self.speaker = speaker
        if self._router is not None:
            for cid in self._mids:
                receiver = self._router.receiver_for(cid)
                if receiver is not None:
                    receiver.sink = speaker.sink(cid)
                    self._apply_gain(cid)
        talking = self.microphone is not None and self.microphone.gate
        self.microphone = microphone
        if microphone is not None:
            microphone.gate = talking
        if self._peer is not None:
            self._peer.set_microphone(microphone.track if microphone is not None else None)
        if microphone is None and talking:
            self._run_effects(self.ptt.release_all())

    def set_volume(self, channel_id: int, volume: float) -> None:
        if channel_id not in self.board:
            return
        self.board.set_volume(channel_id, volume)
        self._apply_gain(channel_id)
        self.listener.channel_changed(channel_id)

    # --- effects -------------------------------------------------------------------

    def _run_effects(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, RequestFloor):
                self._spawn(self._request_floor(effect))
            elif isinstance(effect, ReleaseFloor):
                if self._client is not None:
                    self._spawn(self._release_floor(effect.channel))
            elif isinstance(effect, StartMicrophone):
                if self.microphone is not None:
                    self.microphone.gate = True
            elif isinstance(effect, StopMicrophone):
                if self.microphone is not None:
                    self.microphone.gate = False
            elif isinstance(effect, PlayTone):
                if effect.name == "talk_permit" and self._press_at is not None:
                    self.access_times.append(self.clock() - self._press_at)
                    self._press_at = None
                self._tone(effect.name)
            elif isinstance(effect, ShowMessage):
                self.listener.show_message(effect.text)
            elif isinstance(effect, PressRefused):
                pass  # its ShowMessage follows
        self.listener.tx_state_changed()

    def _tone(self, name: str) -> None:
        played = self._play_tone(name) if self._play_tone is not None else True
        if played:
            self.listener.tone_played(name)

    async def _request_floor(self, effect: RequestFloor) -> None:
        cid = effect.channel
        if self._client is None:
            self._run_effects(self.ptt.on_failed(cid, "not connected"))
            return
        try:
            reply = await self._client.request("floor_request", channel=cid, priority=effect.priority)
        except RequestError as exc:
            self._run_effects(self.ptt.on_failed(cid, exc.message or exc.code))
            return
        except (ConnectionClosed, TimeoutError):
            self._run_effects(self.ptt.on_failed(cid, "no answer from the server"))
            return
        if reply.get("granted"):
            self._run_effects(self.ptt.on_granted(cid, reply.get("max_ms")))
        else:
            holder = reply.get("holder") or {}
            self._run_effects(self.ptt.on_denied(cid, holder.get("name")))

    async def _release_floor(self, cid: int) -> None:
        if self._client is None:
            return
        with contextlib.suppress(SignalingError, TimeoutError):
            await self._client.request("floor_release", channel=cid)

    def _spawn(self, coro: Coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, _NETWORK_ERRORS):
                logger.info("session: request failed: %s", exc)
            else:
                logger.error("session: task failed", exc_info=exc)


__all__ = [
    "ChannelPreference",
    "ConsoleSession",
    "Credentials",
    "LoginRefused",
    "SessionListener",
    "check_login",
]
