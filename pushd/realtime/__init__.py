"""Real-time delivery to clients: the WebSocket endpoint and the bus consumer."""
