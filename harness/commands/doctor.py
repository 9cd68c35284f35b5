"""``harness doctor``: what this host offers the matrix, before anything runs."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from typing import Any

from harness._version import __version__
from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    parser = sub.add_parser(
        "doctor", parents=parents, help="torch, devices, backends, container engine, nix"
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=doctor)


def doctor(args) -> int:
    torch = torch_info()
    blocked = None if torch["installed"] else f"torch is not installed ({torch['error']})"
    report = {
        "harness": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch,
        "container_engine": container_info(),
        "nix": _version_of(["nix", "--version"]),
        "cells": runnable_cells(args.matrix, blocked),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_human(report)
    return 0


def torch_info() -> dict[str, Any]:
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        return {"installed": False, "error": str(exc)}
    build = "cpu"
    if torch.version.cuda:
        build = f"cuda {torch.version.cuda}"
    elif getattr(torch.version, "hip", None):
        build = f"rocm {torch.version.hip}"
    elif getattr(torch.version, "xpu", None):
        build = f"xpu {torch.version.xpu}"
    devices = {}
    for kind in ("cuda", "xpu", "hpu", "mps"):
        module = getattr(torch, kind, None)
        try:
            count = module.device_count() if module and module.is_available() else 0
        except Exception:  # a broken driver must not break the doctor
            count = 0
        if count:
            devices[kind] = count
    backends = {}
    if dist.is_available():
        for name in ("gloo", "nccl", "mpi", "ucc", "xccl"):
            check = getattr(dist, f"is_{name}_available", None)
            backends[name] = bool(check and check())
    accelerator = None
    if hasattr(torch, "accelerator") and torch.accelerator.is_available():
        accelerator = str(torch.accelerator.current_accelerator())
    return {
        "installed": True,
        "version": torch.__version__,
        "build": build,
        "accelerator": accelerator,
        "devices": devices,
        "distributed": dist.is_available(),
        "backends": backends,
    }


def container_info() -> dict[str, Any]:
    from harness.containers import detect_engine

    return {
        "installed": [e for e in ("docker", "podman") if shutil.which(e)],
        "answering": detect_engine(),
    }


def runnable_cells(matrix_path: str | None, blocked: str | None = None) -> dict[str, Any]:
    """Cells this host can run; ``blocked`` is a reason none can (said once, not per cell)."""
    from harness import hosts
    from harness.matrix import load_matrix

    matrix = load_matrix(matrix_path)
    if blocked:
        return {"matrix": str(matrix.path), "runnable": [], "refused": {}, "blocked": blocked}
    ok, refused = [], {}
    for cell in matrix.cells:
        try:
            hosts.check_cell(cell)
            ok.append(cell.name)
        except UsageError as exc:
            refused[cell.name] = str(exc).split(";")[0]
    return {"matrix": str(matrix.path), "runnable": ok, "refused": refused}


def _version_of(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def print_human(report: dict[str, Any]) -> None:
    torch = report["torch"]
    print(f"dtensor-harness {report['harness']}  python {report['python']}  {report['platform']}")
    if not torch["installed"]:
        print(f"torch        not installed ({torch['error']})")
    else:
        devices = ", ".join(f"{k} x{v}" for k, v in torch["devices"].items()) or "none"
        backends = ", ".join(k for k, v in torch["backends"].items() if v) or "none"
        print(f"torch        {torch['version']} ({torch['build']} build)")
        print(f"accelerator  {torch['accelerator'] or 'none'}; devices: {devices}")
        print(f"backends     {backends}")
    engine = report["container_engine"]
    print(
        f"containers   {engine['answering'] or 'no engine answering'}"
        f" (installed: {', '.join(engine['installed']) or 'none'})"
    )
    print(f"nix          {report['nix'] or 'not installed'}")
    cells = report["cells"]
    if cells.get("blocked"):
        print(f"cells        none runnable here from {cells['matrix']}: {cells['blocked']}")
        return
    print(
        f"cells        {len(cells['runnable'])} runnable here from {cells['matrix']}: "
        f"{' '.join(cells['runnable'])}"
    )
    if cells["refused"]:
        print(f"             {len(cells['refused'])} need devices this host lacks")
