"""matrix.toml's JSON Schema: made from the kit's key table, shipped beside the starter
matrix, read by taplo (the engine of VS Code's Even Better TOML) and by `harness matrix
validate` alike; fake cells and their mesh and ranks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import kitfiles, matrix_schema
from harness.cli import main
from harness.matrix import MatrixError, load_matrix

ROOT = Path(__file__).resolve().parent.parent
TAPLO = shutil.which("taplo")
needs_taplo = pytest.mark.skipif(
    TAPLO is None, reason="taplo is not installed: pip install taplo (in the test extras)"
)


def taplo(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TAPLO, "lint", "--no-auto-config", "--colors", "never", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


def test_the_shipped_schema_is_the_one_the_keys_make():
    shipped = (ROOT / matrix_schema.FILE_NAME).read_text()
    assert shipped == matrix_schema.schema_text(), (
        "matrix.schema.json is stale: harness matrix schema > matrix.schema.json"
    )
    # the wheel's copy sits beside the starter matrix, so its `#:schema` line resolves
    packaged = kitfiles.starter_matrix().parent / matrix_schema.FILE_NAME
    assert packaged.read_text() == shipped
    assert "data/matrix.schema.json" in (ROOT / "pyproject.toml").read_text()


def test_matrix_schema_prints_it(capsys):
    assert main(["matrix", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == matrix_schema.json_schema()
    accel = printed["properties"]["accelerators"]["additionalProperties"]
    assert accel["required"] == ["backend", "cells"]
    assert set(accel["properties"]["cells"]["properties"]) == {"native", "local", "fake"}


def test_the_loader_takes_its_defaults_from_the_schema(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text('[accelerators.cpu]\nbackend = "gloo"\ncells = { native = [2] }\n')
    cell = load_matrix(path).cell("cpu-2rank")
    defaults = matrix_schema.json_schema()["properties"]["defaults"]["properties"]
    assert cell.timeout == defaults["timeout"]["default"]
    assert list(cell.suites) == defaults["suites"]["default"]
    assert cell.results == defaults["results"]["default"]


def test_importing_the_matrix_leaves_jsonschema_for_validation():
    code = (
        "import sys, harness.matrix\n"
        "assert 'jsonschema' not in sys.modules, 'jsonschema imported with harness.matrix'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_python_without_jsonschema_is_told_how_to_get_it(tmp_path):
    """A venv made without the kit's dependencies (nox's, a bare one) gets one line, exit 2."""
    blocker = tmp_path / "jsonschema.py"
    blocker.write_text("raise ImportError('blocked for this test')\n")
    code = "import sys; from harness.cli import main; sys.exit(main(['matrix', 'list']))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install jsonschema" in done.stderr.strip().splitlines()[-1]


def test_the_starter_and_init_carry_the_directive(tmp_path):
    assert kitfiles.starter_matrix().read_text().splitlines()[0] == matrix_schema.DIRECTIVE
    assert main(["init", str(tmp_path), "--ci", "none"]) == 0
    assert (tmp_path / "matrix.toml").read_text().splitlines()[0] == matrix_schema.DIRECTIVE
    assert (tmp_path / matrix_schema.FILE_NAME).read_text() == matrix_schema.schema_text()


@needs_taplo
@pytest.mark.parametrize(
    "path", [ROOT / "matrix.toml", ROOT / "harness" / "data" / "matrix.toml"], ids=str
)
def test_taplo_finds_the_shipped_matrix_valid(path):
    done = taplo(path)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_taplo
def test_taplo_finds_what_init_writes_valid(tmp_path):
    assert main(["init", str(tmp_path), "--ci", "none"]) == 0
    done = taplo(tmp_path / "matrix.toml")
    assert done.returncode == 0, done.stdout + done.stderr


# A broken line of the shipped matrix: (its text, what it becomes, the key path harness
# names, the word taplo's message carries). Each breaks one key, and both must refuse it.
BROKEN = {
    "unknown key": ('backend = "gloo"', 'backnd = "gloo"', "accelerators.cpu.backnd", "backnd"),
    "timeout not a number": (
        "timeout = 300 ",
        'timeout = "5m" ',
        "defaults.timeout",
        '"5m"',
    ),
    "world size zero": (
        "cells = { native = [1, 2, 4, 8], local = [8, 16], fake = [1024, 8192] }",
        "cells = { native = [0, 2], local = [8, 16] }",
        "accelerators.cpu.cells.native[0]",
        "minimum",
    ),
    "unknown mode": (
        "cells = { native = [1, 2, 4, 8], local = [8, 16], fake = [1024, 8192] }",
        "cells = { native = [1, 2], locale = [8] }",
        "accelerators.cpu.cells.locale",
        "locale",
    ),
    "env value not a string": (
        'env = { OMP_NUM_THREADS = "1" }',
        "env = { OMP_NUM_THREADS = 1 }",
        "accelerators.cpu.env.OMP_NUM_THREADS",
        "string",
    ),
    "vendor_torch not a boolean": (
        "vendor_torch = true",
        'vendor_torch = "yes"',
        "accelerators.cuda.container.vendor_torch",
        "boolean",
    ),
    "not a torch requirement": (
        '"torch==2.15.0",  # the newest supported',
        '"numpy==2.0",',
        "defaults.torch[1]",
        "",
    ),
    "override key typo": (
        "timeout = 600 ",
        "timout = 600 ",
        "overrides.cpu-8rank.timout",
        "timout",
    ),
}


@needs_taplo
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_matrix_is_refused_at_its_key_by_taplo_and_by_harness(case, tmp_path, capsys):
    old, new, key, word = BROKEN[case]
    text = (ROOT / "matrix.toml").read_text()
    assert old in text, case
    broken = text.replace(old, new, 1)
    line = broken[: broken.index(new)].count("\n") + 1
    path = tmp_path / "matrix.toml"
    path.write_text(broken)
    shutil.copy(ROOT / matrix_schema.FILE_NAME, tmp_path)

    assert main(["matrix", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0], err

    done = taplo(path)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    # taplo's report: "error: MESSAGE" then "┌─ FILE:LINE:COLUMN" for each span it marks
    spans = re.findall(r"^error: (.*)\n\s*┌─ .*?:(\d+):\d+", out, flags=re.M)
    assert spans, out
    assert line in {int(at) for _, at in spans}, f"{case}: no error on line {line}:\n{out}"
    assert any(word in message for message, _ in spans), out


# --- fake cells -------------------------------------------------------------------

FAKE = """
[accelerators.cpu]
backend = "gloo"
cells = { native = [2], fake = [1024, 8192] }
[accelerators.cuda]
backend = "nccl"
cells = { fake = [16] }
[overrides."cpu-8192fake"]
mesh = [8, 16, 64]
ranks = [8191, 0, 4096]
"""


def test_fake_cells_carry_their_mesh_and_ranks_to_the_runtime(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text(FAKE)
    matrix = load_matrix(path)
    assert matrix.names == ["cpu-2rank", "cpu-1024fake", "cpu-8192fake", "cuda-16fake"]
    small = matrix.cell("cpu-1024fake")
    assert (small.mode, small.unit, small.world_size) == ("fake", "fake", 1024)
    assert small.mesh_shape == (1024,) and small.fake_ranks == (0, 512, 1023)
    big = matrix.cell("test-cpu-8192fake")
    assert big.mesh_shape == (8, 16, 64) and big.fake_ranks == (0, 4096, 8191)
    env = big.harness_env()
    assert (env["HARNESS_MODE"], env["HARNESS_MESH"], env["HARNESS_FAKE_RANKS"]) == (
        "fake",
        "8,16,64",
        "0,4096,8191",
    )
    assert big.to_dict()["mesh_shape"] == [8, 16, 64]
    # the fake group needs no device: a cuda fake cell asks the host for none
    assert matrix.cell("cuda-16fake").devices_needed == 0
    assert "HARNESS_MESH" not in matrix.cell("cpu-2rank").harness_env()


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ('[overrides."cpu-1024fake"]\nmesh = [8, 16]', "mesh = [8, 16] holds 128 ranks, but "
         "cpu-1024fake has 1024; give dimensions whose product is 1024"),
        ('[overrides."cpu-1024fake"]\nranks = [0, 1024]', "overrides.cpu-1024fake.ranks: rank "
         "1024 is outside the world of cpu-1024fake (ranks 0 to 1023)"),
        ('[overrides."cpu-2rank"]\nmesh = [2]', "overrides.cpu-2rank.mesh: cpu-2rank is a native "
         "cell; mesh and ranks are for fake cells"),
        ('[overrides."cpu-1024fake"]\nmesh = []', "overrides.cpu-1024fake.mesh is empty"),
        ('[overrides."cpu-1024fake"]\nranks = [0, 0]', "overrides.cpu-1024fake.ranks lists 0 twice"),
        ('[overrides."cpu-1024fake"]\nranks = [-1]', "overrides.cpu-1024fake.ranks[0]: rank -1 is "
         "out of bounds"),
        ('[overrides."cpu-1024fake"]\nmesh = 1024', "overrides.cpu-1024fake.mesh must be a list "
         "of mesh dimensions"),
    ],
)  # fmt: skip
def test_a_bad_fake_layout_is_one_line_naming_the_key(tmp_path, override, says):
    path = tmp_path / "matrix.toml"
    path.write_text(FAKE + override + "\n")
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_fake_unit_is_reserved(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text(
        '[accelerators.acme]\ndevice = "acme"\nbackend = "acmeccl"\nunit = "fake"\n'
        "cells = { native = [2] }\n"
    )
    with pytest.raises(MatrixError, match=r'accelerators.acme.unit = "fake" is reserved for fake'):
        load_matrix(path)


def test_the_docs_key_reference_is_the_generated_one(capsys):
    doc = (ROOT / "docs" / "matrix.md").read_text()
    start = doc.index("<!-- keys:")
    section = doc[doc.index("\n", start) + 1 : doc.index("<!-- /keys -->")]
    assert main(["matrix", "schema", "--markdown"]) == 0
    assert section == capsys.readouterr().out, (
        "docs/matrix.md's key reference is stale: paste `harness matrix schema --markdown`"
    )
    for key in ("mesh", "ranks", "fake", "vendor_torch", "runs_on"):
        assert f"| `{key}` |" in section
