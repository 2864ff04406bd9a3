"""The console's connection to the server: signaling over WebSocket, login."""
