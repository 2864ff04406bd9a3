"""The push-to-talk controller: one state machine for every PTT source.

The on-screen button, the keyboard key and the foot pedal all call `press(source)` and
`release(source)`; the controller does not care where a press came from (Mumble's rule).
Hold-to-talk and toggle are two modes of the same controller.

The server decides who talks (PROTOCOL.md "Floor control"): a press only *asks* for the
floor. The session layer feeds the server's answers back in (`on_granted`, `on_denied`,
`on_revoked`, `on_connection_lost`), and the controller answers every input with a list of
effects (frozen dataclasses below) for the outer layers to carry out: send a request, start
or stop the microphone, play a tone, show a message. It performs no I/O itself and reads
time only from the injected clock.

Every method here is called on the console's one event loop (the Qt loop, which runs
asyncio through qasync); the controller is not thread-safe and needs no locks because
of that. A PTT source on another thread (a pedal reader) must post its press to that loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

# How long the DENIED ("channel busy") state stays visible before reading as IDLE.
DENIED_SHOW_S = 1.5

# Machine-readable refusal reasons (PressRefused.reason).
REFUSED_NOT_CONNECTED = "not connected"
REFUSED_NO_CHANNEL = "no channel selected"


class PttMode(enum.Enum):
    """How a press is interpreted."""

    HOLD = "hold-to-talk"  # talk while at least one source is held
    TOGGLE = "toggle"  # a press starts, the next press stops


class TxState(enum.Enum):
    """What the dispatcher's own transmitter is doing."""

    IDLE = "idle"
    REQUESTING = "requesting"  # pressed, floor_request sent, waiting for the answer
    # Let go (or toggled off) before the answer came: a grant that still arrives is
    # released at once without ever opening the microphone.
    CANCELLING = "cancelling"
    TRANSMITTING = "transmitting"  # floor granted, microphone on
    DENIED = "denied"  # busy: shown for DENIED_SHOW_S, then reads as IDLE


class Priority(enum.Enum):
    """The `priority` field of floor_request."""

    NORMAL = "normal"
    EMERGENCY = "emergency"


# ---------------------------------------------------------------------------------------
# Effects: what the outer layers must do. Each input method returns a list of these, in
# the order they should be carried out.


@dataclass(frozen=True)
class RequestFloor:
    """Send `floor_request` for `channel` with `priority` ("normal" or "emergency")."""

    channel: int
    priority: str = Priority.NORMAL.value


@dataclass(frozen=True)
class ReleaseFloor:
    """Send `floor_release` for `channel`."""

    channel: int


@dataclass(frozen=True)
class StartMicrophone:
    """Open the microphone and send its audio (the floor is ours)."""


@dataclass(frozen=True)
class StopMicrophone:
    """Stop sending microphone audio."""


@dataclass(frozen=True)
class PlayTone:
    """Play one of the tones in core.tones.TONE_NAMES."""

    name: str


@dataclass(frozen=True)
class ShowMessage:
    """Show the dispatcher a short human-readable message (status bar, toast)."""

    text: str


@dataclass(frozen=True)
class PressRefused:
    """A press that asked for nothing; `reason` is one of the REFUSED_* constants."""

    reason: str


Effect = (
    RequestFloor
    | ReleaseFloor
    | StartMicrophone
    | StopMicrophone
    | PlayTone
    | ShowMessage
    | PressRefused
)

# What a revoke means to the dispatcher: (tone, message) per PROTOCOL.md reason.
_REVOKE_FEEDBACK: dict[str, tuple[str, str]] = {
    "max_duration": ("end_of_tx", "Transmission ended: maximum talk time reached"),
    # The emergency tone tells the dispatcher *why* they were cut off.
    "preempted": ("emergency", "Pre-empted by an emergency call"),
    "removed": ("busy", "Transmission ended: you were removed from the channel"),
    "disconnected": ("busy", "Transmission ended: the server lost your session"),
}
_REVOKE_UNKNOWN = ("busy", "Transmission ended by the server")


class PttController:
    """Press/release from any number of sources in, floor requests and feedback out.

    Sources are a set, not a counter: a press from a source that is already held (the
    keyboard's auto-repeat) changes nothing, and a release of a source that is not held
    is ignored. In HOLD mode the transmission ends when the last held source is released.

    The target channel applies to the next press; a request or transmission in progress
    keeps the channel it was made for (`channel`).

    All methods: call on the console's event loop only.
    """

    def __init__(
        self,
        mode: PttMode,
        clock: Callable[[], float],
        *,
        target: int | None = None,
        connected: bool = False,
    ) -> None:
        self._mode = mode
        self._clock = clock
        self.target: int | None = target
        self._connected = connected
        self._held: set[str] = set()
        self._state = TxState.IDLE
        self._channel: int | None = None  # channel of the request/transmission in progress
        self._priority = Priority.NORMAL
        self._denied_until = 0.0
        self._denied_holder: str | None = None
        self._tx_since: float | None = None
        self._max_ms: int | None = None

    # --- read-only views -----------------------------------------------------------

    @property
    def mode(self) -> PttMode:
        return self._mode

    @property
    def state(self) -> TxState:
        """The current state; DENIED reads as IDLE once it has been shown long enough."""
        if self._state is TxState.DENIED and self._clock() >= self._denied_until:
            return TxState.IDLE
        return self._state

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def channel(self) -> int | None:
        """The channel being requested or transmitted on, or None when idle."""
        if self._state in (TxState.REQUESTING, TxState.CANCELLING, TxState.TRANSMITTING):
            return self._channel
        return None

    @property
    def emergency(self) -> bool:
        """True while the request or transmission in progress is an emergency call."""
        return self.channel is not None and self._priority is Priority.EMERGENCY

    @property
    def held_sources(self) -> frozenset[str]:
        return frozenset(self._held)

    @property
    def denied_holder(self) -> str | None:
        """Who held the floor at the last denial, while the DENIED state shows."""
        return self._denied_holder if self.state is TxState.DENIED else None

    def talk_remaining_s(self) -> float | None:
        """Seconds left before the server's max talk time, while transmitting."""
        if self._state is not TxState.TRANSMITTING or self._max_ms is None:
            return None
        assert self._tx_since is not None
        return max(0.0, self._max_ms / 1000.0 - (self._clock() - self._tx_since))

    # --- configuration -------------------------------------------------------------

    def set_mode(self, mode: PttMode) -> list[Effect]:
        """Switch mode; anything in progress ends first, so no mode change strands a
        transmission (a toggle transmission with no source held would never end in
        HOLD mode)."""
        effects = self._end_local() if mode is not self._mode else []
        self._mode = mode
        return effects

    def set_connected(self, connected: bool) -> list[Effect]:
        """The session layer's view of the link. Going down is `on_connection_lost()`."""
        if not connected:
            return self.on_connection_lost()
        self._connected = True
        return []

    # --- PTT sources ---------------------------------------------------------------

    def press(self, source: str, *, emergency: bool = False) -> list[Effect]:
        """A PTT source went down. `emergency` asks with priority emergency."""
        if source in self._held:
            return []  # auto-repeat, or a duplicate event from the same device
        self._held.add(source)
        state = self.state
        if self._mode is PttMode.TOGGLE and state is TxState.TRANSMITTING:
            return self._end_transmission()
        if self._mode is PttMode.TOGGLE and state is TxState.REQUESTING:
            self._state = TxState.CANCELLING
            return []
        if state is TxState.CANCELLING:
            # Pressed again before the answer came: the request in flight serves again.
            self._state = TxState.REQUESTING
            return []
        if state in (TxState.REQUESTING, TxState.TRANSMITTING):
            return []  # HOLD: another source joins the one already talking
        return self._request(Priority.EMERGENCY if emergency else Priority.NORMAL)

    def release(self, source: str) -> list[Effect]:
        """A PTT source went up. Ignored for a source that is not held."""
        if source not in self._held:
            return []
        self._held.discard(source)
        if self._mode is PttMode.TOGGLE or self._held:
            return []
        if self._state is TxState.TRANSMITTING:
            return self._end_transmission()
        if self._state is TxState.REQUESTING:
            self._state = TxState.CANCELLING
        return []

    def release_all(self) -> list[Effect]:
        """Forget every held source and end anything in progress.

        For when key releases may never arrive (the window lost focus, a pedal was
        unplugged): a stuck transmitter is worse than a dropped press.
        """
        self._held.clear()
        return self._end_local()

    # --- server answers (from the session layer) -----------------------------------

    def on_granted(self, channel: int, max_ms: int | None = None) -> list[Effect]:
        """floor_request answered `granted: true`."""
        if self._state is TxState.REQUESTING and channel == self._channel:
            self._state = TxState.TRANSMITTING
            self._tx_since = self._clock()
            self._max_ms = max_ms
            return [StartMicrophone(), PlayTone("talk_permit")]
        if self._state is TxState.TRANSMITTING and channel == self._channel:
            return []  # a duplicate answer
        # Nobody wants this floor any more (let go before the answer, or a stale grant):
        # give it back at once so no transmitter is left holding it.
        if self._state is TxState.CANCELLING and channel == self._channel:
            self._go_idle()
        return [ReleaseFloor(channel)] if self._connected else []

    def on_denied(self, channel: int, holder_name: str | None) -> list[Effect]:
        """floor_request answered `granted: false` (busy). No queueing: press again."""
        if self._state not in (TxState.REQUESTING, TxState.CANCELLING) or channel != self._channel:
            return []
        self._go_idle()
        self._state = TxState.DENIED
        self._denied_until = self._clock() + DENIED_SHOW_S
        self._denied_holder = holder_name
        who = f"{holder_name} is speaking" if holder_name else "someone else is speaking"
        return [PlayTone("busy"), ShowMessage(f"Channel busy: {who}")]

    def on_failed(self, channel: int, reason: str) -> list[Effect]:
        """floor_request failed without an answer (an error response, a timeout): nothing
        was granted, so go idle and say why; the dispatcher may press again."""
        if self._state not in (TxState.REQUESTING, TxState.CANCELLING) or channel != self._channel:
            return []
        self._go_idle()
        return [PlayTone("busy"), ShowMessage(f"Cannot talk: {reason}")]

    def on_revoked(self, channel: int, reason: str) -> list[Effect]:
        """floor_revoked: the server took the floor back (reason per PROTOCOL.md)."""
        if self._state is not TxState.TRANSMITTING or channel != self._channel:
            return []
        tone, text = _REVOKE_FEEDBACK.get(reason, _REVOKE_UNKNOWN)
        self._go_idle()
        # Held sources stay held: the dispatcher must let go and press again to talk.
        return [StopMicrophone(), PlayTone(tone), ShowMessage(text)]

    def on_connection_lost(self) -> list[Effect]:
        """The signaling link is down: stop talking now; the server frees the floor."""
        self._connected = False
        state = self._state
        self._go_idle()
        if state is TxState.TRANSMITTING:
            return [StopMicrophone(), PlayTone("busy"), ShowMessage("Transmission ended: connection lost")]
        if state in (TxState.REQUESTING, TxState.CANCELLING):
            return [ShowMessage("Connection lost before the floor was granted")]
        return []

    # --- internals -----------------------------------------------------------------

    def _request(self, priority: Priority) -> list[Effect]:
        if not self._connected:
            return [PressRefused(REFUSED_NOT_CONNECTED), ShowMessage("Cannot talk: not connected")]
        if self.target is None:
            return [PressRefused(REFUSED_NO_CHANNEL), ShowMessage("Cannot talk: no channel selected")]
        self._state = TxState.REQUESTING
        self._channel = self.target
        self._priority = priority
        self._denied_holder = None
        return [RequestFloor(self.target, priority.value)]

    def _end_transmission(self) -> list[Effect]:
        """Our own release after transmitting."""
        channel = self._channel
        assert channel is not None
        self._go_idle()
        return [StopMicrophone(), ReleaseFloor(channel), PlayTone("end_of_tx")]

    def _end_local(self) -> list[Effect]:
        """End whatever is in progress because the dispatcher asked (not the server)."""
        if self._state is TxState.TRANSMITTING:
            return self._end_transmission()
        if self._state is TxState.REQUESTING:
            self._state = TxState.CANCELLING  # the answer still comes; a grant is released
        return []

    def _go_idle(self) -> None:
        self._state = TxState.IDLE
        self._channel = None
        self._priority = Priority.NORMAL
        self._tx_since = None
        self._max_ms = None
