"""What every rendering shows, computed once: one row per cell, one column per capability.

A cell report is a matrix of one row, so Markdown, HTML and the merged matrix
share this view and cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from harness.report import capabilities, schema


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A fingerprint's nested tables as dotted keys (``torch.version``), lists joined:
    the rows the Machine section shows and ``report diff`` compares."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        yield prefix, ", ".join(map(str, data))
    else:
        yield prefix, data


def short_fingerprint(fp: Mapping[str, Any]) -> dict[str, str]:
    """The few facts a reader compares across cells."""
    torch = fp.get("torch", {})
    device = torch.get("device", {})
    names = device.get("names") or []
    devices = f"{device.get('count', 0)} x {names[0]}" if names else device.get("type", "")
    container = fp.get("container", {})
    out = {
        "torch": f"{torch.get('version', '?')} ({torch.get('build', '?')})",
        "backend": _backend(torch),
        "devices": devices,
        "driver": device.get("driver", ""),
        "cpu": (fp.get("cpu") or {}).get("model", ""),
        "os": fp.get("os", ""),
        "image": container.get("image_id") or container.get("image") or "",
    }
    return {k: str(v) for k, v in out.items() if v}


def _backend(torch: Mapping[str, Any]) -> str:
    name = torch.get("backend", "")
    versions = torch.get("backends", {})
    for part in name.split(","):
        lib = part.rpartition(":")[2]
        version = versions.get(lib)
        if isinstance(version, str):
            name = name.replace(lib, f"{lib} {version}")
    return name


def cell_row(report: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """The matrix row of a cell report, with the reasons behind every non-pass."""
    caps = {}
    for cap in report["capabilities"]:
        caps[cap["name"]] = {
            "title": cap["title"],
            "verdict": cap["verdict"],
            **{k: cap.get(k, 0) for k in (*schema.COUNTS, "total", "duration_s")},
            "problems": [
                {"id": t["id"], "outcome": t["outcome"], "reason": t.get("reason", "")}
                for t in cap["tests"]
                if t["outcome"] != "passed"
            ],
        }
    cell = report["cell"]
    return {
        "cell": cell["name"],
        "accelerator": cell.get("accelerator", ""),
        "world_size": cell.get("world_size"),
        "mode": cell.get("mode", ""),
        "verdict": report["verdict"],
        "summary": report["summary"],
        "capabilities": caps,
        "fingerprint": short_fingerprint(report.get("fingerprint", {})),
        "created": report.get("created", ""),
        "report_sha256": report.get("integrity", {}).get("sha256", ""),
        **({"source": source} if source else {}),
    }


def rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [cell_row(report)] if report.get("kind") == "cell" else list(report["cells"])


def columns(rows_: list[dict[str, Any]]) -> list[tuple[str, str]]:
    names: dict[str, str] = {}
    for row in rows_:
        for name, cap in row["capabilities"].items():
            names.setdefault(name, cap["title"])
    return [(name, names[name]) for name in capabilities.order(names)]


def cell_text(cap: Mapping[str, Any] | None) -> str:
    """What a table cell says: the verdict and the counts behind it."""
    if cap is None:
        return "not run"
    ran = cap["passed"] + cap["failed"] + cap["error"]
    if cap["verdict"] == "fail":
        bad = cap["failed"] + cap["error"]
        return f"fail {bad} of {ran}"
    if cap["verdict"] == "skip":
        waived = f" +{cap['waived']} waived" if cap.get("waived") else ""
        return f"skip {cap['skipped']}{waived}"
    extra = f" +{cap['waived']} waived" if cap.get("waived") else ""
    extra += f" +{cap['own']} DTensor's own" if cap.get("own") else ""
    extra += f" +{cap['skipped']} skip" if cap["skipped"] else ""
    return f"pass {cap['passed']}/{ran}{extra}"
