"""``harness doctor``: what this host offers the matrix, before anything runs."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from typing import Any

from harness import accelerators, hosts
from harness._version import __version__
from harness.commands import add_command
from harness.errors import UsageError


def add_parser(sub, parents) -> None:
    parser = add_command(
        sub, "doctor", doctor, parents, help="torch, devices, backends, container engine, nix"
    )
    parser.add_argument("--json", action="store_true")


def doctor(args) -> int:
    from harness.matrix import load_matrix

    matrix = load_matrix(args.matrix)
    accels = accelerators_info(matrix)  # before torch_info: plugins may register backends
    torch = torch_info()
    blocked = None if torch["installed"] else f"torch is not installed ({torch['error']})"
    report = {
        "harness": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch,
        "accelerators": accels,
        "container_engine": container_info(),
        "nix": _version_of(["nix", "--version"]),
        "cells": runnable_cells(matrix, blocked),
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
    for kind in dict.fromkeys(a.device for a in accelerators.known().values()):
        count = hosts.torch_device_count(kind) if kind != "cpu" else 0
        if count:
            devices[kind] = count
    backends = {}
    if dist.is_available():
        for name in dict.fromkeys(b.lower() for b in dist.Backend.backend_list):
            if name not in ("undefined", "fake", "harness_threads"):
                backends[name] = hosts.backend_available(name)
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


def accelerators_info(matrix) -> dict[str, Any]:
    """Per accelerator of the matrix: do its plugins import, does torch know its
    device type, is its backend available, how many devices does the host show."""
    try:
        import torch  # noqa: F401
    except ImportError:
        torch_ok = False
    else:
        torch_ok = True
    found: dict[str, Any] = {}
    for name in matrix.accelerators:
        cell = matrix.select(name)[0]
        spec = cell.spec
        entry: dict[str, Any] = {
            "source": spec.source,
            "device": spec.device,
            "backend": cell.backend,
            "unit": spec.unit,
            "plugins": {},
        }
        probed = accelerators.probe_count(spec)
        if spec.binds_devices:
            entry["devices_probed"] = probed
        found[name] = entry
        if not torch_ok:
            continue
        plugins_ok = True
        for module in spec.plugins:
            try:
                hosts.import_plugins([module])
                entry["plugins"][module] = hosts.plugin_version(module) or "imported"
            except UsageError as exc:
                why = str(exc).split(" did not import: ", 1)[-1].split("; install", 1)[0]
                entry["plugins"][module] = f"does not import ({why})"
                plugins_ok = False
        if not plugins_ok:
            continue
        why = hosts.device_type_known(spec.device)
        entry["device_type"] = "known" if why is None else f"unknown: {why}"
        entry["backend_available"] = hosts.backend_available(cell.backend)
        if spec.binds_devices:
            entry["devices"] = hosts.torch_device_count(spec.device)
    return found


def container_info() -> dict[str, Any]:
    from harness.containers import detect_engine

    return {
        "installed": [e for e in ("docker", "podman") if shutil.which(e)],
        "answering": detect_engine(),
    }


def runnable_cells(matrix, blocked: str | None = None) -> dict[str, Any]:
    """Cells this host can run; ``blocked`` is a reason none can (said once, not per cell)."""
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
    for name, accel in report["accelerators"].items():
        facts = [f"{accel['device']}/{accel['backend']}", f"unit {accel['unit']}"]
        for module, state in accel["plugins"].items():
            facts.append(f"plugin {module} {state}")
        if "device_type" in accel:
            facts.append(f"device type {accel['device_type']}")
        if "backend_available" in accel:
            facts.append(
                f"backend {'available' if accel['backend_available'] else 'NOT available'}"
            )
        if "devices" in accel:
            count = accel["devices"]
            facts.append("devices: no limit" if count == hosts.UNLIMITED else f"devices {count}")
        print(f"{name:12} " + "; ".join(facts))
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
