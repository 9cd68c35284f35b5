"""Load and validate matrix.toml, expand it into named cells.

Its keys, types, bounds and defaults are data in :mod:`harness.matrix_schema`,
which checks a parsed file against the JSON Schema made from them; this module
checks what a schema cannot say (known accelerators and backends, placeholders,
torch labels, overrides naming cells, a fake cell's mesh and ranks) and builds
the cells. Torch-free on purpose: noxfiles, ``harness matrix`` and ``harness
doctor`` import this where torch is not installed. Every problem in a matrix
becomes one line of a MatrixError naming the key path and the fix, in the order
of the file; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import accelerators, hwclass, matrix_schema
from harness.accelerators import DEFINITION_KEYS, MODE_UNITS, Accelerator, AcceleratorError
from harness.errors import UsageError
from harness.matrix_schema import (  # re-exported: the names harness.matrix always had
    DEFAULTS,
    MAX_TIMEOUT_S,
    MAX_WORLD_SIZE,
    MODES,
    SCHEMA_VERSION,
    suggest,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_told = False  # whether this process said it uses the starter matrix
# What device_flags / device_env may say in braces (harness.containers fills them in:
# {devices} the comma-separated ids, {device} in a flag repeats it once per device).
PLACEHOLDERS = {"device_flags": ("devices", "device"), "device_env": ("devices",)}
_PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]*)\}(?!\})")


class MatrixError(UsageError, ValueError):
    """A matrix.toml problem, phrased for the person who has to fix it.

    Validation reports every problem of a file at once, one per line of the message.
    """


_FAILED = object()  # what _Problems.call returns when the call raised a problem


class _Problems:
    """Every problem of one matrix, each once, in the order of the file.

    Each is kept with the key path of the part it is about, so the schema's problems
    and the ones only Python can see come out in one order. Independent parts
    (tables, keys, modes, overrides) are checked apart; a part that failed is left
    out of what depends on it, so one typo gives one line.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.found: list[tuple[tuple[Any, ...], str]] = []

    @property
    def lines(self) -> list[str]:
        return [line for _, line in self.found]

    def add(self, message: str, path: tuple[Any, ...] = ()) -> None:
        for line in message.splitlines():
            if line not in self.lines:
                self.found.append((path, line))

    def failed(self, *path: Any) -> bool:
        """Whether a problem was found at or under ``path``."""
        return any(p[: len(path)] == path for p, _ in self.found)

    def call(self, path: tuple[Any, ...], check: Any, *args: Any) -> Any:
        """``check(*args)``, or _FAILED with its problem(s) recorded at ``path``."""
        try:
            return check(*args)
        except (MatrixError, AcceleratorError) as exc:
            self.add(str(exc), path)
            return _FAILED

    def raise_any(self) -> None:
        if self.found:
            order = sorted(self.found, key=lambda found: _document_order(self.data, found[0]))
            raise MatrixError("\n".join(line for _, line in order))


def _document_order(data: Any, path: tuple[Any, ...]) -> tuple[int, ...]:
    """Where ``path`` sits in the file: its keys' positions, a missing key last."""
    order = []
    for part in path:
        keys = list(data) if isinstance(data, dict) else list(range(len(data)))
        if isinstance(data, (dict, list)) and part in keys:
            order.append(keys.index(part))
            data = data[part]
        else:
            order.append(len(keys) if isinstance(data, (dict, list)) else 0)
            break
    return tuple(order)


@dataclass(frozen=True)
class Cell:
    """One runnable combination: an accelerator at a world size in a mode."""

    name: str
    accelerator: str
    device: str
    backend: str
    world_size: int
    mode: str  # "native", "local" or "fake" (matrix_schema.MODES)
    timeout: int
    suites: tuple[str, ...]
    torch: str
    pip_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    container: Mapping[str, Any] = field(default_factory=dict)
    results: str = "results"
    root: str = "."  # folder of the matrix file; relative suites resolve here
    waivers: str = ""  # waivers file certify applies, relative to root
    runs_on: Any = field(default_factory=list)  # the accelerator's CI runner labels (harness.ci)
    #: the torch axis: "" for the accelerator's first (default) torch, else the entry's label
    torch_name: str = ""
    #: the accelerator's facts (built-in, packaged or declared by the matrix)
    facts: Accelerator | None = field(default=None, compare=False, repr=False)
    #: fake cells: the mesh's shape (its product is the world size) and the ranks of
    #: the world that run; () for every other mode
    mesh_shape: tuple[int, ...] = ()
    fake_ranks: tuple[int, ...] = ()
    #: the hw_classification classes its runs count: "" for its kind's (harness.hwclass),
    #: else names or "all" (`harness run --hw-class`)
    hw_classes: str = ""

    @property
    def spec(self) -> Accelerator:
        return self.facts or accelerators.get(self.accelerator)

    @property
    def unit(self) -> str:
        return MODE_UNITS.get(self.mode) or self.spec.unit

    @property
    def plugins(self) -> tuple[str, ...]:
        return self.spec.plugins

    @property
    def session(self) -> str:
        return f"test-{self.name}"

    @property
    def tags(self) -> list[str]:
        core = [self.accelerator, self.mode, self.unit, f"ws{self.world_size}"]
        # another torch's cells answer to their torch tag only, so `nox -t sim` keeps
        # running the default torch's cells and `nox -t torch2.11` every 2.11 cell
        if self.torch_name:
            return [f"torch{self.torch_label}"]
        return core if self.torch_label == "any" else [*core, f"torch{self.torch_label}"]

    @property
    def torch_label(self) -> str:
        """The torch's short name: the entry's label, else major.minor of its pin."""
        return self.torch_name or torch_label(self.torch)

    @property
    def torch_version(self) -> str:
        match = re.search(r"==\s*([\w.+]+)", self.torch)
        return match.group(1) if match else "any"

    @property
    def torch_tag(self) -> str:
        """The torch in image and venv names: its pinned version, else its label."""
        return self.torch_version if self.torch_version != "any" else self.torch_label

    @property
    def image(self) -> str:
        return f"dtensor-harness:{self.accelerator}-torch{self.torch_tag}"

    @property
    def devices_needed(self) -> int:
        """Devices of the accelerator this cell occupies (1 when simulated, none when fake:
        the fake process group runs where the device is absent)."""
        if not self.spec.binds_devices or self.mode == "fake":
            return 0
        return 1 if self.mode == "local" else self.world_size

    @property
    def results_dir(self) -> Path:
        return Path(self.results) / self.name

    def harness_env(self) -> dict[str, str]:
        """The environment that carries this cell into pytest, ranks and containers."""
        env = {
            **self.env,
            "HARNESS_CELL": self.name,
            "HARNESS_ACCELERATOR": self.accelerator,
            "HARNESS_DEVICE": self.device,
            "HARNESS_BACKEND": self.backend,
            "HARNESS_WORLD_SIZE": str(self.world_size),
            "HARNESS_MODE": self.mode,
            "HARNESS_TIMEOUT": str(self.timeout),
            "HARNESS_TORCH": self.torch,
        }
        # instantiate_device_type_tests makes classes for the cell's device type only:
        # an accelerator cell's tests run on its accelerator, not also on the host cpu
        env["PYTORCH_TESTING_DEVICE_ONLY_FOR"] = self.device
        # the hw_classification classes its runs count (harness.hwclass.COUNTED)
        env[hwclass.ENV] = self.hw_classes or ",".join(
            hwclass.default_classes(self.spec.binds_devices, self.device)
        )
        if self.plugins:  # imported in the parent and every rank (harness.hosts)
            env["HARNESS_PLUGINS"] = ",".join(self.plugins)
        if self.mode == "fake":
            env["HARNESS_MESH"] = ",".join(map(str, self.mesh_shape))
            env["HARNESS_FAKE_RANKS"] = ",".join(map(str, self.fake_ranks))
        return env

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "session": self.session,
            "accelerator": self.accelerator,
            "device": self.device,
            "backend": self.backend,
            "world_size": self.world_size,
            "mode": self.mode,
            "timeout": self.timeout,
            "suites": list(self.suites),
            "torch": self.torch,
            "torch_label": self.torch_label,
            "default_torch": not self.torch_name,
            "pip_args": list(self.pip_args),
            "waivers": self.waivers,
            "runs_on": self.runs_on,
            "env": dict(self.env),
            "image": self.image,
            "container": dict(self.container),
            "tags": self.tags,
            "unit": self.unit,
            "plugins": list(self.plugins),
            "results_dir": str(self.results_dir),
            "mesh_shape": list(self.mesh_shape),
            "fake_ranks": list(self.fake_ranks),
        }


@dataclass(frozen=True)
class Matrix:
    path: Path
    cells: tuple[Cell, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cells]

    @property
    def accelerators(self) -> list[str]:
        return list(dict.fromkeys(c.accelerator for c in self.cells))

    def cell(self, name: str) -> Cell:
        """Find a cell by name, with or without its ``test-`` prefix."""
        wanted = name.removeprefix("test-").removeprefix("certify-")
        for cell in self.cells:
            if cell.name == wanted:
                return cell
        close = difflib.get_close_matches(wanted, self.names, n=3, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise MatrixError(
            f"unknown cell {name!r} in {self.path}.{hint} `harness matrix list` shows every cell."
        )

    def select(self, accelerator: str | None = None, mode: str | None = None) -> list[Cell]:
        return [
            c for c in self.cells if accelerator in (None, c.accelerator) and mode in (None, c.mode)
        ]


def cell_name(
    accelerator: str, world_size: int, mode: str, facts: Accelerator | None = None
) -> str:
    unit = MODE_UNITS.get(mode) or (facts or accelerators.get(accelerator)).unit
    return f"{accelerator}-{world_size}{unit}"


def torch_label(requirement: str) -> str:
    """``torch==2.11.0`` -> ``2.11``; a requirement without a pin -> ``any``."""
    match = re.search(r"==\s*(\d+)\.(\d+)", requirement)
    return f"{match.group(1)}.{match.group(2)}" if match else "any"


def default_matrix_path() -> Path:
    """matrix.toml in the working directory, else the kit's starter matrix (package data)."""
    here = Path("matrix.toml")
    if here.is_file():
        return here
    from harness.kitfiles import starter_matrix

    return starter_matrix()


def _say_if_starter(path: Path) -> None:
    """Tell, once per process, that no matrix.toml was found and the starter is in use."""
    global _told
    from harness.kitfiles import starter_matrix

    if not _told and path == starter_matrix():
        print(
            f"harness: no matrix.toml here; using the kit's starter matrix {path} "
            f"(`harness init` writes one to edit, or pass --matrix FILE)",
            file=sys.stderr,
        )
        _told = True


def load_matrix(path: str | Path | None = None) -> Matrix:
    if path is None:
        path = default_matrix_path()
        _say_if_starter(path)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatrixError(
            f"matrix file {str(path)!r} not found; pass --matrix FILE or run from the "
            f"folder that holds matrix.toml."
        ) from None
    except OSError as exc:
        raise MatrixError(f"cannot read matrix file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise MatrixError(
            f"{path}:{line}: not UTF-8 (byte {exc.object[exc.start]:#04x}); TOML files are "
            "UTF-8: save it as UTF-8."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: TOML syntax error: {exc}; fix the syntax there.") from None
    try:
        cells = _expand(data, path)
    except (MatrixError, AcceleratorError) as exc:  # every line says which file it is about
        raise MatrixError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
    return Matrix(path=path, cells=tuple(cells))


# --- what the schema cannot say: cross-references, placeholders, cell names -----------


def _check_placeholders(container: Mapping[str, Any], where: str) -> None:
    """device_flags and device_env reach the engine as written, but for PLACEHOLDERS."""
    values = [
        ("device_flags", f"{where}.device_flags", v) for v in container.get("device_flags", [])
    ]
    values += [
        ("device_env", f"{where}.device_env.{k}", v)
        for k, v in container.get("device_env", {}).items()
    ]
    for key, path, value in values:
        known = PLACEHOLDERS[key]
        for name in _PLACEHOLDER.findall(value):
            if name not in known:
                raise MatrixError(
                    f"{path}: unknown placeholder {{{name}}} in {value!r}."
                    f"{suggest(name, known)} Known: {', '.join('{' + p + '}' for p in known)}."
                )


def _check_backend(backend: str, facts: Accelerator, known: Iterable[str], where: str) -> None:
    """Accept "gloo" or mixed "cpu:gloo,cuda:nccl" where each part suits its device."""
    allowed = facts.backends
    for device, name in accelerators.mixed_parts(backend):
        if name not in known:
            raise MatrixError(
                f"{where}: unknown backend {name!r}.{suggest(name, known)} "
                f"Known backends: {', '.join(known)}."
            )
        if device == "cpu" and name != "gloo":
            raise MatrixError(
                f"{where}: the cpu part of a mixed backend must be gloo, not {name!r}; "
                f'write "cpu:gloo,{facts.device}:{allowed[0]}".'
            )
        if name not in allowed:
            raise MatrixError(
                f"{where}: accelerator {facts.name!r} cannot use backend {name!r}; "
                f"use one of {', '.join(allowed)}."
            )


def _accelerator(name: str, spec: dict, known: Mapping[str, Accelerator]) -> Accelerator:
    """The facts behind ``[accelerators.NAME]``: the known entry, or the table's declaration."""
    where = f"accelerators.{name}"
    if name in known:
        facts = known[name]
        redefined = sorted(DEFINITION_KEYS.keys() & spec.keys())
        if redefined:
            kind = "a built-in accelerator" if facts.builtin else f"declared by {facts.source}"
            raise MatrixError(
                f"{where}.{redefined[0]}: {name!r} is {kind} (device {facts.device}, "
                f"unit {facts.unit}) and cannot be redefined; to declare your own, give it "
                f"another name, e.g. [accelerators.my_{name}]."
            )
        if "device" in spec and spec["device"] != facts.device:
            raise MatrixError(
                f"{where}.device = {spec['device']!r} does not fit {name!r}, whose "
                f'torch device type is {facts.device!r}; set device = "{facts.device}".'
            )
        return facts
    if "unit" not in spec:  # no unit: most likely a typo of a known name, else a half declaration
        raise MatrixError(
            f"unknown accelerator {where!r}.{suggest(name, known)} Known accelerators: "
            f"{', '.join(known)}. To declare a new one, give it unit, device, backend and "
            f"cells (docs/accelerators.md)."
        )
    return accelerators.declare(name, spec, source="matrix", where=where)


def _expand(data: dict[str, Any], path: Path) -> list[Cell]:
    schema = data.get("schema", SCHEMA_VERSION)
    if isinstance(schema, int) and schema != SCHEMA_VERSION:
        raise MatrixError(  # a matrix for another schema is read no further
            f"schema = {schema} is not supported by this harness (it reads schema "
            f"{SCHEMA_VERSION}); upgrade dtensor-harness or set schema = {SCHEMA_VERSION}."
        )
    tables = data.get("accelerators", {})
    if isinstance(tables, dict):
        tables = dict(tables)
        # a vendor package's accelerator brings its own cells: its users need no matrix edit
        accel_keys = matrix_schema.MATRIX.keys["accelerators"].names.keys  # type: ignore[union-attr]
        for name, (_, rest) in accelerators.packaged().items():
            if name not in tables and "cells" in rest:
                tables[name] = {
                    k: v for k, v in rest.items() if k in accel_keys and k not in DEFINITION_KEYS
                }
        data = {**data, "accelerators": tables}
    problems = _Problems(data)
    # a table that misses backend or cells is told so only when nothing else is wrong
    # with it: "cuda cannot be redefined" says more than "cuda.backend is missing"
    missing: dict[tuple[Any, ...], list[str]] = {}
    for found in matrix_schema.problems(data):
        if found.keyword == "required" and found.path[:1] == ("accelerators",):
            missing.setdefault(found.path[:2], []).append(found.line)
        else:
            problems.add(found.line, found.path)
    if not isinstance(tables, dict):
        problems.raise_any()
    if not tables:
        problems.add("no accelerators defined; add a table such as [accelerators.cpu].")
        problems.raise_any()
    defaults = data.get("defaults", {})
    defaults_ok = isinstance(defaults, dict) and not problems.failed("defaults")

    known = accelerators.known()
    declared: dict[str, Accelerator] = {}
    for accel, spec in tables.items():
        if problems.failed("accelerators", accel):
            continue
        facts = problems.call(("accelerators", accel), _declared, accel, spec, known)
        if facts is not _FAILED:
            for line in missing.get(("accelerators", accel), []):
                problems.add(line, ("accelerators", accel))
            if ("accelerators", accel) not in missing:
                declared[accel] = facts
    backends = accelerators.backend_names(declared)

    cells: dict[str, Cell] = {}
    for accel, facts in declared.items() if defaults_ok else ():
        where = ("accelerators", accel)
        made = problems.call(where, _cells_of, facts, tables[accel], defaults, path, backends)
        problems.call(where, _merge, cells, made, f"accelerators.{accel}")

    complete = not problems.found  # else an override may name a cell of a broken table
    overrides = data.get("overrides", {})
    for name, override in overrides.items() if isinstance(overrides, dict) else ():
        where = ("overrides", name)
        if problems.failed(*where) or (name not in cells and not complete):
            continue
        changed = problems.call(where, _overridden, cells, name, override, backends)
        if changed is None:
            del cells[name]
        elif changed is not _FAILED:
            cells[name] = changed
    problems.raise_any()
    if not cells:
        raise MatrixError(
            "no cells: the overrides drop every cell; keep at least one (remove a drop = true)."
        )
    return list(cells.values())


def _declared(accel: str, spec: dict, known: Mapping[str, Accelerator]) -> Accelerator:
    """One ``[accelerators.NAME]`` table (its keys valid): its placeholders, its facts."""
    where = f"accelerators.{accel}"
    _check_placeholders(spec.get("container", {}), f"{where}.container")
    return _accelerator(accel, spec, known)


def _cells_of(
    facts: Accelerator,
    spec: dict,
    defaults: dict,
    path: Path,
    backends: Iterable[str],
) -> dict[str, Cell]:
    """The cells of one accelerator table, every mode checked."""
    where = f"accelerators.{facts.name}"
    problems = _Problems(spec)
    problems.call((), _check_backend, spec["backend"], facts, backends, f"{where}.backend")
    torch_where = f"{where}.torch" if "torch" in spec else "defaults.torch"
    torch_axis = _torch_axis(
        spec.get("torch", defaults.get("torch", DEFAULTS["torch"])), torch_where
    )
    cells: dict[str, Cell] = {}
    for mode, sizes in spec["cells"].items():
        mode_where = f"{where}.cells.{mode}"
        for n in sizes:
            made = {
                c.name: c
                for c in (_make_cell(facts, n, mode, spec, defaults, path, e) for e in torch_axis)
            }
            problems.call((), _merge, cells, made, mode_where)
    problems.raise_any()
    return cells


def _merge(cells: dict[str, Cell], made: Any, where: str) -> None:
    """Add ``made`` (a part's cells, or _FAILED) to ``cells``; a name twice is a problem."""
    for name, cell in {} if made is _FAILED else made.items():
        if name in cells:
            raise MatrixError(f"{where}: duplicate cell {name!r}; list each world size once.")
        cells[name] = cell


def _overridden(
    cells: Mapping[str, Cell], name: str, override: dict, backends: Iterable[str]
) -> Cell | None:
    """The cell ``[overrides."NAME"]`` makes, or None when it drops the cell."""
    where = f"overrides.{name}"
    if name not in cells:
        raise MatrixError(
            f"{where!r} names no cell.{suggest(name, cells)} "
            f"Cells come from accelerators.*.cells; `harness matrix list` shows them."
        )
    if override.get("drop"):
        return None
    return _apply_override(cells[name], override, backends, where)


def _torch_axis(value: str | list, where: str) -> list[dict[str, Any]]:
    """The torch entries of an accelerator, the default first, each with a unique label.

    The schema has checked each entry's shape; what it cannot see is across entries.
    """
    items = value if isinstance(value, list) else [value]
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        item_where = f"{where}[{i}]"
        item = {"requirement": item} if isinstance(item, str) else item
        label = item.get("name") or torch_label(item["requirement"])
        if label == "any" and i > 0:
            raise MatrixError(
                f"{item_where}: {item['requirement']!r} pins no version, so its cells would "
                f'have no name; add name = "nightly" (or pin it with ==).'
            )
        if label in [e["label"] for e in entries]:
            raise MatrixError(
                f"{item_where}: a second torch labelled {label!r}; each torch of an "
                f"accelerator needs its own major.minor, or a name."
            )
        entries.append({**item, "label": label, "default": i == 0})
    return entries


def _fake_ranks(world_size: int) -> tuple[int, ...]:
    """A fake cell's ranks unless its override picks: the first, the middle, the last."""
    return tuple(sorted({0, world_size // 2, world_size - 1}))


def _make_cell(
    facts: Accelerator,
    n: int,
    mode: str,
    spec: dict,
    defaults: dict,
    path: Path,
    torch: Mapping[str, Any] | None = None,
) -> Cell:
    def pick(key: str) -> Any:
        return spec.get(key, defaults.get(key, DEFAULTS.get(key)))

    torch = torch or {"requirement": pick("torch"), "default": True}
    suffix = "" if torch["default"] else f"-torch{torch['label']}"
    container = {**facts.container, **spec.get("container", {})}
    if "base_image" in torch:  # a vendor image per torch: its own torch, not reinstalled
        container["base_image"] = torch["base_image"]
    fake = mode == "fake"
    return Cell(
        name=cell_name(facts.name, n, mode, facts) + suffix,
        accelerator=facts.name,
        device=facts.device,
        backend=spec["backend"],
        world_size=n,
        mode=mode,
        timeout=pick("timeout"),
        suites=tuple(pick("suites")),
        torch=torch["requirement"],
        torch_name="" if torch["default"] else torch["label"],
        pip_args=tuple(torch.get("pip_args", pick("pip_args"))),
        env={**defaults.get("env", {}), **spec.get("env", {})},
        # the table's run/device flags, then the matrix's choices over them
        container=container,
        results=defaults.get("results", DEFAULTS["results"]),
        root=str(path.resolve().parent),
        waivers=pick("waivers"),
        runs_on=spec.get("runs_on", []),
        facts=facts,
        mesh_shape=(n,) if fake else (),
        fake_ranks=_fake_ranks(n) if fake else (),
    )


def _apply_override(cell: Cell, override: dict, backends: Iterable[str], where: str) -> Cell:
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if "backend" in override:
        _check_backend(override["backend"], cell.spec, backends, f"{where}.backend")
    for key in ("timeout", "backend", "torch", "waivers"):
        if key in override:
            changes[key] = override[key]
    for key in ("suites", "pip_args"):
        if key in override:
            changes[key] = tuple(override[key])
    if "env" in override:
        changes["env"] = {**cell.env, **override["env"]}
    changes.update(_fake_layout(cell, override, where))
    return replace(cell, **changes)


def _fake_layout(cell: Cell, override: dict, where: str) -> dict[str, tuple[int, ...]]:
    """An override's ``mesh`` and ``ranks``: a fake cell's only, and fit to its world."""
    given = [key for key in ("mesh", "ranks") if key in override]
    if not given:
        return {}
    n = cell.world_size
    if cell.mode != "fake":
        raise MatrixError(
            f"{where}.{given[0]}: {cell.name} is a {cell.mode} cell; mesh and ranks are for "
            f"fake cells (cells = {{ fake = [{n}] }} makes {cell.accelerator}-{n}fake)."
        )
    changes: dict[str, tuple[int, ...]] = {}
    if "mesh" in override:
        mesh = tuple(override["mesh"])
        size = 1
        for dim in mesh:
            size *= dim
        if size != n:
            raise MatrixError(
                f"{where}.mesh = {list(mesh)} holds {size} ranks, but {cell.name} has {n}; "
                f"give dimensions whose product is {n}."
            )
        changes["mesh_shape"] = mesh
    if "ranks" in override:
        outside = [r for r in override["ranks"] if r >= n]
        if outside:
            raise MatrixError(
                f"{where}.ranks: rank {outside[0]} is outside the world of {cell.name} "
                f"(ranks 0 to {n - 1})."
            )
        changes["fake_ranks"] = tuple(sorted(override["ranks"]))
    return changes


__all__ = [
    "MAX_TIMEOUT_S",
    "MAX_WORLD_SIZE",
    "MODES",
    "PLACEHOLDERS",
    "SCHEMA_VERSION",
    "Cell",
    "Matrix",
    "MatrixError",
    "cell_name",
    "default_matrix_path",
    "load_matrix",
    "torch_label",
]
