"""CPU time and resident memory of processes, read from /proc, and of this process from getrusage."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

# /proc/PID/stat counts CPU time in clock ticks (usually 100 a second, so 10 ms resolution).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# utime and stime are fields 14 and 15 of /proc/PID/stat; after the ")" that ends the
# command name the remaining fields start at field 3, so they sit at indexes 11 and 12.
UTIME_INDEX, STIME_INDEX = 11, 12


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read()
    fields = text[text.rindex(b")") + 2:].split()
    return (int(fields[UTIME_INDEX]) + int(fields[STIME_INDEX])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    """Resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:  # gone meanwhile
        return None
    return int(text[text.rindex(b")") + 2:].split()[1])


def with_descendants(pids: Iterable[int]) -> list[int]:
    """``pids`` and every process below them: a node started with ``--workers`` forks its workers."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := _parent(int(entry))) is not None:
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds, at microsecond resolution."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of a set of processes (and of this one) at one instant of the monotonic clock."""

    wall: float
    processes: float
    own: float


def sample_cpu(pids: Iterable[int]) -> CpuSample:
    """CPU of ``pids`` and their descendants, and of this process, now."""
    return CpuSample(time.monotonic(), sum(cpu_seconds(pid) for pid in with_descendants(pids)), own_cpu_seconds())


def total_rss_kb(pids: Iterable[int]) -> int:
    """Resident memory of ``pids`` and their descendants."""
    return sum(rss_kb(pid) for pid in with_descendants(pids))
