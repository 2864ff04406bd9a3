"""A small ctypes binding to libopus's decoder: decode, in-band FEC, and PLC.

PyAV's Opus decoder (FFmpeg's) decodes packets but cannot decode a packet's in-band FEC
for the frame before it, nor conceal a frame it never got; libopus's own API does both
(`opus_decode` with `decode_fec=1`, and with no packet). The console's receive path
(vpdesk.media.receive) needs exactly those, so it decodes through this module.

The library is the system's libopus if there is one, else the copy bundled in PyAV's
wheel, which every install of the console has:
- Linux wheels (auditwheel): `site-packages/av.libs/libopus-<hash>.so.<version>`;
- macOS wheels (delocate): `site-packages/av/.dylibs/libopus.<n>.dylib`;
- Windows wheels (delvewheel): `site-packages/av.libs/opus-<hash>.dll` or
  `libopus-<n>-<hash>.dll`.
libopus depends on nothing but the C library, so loading it by path needs no search path.

ctypes releases the GIL during each foreign call. A decoder is not thread-safe: use each
from one thread at a time (the receive path decodes on the audio callback's thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import sys

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz: the longest Opus packet
OPUS_OK = 0
OPUS_RESET_STATE = 4028


class OpusError(RuntimeError):
    """libopus is missing, or returned an error."""


def _bundled_candidates() -> list[str]:
    """libopus paths inside PyAV's installed wheel, for this platform."""
    try:
        import av
    except ImportError:
        return []
    package = os.path.dirname(av.__file__)
    site = os.path.dirname(package)
    if sys.platform == "darwin":
        patterns = [os.path.join(package, ".dylibs", "libopus*.dylib")]
    elif sys.platform == "win32":
        patterns = [os.path.join(site, "av.libs", "*opus*.dll"), os.path.join(package, "*opus*.dll")]
    else:
        patterns = [os.path.join(site, "av.libs", "libopus*.so*")]
    return sorted(path for pattern in patterns for path in glob.glob(pattern))


def _load() -> ctypes.CDLL:
    names = []
    system = ctypes.util.find_library("opus")
    if system:
        names.append(system)
    names += _bundled_candidates()
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
            continue
        _declare(lib)
        logger.debug("libopus %s from %s", lib.opus_get_version_string().decode(), name)
        return lib
    raise OpusError("libopus not found (neither the system's nor PyAV's bundled copy)"
                    + (": " + "; ".join(errors) if errors else ""))


def _declare(lib: ctypes.CDLL) -> None:
    c_void_p, c_int, c_int32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int32
    lib.opus_get_version_string.restype = ctypes.c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_create.argtypes = [c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decode_float.restype = c_int
    lib.opus_decode_float.argtypes = [c_void_p, ctypes.c_char_p, c_int32,
                                      ctypes.POINTER(ctypes.c_float), c_int, c_int]
    lib.opus_decoder_ctl.restype = c_int
    lib.opus_decoder_ctl.argtypes = [c_void_p, c_int]  # the one ctl used takes no argument
    lib.opus_packet_get_nb_samples.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, c_int32, c_int32]


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libopus, loaded on first use. Raises OpusError."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def version() -> str:
    return library().opus_get_version_string().decode()


def packet_samples(packet: bytes, rate: int = SAMPLE_RATE) -> int:
    """Samples per channel in an Opus packet at `rate`. Raises OpusError if malformed."""
    n = library().opus_packet_get_nb_samples(packet, len(packet), rate)
    if n < 0:
        raise OpusError(_strerror(n))
    return n


def _strerror(code: int) -> str:
    return library().opus_strerror(code).decode(errors="replace")


class OpusDecoder:
    """One libopus decoder, 48 kHz mono, float32 out.

    decode(packet): the packet's audio. decode_fec(next_packet, samples): the frame
    before `next_packet`, from its in-band FEC (concealment if it has none); call it
    before decode(next_packet). conceal(samples): a frame from nothing (PLC). Each
    returns a new float32 array; OpusError on a malformed packet.
    """

    def __init__(self, rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        if channels != 1:
            raise ValueError("mono only")
        self._lib = library()
        self.rate = rate
        error = ctypes.c_int(0)
        handle = self._lib.opus_decoder_create(rate, channels, ctypes.byref(error))
        if not handle or error.value != OPUS_OK:
            raise OpusError(f"opus_decoder_create: {_strerror(error.value)}")
        self._handle: int | None = handle
        self._out = np.zeros(MAX_FRAME_SAMPLES * rate // SAMPLE_RATE, dtype=np.float32)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def _run(self, packet: bytes | None, samples: int, fec: int) -> np.ndarray:
        if self._handle is None:
            raise OpusError("decoder is closed")
        samples = min(samples, len(self._out))
        n = self._lib.opus_decode_float(self._handle, packet, len(packet) if packet else 0,
                                        self._out_ptr, samples, fec)
        if n < 0:
            raise OpusError(_strerror(n))
        return self._out[:n].copy()

    def decode(self, packet: bytes) -> np.ndarray:
        return self._run(packet, len(self._out), 0)

    def decode_fec(self, next_packet: bytes, samples: int) -> np.ndarray:
        return self._run(next_packet, samples, 1)

    def conceal(self, samples: int) -> np.ndarray:
        return self._run(None, samples, 0)

    def reset(self) -> None:
        """Forget the stream's state (a new stream follows)."""
        if self._handle is not None:
            self._lib.opus_decoder_ctl(self._handle, OPUS_RESET_STATE)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.opus_decoder_destroy(handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the module may be gone
            pass
