"""A node whose clock never moves, served like ``fastim serve``: every message it stores gets the same ts.

For the tests of messages sent within one millisecond, made certain.
"""

from __future__ import annotations

import sys

from dependency_injector import providers

from fastim.cli import serve_with
from fastim.infrastructure.clock import ManualClock


def freeze_the_clock(container) -> None:
    container.clock.override(providers.Object(ManualClock()))


if __name__ == "__main__":
    sys.exit(serve_with(freeze_the_clock))
