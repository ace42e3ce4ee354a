"""Adapters that implement the domain's ports: Redis for production, memory for one node."""
