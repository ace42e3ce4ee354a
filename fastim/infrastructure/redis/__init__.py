"""The Redis adapters: repositories and broker over the key layout of SPEC §3."""
