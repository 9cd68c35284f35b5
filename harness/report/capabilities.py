"""Which capability a test certifies: one conformance module per capability.

A test's capability is its module's name without the ``test_`` prefix
(``test_collectives.py`` -> ``collectives``), so a vendor's own suite added to a
cell's ``suites`` gets its own row without any registration.
"""

from __future__ import annotations

# Known capabilities in the order a report lists them, with their titles.
CAPABILITIES: dict[str, str] = {
    "collectives": "Collectives",
    "communication": "Communication and local shapes",
    "device_mesh": "DeviceMesh",
    "dtensor_api": "DTensor API",
    "op_sweep": "Op sweep",
    "ops": "Op coverage (OpInfo database)",
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


#: How the ops capability's skip reason starts when DTensor has no sharding
#: strategy for an op: counted as coverage (DTensor's answer is known), not a failure.
OPS_UNSUPPORTED = "not supported by DTensor"

#: Verdicts of the ops capability, one per op, in the order a report lists them.
#: ``own``: DTensor's own failure (it fails on the reference too; not the cell's).
OP_VERDICTS = ("passed", "unsupported", "own", "xfailed", "waived", "failed", "skipped")


def op_verdict(outcome: str, reason: str) -> str:
    """An op's verdict from its test's outcome: a known failure and "no sharding
    strategy" are skips to pytest, but not to a reader of the coverage."""
    if outcome in ("failed", "error"):
        return "failed"
    if outcome == "own":
        return "own"
    if outcome == "skipped":
        if reason.startswith("expected failure"):
            return "xfailed"
        if reason.startswith(OPS_UNSUPPORTED):
            return "unsupported"
    return outcome if outcome in OP_VERDICTS else "skipped"


def op_coverage(tests) -> dict | None:
    """Counts per verdict over the tests that name an op, or None when none does.

    ``passing`` is the share of the ops that pass; ``covered`` adds the ops DTensor
    answers with "not supported" (its answer is known, not wrong).
    """
    verdicts = [op_verdict(t.outcome, t.reason) for t in tests if t.op]
    if not verdicts:
        return None
    counts = {v: verdicts.count(v) for v in OP_VERDICTS}
    total = len(verdicts)
    return {
        "ops": total,
        **counts,
        "passing": round(counts["passed"] / total, 4),
        "covered": round((counts["passed"] + counts["unsupported"]) / total, 4),
    }
