"""A number that moves whenever a connection's media path may have changed.

The C fan-out (server/media/fanout.c) sends on a listener's behalf with what Python last
checked: its SRTP context, the socket, the nominated pair's address. It may go on doing so
only while none of those changed. Each connection keeps one C integer that is bumped on
every DTLS state change (connected, closed, failed: the SRTP session comes and goes with
them) and on every change of aioice's nominated pairs (a new pair, or none after a close);
an armed output remembers the value it was checked at and falls back to the Python path,
which checks again, as soon as it differs.

This reaches into aioice (its `_nominated` dict, pinned with aiortc): aiortc_hooks'
RawRtpWriter checks that it is there before it makes an epoch.
"""

from __future__ import annotations

import cffi

_ffi = cffi.FFI()


class _WatchedPairs(dict):
    """aioice's nominated pairs by component, calling back on every change."""

    __slots__ = ("on_change",)

    def __init__(self, pairs: dict, on_change) -> None:
        super().__init__(pairs)
        self.on_change = [on_change]

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def __setitem__(self, key, value) -> None:
        unchanged = self.get(key) is value  # a consent check may nominate the same pair again
        super().__setitem__(key, value)
        if not unchanged:
            self._changed()

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, *args):
        value = super().pop(*args)
        self._changed()
        return value

    def popitem(self):
        item = super().popitem()
        self._changed()
        return item

    def setdefault(self, key, default=None):
        value = super().setdefault(key, default)
        self._changed()
        return value

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        self._changed()


class ConnectionEpoch:
    """The epoch of one DTLS transport and its ICE connection."""

    __slots__ = ("cell", "address", "__weakref__")

    def __init__(self, dtls, ice) -> None:
        """`dtls`: an RTCDtlsTransport (an event emitter); `ice`: its aioice Connection."""
        self.cell = _ffi.new("uint32_t *")
        self.address = int(_ffi.cast("uintptr_t", self.cell))
        dtls.on("statechange", self.bump)
        pairs = ice._nominated
        if isinstance(pairs, _WatchedPairs):
            pairs.on_change.append(self.bump)
        else:
            ice._nominated = _WatchedPairs(pairs, self.bump)

    @property
    def value(self) -> int:
        return self.cell[0]

    def bump(self) -> None:
        self.cell[0] = (self.cell[0] + 1) & 0xFFFFFFFF
