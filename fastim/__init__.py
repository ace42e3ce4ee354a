"""fastim: a distributed group-chat server, wire-compatible with fast-im."""

__version__ = "0.1.0"
