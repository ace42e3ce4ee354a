"""WebSocket handlers and the Hub that fans each group's events out to this node's sockets."""
