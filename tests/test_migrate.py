"""`harness migrate`: imports move to harness, nothing else in the file changes."""

from __future__ import annotations

import ast
import os
import shutil
import stat
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


def test_the_hardware_enum_moves_out_of_common_utils_and_nothing_else_does():
    """A torch 2.15 file run on 2.13: the one name of common_utils the kit twins moves."""
    source = (
        "from torch.testing._internal.common_utils import (\n"
        "    run_tests,  # the runner\n"
        "    HardwareClassification,\n"
        ")\n"
        "from torch.testing._internal.common_utils import TestCase, run_tests as rt\n"
        "hw = HardwareClassification.ACCELERATOR\n"
    )
    migration = migrate_source(source)
    bound = bindings(migration.new)
    assert bound["HardwareClassification"] == "harness:HardwareClassification"
    assert bound["run_tests"] == "torch.testing._internal.common_utils:run_tests"
    assert bound["rt"] == "torch.testing._internal.common_utils:run_tests"
    assert "    run_tests,  # the runner\n" in migration.new  # its comment stays with it
    assert migration.moved == [(3, "HardwareClassification")]
    assert migration.kept == []  # torch's general helpers are not the kit's to report
    assert migrate_source(migration.new).new == migration.new  # and again: nothing to do


BORROWS = (
    "import torch\n"
    f"from {COMMON_DTENSOR} import (\n"
    "    DTensorTestBase,\n"
    ")\n"
    "\n"
    "\n"
    "class T(torch._dynamo.test_case.TestCase):\n"
    "    pass\n"
)


def test_a_submodule_the_helper_had_loaded_is_imported_after_the_move():
    """PyTorch's common_distributed loads torch._dynamo.test_case; the kit does not."""
    migration = migrate_source(BORROWS)
    assert migration.new == BORROWS.replace(
        f"from {COMMON_DTENSOR} import (\n    DTensorTestBase,\n)\n",
        "from harness import (\n    DTensorTestBase,\n)\nimport torch._dynamo.test_case\n",
    )
    assert migration.added == [(2, "torch._dynamo.test_case")]
    assert migration.added_lines() == [
        "<string>:2: import torch._dynamo.test_case: added (a PyTorch helper the file "
        "no longer imports had loaded it)"
    ]
    assert migrate_source(migration.new).new == migration.new  # and again: nothing to do


def test_the_command_says_which_import_it_added(tmp_path, capsys):
    target = tmp_path / "test_borrow.py"
    target.write_text(BORROWS)
    assert main(["migrate", str(target)]) == 0
    assert target.read_text() == migrate_source(BORROWS).new
    err = capsys.readouterr().err
    assert f"{target}:2: import torch._dynamo.test_case: added (" in err


@pytest.mark.parametrize(
    "source, names",
    [
        # the file loads it itself, in any of the forms that set the attribute
        (BORROWS + "import torch._dynamo.test_case\n", None),
        (BORROWS + "from torch._dynamo import test_case\n", None),
        (BORROWS + "from torch._dynamo.test_case import TestCase\n", None),
        # a name stays imported from the helper, so the helper still loads it
        (BORROWS.replace("DTensorTestBase,", "DTensorTestBase, with_comms,"), {"with_comms"}),
        # the submodule is not used
        (BORROWS.replace("torch._dynamo.test_case.TestCase", "object"), None),
    ],
)
def test_no_import_is_added_where_the_file_does_not_need_it(source, names):
    migration = migrate_source(source, names=names)
    assert migration.changed
    assert migration.added == []
    assert migration.new.count("import torch._dynamo.test_case") == source.count(
        "import torch._dynamo.test_case"
    )


def test_the_migrated_file_defines_its_classes(tmp_path):
    """Run the migrated module body: without the added import it stops on AttributeError."""
    path = tmp_path / "test_borrow.py"
    path.write_text(migrate_source(BORROWS).new)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    code = f"import runpy; assert 'T' in runpy.run_path({str(path)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


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


# --- atomic runs and odd inputs (issue 16, item 5) -------------------------------------

GOOD = (DATA / "test_simple.py").read_bytes()


def _suite(tmp_path, **extra: bytes) -> Path:
    """A folder with two migratable files around the named extra ones."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_a.py").write_bytes(GOOD)
    (suite / "test_z.py").write_bytes(GOOD)
    for name, data in extra.items():
        (suite / f"{name}.py").write_bytes(data)
    return suite


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"def broken(:\n", "test_m.py:1: cannot parse"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "test_m.py: binary file"),
        (b"x = '\xff\xfe caf\xe9'\n", "test_m.py: not valid utf-8 at byte 5"),
        (b"# -*- coding: klingon -*-\nx = 1\n", "test_m.py: bad encoding declaration"),
    ],
)
def test_one_bad_file_writes_nothing_and_says_so_in_one_line(tmp_path, capsys, content, message):
    suite = _suite(tmp_path, test_m=content)
    assert main(["migrate", str(suite)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "nothing written" in err[0], err
    assert (suite / "test_a.py").read_bytes() == GOOD  # sorted before the bad one
    assert (suite / "test_z.py").read_bytes() == GOOD


def test_every_bad_file_is_named_at_once(tmp_path, capsys):
    suite = _suite(tmp_path, test_b=b"def broken(:\n", test_c=b"\x00\x01")
    assert main(["migrate", str(suite)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("harness: error:") for line in err)
    assert "test_b.py:1: cannot parse" in err[0] and "test_c.py: binary file" in err[1]
    assert "2 of 4 file(s)" in err[1]


def test_a_read_only_file_is_refused_before_anything_is_written(tmp_path, capsys):
    suite = _suite(tmp_path, test_m=GOOD)
    (suite / "test_m.py").chmod(0o444)
    assert main(["migrate", str(suite)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_m.py: read-only" in err[0], err
    assert all(p.read_bytes() == GOOD for p in suite.iterdir())


def test_a_write_that_fails_midway_names_what_was_written(tmp_path, capsys, monkeypatch):
    suite = _suite(tmp_path, test_m=GOOD)
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("test_m.py"):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["migrate", str(suite)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"written: {suite / 'test_a.py'}; not written: {suite / 'test_m.py'}, " in err[0]
    assert (suite / "test_a.py").read_bytes() != GOOD
    assert (suite / "test_m.py").read_bytes() == GOOD  # old bytes, not half of the new
    assert sorted(p.name for p in suite.iterdir()) == ["test_a.py", "test_m.py", "test_z.py"]


def test_the_file_keeps_its_mode(tmp_path):
    suite = _suite(tmp_path)
    (suite / "test_a.py").chmod(0o750)
    assert main(["migrate", str(suite / "test_a.py")]) == 0
    assert stat.S_IMODE((suite / "test_a.py").stat().st_mode) == 0o750


def test_a_fifo_named_like_a_test_is_skipped_not_read(tmp_path):
    suite = _suite(tmp_path)
    os.mkfifo(suite / "test_pipe.py")
    done = subprocess.run(
        [sys.executable, "-m", "harness", "migrate", str(suite)],
        capture_output=True,
        text=True,
        timeout=60,  # opening the FIFO would block forever
    )
    assert done.returncode == 0, done.stderr
    assert f"{suite / 'test_pipe.py'}: skipped, not a regular file" in done.stderr
    assert "2 of 2 file(s) changed" in done.stderr
    assert (suite / "test_a.py").read_bytes() != GOOD
