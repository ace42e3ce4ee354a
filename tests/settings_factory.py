"""Settings for tests: built-in defaults plus the overrides a test names, never the environment."""

from __future__ import annotations

import os

from fastim.settings import Settings, load_settings


def make_settings(**overrides: object) -> Settings:
    """``make_settings(storage__backend="redis", im__login_auth=1)`` -> validated Settings."""
    flags = {}
    for name, value in overrides.items():
        section, _, key = name.partition("__")
        flags[section, key] = str(value)
    return load_settings(config_path=os.devnull, environ={}, overrides=flags)
