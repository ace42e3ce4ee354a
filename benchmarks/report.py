"""The results as a Markdown table (one row per scenario variant) and as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks.measure import Row


def _number(digits: int) -> Callable[[float | None], str]:
    def render(value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return f"{value:,.{digits}f}"
    return render


# (header, Row attribute, how to render it)
COLUMNS: list[tuple[str, str, Callable]] = [
    ("scenario", "scenario", str),
    ("nodes", "nodes", str),
    ("load", "load", str),
    ("sockets", "sockets", str),
    ("opens/s", "opens_per_s", _number(0)),
    ("RSS KB/socket", "rss_kb_per_socket", _number(1)),
    ("expected", "expected", _number(0)),
    ("received", "received", _number(0)),
    ("loss", "loss", _number(0)),
    ("deliveries/s", "delivered_per_s", _number(0)),
    ("p50 ms", "p50_ms", _number(1)),
    ("p90 ms", "p90_ms", _number(1)),
    ("p99 ms", "p99_ms", _number(1)),
    ("max ms", "max_ms", _number(1)),
    ("server µs/delivery", "server_us_per_delivery", _number(1)),
    ("server µs/inbound", "server_us_per_inbound", _number(0)),
    ("server cores", "server_cores", _number(2)),
    ("loadgen µs/delivery", "loadgen_us_per_delivery", _number(1)),
    ("loadgen cores", "loadgen_cores", _number(2)),
    ("redis cores", "redis_cores", _number(2)),
]


def markdown(rows: list[Row]) -> str:
    """The table; with a commit column only when the server changed during the run."""
    columns = COLUMNS if len({row.commit for row in rows}) <= 1 else [("commit", "commit", str), *COLUMNS]
    header = [title for title, _, _ in columns] + ["notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [render(getattr(row, attribute)) for _, attribute, render in columns]
        cells.append("; ".join(_notes(row)) or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _notes(row: Row) -> list[str]:
    notes = list(row.notes)
    if row.open_failures:
        notes.insert(0, f"{row.open_failures} opens failed")
    if row.disconnects and row.scenario != "S3":
        notes.append(f"{row.disconnects} sockets closed by the server")
    if row.error_frames:
        notes.append(f"{row.error_frames} error frames")
    return notes


def write_json(path: Path, meta: dict, rows: list[Row]) -> None:
    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    data = {"meta": meta, "rows": [{k: clean(v) for k, v in asdict(row).items()} for row in rows]}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def progress(row: Row) -> str:
    """One line on stderr as each variant finishes, so a long run shows it is alive."""
    head = f"{row.scenario} x{row.nodes} {row.load}: {row.sockets} sockets"
    if row.delivered_per_s is None:
        return f"{head}, {row.opens_per_s or 0:,.0f} opens/s, {row.rss_kb_per_socket or 0:.1f} KB/socket"
    return f"{head}, {row.delivered_per_s:,.0f}/s, loss {row.loss}, p99 {row.p99_ms:.1f} ms"
