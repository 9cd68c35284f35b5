"""Hardware classes: which of a suite's classified test classes a cell counts.

torch 2.15 lets a test class say what hardware it is about with a class
attribute, ``hw_classification = HardwareClassification.ACCELERATOR`` (its enum
in ``common_utils``: GENERIC, ACCELERATOR, CPU, CUDA, MPS, XPU). A cell counts
the classes of its kind (:data:`COUNTED`); a classified test of another class
is skipped with a reason naming its class, never dropped. A test class with no
classification is counted everywhere: most DTensor files predate the attribute
(PyTorch's own ``--hw-classification`` drops them instead).

Torch-free: the filter compares member names, so it reads torch's enum, the
kit's twin (for a torch without one) or a plain string alike.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from harness.errors import UsageError

#: torch 2.15's member names (and values), the order its enum declares them.
MEMBERS = {
    "GENERIC": "generic",
    "ACCELERATOR": "accelerator",
    "CPU": "cpu",
    "CUDA": "cuda",
    "MPS": "mps",
    "XPU": "xpu",
}

#: cell kind -> the classes its runs count. A cpu cell: ranks not bound to
#: devices; an accelerator cell: one device per rank (built-in or declared).
COUNTED: dict[str, tuple[str, ...]] = {
    "cpu": ("GENERIC", "CPU"),
    "accelerator": ("ACCELERATOR",),
}

#: An accelerator cell also counts the class named for its device type (rocm is cuda).
DEVICE_CLASS = {"cuda": "CUDA", "xpu": "XPU", "mps": "MPS"}

#: The environment variable that carries the counted classes to pytest ("all": no filter).
ENV = "HARNESS_HW_CLASSES"
ALL = "all"
#: How a left-out test's skip reason begins; the report counts them by it.
REASON = re.compile(r"^hw class ([A-Z_]+) is not counted on ")


class KitHardwareClassification(enum.Enum):
    """The kit's twin of torch 2.15's enum, for a torch that has none (same names, values)."""

    GENERIC = "generic"
    ACCELERATOR = "accelerator"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"
    XPU = "xpu"


def kind(binds_devices: bool) -> str:
    """A cell's kind: ``accelerator`` when each rank takes a device, else ``cpu``."""
    return "accelerator" if binds_devices else "cpu"


def default_classes(binds_devices: bool, device: str) -> tuple[str, ...]:
    """The classes a cell of this accelerator counts by default."""
    counted = COUNTED[kind(binds_devices)]
    extra = DEVICE_CLASS.get(device) if binds_devices else None
    return (*counted, extra) if extra and extra not in counted else counted


def parse(value: str, where: str = ENV) -> tuple[str, ...] | None:
    """``GENERIC,CPU`` -> the names; ``all`` (or empty) -> None: no filter.

    An unknown name is one UsageError line that lists the known ones.
    """
    text = value.strip()
    if not text or text.lower() == ALL:
        return None
    names = tuple(dict.fromkeys(p.strip().upper() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in MEMBERS]
    if unknown:
        raise UsageError(
            f"{where}={value!r}: unknown hardware class {', '.join(unknown)}; "
            f"give comma-separated names from {', '.join(MEMBERS)}, or {ALL}"
        )
    return names


def classification_of(cls: type | None) -> str | None:
    """The class's ``hw_classification`` as a member name, or None when it has none.

    torch's enum, the kit's twin and a plain string (``"accelerator"``) all read
    the same; anything else is named in a TypeError, as torch does.
    """
    value = getattr(cls, "hw_classification", None) if cls is not None else None
    if value is None:
        return None
    name = value.name if isinstance(value, enum.Enum) else str(value).upper()
    if name not in MEMBERS:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__}.hw_classification = {value!r}: "
            f"not a HardwareClassification ({', '.join(MEMBERS)})"
        )
    return name


def left_out_reason(name: str, cell: str, counted: Iterable[str]) -> str:
    """The skip reason of a test whose class this cell does not count."""
    return (
        f"hw class {name} is not counted on {cell} (it counts {', '.join(counted)}; "
        "--hw-class (harness run, certify) or --harness-hw-class (pytest) changes that)"
    )


def tally(reasons: Iterable[str]) -> dict[str, int]:
    """Skip reasons -> how many tests each class left out (for the report)."""
    counts: dict[str, int] = {}
    for reason in reasons:
        match = REASON.match(reason or "")
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return dict(sorted(counts.items()))
