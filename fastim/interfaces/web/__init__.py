"""The test page at ``/test/websocket``: a raw WebSocket console and a small chat client."""
