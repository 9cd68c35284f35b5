"""``harness matrix list|show|validate|schema``."""

from __future__ import annotations

import json

from harness.commands import add_command
from harness.errors import UsageError
from harness.matrix import load_matrix


def add_parser(sub, parents) -> None:
    parser = sub.add_parser("matrix", help="list, show or validate the matrix's cells; its schema")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = add_command(verbs, "list", list_cells, parents, help="every cell and its session")
    listing.add_argument("--json", action="store_true")
    listing.add_argument(
        "--fields",
        metavar="A,B",
        help="with --json: only these keys of each cell (e.g. name,accelerator,mode,unit)",
    )
    show = add_command(verbs, "show", show_cell, parents, help="one cell in full")
    show.add_argument("cell", help="cell name, with or without its test- prefix")
    show.add_argument("--json", action="store_true")
    validate = add_command(verbs, "validate", validate_file, parents, help="check a matrix file")
    validate.add_argument(
        "file", nargs="?", help="matrix file (default: --matrix or ./matrix.toml)"
    )
    schema = add_command(
        verbs,
        "schema",
        print_schema,
        help="print matrix.toml's JSON Schema (editors read it: `#:schema ./matrix.schema.json`)",
    )
    schema.add_argument(
        "--markdown", action="store_true", help="the key reference of docs/matrix.md instead"
    )


def list_cells(args) -> int:
    matrix = load_matrix(args.matrix)
    if args.json:
        cells = [cell.to_dict() for cell in matrix.cells]
        if args.fields:
            keys = [k.strip() for k in args.fields.split(",") if k.strip()]
            unknown = [k for k in keys if cells and k not in cells[0]]
            if unknown:
                raise UsageError(
                    f"--fields: no cell key {unknown[0]!r}; keys: {', '.join(cells[0])}."
                )
            cells = [{k: c[k] for k in keys} for c in cells]
        print(json.dumps(cells, indent=2))
        return 0
    print(f"matrix {matrix.path.resolve()}: {len(matrix.cells)} cells")
    rows = [("CELL", "SESSION", "DEVICE", "BACKEND", "RANKS", "MODE", "TORCH")]
    rows += [
        (c.name, c.session, c.device, c.backend, str(c.world_size), c.mode, c.torch)
        for c in matrix.cells
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    return 0


def show_cell(args) -> int:
    cell = load_matrix(args.matrix).cell(args.cell)
    data = cell.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = " ".join(map(str, value)) or "-"
        print(f"{key:12} {value}")
    return 0


def validate_file(args) -> int:
    path = args.file or args.matrix
    matrix = load_matrix(path)
    print(f"{matrix.path}: ok, {len(matrix.cells)} cells ({', '.join(matrix.accelerators)})")
    return 0


def print_schema(args) -> int:
    from harness.matrix_schema import reference, schema_text

    print(reference() if args.markdown else schema_text(), end="")
    return 0
