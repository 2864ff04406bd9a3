"""The console's pure state: PTT, channels, reconnect, tones.

Stdlib only: no Qt, aiortc, sounddevice or aiohttp. State machines driven by method calls
and an injected clock; they return effects for the outer layers and perform no I/O.
"""

from vpdesk.core.channels import (
    ChannelBoard,
    ChannelChanges,
    ChannelState,
    Floor,
    FloorStatus,
    UnknownChannel,
)
from vpdesk.core.connection import ConnectionState, Reconnector, RestoreActions, ResumePlan
from vpdesk.core.ptt import (
    Effect,
    PlayTone,
    PressRefused,
    Priority,
    PttController,
    PttMode,
    ReleaseFloor,
    RequestFloor,
    ShowMessage,
    StartMicrophone,
    StopMicrophone,
    TxState,
)
from vpdesk.core.tones import TONE_NAMES, ToneSetting, ToneSettings, UnknownTone, resolve_tone

__all__ = [
    "TONE_NAMES",
    "ChannelBoard",
    "ChannelChanges",
    "ChannelState",
    "ConnectionState",
    "Effect",
    "Floor",
    "FloorStatus",
    "PlayTone",
    "PressRefused",
    "Priority",
    "PttController",
    "PttMode",
    "Reconnector",
    "ReleaseFloor",
    "RequestFloor",
    "RestoreActions",
    "ResumePlan",
    "ShowMessage",
    "StartMicrophone",
    "StopMicrophone",
    "ToneSetting",
    "ToneSettings",
    "TxState",
    "UnknownChannel",
    "UnknownTone",
    "resolve_tone",
]
