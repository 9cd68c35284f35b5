"""`harness migrate`: imports move to harness, nothing else in the file changes."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import _EXPORTS
from harness.cli import main
from harness.migrate import (
    COMMON_DISTRIBUTED,
    COMMON_DTENSOR,
    migrate_file,
    migrate_source,
)

DATA = Path(__file__).parent / "data" / "migrate"
TEST_FILES = sorted(p.name for p in DATA.glob("*.py"))


def bindings(source: str) -> dict[str, str]:
    """Every name a file's imports bind -> the module it comes from."""
    bound = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}:{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name] = alias.name
    return bound


def outside_imports(source: str) -> list[str]:
    """The file's lines that belong to no import statement."""
    lines = source.splitlines(keepends=True)
    inside = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            inside.update(range(node.lineno, node.end_lineno + 1))
    return [line for n, line in enumerate(lines, 1) if n not in inside]


@pytest.mark.parametrize("name", TEST_FILES)
def test_same_names_bound_and_only_provided_ones_move(name):
    migration = migrate_file(DATA / name)
    before, after = bindings(migration.old), bindings(migration.new)
    assert before.keys() == after.keys()
    for local, origin in before.items():
        module, _, imported = origin.partition(":")
        if not imported or imported in ("common_dtensor", "common_distributed"):
            continue  # whole-module aliases: test_module_aliases_move_only_when...
        if module in (COMMON_DTENSOR, COMMON_DISTRIBUTED) and imported in _EXPORTS:
            assert after[local] == f"harness:{imported}", local
        else:
            assert after[local] == origin, f"{local} must stay with {module}"
    compile(migration.new, name, "exec")


@pytest.mark.parametrize("name", TEST_FILES)
def test_lines_outside_imports_are_untouched(name):
    migration = migrate_file(DATA / name)
    assert outside_imports(migration.new) == outside_imports(migration.old)


def test_a_full_move_changes_only_the_module_name():
    migration = migrate_file(DATA / "test_simple.py")
    old, new = migration.old.splitlines(), migration.new.splitlines()
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert len(old) == len(new)
    assert changed == [
        (
            f"from {COMMON_DTENSOR} import DTensorTestBase, with_comms",
            "from harness import DTensorTestBase, with_comms",
        )
    ]


def test_names_not_provided_are_listed_and_kept():
    migration = migrate_file(DATA / "test_mixed.py")
    kept = {(k.line, k.name, k.module) for k in migration.kept}
    assert kept == {
        (4, "MultiProcessTestCase", COMMON_DISTRIBUTED),
        (10, "make_wrapped", COMMON_DTENSOR),
    }
    assert f"{migration.path}:10: make_wrapped: kept from {COMMON_DTENSOR}" in "\n".join(
        migration.kept_lines()
    )
    assert bindings(migration.new)["Base"] == "harness:DTensorTestBase"
    assert "MultiProcessTestCase,  # kept: not the kit's" in migration.new
    assert "    # the bases\n    DTensorTestBase as Base," in migration.new


def test_module_aliases_move_only_when_every_attribute_is_provided():
    migration = migrate_file(DATA / "test_modules.py")
    new = migration.new.splitlines()
    assert "import harness as cd" in new
    assert "import harness as common_distributed" in new
    assert "from torch.testing._internal import common_utils" in new
    assert f"from {COMMON_DTENSOR.rsplit('.', 1)[0]} import common_dtensor" in new
    assert [k.name for k in migration.kept] == ["common_dtensor.make_wrapped"]


def test_the_table_decides_what_moves():
    source = f"from {COMMON_DTENSOR} import with_comms, DTensorTestBase\n"
    migration = migrate_source(source, names={"with_comms"})
    assert migration.new == (
        f"from harness import with_comms\nfrom {COMMON_DTENSOR} import DTensorTestBase\n"
    )
    assert [k.name for k in migration.kept] == ["DTensorTestBase"]


def test_star_import_is_listed_not_rewritten():
    source = f"from {COMMON_DTENSOR} import *\n"
    migration = migrate_source(source)
    assert not migration.changed
    assert [k.name for k in migration.kept] == ["*"]


def test_check_prints_diff_exits_1_and_changes_nothing(tmp_path, capsys):
    target = tmp_path / "crlf_test.py"
    shutil.copy(DATA / "crlf_test.py", target)
    before = target.read_bytes()
    assert main(["migrate", "--check", str(target)]) == 1
    out = capsys.readouterr().out
    assert f"-from {COMMON_DTENSOR} import (" in out
    assert "+from harness import (" in out
    assert target.read_bytes() == before


def test_migrate_rewrites_bytes_in_place_and_is_idempotent(tmp_path, capsys):
    target = tmp_path / "crlf_test.py"
    shutil.copy(DATA / "crlf_test.py", target)
    before = target.read_bytes()
    assert main(["migrate", str(target)]) == 0
    after = target.read_bytes()
    first = before.index(b"\r\n")
    assert after == b"from harness import (" + before[first:]  # CRLF and UTF-8 kept
    assert main(["migrate", "--check", str(target)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("migrated ")


def test_directories_walk_test_files_only(tmp_path, capsys):
    shutil.copytree(DATA, tmp_path / "suite")
    assert main(["migrate", str(tmp_path / "suite")]) == 0
    err = capsys.readouterr().err
    assert f"5 of {len(TEST_FILES) - 1} file(s) changed" in err
    assert COMMON_DTENSOR in (tmp_path / "suite" / "helpers.py").read_text()


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["migrate", "/nonexistent/test_x.py"], "no such file or directory"),
        ("def broken(:\n", ["migrate", "{path}"], ":1: cannot parse"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, args, message):
    path = tmp_path / "test_bad.py"
    if content is not None:
        path.write_text(content)
    assert main([a.format(path=path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("harness: error:")


def test_migrate_does_not_import_torch(tmp_path):
    target = tmp_path / "test_simple.py"
    shutil.copy(DATA / "test_simple.py", target)
    code = (
        "import sys; from harness.cli import main; "
        f"rc = main(['migrate', {str(target)!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "from harness import" in target.read_text()
