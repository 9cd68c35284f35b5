"""Which reference a certification judges its ops against, and computing one live.

In order: ``--reference FILE``; the kit's shipped record for this torch minor when it
holds the cell's world size; the user cache (``$XDG_CACHE_HOME/dtensor-harness/
references``, one file per torch version and build, world size, kit version and a
digest of the kit's op-checking code);
else what the run needs is computed: on a cell of the reference's own kind (CPU, no
plugins) the run itself becomes the record; on any other cell the ops it failed run
again on CPU under LocalTensor in a clean subprocess (no plugins, no device), and the
answers are cached. The record format is :mod:`harness.report.reference`'s.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness._version import __version__
from harness.errors import UsageError
from harness.report import reference
from harness.report.junit import CaseResult

#: The ops capability's record in place of the shipped one (``harness.conformance._ops``).
EXPECTATIONS_ENV = "HARNESS_OPS_EXPECTATIONS"
#: Environment a live reference must not inherit: the cell, its device and plugins.
_CELL_ENV = (
    "HARNESS_CELL",
    "HARNESS_DEVICE",
    "HARNESS_BACKEND",
    "HARNESS_PLUGINS",
    "HARNESS_MATRIX",
    "HARNESS_MODE",
    "HARNESS_OPS",
    "HARNESS_OPS_ON",
    "HARNESS_OPS_EXPECTATIONS",
)


@dataclasses.dataclass
class Use:
    """The reference a run uses: the record (None: none yet), where it came from, and
    whether the cell is the reference's own kind judged against a shipped record."""

    record: reference.Record | None
    source: str
    path: str
    world_size: int
    reference_kind: bool
    note: str = ""

    @property
    def guards(self) -> bool:
        return self.reference_kind and self.source == "shipped"

    def describe(self) -> str:
        if self.record is None or self.record.at(self.world_size) is None:
            then = (
                "this CPU run becomes the record"
                if self.reference_kind
                else "the ops this cell fails run again on CPU under LocalTensor, no plugins"
            )
            return f"no record for torch {torch_build()} at world size {self.world_size}: {then}"
        world = self.record.at(self.world_size)
        return (
            f"{self.source}: {self.path} [world.{self.world_size}], "
            f"{len(world.own)} DTensor's own failures"
        )


def torch_build() -> str:
    """The installed torch's version with its build tag (2.13.0+cpu), torch not imported."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def torch_minor(build: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", build)
    return (int(match[1]), int(match[2])) if match else None


#: A folder for computed references in place of the user cache (the kit's own tests).
CACHE_ENV = "HARNESS_REFERENCE_CACHE"


def cache_dir() -> Path:
    """``$HARNESS_REFERENCE_CACHE``, else ``$XDG_CACHE_HOME/dtensor-harness/references``."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "dtensor-harness" / "references"


#: The kit's files an op's verdict depends on: the cache key holds their digest, so a
#: checkout of the kit that changes how ops are checked does not reuse old verdicts
#: under the same version string.
_VERDICT_CODE = (
    "conformance/_ops.py",
    "conformance/_torch_gaps.py",
    "op_checks.py",
    "converter.py",
    "local",
)


def code_digest(root: Path | None = None) -> str:
    """12 hex digits of the files in :data:`_VERDICT_CODE` under ``root`` (the kit)."""
    root = root or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _VERDICT_CODE:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def cache_file(build: str, world_size: int) -> Path:
    safe = re.sub(r"[^\w.+-]", "_", build)
    return cache_dir() / f"torch-{safe}-ws{world_size}-harness-{__version__}-{code_digest()}.toml"


def reference_kind(cell) -> bool:
    """A cell whose run is itself a reference: CPU and no vendor plugin."""
    return cell.device == "cpu" and not cell.plugins


def plan(cell, explicit: str | None = None) -> Use:
    """The reference known before the run (a bad --reference stops here, exit 2)."""
    ws, kind = cell.world_size, reference_kind(cell)
    if explicit:
        record = reference.load(explicit)
        if record.at(ws) is None:
            held = ", ".join(map(str, sorted(record.worlds))) or "none"
            raise UsageError(
                f"--reference {explicit}: it holds no [world.{ws}] (world sizes: {held}); "
                f"make one with `harness reference make`."
            )
        return Use(record, "file", explicit, ws, kind)
    build = torch_build()
    minor = torch_minor(build)
    chosen = os.environ.get(EXPECTATIONS_ENV, "").strip()  # a patched torch's record
    shipped = Path(chosen) if chosen else reference.shipped_file(minor) if minor else None
    if shipped is not None:
        record = reference.load(shipped)
        if record.at(ws) is not None:
            return Use(record, "shipped", chosen or _shown(shipped), ws, kind)
    cached = cache_file(build, ws)
    if cached.is_file():
        try:
            return Use(reference.load(cached), "cache", str(cached), ws, kind)
        except UsageError:  # a cache the kit cannot read is recomputed, not an error
            cached.unlink(missing_ok=True)
    return Use(None, "", "", ws, kind)


def _shown(path: Path) -> str:
    """A shipped record's path as the kit names it (not this machine's site-packages)."""
    return f"harness/conformance/xfails/{path.name}"


def settle(use: Use, results: list[CaseResult], *, timeout: float) -> Use:
    """After the run: make the reference know every op the cell failed, if it can.

    A record made here lists the ops it checked (``checked``), never "all": a run
    may have swept a subset, and an op it did not run must not read as passing.
    """
    if use.source in ("file", "shipped"):
        return use  # complete by construction; an op they do not know is judged alone
    results = [r for r in results if r.op]
    if not results:
        return use  # no op ran: nothing to judge, nothing to record
    world = use.record.at(use.world_size) if use.record else None
    failed = sorted(
        {r.op for r in results if r.op and r.outcome in reference.FAILED}
        - (set() if world is None else {op for op in world.own} | _checked(world))
    )
    if not failed and (use.record is not None or not use.reference_kind):
        return use  # nothing to learn (a CPU run with no record still records its passes)
    stamp = _dt.date.today().isoformat()
    if use.reference_kind:
        made = f"this run (harness certify, {stamp})"
        unknown = [r for r in results if world is None or not world.knows(r.op)]
        new = reference.world_from_results(unknown, made, full=False)  # known ops keep theirs
        source = "this run"
    else:
        found = live(failed, use.world_size, timeout)
        if isinstance(found, str):
            use.note = f"no live reference: {found}; the ops it would judge are judged alone"
            return use
        own = {k: text or "fails" for k, (status, text) in found.items() if status == "failed"}
        made = f"live, {len(found)} ops on CPU under LocalTensor, no plugins ({stamp})"
        new = reference.World(own=own, checked=frozenset(found), made=made)
        source = "live"
    record = _store(use.record, new, use.world_size)
    return Use(
        record,
        source,
        str(cache_file(torch_build(), use.world_size)),
        use.world_size,
        use.reference_kind,
    )


def _checked(world: reference.World) -> set[str]:
    return set() if world.checked is None else set(world.checked)


def _store(old: reference.Record | None, new: reference.World, ws: int) -> reference.Record:
    """Merge ``new`` into the cached record of this torch, world size and kit; write it."""
    build = torch_build()
    world = reference.merged(old.at(ws) if old else None, new)
    text = reference.dumps(
        build,
        {ws: world},
        {},
        {},
        header=f"dtensor-harness {__version__}: the reference of torch {build} at world size "
        f"{ws}, computed on this machine (harness.references). Delete it to recompute.",
    )
    path = cache_file(build, ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return reference.parse(text.encode("utf-8"), str(path))


def live(ops: list[str], world_size: int, timeout: float) -> dict[str, list[str]] | str:
    """Run ``ops`` on CPU under LocalTensor in a clean subprocess: {op: [status, text]},
    or why it could not."""
    if not ops:
        return {}
    env = {k: v for k, v in os.environ.items() if k not in _CELL_ENV}
    env.update({"HARNESS_DEVICE": "cpu", "HARNESS_WORLD_SIZE": str(world_size)})
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="harness-reference-") as tmp:
        out = Path(tmp) / "reference.json"
        argv = [sys.executable, "-m", "harness.conformance.reference_run"]
        argv += ["--world-size", str(world_size), "--ops", ",".join(ops), "--out", str(out)]
        argv += ["--timeout", str(timeout)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.is_file():
            lines = (done.stderr or done.stdout).strip().splitlines()
            return lines[-1] if lines else f"exit {done.returncode}"
        return json.loads(out.read_text(encoding="utf-8"))
