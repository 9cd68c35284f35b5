"""Requirement skips are decided in the parent, before any rank is spawned.

Every test here makes spawning fail loudly, so a skip that needed a rank
would show up as an error instead of a skip.
"""

from __future__ import annotations

import unittest

import data.ranks.skip_cases as cases  # a module, so pytest does not collect its classes
import pytest

from harness import TEST_SKIPS
from harness.devices import detected_accelerator

pytestmark = [
    pytest.mark.skipif(detected_accelerator() is not None, reason="CPU-only host checks"),
    pytest.mark.usefixtures("no_spawning"),
]

from spawn_guard import run  # noqa: E402  (tests/ is on sys.path)


def skip_reason(cls: type, name: str) -> str:
    result = run(cls, name)
    assert not result.errors and not result.failures, result.errors or result.failures
    assert len(result.skipped) == 1, "expected a skip"
    return result.skipped[0][1]


def test_skip_if_lt_x_gpu_skips_without_spawning():
    assert skip_reason(cases.Gpu2, "test_needs_two") == TEST_SKIPS["multi-gpu-2"].message


def test_skip_unless_torch_gpu_follows_the_subclass_world_size():
    assert skip_reason(cases.Gpu2, "test_one_per_rank") == TEST_SKIPS["multi-gpu-2"].message
    assert skip_reason(cases.Gpu3, "test_one_per_rank") == TEST_SKIPS["multi-gpu-3"].message


def test_allow_cpu_runs_on_a_cpu_host():
    result = run(cases.Gpu2, "test_cpu_allowed")
    assert not result.skipped
    assert "a rank was spawned" in result.errors[0][1]


def test_a_backend_this_host_cannot_run_is_a_skip():
    """nccl on a GPU-less host: not built into a CPU torch; built into a CUDA torch
    (PyPI's default) but without the devices it needs. Either way a skip naming it."""
    import torch.distributed as dist

    reason = skip_reason(cases.NcclOnly, "test_collective")
    if dist.is_nccl_available():
        assert reason == "Need at least 4 accelerator devices for backend nccl"
    else:
        assert "not available" in reason and "nccl" in reason


def test_requires_nccl_on_a_class_or_a_test_skips_without_spawning_when_not_built():
    """Upstream's ``requires_nccl()``, after a migration: a CPU build of torch has no
    nccl, so the class and the test are skipped in the parent, naming the backend."""
    import torch
    import torch.distributed as dist

    if dist.is_nccl_available():
        pytest.skip("this torch has nccl built in")
    expected = f"needs the nccl backend; torch {torch.__version__} was built without it"
    assert skip_reason(cases.NcclBuilt, "test_collective") == expected
    assert skip_reason(cases.BackendBuilt, "test_nccl") == expected


def test_requires_gloo_runs_the_test_where_gloo_is_built():
    import torch.distributed as dist

    if not dist.is_gloo_available():
        pytest.skip("this torch has no gloo")
    result = run(cases.BackendBuilt, "test_gloo")
    assert not result.skipped
    assert "a rank was spawned" in result.errors[0][1]


def test_world_size_above_the_cell_is_a_skip(monkeypatch):
    monkeypatch.setenv("HARNESS_WORLD_SIZE", "4")
    monkeypatch.setenv("HARNESS_CELL", "cpu-4rank")
    assert (
        skip_reason(cases.BigPool, "test_anything")
        == "needs world size 8; the cell cpu-4rank grants 4"
    )


def test_world_size_needs_skip_in_the_parent(monkeypatch):
    """`needs` (the conformance suite's marks) is decided with the other requirement skips."""
    assert skip_reason(cases.WorldNeeds, "test_even") == "needs an even world size; the cell has 3"
    monkeypatch.setenv("HARNESS_MODE", "local")
    assert (
        skip_reason(cases.WorldNeeds, "test_not_simulated")
        == "not simulated in LocalTensor mode: it counts processes"
    )


def test_skip_decorators_still_skip_when_called_in_a_rank():
    test = cases.Gpu2("test_needs_two")
    test._harness_direct = True  # what a rank (or LocalTensor mode) does
    with pytest.raises(unittest.SkipTest, match="Need at least 2"):
        test.test_needs_two()


def test_rank_sys_exit_codes_map_to_reasons():
    from harness.skips import skip_reason_for_exit_code

    assert (
        skip_reason_for_exit_code(TEST_SKIPS["multi-gpu-4"].exit_code)
        == TEST_SKIPS["multi-gpu-4"].message
    )
    assert skip_reason_for_exit_code(1) is None
    assert len({s.exit_code for s in TEST_SKIPS.values()}) == len(TEST_SKIPS)
