"""Requirements stated as capabilities, decided in the parent before any rank."""

from __future__ import annotations

import data.ranks.capability_cases as cases  # a module, so pytest does not collect it
import pytest
import torch.distributed as dist

from harness import Capability, requires_capabilities
from harness.devices import detected_accelerator
from harness.requirements import unmet

pytestmark = [
    pytest.mark.skipif(detected_accelerator() is not None, reason="CPU-only host checks"),
    pytest.mark.usefixtures("no_spawning"),
]

from spawn_guard import run  # noqa: E402  (tests/ is on sys.path)


def test_an_unmet_capability_skips_without_spawning():
    result = run(cases.NeedsAccelerator, "test_on_devices")
    assert not result.errors and not result.failures
    ((_, reason),) = result.skipped
    assert reason.startswith("requires device.accelerator: needs an accelerator device")


def test_met_capabilities_let_the_test_reach_its_ranks():
    result = run(cases.NeedsAccelerator, "test_on_any_backend")
    assert not result.skipped and "a rank was spawned" in result.errors[0][1]


def test_a_class_states_what_all_its_tests_need(monkeypatch):
    monkeypatch.setenv("HARNESS_BACKEND", "nosuchccl")
    result = run(cases.WholeClass, "test_collective")
    ((_, reason),) = result.skipped
    assert "requires distributed.backend" in reason and "'nosuchccl'" in reason


def test_the_backend_capability_follows_the_cell_not_a_list_of_names(monkeypatch):
    monkeypatch.setenv("HARNESS_BACKEND", "gloo")
    assert unmet([Capability.distributed.backend]) is None
    monkeypatch.setenv("HARNESS_BACKEND", "nccl")
    if dist.is_nccl_available():  # built in (PyPI's CUDA torch), GPU or not
        assert unmet([Capability.distributed.backend]) is None
    else:
        assert "'nccl' is not registered or not available" in unmet(
            [Capability.distributed.backend]
        )


def test_a_name_that_is_not_a_capability_fails_at_decoration():
    with pytest.raises(TypeError, match="distributed.backend"):
        requires_capabilities("distributed.backend")
