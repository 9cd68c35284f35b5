"""The one table of accelerator facts, open to new accelerators.

Each accelerator is data: the torch device type it answers to, the unit in its
cell names, its collective backends (the default first), the modules to import
before a process group starts (its plugin), the variable that limits which
devices a process sees, how to count its devices and read its driver without
torch, and its default container flags. The five built-ins are rows of
:data:`BUILTINS`; a matrix declares more with ``[accelerators.NAME]`` tables and
a vendor package with an entry point in the ``dtensor_harness.accelerators``
group (its object: a table of the same keys, or an :class:`Accelerator`).

Torch-free on purpose: ``harness matrix`` and the noxfile read this where torch
is not installed. What needs torch (plugin imports, backend checks, device
counts refined by torch) lives in :mod:`harness.hosts`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from glob import glob
from pathlib import Path
from typing import Any

from harness.errors import UsageError

#: Entry-point group through which a vendor package declares its accelerator.
ENTRY_POINT_GROUP = "dtensor_harness.accelerators"
#: The unit of every LocalTensor cell; no accelerator may take it.
SIM_UNIT = "sim"
#: The unit of every cell on the fake process group; no accelerator may take it.
FAKE_UNIT = "fake"
#: The unit a cell's mode imposes, whatever its accelerator (native cells: the accelerator's).
MODE_UNITS = {"local": SIM_UNIT, "fake": FAKE_UNIT}
#: The unit of accelerators whose ranks are processes not bound to devices.
RANK_UNIT = "rank"

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_UNIT = re.compile(r"[a-z]+")


class AcceleratorError(UsageError, ValueError):
    """A wrong accelerator definition, phrased for the person who has to fix it."""


@dataclass(frozen=True)
class Accelerator:
    """Everything the kit knows about one accelerator, and nothing about cells.

    ``count`` probes are tried in order and the first that finds devices answers:
    each is ``{"glob": pattern, "match": regex on the path, "content": [values the
    file must hold], "exclude": [values it must not]}``. ``driver`` probes read a
    file (``{"read": path}``), run a tool (``{"run": argv, "skip_header": bool}``)
    or ask torch (``{"property": name}`` of device 0's properties).
    """

    name: str
    device: str
    unit: str
    backends: tuple[str, ...]
    plugins: tuple[str, ...] = ()
    visible_devices: str | None = None
    count: tuple[Mapping[str, Any], ...] = ()
    driver: tuple[Mapping[str, Any], ...] = ()
    container: Mapping[str, Any] = field(default_factory=dict)
    source: str = "built-in"

    @property
    def backend(self) -> str:
        """The default collective backend."""
        return self.backends[0]

    @property
    def builtin(self) -> bool:
        return self.source == "built-in"

    @property
    def binds_devices(self) -> bool:
        """Whether each rank takes one device (False for rank-unit accelerators)."""
        return self.unit != RANK_UNIT

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "unit": self.unit,
            "backends": list(self.backends),
            "plugins": list(self.plugins),
            "visible_devices": self.visible_devices,
            "count": [dict(p) for p in self.count],
            "driver": [dict(p) for p in self.driver],
            "container": dict(self.container),
            "source": self.source,
        }


_DOCKER_GPU = ["--ipc=host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]

#: The built-in accelerators. Adding one here is a kit change; a vendor declares
#: theirs in a matrix or a package instead (docs/accelerators.md).
BUILTINS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator(
            name="cpu",
            device="cpu",
            unit=RANK_UNIT,
            backends=("gloo",),
            container={"run_flags": ["--shm-size=2g"]},
        ),
        Accelerator(
            name="cuda",
            device="cuda",
            unit="gpu",
            backends=("nccl", "gloo"),
            visible_devices="CUDA_VISIBLE_DEVICES",
            count=(
                {"glob": "/proc/driver/nvidia/gpus/*"},
                {"glob": "/dev/nvidia*", "match": r"/dev/nvidia\d+"},
            ),
            driver=(
                {"run": ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]},
                {"read": "/proc/driver/nvidia/version"},
            ),
            container={"run_flags": _DOCKER_GPU, "device_flags": ["--gpus", '"device={devices}"']},
        ),
        Accelerator(
            name="rocm",
            device="cuda",  # ROCm builds of torch answer to "cuda"
            unit="gpu",
            backends=("nccl", "gloo"),  # RCCL, under torch's nccl name
            visible_devices="HIP_VISIBLE_DEVICES",
            count=({"glob": "/sys/class/kfd/kfd/topology/nodes/*/gpu_id", "exclude": ["", "0"]},),
            driver=(
                {"read": "/sys/module/amdgpu/version"},
                {"run": ["rocm-smi", "--showdriverversion", "--csv"], "skip_header": True},
            ),
            container={
                "run_flags": [
                    "--device=/dev/kfd",
                    "--device=/dev/dri",
                    "--group-add",
                    "video",
                    "--ipc=host",
                    "--security-opt",
                    "seccomp=unconfined",
                ],
                "device_env": {"HIP_VISIBLE_DEVICES": "{devices}"},
            },
        ),
        Accelerator(
            name="xpu",
            device="xpu",
            unit="gpu",
            backends=("xccl", "gloo"),
            visible_devices="ZE_AFFINITY_MASK",
            count=({"glob": "/sys/class/drm/renderD*/device/vendor", "content": ["0x8086"]},),
            driver=({"property": "driver_version"},),
            container={
                "run_flags": ["--device=/dev/dri", "--ipc=host"],
                "device_env": {"ZE_AFFINITY_MASK": "{devices}"},
            },
        ),
        Accelerator(
            name="gaudi",
            device="hpu",
            unit="hpu",
            backends=("hccl", "gloo"),
            # the Gaudi bridge registers the hpu device and the hccl backend on import
            plugins=("habana_frameworks.torch.core", "habana_frameworks.torch.distributed.hccl"),
            visible_devices="HABANA_VISIBLE_MODULES",
            count=({"glob": "/dev/accel/accel[0-9]*"}, {"glob": "/dev/hl[0-9]*"}),
            driver=({"run": ["hl-smi", "-Q", "driver_version", "-f", "csv,noheader"]},),
            container={
                "run_flags": ["--runtime=habana", "--cap-add=sys_nice", "--ipc=host", "--net=host"],
                "device_env": {"HABANA_VISIBLE_DEVICES": "{devices}"},
            },
        ),
    )
}

# --- declaring an accelerator ------------------------------------------------------

#: Keys that define an accelerator (as opposed to choosing among its cells).
#: A matrix table for a built-in or packaged accelerator may not set these.
DEFINITION_KEYS = {
    "unit": (str, "a unit word such as card (cells are NAME-<N>UNIT)"),
    "plugin": ((str, list), "a module name or a list of module names"),
    "visible_devices": (str, "an environment variable name such as NPU_VISIBLE_DEVICES"),
    "count": ((dict, list), "a probe table or a list of them ({ glob = ... })"),
    "driver": ((dict, list), "a probe table or a list of them ({ run = [...] } or { read = ... })"),
}
COUNT_KEYS = {"glob": str, "match": str, "content": list, "exclude": list}
DRIVER_KEYS = {"read": str, "run": list, "skip_header": bool, "property": str}


def declare(name: str, spec: Mapping[str, Any], source: str, where: str = "") -> Accelerator:
    """An Accelerator from a matrix table or an entry point's table.

    ``spec`` has at least ``device``, ``backend`` and ``unit``; ``plugin``,
    ``visible_devices``, ``count``, ``driver`` and ``container`` are optional.
    Keys that are not facts (``cells``, ``env``, ...) are the matrix's business
    and ignored here.
    """
    where = where or f"accelerators.{name}"
    if name in BUILTINS:
        raise AcceleratorError(
            f"{where}: {name!r} is a built-in accelerator (device {BUILTINS[name].device}, "
            f"unit {BUILTINS[name].unit}) and cannot be redefined; give yours another name, "
            f"e.g. [accelerators.my_{name}]."
        )
    if not _NAME.fullmatch(name):
        raise AcceleratorError(
            f"{where}: accelerator name {name!r} must be lower-case letters, digits and _ "
            f"(it starts every cell name, e.g. {name.lower().replace('-', '_')}-2card)."
        )
    for required in ("device", "backend", "unit"):
        if required not in spec:
            raise AcceleratorError(
                f"{where}.{required} is missing; a new accelerator needs device, backend, "
                f"unit and cells (docs/accelerators.md)."
            )
    for key in ("device", "backend"):
        if not isinstance(spec[key], str) or not spec[key]:
            raise AcceleratorError(f"{where}.{key} must be a non-empty string.")
    _check_definition_types(spec, where)
    unit = spec["unit"]
    if unit in MODE_UNITS.values():
        mode = next(m for m, u in MODE_UNITS.items() if u == unit)
        raise AcceleratorError(
            f'{where}.unit = "{unit}" is reserved for {mode} cells (NAME-<N>{unit}); '
            f'pick another unit, e.g. "card".'
        )
    if not _UNIT.fullmatch(unit):
        raise AcceleratorError(f"{where}.unit = {unit!r} must be lower-case letters, e.g. card.")
    device = spec["device"]
    if not _NAME.fullmatch(device):
        raise AcceleratorError(f"{where}.device = {device!r} is not a torch device type name.")
    backends = tuple(
        dict.fromkeys(p.rpartition(":")[2].strip() for p in spec["backend"].split(","))
    )
    if "gloo" not in backends:
        backends += ("gloo",)
    plugins = spec.get("plugin", ())
    plugins = (plugins,) if isinstance(plugins, str) else tuple(plugins)
    for module in plugins:
        if not isinstance(module, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", module):
            raise AcceleratorError(f"{where}.plugin: {module!r} is not a module name.")
    variable = spec.get("visible_devices")
    if variable is not None and not re.fullmatch(r"[A-Za-z_]\w*", variable):
        raise AcceleratorError(f"{where}.visible_devices = {variable!r} is not a variable name.")
    container = dict(spec.get("container", {}))
    if variable and not {"device_flags", "device_env"} & container.keys():
        container["device_env"] = {variable: "{devices}"}
    return Accelerator(
        name=name,
        device=device,
        unit=unit,
        backends=backends,
        plugins=plugins,
        visible_devices=variable,
        count=_probes(spec.get("count", []), COUNT_KEYS, f"{where}.count"),
        driver=_probes(spec.get("driver", []), DRIVER_KEYS, f"{where}.driver"),
        container=container,
        source=source,
    )


def _check_definition_types(spec: Mapping[str, Any], where: str) -> None:
    for key, (kind, description) in DEFINITION_KEYS.items():
        if key in spec and not isinstance(spec[key], kind):
            raise AcceleratorError(f"{where}.{key} must be {description}.")


def _probes(raw: Any, allowed: Mapping[str, type], where: str) -> tuple[dict[str, Any], ...]:
    probes = [raw] if isinstance(raw, dict) else list(raw)
    for probe in probes:
        if not isinstance(probe, dict):
            raise AcceleratorError(f"{where} must be a table or a list of tables.")
        for key, value in probe.items():
            if key not in allowed:
                raise AcceleratorError(
                    f"unknown key '{where}.{key}'.{suggest(key, allowed)} "
                    f"Allowed here: {', '.join(sorted(allowed))}."
                )
            if not isinstance(value, allowed[key]) or isinstance(value, bool) is not (
                allowed[key] is bool
            ):
                raise AcceleratorError(f"{where}.{key} must be a {allowed[key].__name__}.")
    return tuple(probes)


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


# --- the table: built-ins, then vendor packages -------------------------------------


@cache
def packaged() -> dict[str, tuple[Accelerator, dict[str, Any]]]:
    """Accelerators vendor packages declare, with the rest of their table (cells...)."""
    from importlib.metadata import entry_points

    found: dict[str, tuple[Accelerator, dict[str, Any]]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(point.dist, "name", None) or point.value.split(":")[0]
        source = f"entry point {point.name} = {point.value} ({dist})"
        where = f"{ENTRY_POINT_GROUP} entry point {point.name!r} of {dist}"
        try:
            obj = point.load()
        except Exception as exc:  # a broken vendor package: say which and why
            raise AcceleratorError(
                f"{where}: cannot load {point.value}: {type(exc).__name__}: {exc}"
            ) from None
        obj = obj() if callable(obj) and not isinstance(obj, Accelerator) else obj
        if isinstance(obj, Accelerator):
            accel, rest = obj, {}
            if accel.name in BUILTINS:
                declare(accel.name, {}, source, where)  # raises: a built-in's name
        elif isinstance(obj, Mapping):
            accel, rest = declare(point.name, obj, source, where), dict(obj)
        else:
            raise AcceleratorError(
                f"{where}: {point.value} must be a table of accelerator keys or an "
                f"Accelerator, not {type(obj).__name__}."
            )
        found[accel.name] = (accel, rest)
    return found


def known() -> dict[str, Accelerator]:
    """Built-in and packaged accelerators (a matrix may add its own on top)."""
    return {**BUILTINS, **{name: a for name, (a, _) in packaged().items()}}


def get(name: str, extra: Mapping[str, Accelerator] | None = None) -> Accelerator:
    """The accelerator called ``name``: declared in ``extra``, packaged, or built in."""
    table = {**known(), **(extra or {})}
    if name in table:
        return table[name]
    raise AcceleratorError(
        f"unknown accelerator {name!r}.{suggest(name, table)} Known: {', '.join(table)}; "
        f"declare new ones in the matrix (docs/accelerators.md)."
    )


def for_device(device: str, *, hip: bool = False) -> Accelerator | None:
    """The built-in accelerator a torch device type belongs to (rocm when ``hip``)."""
    if device == "cuda":
        return BUILTINS["rocm" if hip else "cuda"]
    for accel in known().values():
        if accel.device == device:
            return accel
    return None


def backend_names(extra: Mapping[str, Accelerator] | None = None) -> tuple[str, ...]:
    """Every backend some known accelerator uses, for suggestions."""
    table = {**known(), **(extra or {})}
    return tuple(dict.fromkeys(b for a in table.values() for b in a.backends))


def mixed_parts(backend: str) -> list[tuple[str, str]]:
    """``"cpu:gloo,cuda:nccl"`` -> ``[("cpu", "gloo"), ("cuda", "nccl")]``; device "" if bare."""
    parts = []
    for part in backend.split(","):
        device, _, name = part.strip().rpartition(":")
        parts.append((device.strip(), name.strip()))
    return parts


# --- counting devices without torch ------------------------------------------------


def probe_count(accel: Accelerator) -> int | None:
    """Devices the OS shows for ``accel`` (no torch), capped by its visible-devices
    variable when set; None when the accelerator declares no probe."""
    if not accel.count:
        return None
    found = 0
    for probe in accel.count:
        found = _count(probe)
        if found:
            break
    visible = visible_count(accel)
    return found if visible is None else min(found, visible)


def none_probed() -> bool:
    """True when no known accelerator that takes devices may be on this host, asked
    without torch: every one declares a probe and no probe finds a device."""
    return all(
        accel.count and not probe_count(accel) for accel in known().values() if accel.binds_devices
    )


def visible_count(accel: Accelerator) -> int | None:
    """How many devices the visible-devices variable allows, or None when unset."""
    if not accel.visible_devices or accel.visible_devices not in os.environ:
        return None
    raw = os.environ[accel.visible_devices].strip()
    return len([part for part in raw.split(",") if part.strip() and part.strip() != "-1"])


def _count(probe: Mapping[str, Any]) -> int:
    paths = glob(probe["glob"])
    if "match" in probe:
        paths = [p for p in paths if re.fullmatch(probe["match"], p)]
    if "content" in probe or "exclude" in probe:
        contents = [_read(p) for p in paths]
        if "content" in probe:
            contents = [c for c in contents if c in probe["content"]]
        paths = [c for c in contents if c not in probe.get("exclude", ())]
    return len(paths)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


__all__ = [
    "BUILTINS",
    "COUNT_KEYS",
    "DEFINITION_KEYS",
    "DRIVER_KEYS",
    "ENTRY_POINT_GROUP",
    "FAKE_UNIT",
    "MODE_UNITS",
    "RANK_UNIT",
    "SIM_UNIT",
    "Accelerator",
    "AcceleratorError",
    "backend_names",
    "declare",
    "for_device",
    "get",
    "known",
    "mixed_parts",
    "packaged",
    "probe_count",
    "visible_count",
]
