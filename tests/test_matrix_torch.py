"""The torch axis of matrix.toml: the first torch is the default, each other one
gets its own cells, sessions, tag, venv or image; bad entries are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.matrix import MatrixError, load_matrix

ROOT = Path(__file__).resolve().parent.parent

AXIS = """
schema = 1
[defaults]
torch = [
  "torch==2.13.0",
  "torch==2.7.1",
  { name = "nightly", requirement = "torch", pip_args = ["--pre", "--index-url", "https://example.invalid/nightly/cpu"] },
]
[accelerators.cpu]
backend = "gloo"
pip_args = ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
cells = { native = [4], local = [8] }
[accelerators.cuda]
backend = "nccl"
torch = [
  { requirement = "torch==2.13.0", base_image = "pytorch/pytorch:2.13.0-x@sha256:aa" },
  { requirement = "torch==2.11.0", base_image = "pytorch/pytorch:2.11.0-x@sha256:bb" },
]
cells = { native = [1] }
[accelerators.cuda.container]
base_image = "pytorch/pytorch:2.13.0-x@sha256:aa"
[overrides."cpu-4rank-torch2.7"]
timeout = 900
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def test_the_first_torch_keeps_the_plain_cells_each_other_gets_its_own(tmp_path):
    matrix = load_matrix(write(tmp_path, AXIS))
    assert matrix.names == [
        "cpu-4rank", "cpu-4rank-torch2.7", "cpu-4rank-torchnightly",
        "cpu-8sim", "cpu-8sim-torch2.7", "cpu-8sim-torchnightly",
        "cuda-1gpu", "cuda-1gpu-torch2.11",
    ]  # fmt: skip
    default, old = matrix.cell("test-cpu-4rank"), matrix.cell("test-cpu-4rank-torch2.7")
    assert (default.torch, old.torch) == ("torch==2.13.0", "torch==2.7.1")
    assert default.tags == ["cpu", "native", "rank", "ws4", "torch2.13"]
    assert old.tags == ["torch2.7"]  # `nox -t native` keeps running the default torch only
    assert old.harness_env()["HARNESS_TORCH"] == "torch==2.7.1"
    assert old.timeout == 900  # overrides address a torch's cell by its name
    # its own venv (named by version) and image; the accelerator's index still applies
    assert (default.image, old.image) == (
        "dtensor-harness:cpu-torch2.13.0",
        "dtensor-harness:cpu-torch2.7.1",
    )
    assert old.pip_args == default.pip_args


def test_an_entry_brings_its_own_index_or_its_own_base_image(tmp_path):
    matrix = load_matrix(write(tmp_path, AXIS))
    nightly = matrix.cell("cpu-8sim-torchnightly")
    assert nightly.torch == "torch"
    assert nightly.pip_args == ("--pre", "--index-url", "https://example.invalid/nightly/cpu")
    assert nightly.image == "dtensor-harness:cpu-torchnightly"
    assert matrix.cell("cuda-1gpu").container["base_image"].endswith("@sha256:aa")
    assert matrix.cell("cuda-1gpu-torch2.11").container["base_image"].endswith("@sha256:bb")
    assert matrix.cell("cuda-1gpu-torch2.11").to_dict()["default_torch"] is False


def test_the_shipped_matrix_spans_the_supported_range():
    matrix = load_matrix(ROOT / "matrix.toml")
    assert matrix.cell("cpu-4rank").torch == "torch==2.13.0"
    for label, pin in (
        ("2.7", "torch==2.7.1"),
        ("2.11", "torch==2.11.0"),
        ("2.15", "torch==2.15.0"),
    ):
        for cell in ("cpu-2rank", "cpu-4rank", "cpu-8sim"):
            assert matrix.cell(f"{cell}-torch{label}").torch == pin
    assert matrix.cell("cpu-4rank-torchnightly").pip_args[0] == "--pre"
    refs = {c.container.get("base_image", "") for c in matrix.cells}
    assert not [r for r in refs if r.endswith(":latest")]


def test_nox_lists_a_session_and_tag_per_torch():
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "--json", "-t", "torch2.11"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sessions = {s["name"]: s for s in json.loads(proc.stdout)}
    assert "test-cpu-4rank-torch2.11" in sessions and "certify-cpu-8sim-torch2.11" in sessions
    assert "test-cpu-4rank" not in sessions
    assert sessions["test-cpu-4rank-torch2.11"]["tags"] == ["test", "torch2.11"]


@pytest.mark.parametrize(
    ("torch", "says"),
    [
        ("[]", "defaults.torch is empty"),
        ('[{ name = "x" }]', "defaults.torch[0].requirement is missing"),
        ('["torch==2.13.0", { requirement = "torch==2.7.1", indx = "u" }]',
         "unknown key 'defaults.torch[1].indx'"),
        ('["torch==2.13.0", "torch==2.13.1"]', "a second torch labelled '2.13'"),
        ('["torch==2.13.0", "torch"]', 'add name = "nightly"'),
        ('["numpy==2.0"]', "'numpy==2.0' is not a torch requirement"),
        ("[3]", "defaults.torch[0] must be a requirement string or a table"),
    ],
)  # fmt: skip
def test_a_bad_torch_entry_is_one_line_naming_it(tmp_path, torch, says):
    text = f'schema = 1\n[defaults]\ntorch = {torch}\n[accelerators.cpu]\nbackend = "gloo"\ncells = {{ native = [2] }}\n'
    with pytest.raises(MatrixError) as err:
        load_matrix(write(tmp_path, text))
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_an_override_takes_one_torch_not_a_list(tmp_path):
    text = AXIS + '[overrides."cpu-4rank"]\ntorch = ["torch==2.11.0"]\n'
    with pytest.raises(MatrixError, match=r"overrides\.cpu-4rank\.torch must be a requirement"):
        load_matrix(write(tmp_path, text))


def test_ci_runs_the_conformance_cells_on_both_ends_of_the_range():
    ci = (ROOT / ".ci" / "run").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.7"' in pyproject and "tested through 2.15" in pyproject
    matrix = load_matrix(ROOT / "matrix.toml")
    for label in ("2.7", "2.15"):
        for cell in ("cpu-4rank", "cpu-8sim"):
            assert f"test-{cell}-torch{label}" in ci
            assert matrix.cell(f"{cell}-torch{label}")  # the session exists
