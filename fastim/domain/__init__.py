"""The chat domain: messages, groups and sessions, and the ports they need."""
