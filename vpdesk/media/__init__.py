"""The console's WebRTC side: one peer connection per session (aiortc)."""
