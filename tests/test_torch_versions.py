"""Across the supported torch range: private APIs behind compat's gates, and what an
older torch lacks skips with the feature's name and minimum torch, never fails."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import compat

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"

# Modules with no public twin: only harness/compat.py may import them.
PRIVATE = ("torch._C", "torch.distributed.distributed_c10d", "torch.distributed._local_tensor")


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute):
            parts = []
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                names = [".".join([inner.id, *reversed(parts)])]
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.startswith(PRIVATE)
        ]
    return found


def test_private_c10d_and_local_tensor_are_reached_only_through_compat():
    uses = [
        u for p in sorted(HARNESS.rglob("*.py")) if p.name != "compat.py" for u in _private_uses(p)
    ]
    assert uses == []


def test_the_threads_base_gate_names_the_feature_and_the_oldest_torch(monkeypatch):
    import torch

    monkeypatch.delattr(torch._C._distributed_c10d, "_set_thread_isolation_mode")
    compat.set_thread_isolation_mode.cache_clear()
    try:
        with pytest.raises(compat.TorchFeatureMissing) as err:
            compat.set_thread_isolation_mode()
    finally:
        compat.set_thread_isolation_mode.cache_clear()
    message = str(err.value)
    assert "the threads base" in message and "torch >= 2.7" in message
    assert torch.__version__ in message


def test_backend_registered_reads_c10d_plugins():
    import torch.distributed as dist

    assert not compat.backend_registered("no_such_backend_here")
    dist.Backend.register_backend("harness_probe", lambda *a: None, devices=["cpu"])
    assert compat.backend_registered("harness_probe")


def test_a_dotted_private_name_that_moved_is_one_clear_error():
    with pytest.raises(compat.TorchFeatureMissing, match=r"demo needs torch >= 9\.9 "):
        compat.private(
            "torch.distributed", "Backend._no_such_table", feature="demo", min_torch="9.9"
        )


BLOCK_LOCAL_TENSOR = """
import sys
# a torch from before 2.10: no torch.distributed._local_tensor
sys.modules["torch.distributed._local_tensor"] = None
"""


def test_a_sim_cell_on_a_torch_without_local_tensor_skips_with_one_reason(tmp_path):
    (tmp_path / "old_torch.py").write_text(BLOCK_LOCAL_TENSOR)
    junit = tmp_path / "junit.xml"
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "old_torch", "-q", "-rs",
         "--harness-cell", "cpu-8sim", "--harness-matrix", str(ROOT / "matrix.toml"),
         str(HARNESS / "conformance" / "test_collectives.py"), f"--junitxml={junit}"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert " passed" not in out and " failed" not in out and " error" not in out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1, skips  # one reason, counted once for every test
    assert "cell cpu-8sim: LocalTensor mode needs torch >= 2.10" in skips[0]


def test_the_header_names_the_cells_torch_and_the_installed_one(tmp_path):
    (tmp_path / "test_nothing.py").write_text("def test_ok():\n    pass\n")
    env = {**os.environ, "HARNESS_CELL": "cpu-2rank", "HARNESS_TORCH": "torch==2.11.0"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "test_nothing.py"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    from importlib.metadata import version

    assert f"torch=torch==2.11.0 torch_installed={version('torch')}" in result.stdout


NEEDS_NEWER_TORCH = """
from harness import DTensorTestBase, compat, with_comms


class NeedsNewerTorch(DTensorTestBase):
    @property
    def world_size(self):
        return 2

    @with_comms
    def test_uses_a_private_api_this_torch_lacks(self):
        compat.private("torch.distributed", "no_such_helper", feature="demo helper", min_torch="9.9")
"""


def test_a_feature_the_torch_lacks_inside_a_test_is_a_skip_naming_it(tmp_path):
    (tmp_path / "test_newer.py").write_text(NEEDS_NEWER_TORCH)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_DEVICE": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "test_newer.py"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "failed" not in result.stdout
    assert "demo helper needs torch >= 9.9" in result.stdout


@pytest.mark.parametrize(
    ("op", "torch", "backend", "avg", "mode", "device", "gap"),
    [
        ("mean dim 1", (2, 7), "gloo", False, "native", "cpu", "pull/149781"),
        # a vendor's name over gloo: the backend's answer decides, not its name
        ("mean dim 1", (2, 7), "acmeccl", False, "native", "cpu", "pull/149781"),
        ("mean dim 1", (2, 8), "gloo", True, "native", "cpu", None),  # gloo has AVG from 2.8
        ("mean dim 1", (2, 7), "mpi", True, "native", "cpu", None),  # a backend with AVG
        ("mean dim 1", (2, 7), "gloo", None, "native", "cpu", None),  # cannot ask: no row
        ("mean dim 1", (2, 7), "nccl", False, "native", "cuda", None),  # not asked off cpu
        ("mean dim 1", (2, 7), "gloo", False, "local", "cpu", None),  # simulated: no gloo
        ("addmv", (2, 10), "nccl", True, "native", "cuda", "pull/171652"),
        ("addmv", (2, 11), "gloo", False, "native", "cpu", None),
        ("mm", (2, 7), "gloo", False, "native", "cpu", None),
    ],
)
def test_known_gaps_of_older_torch_are_gated_by_version_and_what_the_backend_lacks(
    monkeypatch, op, torch, backend, avg, mode, device, gap
):
    from harness import hosts
    from harness.conformance._torch_gaps import op_gap

    monkeypatch.setattr(compat, "torch_version", lambda: torch)
    asked = []
    monkeypatch.setattr(hosts, "reduce_op_supported", lambda b, o: asked.append((b, o)) or avg)
    reason = op_gap(op, backend, mode, device)
    if gap is None:
        assert reason is None
    else:
        assert gap in reason and reason.startswith("known gap of torch < ")
    if op == "mean dim 1" and gap:
        assert asked == [(backend, "AVG")]


ASK_AVG = """
import json
from harness import hosts
hosts.import_plugins(["acme_ccl"])  # tests/data/acme: registers acmeccl, gloo underneath
print(json.dumps([hosts.reduce_op_supported(b, "AVG") for b in ("gloo", "acmeccl", "nccl")]))
"""


def test_whether_a_backend_has_reduce_avg_is_asked_of_the_backend_itself():
    """gloo gained ReduceOp.AVG in torch 2.8; a backend registered over gloo answers
    as gloo does; nccl serves no cpu, so the parent cannot ask (None)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "data" / "acme"), str(ROOT)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", ASK_AVG],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    has_avg = compat.torch_version() >= (2, 8)
    assert json.loads(result.stdout.splitlines()[-1]) == [has_avg, has_avg, None]


def test_a_local_tensor_base_on_a_torch_without_local_tensor_is_a_skip_naming_it(monkeypatch):
    """LocalDTensorTestBase (and the classes a -sim override makes) on torch < 2.10:
    each test skips with the feature and the minimum torch, never fails."""
    import unittest

    from harness import LocalDTensorTestBase, with_comms

    says = "LocalTensor mode needs torch >= 2.10 (torch.distributed._local_tensor); demo"
    monkeypatch.setattr(compat, "local_tensor_missing", lambda: says)

    class Simulated(LocalDTensorTestBase):
        @with_comms
        def test_body(self):
            raise AssertionError("the body must not run")

    result = unittest.TestResult()
    Simulated("test_body").run(result)
    assert (result.failures, result.errors) == ([], [])
    assert [reason for _, reason in result.skipped] == [says]
