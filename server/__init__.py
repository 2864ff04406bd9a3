"""vpdesk's SFU server: WebSocket signaling, floor control and forwarded WebRTC audio."""

__version__ = "0.1.0"
