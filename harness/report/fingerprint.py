"""The machine a report was made on, as facts a reader can compare.

A certification is only as good as its record of where it ran: torch and its
build, the collective library's version, the devices and their driver, the CPU,
the OS and the container image. Every probe is best-effort: a missing tool or a
broken driver leaves its field out rather than failing the report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from harness import accelerators, hosts
from harness.accelerators import Accelerator


def collect(
    device: str = "cpu", backend: str = "gloo", accelerator: Accelerator | None = None
) -> dict[str, Any]:
    """Fingerprint of this host for a cell on ``device`` with ``backend``.

    ``accelerator`` (default: the active cell's, from HARNESS_ACCELERATOR and the
    matrix) says how to read the driver and which plugin modules to name.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "os": _os_name(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": _cpu(),
        "packages": _packages(),
        "container": _container(),
    }
    with warnings.catch_warnings():  # torch's import-time warnings are not the report's
        warnings.simplefilter("ignore")
        facts = accelerator or _active_accelerator(device)
        info["torch"] = _torch(device, backend, facts)
        info["accelerator"] = _accelerator(facts, device, backend)
    return _drop_empty(info)


def _active_accelerator(device: str) -> Accelerator | None:
    """The active cell's accelerator: packaged or built-in by name, else from its matrix."""
    name = os.environ.get("HARNESS_ACCELERATOR", "")
    try:
        if name in accelerators.known():
            return accelerators.known()[name]
        if name and os.environ.get("HARNESS_MATRIX") and os.environ.get("HARNESS_CELL"):
            from harness.matrix import load_matrix

            return load_matrix(os.environ["HARNESS_MATRIX"]).cell(os.environ["HARNESS_CELL"]).spec
    except Exception:  # a fingerprint never fails a report
        pass
    hip = "torch" in sys.modules and getattr(sys.modules["torch"].version, "hip", None)
    return accelerators.for_device(device, hip=bool(hip))


def _accelerator(facts: Accelerator | None, device: str, backend: str) -> dict[str, Any]:
    """Which accelerator, device, backend and plugin modules (with versions) ran."""
    plugins = hosts.plugin_modules(facts.plugins if facts else ())
    return {
        "name": facts.name if facts else None,
        "source": facts.source if facts else None,
        "device": device,
        "backend": backend,
        "plugins": {m: hosts.plugin_version(m) or "unknown" for m in plugins},
    }


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in (None, "", [], {})}
    return value


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _os_name() -> str:
    release = _read("/etc/os-release") or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', release, re.M)
    return match.group(1) if match else platform.platform(terse=True)


def _cpu() -> dict[str, Any]:
    model = None
    cpuinfo = _read("/proc/cpuinfo") or ""
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    if match:
        model = match.group(1).strip()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "model": model or platform.processor() or None,
        "cores": os.cpu_count(),
        "usable": usable,
    }


def _packages() -> dict[str, str]:
    names = (
        "torch",
        "dtensor-harness",
        "pytest",
        "numpy",
        "triton",
        "pytorch-triton-rocm",
        "habana-torch-plugin",
        "intel-extension-for-pytorch",
        "oneccl-bind-pt",
    )
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _container() -> dict[str, Any]:
    """Whether we run in a container, and which image where it can be known.

    Podman writes the image into /run/.containerenv; for Docker the launcher
    passes HARNESS_IMAGE / HARNESS_IMAGE_ID, since nothing inside can see it.
    """
    info: dict[str, Any] = {}
    containerenv = _read("/run/.containerenv")
    if containerenv is not None:
        info["engine"] = "podman"
        for key in ("image", "imageid"):
            match = re.search(rf'^{key}="([^"]*)"', containerenv, re.M)
            if match:
                info["image" if key == "image" else "image_id"] = match.group(1)
    elif Path("/.dockerenv").exists():
        info["engine"] = "docker"
    elif os.environ.get("container"):
        info["engine"] = os.environ["container"]
    if os.environ.get("HARNESS_IMAGE"):
        info["image"] = os.environ["HARNESS_IMAGE"]
    if os.environ.get("HARNESS_IMAGE_ID"):
        info["image_id"] = os.environ["HARNESS_IMAGE_ID"]
    if info:
        info["in_container"] = True
    return info


def _torch(device: str, backend: str, facts: Accelerator | None) -> dict[str, Any]:
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        return {"error": f"torch not importable: {exc}"}
    version = torch.version
    info: dict[str, Any] = {
        "version": torch.__version__,
        "git": getattr(version, "git_version", None),
        "debug": bool(getattr(version, "debug", False)),
        "cuda": getattr(version, "cuda", None),
        "hip": getattr(version, "hip", None),
        "xpu": getattr(version, "xpu", None),
        "distributed": dist.is_available(),
        "backends": _backends(torch, dist, backend),
        "device": _devices(torch, device, facts),
    }
    info["build"] = (
        f"cuda {info['cuda']}"
        if info["cuda"]
        else f"rocm {info['hip']}"
        if info["hip"]
        else f"xpu {info['xpu']}"
        if info["xpu"]
        else "cpu"
    )
    info["backend"] = backend
    return info


def _backends(torch: Any, dist: Any, backend: str) -> dict[str, Any]:
    """Every backend registered here (plugins' too) that is available, with versions."""
    names = [b.lower() for b in getattr(dist.Backend, "backend_list", [])]
    names += [name for _, name in accelerators.mixed_parts(backend)]
    found: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        if name in ("undefined", "fake", "harness_threads"):  # the kit's own
            continue
        if hosts.backend_available(name):  # the one answer (after the cell's plugins)
            found[name] = True
    if found.get("nccl"):
        try:
            nccl = torch.cuda.nccl.version()
            found["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        except Exception:
            pass
    return found


def _devices(torch: Any, device: str, facts: Accelerator | None) -> dict[str, Any]:
    if device == "cpu":
        return {"type": "cpu", "count": 1, "names": [_cpu()["model"] or platform.machine()]}
    info: dict[str, Any] = {"type": device}
    try:
        module = torch.get_device_module(device)
        count = int(module.device_count()) if module.is_available() else 0
    except Exception as exc:  # the report records a broken driver; it does not crash
        return {**info, "count": 0, "error": str(exc).splitlines()[0][:200]}
    info["count"] = count
    names = []
    for index in range(count):
        try:
            names.append(str(module.get_device_name(index)))
        except Exception:
            break
    info["names"] = names
    info["driver"] = _driver(facts, module) if facts else None
    return info


def _driver(facts: Accelerator, module: Any) -> str | None:
    """The first answer of the accelerator's driver probes (the table's, in order)."""
    for probe in facts.driver:
        if "read" in probe:
            answer = _first_line(_read(probe["read"]))
        elif "run" in probe:
            answer = _first_line(_run(list(probe["run"])), probe.get("skip_header", False))
        elif "property" in probe:
            try:
                answer = str(getattr(module.get_device_properties(0), probe["property"]))
            except Exception:
                answer = None
        else:
            answer = None
        if answer:
            return answer
    return None


def _first_line(text: str | None, skip_header: bool = False) -> str | None:
    if not text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if skip_header:
        lines = lines[1:]
    return lines[0] if lines else None
