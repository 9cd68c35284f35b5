"""Progress of a certify run, capability by capability, with counts.

Fed the JSON lines that the pytest plugin writes. A live table (rich) on a
terminal; plain lines, one per finished capability and one per failure, when
CI=true, when output is not a TTY, or when rich is missing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from harness.report import capabilities

_COLUMNS = ("passed", "failed", "error", "skipped", "own")  # own: DTensor's own failure


def wants_live(stream: IO[str]) -> bool:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes") or os.environ.get("NO_COLOR"):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return hasattr(stream, "isatty") and stream.isatty()


class Tally:
    """Counts per capability; the same state feeds either display."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}
        self.counts: dict[str, dict[str, Any]] = {}

    def row(self, capability: str) -> dict[str, Any]:
        return self.counts.setdefault(capability, {**dict.fromkeys(_COLUMNS, 0), "seconds": 0.0})

    def done(self, capability: str) -> int:
        row = self.counts.get(capability)
        return sum(row[k] for k in _COLUMNS) if row else 0

    def names(self) -> list[str]:
        return capabilities.order(set(self.expected) | set(self.counts))

    def status(self, capability: str) -> str:
        row = self.counts.get(capability)
        if row is None:
            return "waiting"
        if row["failed"] or row["error"]:
            return "fail"
        if self.done(capability) < self.expected.get(capability, 0):
            return "running"
        return "pass" if row["passed"] else "skip"


class Progress:
    def __init__(self, label: str, stream: IO[str] | None = None, live: bool | None = None):
        self.label = label
        self.stream = stream or sys.stdout
        self.live = wants_live(self.stream) if live is None else live
        self.tally = Tally()
        self.printed: set[str] = set()
        self._live = None
        self._offset = 0

    # -- feeding -------------------------------------------------------------
    def poll(self, path: Path) -> None:
        """Read the events appended to ``path`` since the last poll."""
        try:
            with path.open("r", encoding="utf-8") as events:
                events.seek(self._offset)
                chunk = events.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind("\n") + 1]  # a half-written line waits for next time
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            if line.strip():
                self.feed(json.loads(line))

    def feed(self, event: dict[str, Any]) -> None:
        if event.get("event") == "collected":
            self.tally.expected.update(event["counts"])
            total = sum(event["counts"].values())
            self._say(
                f"{self.label}: {total} tests in {len(event['counts'])} capabilities", plain=True
            )
        elif event.get("event") == "test":
            cap = event["capability"]
            row = self.tally.row(cap)
            row[event["outcome"]] = row.get(event["outcome"], 0) + 1
            row["seconds"] += event.get("duration", 0.0)
            if event["outcome"] in ("failed", "error") and not self.live:
                self._say(f"  FAIL {event['nodeid']}: {event.get('reason', '')}")
            if self.tally.done(cap) >= self.tally.expected.get(cap, 1 << 30):
                self._finish(cap)
        self._refresh()

    # -- display -------------------------------------------------------------
    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._table(),
                console=Console(file=self.stream),
                refresh_per_second=8,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for cap in self.tally.names():  # capabilities cut short (pytest -x, a crash)
            if cap in self.tally.counts:
                self._finish(cap)
        if self._live is not None:
            self._refresh()
            self._live.__exit__(*exc)
            self._live = None

    def _say(self, text: str, plain: bool = False) -> None:
        if self.live and self._live is not None:
            if not plain:
                self._live.console.print(text)
            return
        print(text, file=self.stream, flush=True)

    def line(self, cap: str) -> str:
        row = self.tally.counts.get(cap) or self.tally.row(cap)
        total = self.tally.expected.get(cap, self.tally.done(cap))
        width = max([14, *map(len, self.tally.names())])
        return (
            f"  {cap:<{width}} {self.tally.done(cap):>3}/{total:<3} "
            f"{row['passed']:>3} passed {row['failed'] + row['error']:>3} failed "
            f"{row['skipped']:>3} skipped {row['seconds']:>7.1f} s  {self.tally.status(cap)}"
            + (f"  ({row['own']} DTensor's own)" if row.get("own") else "")
        )

    def _finish(self, cap: str) -> None:
        if cap in self.printed:
            return
        self.printed.add(cap)
        if not self.live:
            self._say(self.line(cap))

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def _table(self):
        from rich.table import Table

        colour = {"pass": "green", "fail": "red", "skip": "yellow", "running": "cyan"}
        table = Table(title=self.label, title_justify="left", expand=False)
        for name in ("capability", "done", "passed", "failed", "skipped", "seconds", "status"):
            table.add_column(name, justify="left" if name in ("capability", "status") else "right")
        for cap in self.tally.names():
            row = self.tally.counts.get(cap) or dict.fromkeys(_COLUMNS, 0) | {"seconds": 0.0}
            status = self.tally.status(cap)
            table.add_row(
                capabilities.title(cap),
                f"{self.tally.done(cap)}/{self.tally.expected.get(cap, '?')}",
                str(row["passed"]),
                str(row["failed"] + row["error"]),
                str(row["skipped"]) + (f" +{row['own']} own" if row.get("own") else ""),
                f"{row['seconds']:.1f}",
                f"[{colour.get(status, 'dim')}]{status}[/]",
            )
        return table
