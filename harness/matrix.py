"""Load and validate matrix.toml, expand it into named cells.

Torch-free on purpose: noxfiles, ``harness matrix`` and ``harness doctor`` import
this where torch is not installed. Every problem in a matrix becomes one
MatrixError whose message names the key path and the fix; the CLI turns it into
exit code 2.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import accelerators
from harness.accelerators import (
    DEFINITION_KEYS,
    FAKE_UNIT,
    SIM_UNIT,
    Accelerator,
    AcceleratorError,
)
from harness.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SCHEMA_VERSION = 1
_told = False  # whether this process said it uses the starter matrix
MODES = ("native", "local", "fake")
#: the unit a mode names its cells with, where not the accelerator's own
MODE_UNITS = {"local": SIM_UNIT, "fake": FAKE_UNIT}
# Bounds that catch a typo before it becomes an OverflowError or a 10**17-rank cell.
MAX_WORLD_SIZE = 65536
MAX_TIMEOUT_S = 7 * 24 * 3600
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
    """Every problem of one matrix, in order, each once, instead of only the first.

    Independent parts (tables, keys, modes, overrides) are checked apart; a part
    that failed is left out of what depends on it, so one typo gives one line.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, message: str) -> None:
        for line in message.splitlines():
            if line not in self.lines:
                self.lines.append(line)

    def call(self, check: Any, *args: Any) -> Any:
        """``check(*args)``, or _FAILED with its problem(s) recorded."""
        try:
            return check(*args)
        except (MatrixError, AcceleratorError) as exc:
            self.add(str(exc))
            return _FAILED

    def raise_any(self) -> None:
        if self.lines:
            raise MatrixError("\n".join(self.lines))


# --- schema ---------------------------------------------------------------
# key -> (type or tuple of types, description used in "expected ..." messages)
_STR_LIST = (list, "a list of strings")
_STR_TABLE = (dict, "a table of strings")
_TOP_KEYS = {
    "schema": (int, "an integer"),
    "defaults": (dict, "a table"),
    "accelerators": (dict, "a table"),
    "overrides": (dict, "a table"),
}
_COMMON_KEYS = {  # allowed in [defaults], [accelerators.X] and [overrides."cell"]
    "timeout": (int, "a whole number of seconds"),
    "suites": _STR_LIST,
    "torch": (
        (str, list),
        'a requirement such as "torch==2.13.0", or a list of them (the first is the default)',
    ),
    "pip_args": _STR_LIST,
    "env": _STR_TABLE,
    "waivers": (str, "a path to a waivers TOML file (docs/certification.md)"),
}
#: keys of one torch entry given as a table: { name = "nightly", requirement = "torch", ... }
_TORCH_KEYS = {
    "requirement": (str, 'a requirement string such as "torch==2.15.0"'),
    "name": (str, 'a short label for tags and cell names, such as "nightly"'),
    "pip_args": _STR_LIST,
    "base_image": (str, "an image reference whose torch is this one"),
}
_DEFAULT_KEYS = {**_COMMON_KEYS, "results": (str, "a folder path")}
_ACCEL_KEYS = {
    **_COMMON_KEYS,
    **DEFINITION_KEYS,  # only for accelerators the matrix declares (harness.accelerators)
    "device": (str, "a torch device type"),
    "backend": (str, "a collective backend name"),
    "cells": (dict, "a table of mode = [world sizes]"),
    "container": (dict, "a table"),
    # CI runner labels for `harness ci`: a list, or a table of lists per CI system
    "runs_on": ((list, dict), "a list of runner labels, or { github = [...], gitlab = [...] }"),
}
_CONTAINER_KEYS = {
    "dockerfile": (str, "a path"),
    "base_image": (str, "an image reference"),
    "build_args": _STR_TABLE,
    "run_flags": _STR_LIST,
    "device_flags": _STR_LIST,
    "device_env": _STR_TABLE,
    "vendor_torch": (bool, "true or false"),
}
_OVERRIDE_KEYS = {
    **_COMMON_KEYS,
    "torch": (str, 'a requirement string such as "torch==2.13.0"'),
    "drop": (bool, "true or false"),
    "backend": (str, "a collective backend name"),
    # fake cells only (docs/fake-mode.md)
    "mesh": (list, "a list of mesh dimension sizes whose product is the world size"),
    "ranks": (list, "a list of the ranks that run, each below the world size"),
}


@dataclass(frozen=True)
class Cell:
    """One runnable combination: an accelerator at a world size in a mode."""

    name: str
    accelerator: str
    device: str
    backend: str
    world_size: int
    mode: str  # "native", "local" or "fake"
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
    #: fake cells: the mesh shape tests build (empty: 1-D) and the ranks that run (empty:
    #: first, middle, last)
    mesh: tuple[int, ...] = ()
    ranks: tuple[int, ...] = ()

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
        """Devices of the accelerator this cell occupies (1 when simulated)."""
        if not self.spec.binds_devices:
            return 0
        if self.mode == "fake":
            return 0  # one process per chosen rank, none bound to a device
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
        if self.mesh:
            env["HARNESS_MESH"] = ",".join(map(str, self.mesh))
        if self.ranks:
            env["HARNESS_FAKE_RANKS"] = ",".join(map(str, self.ranks))
        if self.plugins:  # imported in the parent and every rank (harness.hosts)
            env["HARNESS_PLUGINS"] = ",".join(self.plugins)
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
            **({"mesh": list(self.mesh)} if self.mesh else {}),
            **({"ranks": list(self.ranks)} if self.ranks else {}),
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


# --- validation helpers -----------------------------------------------------


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    problems = _Problems()
    for key, value in table.items():
        problems.call(_check_key, key, value, allowed, f"{where}.{key}" if where else key)
    problems.raise_any()


def _check_key(key: str, value: Any, allowed: Mapping[str, Any], path: str) -> None:
    if key not in allowed:
        raise MatrixError(
            f"unknown key {path!r}.{_suggest(key, allowed)} "
            f"Allowed here: {', '.join(sorted(allowed))}."
        )
    kind, description = allowed[key]
    if not _is_type(value, kind):
        raise MatrixError(f"{path} must be {description}, not {_describe(value)}.")
    if allowed[key] is _STR_LIST and not all(isinstance(v, str) for v in value):
        raise MatrixError(f"{path} must be {description}; every item in quotes.")
    if key == "suites" and not value:
        raise MatrixError(
            f"{path} is empty: a cell must run something; list at least one suite "
            '(e.g. ["harness.conformance"]), or drop the key for the default.'
        )
    if allowed[key] is _STR_TABLE:
        bad = [
            f'{path}.{k} must be a string, not {_describe(v)}; quote it: {k} = "{v}".'
            for k, v in value.items()
            if not isinstance(v, str)
        ]
        if bad:
            raise MatrixError("\n".join(bad))


def _is_type(value: Any, kind: type) -> bool:
    if kind is int:  # a bool is an int to Python, never to a matrix author
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


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
                    f"{_suggest(name, known)} Known: {', '.join('{' + p + '}' for p in known)}."
                )


def _check_world_size(n: int, where: str) -> None:
    if not 1 <= n <= MAX_WORLD_SIZE:
        raise MatrixError(
            f"{where}: world size {n} is out of bounds: at least 1, at most {MAX_WORLD_SIZE}."
        )


def _check_timeout(timeout: int, where: str) -> None:
    if not 1 <= timeout <= MAX_TIMEOUT_S:
        raise MatrixError(
            f"{where} = {timeout} is out of bounds: a positive number of seconds, at most "
            f"{MAX_TIMEOUT_S} (7 days)."
        )


def _check_backend(backend: str, facts: Accelerator, known: Iterable[str], where: str) -> None:
    """Accept "gloo" or mixed "cpu:gloo,cuda:nccl" where each part suits its device."""
    allowed = facts.backends
    for device, name in accelerators.mixed_parts(backend):
        if name not in known:
            raise MatrixError(
                f"{where}: unknown backend {name!r}.{_suggest(name, known)} "
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
            f"unknown accelerator {where!r}.{_suggest(name, known)} Known accelerators: "
            f"{', '.join(known)}. To declare a new one, give it unit, device, backend and "
            f"cells (docs/accelerators.md)."
        )
    return accelerators.declare(name, spec, source="matrix", where=where)


def _expand(data: dict[str, Any], path: Path) -> list[Cell]:
    problems = _Problems()
    problems.call(_check_keys, data, _TOP_KEYS, "")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise MatrixError(  # a matrix for another schema is read no further
            f"schema = {schema} is not supported by this harness (it reads schema "
            f"{SCHEMA_VERSION}); upgrade dtensor-harness or set schema = {SCHEMA_VERSION}."
        )
    defaults = data.get("defaults", {})
    defaults = defaults if isinstance(defaults, dict) else {}
    defaults_ok = problems.call(_check_keys, defaults, _DEFAULT_KEYS, "defaults") is not _FAILED
    tables = data.get("accelerators", {})
    tables = dict(tables) if isinstance(tables, dict) else {}
    # a vendor package's accelerator brings its own cells: its users need no matrix edit
    for name, (_, rest) in accelerators.packaged().items():
        if name not in tables and "cells" in rest:
            tables[name] = {
                k: v for k, v in rest.items() if k in _ACCEL_KEYS and k not in DEFINITION_KEYS
            }
    if not tables:
        problems.add("no accelerators defined; add a table such as [accelerators.cpu].")
        problems.raise_any()

    known = accelerators.known()
    declared: dict[str, Accelerator] = {}
    for accel, spec in tables.items():
        facts = problems.call(_declared, accel, spec, known)
        if facts is not _FAILED:
            declared[accel] = facts
    backends = accelerators.backend_names(declared)

    cells: dict[str, Cell] = {}
    for accel, facts in declared.items() if defaults_ok else ():
        made = problems.call(_cells_of, facts, tables[accel], defaults, path, backends)
        problems.call(_merge, cells, made, f"accelerators.{accel}")

    complete = not problems.lines  # else an override may name a cell of a broken table
    overrides = data.get("overrides", {})
    for name, override in overrides.items() if isinstance(overrides, dict) else ():
        where = f"overrides.{name}"
        if name not in cells and not complete:
            if isinstance(override, dict):
                problems.call(_check_keys, override, _OVERRIDE_KEYS, where)
            continue
        changed = problems.call(_overridden, cells, name, override, backends, where)
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


def _declared(accel: str, spec: Any, known: Mapping[str, Accelerator]) -> Accelerator:
    """One ``[accelerators.NAME]`` table checked: its keys, its container, its facts."""
    where = f"accelerators.{accel}"
    if not isinstance(spec, dict):
        raise MatrixError(f"{where} must be a table, not {_describe(spec)}.")
    problems = _Problems()
    problems.call(_check_keys, spec, _ACCEL_KEYS, where)
    container = spec.get("container", {})
    if isinstance(container, dict):
        problems.call(_check_keys, container, _CONTAINER_KEYS, f"{where}.container")
        problems.call(_check_placeholders, container, f"{where}.container")
    problems.raise_any()
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
    for required in ("backend", "cells"):
        if required not in spec:
            raise MatrixError(f"{where}.{required} is missing; add it to [{where}].")
    problems = _Problems()
    problems.call(_check_backend, spec["backend"], facts, backends, f"{where}.backend")
    torch_where = f"{where}.torch" if "torch" in spec else "defaults.torch"
    torch_axis = _torch_axis(spec.get("torch", defaults.get("torch", "torch")), torch_where)
    if not spec["cells"]:
        raise MatrixError(
            f"{where}.cells is empty; give it a mode and world sizes, "
            "e.g. cells = { native = [1, 2] }."
        )
    cells: dict[str, Cell] = {}
    for mode, sizes in spec["cells"].items():
        made = problems.call(_mode_cells, facts, mode, sizes, spec, defaults, path, torch_axis)
        problems.call(_merge, cells, made, f"{where}.cells.{mode}")
    problems.raise_any()
    return cells


def _mode_cells(
    facts: Accelerator,
    mode: str,
    sizes: Any,
    spec: dict,
    defaults: dict,
    path: Path,
    torch_axis: list[dict[str, Any]],
) -> dict[str, Cell]:
    mode_where = f"accelerators.{facts.name}.cells.{mode}"
    if mode not in MODES:
        raise MatrixError(
            f"unknown mode {mode_where!r}.{_suggest(mode, MODES)} Modes: {', '.join(MODES)}."
        )
    if not isinstance(sizes, list) or not all(_is_type(n, int) for n in sizes):
        raise MatrixError(
            f"{mode_where} must be a list of world sizes (integers), not {_describe(sizes)}."
        )
    if not sizes:
        raise MatrixError(
            f"{mode_where} is empty; list at least one world size, or remove {mode!r}."
        )
    cells: dict[str, Cell] = {}
    for n in sizes:
        _check_world_size(n, mode_where)
        made = (_make_cell(facts, n, mode, spec, defaults, path, e) for e in torch_axis)
        _merge(cells, {c.name: c for c in made}, mode_where)
    return cells


def _merge(cells: dict[str, Cell], made: Any, where: str) -> None:
    """Add ``made`` (a part's cells, or _FAILED) to ``cells``; a name twice is a problem."""
    for name, cell in {} if made is _FAILED else made.items():
        if name in cells:
            raise MatrixError(f"{where}: duplicate cell {name!r}; list each world size once.")
        cells[name] = cell


def _overridden(
    cells: Mapping[str, Cell], name: str, override: Any, backends: Iterable[str], where: str
) -> Cell | None:
    """The cell ``[overrides."NAME"]`` makes, or None when it drops the cell."""
    if name not in cells:
        raise MatrixError(
            f"{where!r} names no cell.{_suggest(name, cells)} "
            f"Cells come from accelerators.*.cells; `harness matrix list` shows them."
        )
    if not isinstance(override, dict):
        raise MatrixError(f"{where} must be a table, not {_describe(override)}.")
    _check_keys(override, _OVERRIDE_KEYS, where)
    if override.get("drop"):
        return None
    return _apply_override(cells[name], override, backends, where)


def _torch_axis(value: str | list, where: str) -> list[dict[str, Any]]:
    """The torch entries of an accelerator, the default first, each with a unique label."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise MatrixError(f'{where} is an empty list; give at least one, e.g. ["torch==2.13.0"].')
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        item_where = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"requirement": item}
        if not isinstance(item, dict):
            raise MatrixError(
                f"{item_where} must be a requirement string or a table with requirement, "
                f"not {_describe(item)}."
            )
        _check_keys(item, _TORCH_KEYS, item_where)
        if "requirement" not in item:
            raise MatrixError(f'{item_where}.requirement is missing, e.g. requirement = "torch".')
        if not re.match(r"torch\b", item["requirement"].strip()):
            raise MatrixError(
                f"{item_where}: {item['requirement']!r} is not a torch requirement; "
                f'write it as "torch==2.15.0".'
            )
        label = item.get("name") or torch_label(item["requirement"])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.]*", label):
            raise MatrixError(f"{item_where}.name {label!r}: use letters, digits and dots.")
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


def _make_cell(
    facts: Accelerator,
    n: int,
    mode: str,
    spec: dict,
    defaults: dict,
    path: Path,
    torch: Mapping[str, Any] | None = None,
) -> Cell:
    def pick(key: str, fallback: Any) -> Any:
        return spec.get(key, defaults.get(key, fallback))

    timeout = pick("timeout", 300)
    where = "accelerators." + facts.name if "timeout" in spec else "defaults"
    _check_timeout(timeout, f"{where}.timeout")
    torch = torch or {"requirement": pick("torch", "torch"), "default": True}
    suffix = "" if torch["default"] else f"-torch{torch['label']}"
    container = {**facts.container, **spec.get("container", {})}
    if "base_image" in torch:  # a vendor image per torch: its own torch, not reinstalled
        container["base_image"] = torch["base_image"]
    return Cell(
        name=cell_name(facts.name, n, mode, facts) + suffix,
        accelerator=facts.name,
        device=facts.device,
        backend=spec["backend"],
        world_size=n,
        mode=mode,
        timeout=timeout,
        suites=tuple(pick("suites", ["harness.conformance"])),
        torch=torch["requirement"],
        torch_name="" if torch["default"] else torch["label"],
        pip_args=tuple(torch.get("pip_args", pick("pip_args", []))),
        env={**defaults.get("env", {}), **spec.get("env", {})},
        # the table's run/device flags, then the matrix's choices over them
        container=container,
        results=defaults.get("results", "results"),
        root=str(path.resolve().parent),
        waivers=pick("waivers", ""),
        runs_on=_runs_on(spec.get("runs_on", []), f"accelerators.{facts.name}.runs_on"),
        facts=facts,
    )


def _runs_on(value: Any, where: str) -> Any:
    """Runner labels: a list of strings, or a table of such lists per CI system."""
    tables = value.items() if isinstance(value, dict) else [("", value)]
    for system, labels in tables:
        key = f"{where}.{system}" if system else where
        if system and system not in ("github", "gitlab"):
            raise MatrixError(f"unknown key {key!r}; runs_on takes github and gitlab.")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise MatrixError(f'{key} must be a list of runner labels such as ["gpu-8x"].')
    return value


def _apply_override(cell: Cell, override: dict, backends: Iterable[str], where: str) -> Cell:
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if "timeout" in override:
        timeout = override["timeout"]
        _check_timeout(timeout, f"{where}.timeout")
        changes["timeout"] = timeout
    if "backend" in override:
        _check_backend(override["backend"], cell.spec, backends, f"{where}.backend")
        changes["backend"] = override["backend"]
    for key in ("suites", "pip_args"):
        if key in override:
            changes[key] = tuple(override[key])
    for key in ("torch", "waivers"):
        if key in override:
            changes[key] = override[key]
    if "env" in override:
        changes["env"] = {**cell.env, **override["env"]}
    for key in ("mesh", "ranks"):
        if key in override:
            changes[key] = _fake_list(cell, key, override[key], f"{where}.{key}")
    return replace(cell, **changes)


def _fake_list(cell: Cell, key: str, value: list, where: str) -> tuple[int, ...]:
    """A fake cell's ``mesh`` (its product is the world size) or ``ranks`` (each below it)."""
    n = cell.world_size
    if cell.mode != "fake":
        raise MatrixError(
            f"{where}: {key} applies to fake cells only ({cell.name} is {cell.mode}); remove it."
        )
    if not value or not all(_is_type(v, int) and v >= (1 if key == "mesh" else 0) for v in value):
        least = "positive" if key == "mesh" else "non-negative"
        raise MatrixError(f"{where} must be a non-empty list of {least} integers, not {value!r}.")
    if key == "mesh":
        product = 1
        for size in value:
            product *= size
        if product != n:
            shown = " x ".join(map(str, value))
            raise MatrixError(
                f"{where} = {value}: {shown} = {product} ranks, but {cell.name} has {n}; "
                f"give sizes whose product is {n}."
            )
    else:
        bad = [r for r in value if r >= n]
        if bad:
            raise MatrixError(
                f"{where}: rank {bad[0]} does not exist in {cell.name} (ranks 0 to {n - 1})."
            )
        if len(set(value)) != len(value):
            raise MatrixError(f"{where} = {value}: list each rank once.")
    return tuple(value)
