"""Tornado request handlers of the HTTP API."""
