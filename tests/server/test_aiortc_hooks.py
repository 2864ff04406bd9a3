"""The aiortc internals server/media/aiortc_hooks.py relies on, checked against the pinned
aiortc: an upgrade that moves one of them fails here, by name, before anything subtler."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from server.media import aiortc_hooks as hooks
from tests.audio_tools import WavTrack


def test_aiortc_is_the_pinned_version():
    # The hooks were written against these; pyproject pins them.
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"


def test_private_names_the_hooks_use_exist():
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    assert callable(getattr(RTCDtlsTransport, "_handle_rtp_data"))
    assert callable(getattr(RTCRtpReceiver, "_RTCRtpReceiver__stop_decoder"))
    assert hasattr(aioice.ice, "get_host_addresses")
    assert hasattr(hooks.aiortc_opus.OpusEncoder, "__init__")


def test_host_addresses_are_ours_and_restorable():
    hooks.use_host_addresses(["127.0.0.1", "::1"])
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    finally:
        hooks.use_host_addresses(None)
    assert aioice.ice.get_host_addresses is hooks._original_get_host_addresses
    hooks.use_host_addresses(["127.0.0.1"])


def test_opus_encoder_is_ptt_shaped():
    from aiortc.codecs.opus import OpusEncoder

    hooks.configure_opus_encoder()
    encoder = OpusEncoder()
    assert encoder.codec.bit_rate == hooks.OPUS_BITRATE
    assert encoder.codec.layout.name == "mono"
    tone = (np.sin(np.arange(48_000) * 2 * np.pi * 300 / 48_000) * 8000).astype(np.int16)
    track = WavTrack(tone)
    packets: list[bytes] = []

    async def encode_second():
        for _ in range(50):
            payloads, _ = encoder.encode(await track.recv())
            packets.extend(payloads)

    asyncio.run(encode_second())
    kbps = sum(len(p) for p in packets) * 8 / 1000
    assert 15 <= kbps <= 40, f"{kbps:.1f} kb/s"
    # Opus TOC byte (RFC 6716 3.1): one 20 ms frame per packet, mono.
    twenty_ms_configs = {1, 5, 9, 13, 15, 19, 23, 27, 31}
    assert packets and all(p[0] >> 3 in twenty_ms_configs for p in packets)
    assert all(p[0] & 0x04 == 0 and p[0] & 0x03 == 0 for p in packets)


async def _connected_pair():
    """A client that sends a WAV and a server-shaped answerer, on loopback."""
    hooks.use_host_addresses(["127.0.0.1"])
    tone = (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver(WavTrack(tone, loop=True), direction="sendonly")
    client.addTransceiver("audio", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    mic, slot = server.getTransceivers()
    mic.direction = "recvonly"
    slot.direction = "sendonly"
    parked = hooks.ParkedTrack()
    slot.sender.replaceTrack(parked)
    await server.setLocalDescription(await server.createAnswer())
    await client.setRemoteDescription(server.localDescription)
    for _ in range(100):
        if client.connectionState == "connected" and server.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    assert server.connectionState == "connected"
    return client, server, parked


async def test_tap_sees_rtp_and_writer_reaches_the_client():
    client, server, parked = await _connected_pair()
    try:
        tapped: list[bytes] = []
        dtls = hooks.dtls_transport_of(server)
        hooks.tap_incoming_rtp(dtls, tapped.append)
        await asyncio.sleep(0.5)
        assert len(tapped) >= 15
        assert all(p[0] >> 6 == 2 for p in tapped)  # RTP version 2, SRTP removed

        mic, slot = server.getTransceivers()
        hooks.stop_receiver_decoder(mic.receiver)
        writer = hooks.RawRtpWriter(dtls)
        assert writer.ready
        pt = hooks.negotiated_opus_payload_type(slot)
        counters = hooks.SenderReportCounters(slot.sender)
        seen: list[bytes] = []
        hooks.observe_incoming_rtp(hooks.dtls_transport_of(client), seen.append)
        for i, packet in enumerate(tapped[:10]):
            header = bytes([0x80, pt]) + (1000 + i).to_bytes(2, "big") + (960 * i).to_bytes(4, "big")
            assert writer.write(header + slot.sender._ssrc.to_bytes(4, "big") + packet[12:])
        # The fan-out's way: build in place in the writer's buffer, protect in place.
        buffer, view = writer.new_buffer()
        for i, packet in enumerate(tapped[10:15]):
            header = bytes([0x80, pt]) + (1010 + i).to_bytes(2, "big") + (960 * (10 + i)).to_bytes(4, "big")
            built = header + slot.sender._ssrc.to_bytes(4, "big") + packet[12:]
            view[: len(built)] = built
            assert writer.send_buffer(buffer, view, len(built))
        counters.sync(10, 123, 960 * 9)
        await asyncio.sleep(0.3)
        got = [p for p in seen if int.from_bytes(p[8:12], "big") == slot.sender._ssrc]
        assert [int.from_bytes(p[2:4], "big") for p in got] == list(range(1000, 1015))
        assert [p[12:] for p in got[10:]] == [p[12:] for p in tapped[10:15]]
        assert slot.sender._RTCRtpSender__packet_count == 10
        assert slot.sender._RTCRtpSender__octet_count == 123
        assert slot.sender._RTCRtpSender__rtp_timestamp == 960 * 9
    finally:
        parked.stop()
        await client.close()
        await server.close()


async def test_parked_track_keeps_the_sender_loop_asleep():
    client, server, parked = await _connected_pair()
    try:
        _, slot = server.getTransceivers()
        stats = await slot.sender.getStats()
        sent = [s for s in stats.values() if s.type == "outbound-rtp"][0].packetsSent
        await asyncio.sleep(0.3)
        stats = await slot.sender.getStats()
        assert [s for s in stats.values() if s.type == "outbound-rtp"][0].packetsSent == sent == 0
    finally:
        parked.stop()
        await client.close()
        await server.close()


def test_missing_internals_raise_hook_errors():
    class Bare:
        pass

    with pytest.raises(hooks.HookError):
        hooks.tap_incoming_rtp(Bare(), lambda data: None)
    with pytest.raises(hooks.HookError):
        hooks.stop_receiver_decoder(Bare())
    with pytest.raises(hooks.HookError):
        hooks.SenderReportCounters(Bare())
    bare = Bare()
    bare.transport = Bare()
    with pytest.raises(hooks.HookError):
        hooks.RawRtpWriter(bare)
    with pytest.raises(hooks.HookError):
        hooks.negotiated_opus_payload_type(Bare())
    assert RTCRtpSender  # imported for the capability list used by opus_only()
    assert [c.mimeType for c in hooks.opus_only()] == ["audio/opus"]
