"""The libopus binding (vpdesk.audio.opus) on real Opus packets of speech, encoded by
PyAV's libopus encoder with the console's PTT settings (in-band FEC on)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tests.audio_tools import read_wav, speech_wav
from vpdesk.audio import opus
from vpdesk.audio.opus import OpusDecoder, OpusError, packet_samples

SPEECH = "Dispatch copies, all clear on channel two."
FRAME = 960


def encode(samples: np.ndarray) -> list[bytes]:
    """int16 mono 48 kHz → 20 ms Opus packets, as server/media/aiortc_hooks
    .configure_opus_encoder sets aiortc's encoder up for PTT."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    enc.bit_rate = 28000
    enc.options = {"application": "voip", "fec": "1", "packet_loss": "10", "frame_duration": "20"}
    enc.open()
    packets = []
    for i in range(len(samples) // FRAME):
        frame = av.AudioFrame.from_ndarray(samples[None, i * FRAME : (i + 1) * FRAME], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * FRAME
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets


@pytest.fixture(scope="module")
def packets(tmp_path_factory) -> list[bytes]:
    path = speech_wav(tmp_path_factory.mktemp("speech"), SPEECH, seconds_min=2.0)
    return encode(read_wav(path))


def decode_all(packets: list[bytes], lost: int | None = None, mode: str = "") -> np.ndarray:
    """Decode every packet; packet `lost` never arrives and is replaced by `mode`:
    "fec" (the next packet's FEC), "plc" (concealment) or "silence" (skipped)."""
    decoder = OpusDecoder()
    out = []
    for i, packet in enumerate(packets):
        if i != lost:
            out.append(decoder.decode(packet))
        elif mode == "fec":
            out.append(decoder.decode_fec(packets[i + 1], FRAME))
        elif mode == "plc":
            out.append(decoder.conceal(FRAME))
        else:
            out.append(np.zeros(FRAME, np.float32))
    decoder.close()
    return np.concatenate(out)


def test_the_library_loads_and_reads_packet_durations(packets):
    assert opus.version().startswith("libopus")
    assert packet_samples(packets[10]) == FRAME
    with pytest.raises(OpusError):
        packet_samples(b"\xff\xff\xff\xff\xff")  # 63 frames: not a valid packet


def pyav_decode(packets: list[bytes], codec: str) -> np.ndarray:
    decoder = av.CodecContext.create(codec, "r")
    decoder.sample_rate, decoder.layout = 48000, "mono"
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(av.Packet(p))])
    return pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm


def test_decoding_matches_pyav(packets):
    ours = decode_all(packets)
    assert ours.dtype == np.float32 and len(ours) == FRAME * len(packets)
    assert np.abs(ours).max() > 0.05  # speech, not silence
    # PyAV's libopus decoder (s16 out): the same samples, to the last bit of int16.
    theirs = pyav_decode(packets, "libopus")
    assert len(theirs) == len(ours)
    assert np.abs(ours - theirs).max() < 1e-4
    # FFmpeg's own Opus decoder has its own SILK code: close, not identical.
    native = pyav_decode(packets, "opus")
    assert np.corrcoef(ours, native)[0, 1] > 0.9


def test_fec_beats_concealment_which_beats_silence(packets):
    """Drop one voiced packet at a time and compare the frame put in its place with
    the frame decoded without loss."""
    reference = decode_all(packets)
    energy = np.array([np.sum(reference[i * FRAME : (i + 1) * FRAME] ** 2) for i in range(len(packets))])
    voiced = [i for i in range(5, len(packets) - 5) if energy[i] > np.percentile(energy, 60)][::4]
    assert len(voiced) >= 8
    errors = {mode: [] for mode in ("fec", "plc", "silence")}
    for i in voiced:
        part = slice(i * FRAME, (i + 1) * FRAME)
        for mode, found in errors.items():
            got = decode_all(packets, i, mode)
            found.append(np.sum((got[part] - reference[part]) ** 2) / energy[i])
    fec, plc, silence = (float(np.mean(errors[m])) for m in ("fec", "plc", "silence"))
    assert silence == pytest.approx(1.0)
    assert plc < 0.9 * silence, f"concealment no better than silence ({plc:.2f})"
    assert fec < 0.5 * plc, f"FEC not much better than concealment ({fec:.2f} vs {plc:.2f})"
    assert 10 * np.log10(1 / fec) > 5.0  # FEC's frame is a recognisable copy


def test_concealment_without_history_is_silence_and_bad_input_raises():
    decoder = OpusDecoder()
    assert np.all(decoder.conceal(FRAME) == 0.0)
    with pytest.raises(OpusError):
        decoder.decode(b"\xff\xff\xff\xff\xff")
    decoder.reset()
    decoder.close()
    decoder.close()  # idempotent
    with pytest.raises(OpusError):
        decoder.decode(b"\x08")


def test_the_bundled_copy_is_found_when_there_is_no_system_one(monkeypatch):
    candidates = opus._bundled_candidates()
    assert candidates, "PyAV's wheel bundles libopus"
    monkeypatch.setattr(opus.ctypes.util, "find_library", lambda name: None)
    lib = opus._load()
    assert lib.opus_get_version_string().decode().startswith("libopus")
