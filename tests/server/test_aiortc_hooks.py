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


async def _connected_pair(park_rtcp: bool = False):
    """A client that sends a WAV and a server-shaped answerer, on loopback; with
    `park_rtcp`, the server side's RTCP loops are parked before connecting. Returns the
    peers, the server's parked track and the compound RTCP the client receives."""
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
    if park_rtcp:
        for transceiver in (mic, slot):
            hooks.park_rtcp_loops(transceiver)
            hooks.park_rtcp_loops(transceiver)  # idempotent
    await server.setLocalDescription(await server.createAnswer())
    await client.setRemoteDescription(server.localDescription)
    rtcp: list[bytes] = []
    hooks.observe_incoming_rtcp(hooks.dtls_transport_of(client), rtcp.append)
    for _ in range(100):
        if client.connectionState == "connected" and server.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    assert server.connectionState == "connected"
    return client, server, parked, rtcp


async def test_tap_sees_rtp_and_writer_reaches_the_client():
    client, server, parked, _ = await _connected_pair()
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
        seen: list[bytes] = []
        hooks.observe_incoming_rtp(hooks.dtls_transport_of(client), seen.append)
        for i, packet in enumerate(tapped[:10]):
            header = bytes([0x80, pt]) + (1000 + i).to_bytes(2, "big") + (960 * i).to_bytes(4, "big")
            assert writer.write(header + slot.sender._ssrc.to_bytes(4, "big") + packet[12:])
        # The fan-out's way: build in place in the writer's buffer, protect in place.
        packet_buffer = writer.new_buffer()
        for i, packet in enumerate(tapped[10:15]):
            header = bytes([0x80, pt]) + (1010 + i).to_bytes(2, "big") + (960 * (10 + i)).to_bytes(4, "big")
            built = header + slot.sender._ssrc.to_bytes(4, "big") + packet[12:]
            packet_buffer.view[: len(built)] = built
            assert writer.send_buffer(packet_buffer, len(built))
        await asyncio.sleep(0.3)
        got = [p for p in seen if int.from_bytes(p[8:12], "big") == slot.sender._ssrc]
        assert [int.from_bytes(p[2:4], "big") for p in got] == list(range(1000, 1015))
        assert [p[12:] for p in got[10:]] == [p[12:] for p in tapped[10:15]]
    finally:
        parked.stop()
        await client.close()
        await server.close()


async def test_parked_track_keeps_the_sender_loop_asleep():
    client, server, parked, _ = await _connected_pair()
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
    bare = Bare()
    bare.transport = Bare()
    with pytest.raises(hooks.HookError):
        hooks.RawRtpWriter(bare)
    with pytest.raises(hooks.HookError):
        hooks.negotiated_opus_payload_type(Bare())
    assert RTCRtpSender  # imported for the capability list used by opus_only()
    assert [c.mimeType for c in hooks.opus_only()] == ["audio/opus"]


# --- RTCP hooks (server/media/rtcp.py's scheduler sends the reports) ---------------------


async def test_private_names_the_rtcp_hooks_use_exist():
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("audio")
    for owner, prefix in ((transceiver.sender, "_RTCRtpSender"), (transceiver.receiver, "_RTCRtpReceiver")):
        assert isinstance(getattr(owner, f"{prefix}__rtcp_started"), asyncio.Event)
        assert isinstance(getattr(owner, f"{prefix}__rtcp_exited"), asyncio.Event)
    assert callable(RTCRtpSender._run_rtcp) and callable(RTCRtpReceiver._run_rtcp)
    assert callable(RTCRtpSender._send_rtcp)
    assert callable(RTCDtlsTransport._handle_rtcp_data)
    assert isinstance(hooks.connection_cname(pc), str) and hooks.connection_cname(pc)
    assert hooks.local_ssrc(transceiver) == transceiver.sender._ssrc
    await pc.close()


async def test_parked_rtcp_loops_stay_silent_and_the_raw_writer_reports():
    import time

    from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpSrPacket

    from server.media.rtcp import cname_sdes, ntp_timestamp, sender_report

    client, server, parked, rtcp = await _connected_pair(park_rtcp=True)
    try:
        _, slot = server.getTransceivers()
        # aiortc's sender loop would have sent an SR within 1.5 s of starting.
        await asyncio.sleep(1.6)
        assert rtcp == []
        writer = hooks.RawRtcpWriter(hooks.dtls_transport_of(server))
        ssrc = hooks.local_ssrc(slot)
        report = sender_report(ssrc, ntp_timestamp(time.time()), 4242, 17, 1190)
        assert writer.write(report + cname_sdes([ssrc], hooks.connection_cname(server).encode()))
        for _ in range(40):  # bounded: 2 s
            if rtcp:
                break
            await asyncio.sleep(0.05)
        sr = RtcpPacket.parse(rtcp[0])[0]
        assert isinstance(sr, RtcpSrPacket) and sr.ssrc == ssrc and sr.sender_info.packet_count == 17
        # The client's aiortc receiver took it through its normal path.
        receiver = client.getTransceivers()[1].receiver
        stats = [s for s in (await receiver.getStats()).values() if s.type == "remote-outbound-rtp"]
        assert stats and stats[0].packetsSent == 17 and stats[0].bytesSent == 1190

        # Closing still says BYE for the listener's SSRC (the parked loop's farewell).
        parked.stop()
        await server.close()
        for _ in range(40):  # bounded: 2 s
            if any(isinstance(p, RtcpByePacket) for data in rtcp for p in RtcpPacket.parse(data)):
                break
            await asyncio.sleep(0.05)
        byes = [p for data in rtcp for p in RtcpPacket.parse(data) if isinstance(p, RtcpByePacket)]
        assert byes and ssrc in byes[0].sources
        assert not writer.write(report)  # closed: nothing goes out
    finally:
        parked.stop()
        await client.close()
        await server.close()


def test_missing_rtcp_internals_raise_hook_errors():
    class Bare:
        pass

    class Transceiver:
        sender = Bare()
        receiver = Bare()

    with pytest.raises(hooks.HookError):
        hooks.park_rtcp_loops(Transceiver())
    with pytest.raises(hooks.HookError):
        hooks.local_ssrc(Transceiver())
    with pytest.raises(hooks.HookError):
        hooks.connection_cname(Bare())
    with pytest.raises(hooks.HookError):
        hooks.observe_incoming_rtcp(Bare(), lambda data: None)
    bare_dtls = Bare()
    bare_dtls.transport = Bare()
    with pytest.raises(hooks.HookError):
        hooks.RawRtcpWriter(bare_dtls)


async def test_aiortc_sender_figures_read_the_senders_own_counters():
    import time

    client, server, parked, _ = await _connected_pair(park_rtcp=True)
    try:
        mic = client.getTransceivers()[0].sender  # aiortc's own RTP loop sends the tone
        figures = hooks.AiortcSenderFigures(mic)
        for _ in range(40):  # bounded: 2 s
            if figures.packets_sent >= 10:
                break
            await asyncio.sleep(0.05)
        stats = [s for s in (await mic.getStats()).values() if s.type == "outbound-rtp"][0]
        before = time.monotonic()
        assert figures.ssrc == mic._ssrc
        assert 10 <= figures.packets_sent and abs(figures.packets_sent - stats.packetsSent) <= 2
        assert figures.octets_sent > 0
        assert figures.last_sent_at is not None and figures.last_sent_at <= before
        assert 0 <= figures.last_rtp_timestamp < 2**32
        unsent = hooks.AiortcSenderFigures(server.getTransceivers()[1].sender)
        assert unsent.packets_sent == 0 and unsent.last_sent_at is None
    finally:
        parked.stop()
        await client.close()
        await server.close()
    with pytest.raises(hooks.HookError):
        hooks.AiortcSenderFigures(object())
