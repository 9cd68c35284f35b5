"""Which capability a test certifies: one conformance module per capability.

A test's capability is its module's name without the ``test_`` prefix
(``test_collectives.py`` -> ``collectives``), so a vendor's own suite added to a
cell's ``suites`` gets its own row without any registration.
"""

from __future__ import annotations

# Known capabilities in the order a report lists them, with their titles.
CAPABILITIES: dict[str, str] = {
    "collectives": "Collectives",
    "device_mesh": "DeviceMesh",
    "dtensor_api": "DTensor API",
    "op_sweep": "Op sweep",
    "parallel": "Tensor, sequence and expert parallel",
    "random": "Random ops",
    "checkpoint": "Distributed checkpoint",
}

#: Where a result lands when its module cannot be told (should not happen).
UNKNOWN = "other"


def from_path(path: str) -> str:
    """Capability of a test file path or pytest node id."""
    module = path.split("::", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
    module = module.removesuffix(".py")
    return module.removeprefix("test_") or UNKNOWN


def from_junit(classname: str, name: str, collection_error: bool = False) -> str:
    """Fallback for JUnit entries without the capability property.

    pytest's classname is the node id with ``/`` and ``::`` as dots; for a
    collection error the module itself is the entry's name.
    """
    parts = [p for p in classname.split(".") if p]
    if collection_error:
        parts.append(name.removesuffix(".py"))
    for part in parts:
        if part.startswith("test_"):
            return part.removeprefix("test_") or UNKNOWN
    modules = [p for p in parts if not p[:1].isupper()]
    return modules[-1] if modules else UNKNOWN


#: Capabilities of PyTorch's own test files (``harness certify --upstream``): one per file.
UPSTREAM = "upstream/"


def title(name: str) -> str:
    if name.startswith(UPSTREAM):
        return f"PyTorch {name.removeprefix(UPSTREAM)}"
    return CAPABILITIES.get(name, name.replace("_", " ").capitalize())


def order(names) -> list[str]:
    """Known capabilities first, in their order; others alphabetically."""
    known = [n for n in CAPABILITIES if n in names]
    return known + sorted(n for n in set(names) if n not in CAPABILITIES)
