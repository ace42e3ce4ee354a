"""The edges of fastim: HTTP and WebSocket handlers built on the domain services."""
