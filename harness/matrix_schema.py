"""The keys of matrix.toml as data: their types, bounds, defaults and help.

The one place the kit defines what a matrix may say. From it come the JSON
Schema (shipped as ``matrix.schema.json``, printed by ``harness matrix schema``,
read by editors through the ``#:schema`` line) and the first half of
:func:`harness.matrix.load_matrix`: :func:`problems` runs jsonschema on a parsed
matrix and words each error as one line naming its key path. What a schema
cannot say (cross-references, placeholders, cell names) stays in
:mod:`harness.matrix`.

Torch-free and light: jsonschema is imported inside :func:`problems` only.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, NamedTuple

from harness.accelerators import COUNT_KEYS, DEFINITION_KEYS, DRIVER_KEYS

SCHEMA_VERSION = 1
#: Bounds that catch a typo before it becomes an OverflowError or a 10**17-rank cell.
MAX_WORLD_SIZE = 65536
MAX_TIMEOUT_S = 7 * 24 * 3600
#: Cell modes: how the harness runs each test of the cell (docs/matrix.md).
MODES = ("native", "local", "fake")
#: The schema draft: the newest one taplo (Even Better TOML) validates.
DRAFT = "http://json-schema.org/draft-07/schema#"
#: The file name the schema ships under, beside matrix.toml.
FILE_NAME = "matrix.schema.json"
#: The directive taplo and Even Better TOML read on a matrix's first line.
DIRECTIVE = f"#:schema ./{FILE_NAME}"

_NONE = object()  # "no default"


@dataclass(frozen=True)
class Key:
    """One value of the matrix: its JSON Schema and the words for its problems.

    ``expects`` ends "X must be ..."; ``fix`` (may use {name} and {value}) follows a
    type error; ``empty`` follows "X is empty;"; ``bounds`` follows "is out of
    bounds:"; ``bad`` follows a value that breaks ``pattern``.
    """

    schema: Mapping[str, Any]
    expects: str
    help: str = ""
    default: Any = _NONE
    fix: str = ""
    empty: str = ""
    bounds: str = ""
    bad: str = ""
    noun: str = ""  # what one value is called in bounds problems ("world size 0 is ...")
    #: for a list or a table of values: the Key of each item
    item: Key | Table | None = None
    #: for alternatives (anyOf): the Keys it may be, in order
    either: tuple[Key | Table, ...] = ()


@dataclass(frozen=True)
class Table:
    """A TOML table of fixed keys, or (``names``) of entries named by the user."""

    help: str
    keys: Mapping[str, Key | Table] = field(default_factory=dict)
    #: every entry's Key when the names are the user's (accelerators, overrides)
    names: Key | Table | None = None
    name_pattern: str = ""
    name_rule: str = ""  # what a name that breaks name_pattern is told
    required: tuple[str, ...] = ()
    noun: str = "key"  # an unknown entry is an "unknown <noun>"
    empty: str = ""
    expects: str = "a table"


def _int(help: str, lo: int, hi: int, expects: str = "a whole number", **kw: Any) -> Key:
    kw.setdefault("bounds", f"at least {lo}, at most {hi}")
    return Key({"type": "integer", "minimum": lo, "maximum": hi}, expects, help, **kw)


def _str(help: str, expects: str = "a string", pattern: str = "", **kw: Any) -> Key:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return Key(schema, expects, help, **kw)


def _list(
    item: Key | Table,
    help: str,
    expects: str,
    *,
    min_items: int = 0,
    unique: bool = False,
    **kw: Any,
) -> Key:
    schema: dict[str, Any] = {"type": "array"}
    if min_items:
        schema["minItems"] = min_items
    if unique:
        schema["uniqueItems"] = True
    return Key(schema, expects, help, item=item, **kw)


def _either(help: str, expects: str, *options: Key | Table, **kw: Any) -> Key:
    return Key({}, expects, help, either=options, **kw)


_STRING = _str("", fix="every item in quotes")


def _strings(help: str, **kw: Any) -> Key:
    return _list(_STRING, help, "a list of strings", **kw)


def _string_table(help: str) -> Table:
    value = _str("", fix='quote it: {name} = "{value}"')
    return Table(help, names=value, expects="a table of strings")


def _from_type(kind: type | tuple[type, ...], expects: str, help: str) -> Key:
    """A Key from a (type, description) row of harness.accelerators."""
    names = {str: "string", list: "array", dict: "object", bool: "boolean"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    types = [names[k] for k in kinds]
    return Key({"type": types[0] if len(types) == 1 else types}, expects, help)


def _probes(keys: Mapping[str, type], help: str, expects: str) -> Key:
    probe = Table(
        help,
        {k: _from_type(t, f"a {t.__name__}", "") for k, t in keys.items()},
        expects="a probe table",
    )
    return _either(help, expects, probe, _list(probe, "", "a list of probe tables"))


_WORLD_SIZE = _int(
    "A world size: the ranks of one cell.",
    1,
    MAX_WORLD_SIZE,
    "a world size (a whole number)",
    noun="world size",
)
_WORLD_SIZES = _list(
    _WORLD_SIZE,
    "",
    "a list of world sizes (whole numbers)",
    min_items=1,
    unique=True,
    empty="list at least one world size, or remove the mode",
)
_REQUIREMENT = _str(
    "A pip requirement for torch: pinned (torch==2.13.0) or open (torch).",
    'a requirement string such as "torch==2.13.0"',
    pattern=r"^\s*torch\b",
    bad='is not a torch requirement; write it as "torch==2.15.0"',
)
_TORCH_ENTRY = Table(
    "One torch of the axis, as a table.",
    {
        "requirement": _REQUIREMENT,
        "name": _str(
            'A short label for tags and cell names, such as "nightly" (default: major.minor).',
            'a short label such as "nightly"',
            pattern=r"^[A-Za-z0-9][A-Za-z0-9.]*$",
            bad="is no label: use letters, digits and dots",
        ),
        "pip_args": _strings("pip arguments for this torch's install (its own index)."),
        "base_image": _str(
            "An image whose torch is this one (not reinstalled).", "an image reference"
        ),
    },
    required=("requirement",),
    expects="a table with requirement",
)
_TORCH_ITEM = _either(
    "", "a requirement string or a table with requirement", _REQUIREMENT, _TORCH_ENTRY
)
_TORCH = _either(
    "The torch axis: a requirement, or a list whose first is the default; every other "
    "torch gets cells <cell>-torch<label> (docs/torch-versions.md).",
    'a requirement such as "torch==2.13.0", or a list of them (the first is the default)',
    _REQUIREMENT,
    _list(
        _TORCH_ITEM,
        "",
        "a list of torch requirements",
        min_items=1,
        empty='give at least one, e.g. ["torch==2.13.0"]',
    ),
    default="torch",
)
_COMMON: dict[str, Key | Table] = {
    "timeout": _int(
        "Seconds one test may take before it counts as hung (HARNESS_TIMEOUT).",
        1,
        MAX_TIMEOUT_S,
        "a whole number of seconds",
        bounds=f"a positive number of seconds, at most {MAX_TIMEOUT_S} (7 days)",
        default=300,
    ),
    "suites": _strings(
        "pytest targets the cells run: importable packages, folders or files.",
        min_items=1,
        default=["harness.conformance"],
        empty='a cell must run something; list at least one suite (e.g. ["harness.conformance"]), '
        "or drop the key for the default",
    ),
    "torch": _TORCH,
    "pip_args": _strings("pip arguments for torch's install step only.", default=[]),
    "env": _string_table("Environment variables every rank of the cells gets."),
    "waivers": _str(
        "A waivers TOML file certify applies (docs/certification.md).",
        "a path to a waivers TOML file (docs/certification.md)",
        default="",
    ),
}
#: the same keys where [defaults] fills what is left out: no default of their own
_INHERITED = {k: replace(v, default=_NONE) if isinstance(v, Key) else v for k, v in _COMMON.items()}
_CONTAINER = Table(
    "How the accelerator's image is built and run (docs/containers.md).",
    {
        "dockerfile": _str("The Dockerfile, relative to the kit's docker/ context.", "a path"),
        "base_image": _str("The image the Dockerfile starts from.", "an image reference"),
        "build_args": _string_table("--build-arg NAME=VALUE for the image build."),
        "run_flags": _strings("Flags of every `docker run` of this accelerator."),
        "device_flags": _strings(
            "Flags that hand devices to the container: {devices} is the comma-separated "
            "ids, a flag with {device} repeats once per device."
        ),
        "device_env": _string_table(
            "Variables that hand devices to the container; {devices} is the ids."
        ),
        "vendor_torch": Key(
            {"type": "boolean"},
            "true or false",
            "The base image brings its own torch: asserted, not reinstalled.",
        ),
    },
)
_MODE_HELP = {
    "native": "Each test runs as its class says, one process (or thread) per rank: NAME-<N><unit>.",
    "local": "Every rank simulated by LocalTensor in one process: NAME-<N>sim.",
    "fake": "Chosen ranks of the world, one process each, on the fake process group "
    "(shapes, placements and collectives real, values not): NAME-<N>fake; an override "
    "sets its mesh and ranks.",
}
_CELLS = Table(
    "The cells: mode = [world sizes].",
    {mode: replace(_WORLD_SIZES, help=_MODE_HELP[mode]) for mode in MODES},
    noun="mode",
    empty="give it a mode and world sizes, e.g. cells = { native = [1, 2] }",
    expects="a table of mode = [world sizes]",
)
_RUNS_ON = _either(
    "CI runner labels for `harness ci`: a list, or a table of lists per CI system.",
    "a list of runner labels, or { github = [...], gitlab = [...] }",
    _strings(""),
    Table(
        "", {"github": _strings("GitHub runner labels."), "gitlab": _strings("GitLab runner tags.")}
    ),
)
_DEFINITION_HELP = {
    "unit": "The word after N in its cell names (npu-4card).",
    "plugin": "Modules imported in the parent and every rank before the process group starts.",
    "visible_devices": "The variable that limits which devices a process sees.",
}
_DEFINITION: dict[str, Key | Table] = {  # a new accelerator's facts (harness.accelerators)
    key: _from_type(kind, expects, _DEFINITION_HELP.get(key, ""))
    for key, (kind, expects) in DEFINITION_KEYS.items()
}
_DEFINITION["count"] = _probes(
    COUNT_KEYS, "How to count its devices without torch.", DEFINITION_KEYS["count"][1]
)
_DEFINITION["driver"] = _probes(
    DRIVER_KEYS, "How to read its driver version.", DEFINITION_KEYS["driver"][1]
)
_ACCELERATOR = Table(
    "One accelerator: a built-in (cpu, cuda, rocm, xpu, gaudi), a packaged one, or "
    "a new one declared here with unit, device, backend and cells (docs/accelerators.md).",
    {
        **_INHERITED,
        **_DEFINITION,
        "device": _str("The torch device type.", "a torch device type"),
        "backend": _str(
            'The collective backend, or a mixed one such as "cpu:gloo,cuda:nccl".',
            "a collective backend name",
        ),
        "cells": _CELLS,
        "container": _CONTAINER,
        "runs_on": _RUNS_ON,
    },
    required=("backend", "cells"),
)
_OVERRIDE = Table(
    "Changes to one cell, addressed by its name.",
    {
        **_INHERITED,
        "torch": _REQUIREMENT,
        "drop": Key({"type": "boolean"}, "true or false", "Remove the cell."),
        "backend": _str("The cell's collective backend.", "a collective backend name"),
        "mesh": _list(
            _int("", 1, MAX_WORLD_SIZE, noun="mesh dimension"),
            "A fake cell's mesh shape; its product is the world size (default: one dimension).",
            "a list of mesh dimensions (whole numbers)",
            min_items=1,
            empty="give the mesh shape, e.g. mesh = [8, 16, 64]",
        ),
        "ranks": _list(
            _int("", 0, MAX_WORLD_SIZE - 1, "a rank (a whole number)", noun="rank"),
            "Which ranks of a fake cell's world run (default: the first, the middle and the last).",
            "a list of ranks (whole numbers)",
            min_items=1,
            unique=True,
            empty="list at least one rank, e.g. ranks = [0, 1023]",
        ),
    },
)
MATRIX = Table(
    "dtensor-harness matrix.toml: accelerators x torch versions x world sizes x modes.",
    {
        "schema": Key(
            {"type": "integer", "const": SCHEMA_VERSION},
            "an integer",
            "The matrix format's version.",
            default=SCHEMA_VERSION,
        ),
        "defaults": Table(
            "Values every accelerator's cells take unless its table or an override says otherwise.",
            {
                **_COMMON,
                "results": _str(
                    "Where JUnit XML and reports go: <results>/<cell>/.",
                    "a folder path",
                    default="results",
                ),
            },
        ),
        "accelerators": Table(
            "The accelerators, one table each.",
            names=_ACCELERATOR,
            name_pattern=r"^[a-z][a-z0-9_]*$",
            name_rule="must be lower-case letters, digits and _ (it starts every cell name)",
        ),
        "overrides": Table(
            'Drop or adjust single cells: [overrides."cpu-8rank"].',
            names=_OVERRIDE,
        ),
    },
)

#: What a key left out means, for the loader: [defaults] and accelerator tables.
DEFAULTS: dict[str, Any] = {
    name: key.default
    for name, key in MATRIX.keys["defaults"].keys.items()  # type: ignore[union-attr]
    if isinstance(key, Key) and key.default is not _NONE
}


# --- the JSON Schema ---------------------------------------------------------------


def _schema(node: Key | Table) -> dict[str, Any]:
    if isinstance(node, Table):
        out: dict[str, Any] = {"type": "object"}
        if node.help:
            out["description"] = node.help
        if node.keys:
            out["properties"] = {k: _schema(v) for k, v in node.keys.items()}
        out["additionalProperties"] = _schema(node.names) if node.names else False
        if node.name_pattern:
            out["propertyNames"] = {"pattern": node.name_pattern}
        if node.required:
            out["required"] = list(node.required)
        if node.empty:
            out["minProperties"] = 1
        return out
    out = dict(node.schema)
    if node.either:
        out["anyOf"] = [_schema(option) for option in node.either]
    if node.item is not None:
        out["items"] = _schema(node.item)
    if node.help:
        out["description"] = node.help
    if node.default is not _NONE:
        out["default"] = node.default
    return out


@cache
def json_schema() -> dict[str, Any]:
    """The JSON Schema of matrix.toml (draft-07, what taplo validates)."""
    return {"$schema": DRAFT, "title": "dtensor-harness matrix", **_schema(MATRIX)}


def schema_text() -> str:
    """The schema as shipped in matrix.schema.json and printed by `harness matrix schema`."""
    return json.dumps(json_schema(), indent=2) + "\n"


# --- validation: jsonschema's errors as the house's one-liners --------------------------


def where(path: Iterable[Any]) -> str:
    """A key path as the docs write it: accelerators.cpu.cells.native[0]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def node_at(path: Iterable[Any], data: Any) -> Key | Table | None:
    """The Key or Table that governs ``path`` in ``data`` (alternatives picked by the value)."""
    node: Key | Table | None = MATRIX
    value = data
    for part in path:
        node = _pick(node, value)
        if isinstance(node, Table) and isinstance(part, str):
            node = node.keys.get(part, node.names)
        elif isinstance(node, Key) and isinstance(part, int):
            node = node.item
        else:
            return None
        value = value[part]
    return _pick(node, value)


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}


def _pick(node: Key | Table | None, value: Any) -> Key | Table | None:
    """Of a Key's alternatives, the one of the value's type (else the Key itself)."""
    while isinstance(node, Key) and node.either:
        for option in node.either:
            if _fits(option, value):
                node = option
                break
        else:
            return node
    return node


def _fits(node: Key | Table, value: Any) -> bool:
    if isinstance(node, Table):
        return isinstance(value, dict)
    if node.either:
        return any(_fits(option, value) for option in node.either)
    types = node.schema.get("type", [])
    kinds = tuple(_JSON_TYPES[t] for t in ([types] if isinstance(types, str) else types))
    return isinstance(value, kinds) and (not isinstance(value, bool) or bool in kinds)


def describe(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    shown = json.dumps(value) if isinstance(value, bool) else repr(value)  # as TOML says it
    return f"{names.get(type(value), type(value).__name__)} ({shown})"


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


@cache
def _validator() -> Any:
    try:
        import jsonschema  # lazily: `import harness.matrix` stays light
    except ImportError:
        from harness.errors import UsageError

        raise UsageError(
            "reading matrix.toml needs jsonschema, a dependency of dtensor-harness that "
            "this Python lacks: `python -m pip install jsonschema`"
        ) from None

    base = jsonschema.Draft7Validator
    # TOML has real integers: 2.0 is a float there, never a world size or a timeout
    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)
    )
    return jsonschema.validators.extend(base, type_checker=strict)(json_schema())


class Problem(NamedTuple):
    """One schema problem: the key path it is about, its line, the failed keyword."""

    path: tuple[Any, ...]
    line: str
    keyword: str


def problems(data: Mapping[str, Any]) -> list[Problem]:
    """Every schema problem of a parsed matrix, each worded as one line with its key path."""
    found: list[Problem] = []
    for error in _validator().iter_errors(data):
        for leaf in _leaves(error):
            for path, line in _words(leaf, data):
                problem = Problem(path, line, leaf.validator)
                if problem not in found:
                    found.append(problem)
    # a value of the wrong type is told so once, not also that it breaks its bounds
    mistyped = {p.path for p in found if p.keyword in ("type", "anyOf")}
    return [p for p in found if p.keyword in ("type", "anyOf") or p.path not in mistyped]


def _leaves(error: Any) -> Iterator[Any]:
    """An anyOf error stands for the option the value's shape picks: its own errors."""
    if error.validator != "anyOf" or not error.context:
        yield error
        return
    options: dict[int, list[Any]] = {}
    for sub in error.context:
        options.setdefault(sub.relative_schema_path[0], []).append(sub)
    for errors in options.values():
        if not any(e.validator == "type" and not e.relative_path for e in errors):
            for sub in errors:  # this option has the value's type: its errors are the ones
                yield from _leaves(sub)
            return
    yield error  # no option has the value's type: a type error, worded by the Key


def _words(error: Any, root: Any) -> Iterator[tuple[tuple[Any, ...], str]]:
    path = tuple(error.absolute_path)
    node = node_at(path, root)
    value, name = error.instance, (path[-1] if path else "")
    at = where(path)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(node, Table):
        allowed = sorted(node.keys)
        for key in value:
            if key not in node.keys:
                yield (
                    (*path, key),
                    (
                        f"unknown {node.noun} {where((*path, key))!r}.{suggest(key, allowed)} "
                        f"{'Modes' if node.noun == 'mode' else 'Allowed here'}: {', '.join(allowed)}."
                    ),
                )
        return
    if kind == "required" and isinstance(node, Table):
        unknown = [k for k in value if k not in node.keys]
        for key in error.validator_value:
            if key not in value and not difflib.get_close_matches(key, unknown, n=1, cutoff=0.6):
                # (a key close to an unknown one is a typo, named once as that)
                yield (*path, key), f"{where((*path, key))} is missing; add it to [{at}]."
        return
    if kind == "pattern" and isinstance(node, Table) and node.name_pattern:
        key = value  # propertyNames: the name is the value, the path its table's
        yield (*path, key), f"{where((*path, key))}: the name {key!r} {node.name_rule}."
        return
    if kind == "pattern" and isinstance(node, Key) and node.bad:
        yield path, f"{at}: {value!r} {node.bad}."
        return
    if kind in ("type", "anyOf") and node is not None:
        fix = node.fix.format(name=name, value=value) if isinstance(node, Key) else ""
        yield (
            path,
            f"{at} must be {node.expects}, not {describe(value)}" + (f"; {fix}." if fix else "."),
        )
        return
    if kind in ("minItems", "minProperties") and node is not None and node.empty:
        yield path, f"{at} is empty; {node.empty}."
        return
    if kind in ("minimum", "maximum") and isinstance(node, Key):
        what = f"{at}: {node.noun} {value}" if node.noun else f"{at} = {value}"
        yield path, f"{what} is out of bounds: {node.bounds}."
        return
    if kind == "uniqueItems":
        twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
        yield path, f"{at} lists {twice!r} twice; list each once."
        return
    yield path, f"{at or 'the matrix'}: {error.message}."


# --- the reference in docs/matrix.md ---------------------------------------------------


def reference() -> str:
    """docs/matrix.md's key reference, one section per table (`harness matrix schema
    --markdown`; tests/test_matrix_schema.py keeps the doc equal to it)."""
    out: list[str] = []
    _tables(MATRIX, "", out)
    return "\n".join(out) + "\n"


def _tables(table: Table, name: str, out: list[str]) -> None:
    rows = [(key, node) for key, node in table.keys.items() if not _is_section(node)]
    out += ["", f"### `[{name}]`" if name else "### top level", "", _html(table.help)]
    if rows:
        out += ["", "| key | value | default | what it is |", "|---|---|---|---|"]
        out += [_row(key, node) for key, node in rows]
    for key, node in table.keys.items():
        if _is_section(node):
            _tables(node, f"{name}.{key}" if name else key, out)  # type: ignore[arg-type]
    if isinstance(table.names, Table) and _is_section(table.names):
        _tables(table.names, f'{name}."<cell>"' if name == "overrides" else f"{name}.<name>", out)


def _is_section(node: Key | Table | None) -> bool:
    """A table with keys of its own (not a table of strings such as env)."""
    return isinstance(node, Table) and (bool(node.keys) or _is_section(node.names))


def _html(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def _row(key: str, node: Key | Table) -> str:
    default = "" if isinstance(node, Table) or node.default is _NONE else json.dumps(node.default)
    default = f"`{default}`" if default else ""
    return f"| `{key}` | {_html(node.expects)} | {default} | {_html(node.help)} |"
