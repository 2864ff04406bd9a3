"""What the dispatcher sees per channel: name, join/mute/volume, who is speaking, activity.

`ChannelBoard` is driven by protocol dicts exactly as the server sends them (docs/protocol.md):
the `channels` list of the hello response and of `channels_changed`, the `floor_taken` and
`floor_idle` events, and the `join` response. Local choices (mute, volume) are kept here
too, across channel-list changes, so the board is the one place the viewmodels read from.

Each `ChannelState` is frozen: the board replaces a channel's state on every change, so a
`snapshot()` handed to the UI never changes under it.

All methods: call on the console's event loop only (not thread-safe). The media layer's
audio-level callback must post `note_audio()` to that loop rather than call it directly.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_VOLUME = 0.8
# The activity light stays lit this long after the last audio or floor activity, so a
# short burst is still visible and the light fades instead of flickering.
ACTIVITY_HOLD_S = 1.5


class UnknownChannel(KeyError):
    """A local action named a channel the board does not hold."""

    def __init__(self, channel_id: int):
        super().__init__(f"channel {channel_id} is not on the board")
        self.channel_id = channel_id


class FloorStatus(enum.Enum):
    IDLE = "idle"
    TAKEN = "taken"


@dataclass(frozen=True)
class Floor:
    """A channel's floor as last reported: idle, or taken by a holder since a server time.

    `since` is the server's wall-clock time (seconds since the epoch) from the event.
    """

    status: FloorStatus = FloorStatus.IDLE
    holder_id: int | None = None
    holder_name: str | None = None
    since: float | None = None

    @classmethod
    def from_protocol(cls, floor: Mapping[str, Any] | None) -> Floor:
        """A protocol `Floor` object (`{"state": "idle"}` or `{"state": "taken", ...}`)."""
        if not floor or floor.get("state") != "taken":
            return cls()
        holder = floor.get("holder") or {}
        return cls(FloorStatus.TAKEN, holder.get("user_id"), holder.get("name"), floor.get("since"))

    @property
    def taken(self) -> bool:
        return self.status is FloorStatus.TAKEN


@dataclass(frozen=True)
class ChannelState:
    """One channel as the dispatcher sees it."""

    id: int
    name: str
    team: str = ""
    event: str = ""
    joined: bool = False
    muted: bool = False
    volume: float = DEFAULT_VOLUME
    floor: Floor = field(default_factory=Floor)
    speaking: str = ""  # the banner: "Alice is speaking", "You are speaking", or ""
    # Last time (board clock) audio or floor activity was seen; None: never.
    activity: float | None = None

    def is_active(self, now: float, hold_s: float = ACTIVITY_HOLD_S) -> bool:
        """Light the activity lamp: the floor is taken, or activity within `hold_s`."""
        if self.floor.taken:
            return True
        return self.activity is not None and 0.0 <= now - self.activity < hold_s

    def activity_level(self, now: float, hold_s: float = ACTIVITY_HOLD_S) -> float:
        """1.0 while active fading linearly to 0.0 over `hold_s`, for a fading lamp."""
        if self.floor.taken:
            return 1.0
        if self.activity is None or now < self.activity:
            return 0.0
        return max(0.0, 1.0 - (now - self.activity) / hold_s)


@dataclass(frozen=True)
class ChannelChanges:
    """What `apply_channels` changed. The session layer leaves `removed_joined`."""

    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    removed_joined: tuple[int, ...] = ()  # removed ones this console had joined
    updated: tuple[int, ...] = ()  # kept, with a new name/team/event


class ChannelBoard:
    """The dispatcher's channels by id, in the order the server lists them.

    `self_user_id` (the logged-in user) turns our own floor into "You are speaking".
    """

    def __init__(self, clock: Callable[[], float], *, self_user_id: int | None = None) -> None:
        self._clock = clock
        self.self_user_id = self_user_id
        self._channels: dict[int, ChannelState] = {}

    # --- reading -------------------------------------------------------------------

    def snapshot(self) -> tuple[ChannelState, ...]:
        """Every channel, in display order."""
        return tuple(self._channels.values())

    def get(self, channel_id: int) -> ChannelState:
        try:
            return self._channels[channel_id]
        except KeyError:
            raise UnknownChannel(channel_id) from None

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def ids(self) -> tuple[int, ...]:
        return tuple(self._channels)

    def joined_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self._channels.values() if c.joined)

    def muted_ids(self) -> frozenset[int]:
        return frozenset(c.id for c in self._channels.values() if c.muted)

    # --- server: channel list ------------------------------------------------------

    def apply_channels(self, channels: Iterable[Mapping[str, Any]]) -> ChannelChanges:
        """Take a full `[Channel]` list (hello response or `channels_changed`).

        New channels are added, gone ones removed (and reported, so the outer layer can
        leave them and drop their audio), kept ones keep their joined/mute/volume/floor.
        The new list's order becomes the display order. Malformed entries are skipped.
        """
        old = self._channels
        new: dict[int, ChannelState] = {}
        added: list[int] = []
        updated: list[int] = []
        for entry in channels:
            cid = _channel_id(entry.get("id") if isinstance(entry, Mapping) else None)
            if cid is None or cid in new:
                logger.warning("ChannelBoard: skipping malformed channel entry %r", entry)
                continue
            name = str(entry.get("name", ""))
            team = str(entry.get("team") or "")
            event = str(entry.get("event") or "")
            prev = old.get(cid)
            if prev is None:
                new[cid] = ChannelState(cid, name, team, event)
                added.append(cid)
            else:
                if (prev.name, prev.team, prev.event) != (name, team, event):
                    updated.append(cid)
                new[cid] = replace(prev, name=name, team=team, event=event)
        removed = [cid for cid in old if cid not in new]
        removed_joined = [cid for cid in removed if old[cid].joined]
        self._channels = new
        return ChannelChanges(tuple(added), tuple(removed), tuple(removed_joined), tuple(updated))

    # --- server: floor events ------------------------------------------------------

    def on_floor_taken(self, event: Mapping[str, Any]) -> bool:
        """A `floor_taken` event. Returns False when it names no channel on the board."""
        cid = _channel_id(event.get("channel"))
        if cid not in self._channels:
            logger.debug("ChannelBoard: floor_taken for unknown channel %r", event.get("channel"))
            return False
        holder = event.get("holder") or {}
        floor = Floor(FloorStatus.TAKEN, holder.get("user_id"), holder.get("name"), event.get("since"))
        self._set_floor(cid, floor)
        return True

    def on_floor_idle(self, event: Mapping[str, Any]) -> bool:
        """A `floor_idle` event. Returns False when it names no channel on the board."""
        cid = _channel_id(event.get("channel"))
        if cid not in self._channels:
            logger.debug("ChannelBoard: floor_idle for unknown channel %r", event.get("channel"))
            return False
        # Stamping activity now makes the lamp fade from the end of the transmission.
        self._set_floor(cid, Floor())
        return True

    def on_joined(self, channel_id: int, response: Mapping[str, Any] | None = None) -> None:
        """Our `join` succeeded; `response` is its answer (`floor`, `muted`), if at hand."""
        state = self.get(channel_id)
        state = replace(state, joined=True)
        if response is not None:
            state = replace(state, muted=bool(response.get("muted", state.muted)))
            self._channels[channel_id] = state
            if "floor" in response:
                self._set_floor(channel_id, Floor.from_protocol(response["floor"]), stamp=False)
            return
        self._channels[channel_id] = state

    def set_joined(self, channel_id: int, joined: bool) -> None:
        """Record a join or leave (a leave also forgets the server-side mute)."""
        state = self.get(channel_id)
        self._channels[channel_id] = replace(state, joined=joined, muted=state.muted and joined)

    # --- local choices -------------------------------------------------------------

    def set_muted(self, channel_id: int, muted: bool) -> None:
        self._channels[channel_id] = replace(self.get(channel_id), muted=bool(muted))

    def set_volume(self, channel_id: int, volume: float) -> float:
        """Set the playback volume, clamped to 0.0–1.0; returns the value kept."""
        volume = float(volume)
        if math.isnan(volume):
            raise ValueError("volume must be a number, not NaN")
        volume = min(1.0, max(0.0, volume))
        self._channels[channel_id] = replace(self.get(channel_id), volume=volume)
        return volume

    def note_audio(self, channel_id: int) -> None:
        """Audio was heard on this channel just now (from the media layer's level meter)."""
        if channel_id in self._channels:
            self._channels[channel_id] = replace(self._channels[channel_id], activity=self._clock())

    # --- internals -----------------------------------------------------------------

    def _set_floor(self, cid: int, floor: Floor, *, stamp: bool = True) -> None:
        state = self._channels[cid]
        self._channels[cid] = replace(
            state,
            floor=floor,
            speaking=self._speaking_text(floor),
            activity=self._clock() if stamp else state.activity,
        )

    def _speaking_text(self, floor: Floor) -> str:
        if not floor.taken:
            return ""
        if self.self_user_id is not None and floor.holder_id == self.self_user_id:
            return "You are speaking"
        return f"{floor.holder_name or 'Someone'} is speaking"


def _channel_id(value: Any) -> int | None:
    """Channel ids are integers on the wire (docs/protocol.md extensions); bools are not."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
