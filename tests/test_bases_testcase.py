"""The assertions upstream test files call on ``self``, checked in one process."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist

from harness.testcase import TestCase


class _Case(TestCase):
    rank = 0

    def runTest(self):  # noqa: N802
        pass


@pytest.fixture
def tc():
    return _Case()


def test_tensors_with_tolerances(tc):
    tc.assertEqual(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]))
    with pytest.raises(AssertionError, match="not close"):
        tc.assertEqual(torch.tensor([1.0]), torch.tensor([1.1]))
    tc.assertEqual(torch.tensor([1.0]), torch.tensor([1.1]), atol=0.2, rtol=0)
    tc.assertEqual(torch.tensor([1.0]), torch.tensor([1.1]), atol=0.2)  # rtol defaults to 0


def test_exact_dtype(tc):
    with pytest.raises(AssertionError, match="dtype"):
        tc.assertEqual(torch.ones(2), torch.ones(2, dtype=torch.float64))
    tc.assertEqual(torch.ones(2), torch.ones(2, dtype=torch.float64), exact_dtype=False)


def test_numbers_tensors_and_sequences(tc):
    tc.assertEqual(torch.tensor(3.0), 3)
    tc.assertEqual(2, 2.0)
    tc.assertEqual(torch.tensor([1, 2]), [1, 2])
    tc.assertEqual(torch.Size([2, 3]), (2, 3))
    tc.assertEqual(float("nan"), float("nan"))
    with pytest.raises(AssertionError, match="Integers differ: 1 != 2"):
        tc.assertEqual(1, 2)
    with pytest.raises(AssertionError, match="Scalars are not close"):
        tc.assertEqual(1.0, 2.0)


def test_nested_containers_name_the_path(tc):
    tc.assertEqual({"a": [torch.ones(1), "x"]}, {"a": (torch.ones(1), "x")})
    with pytest.raises(AssertionError, match=r"\['a'\]\[1\]"):
        tc.assertEqual({"a": [1, 2]}, {"a": [1, 3]})
    with pytest.raises(AssertionError, match="Lengths differ"):
        tc.assertEqual([1], [1, 2])
    with pytest.raises(AssertionError, match="keys differ"):
        tc.assertEqual({"a": 1}, {"b": 1})


def test_msg_is_appended_or_replaces(tc):
    with pytest.raises(AssertionError, match="(?s)not close.*my note"):
        tc.assertEqual(1.0, 2.0, "my note")
    with pytest.raises(AssertionError, match="^wrapped: "):
        tc.assertEqual(1, 2, msg=lambda m: f"wrapped: {m}")


def test_assert_not_equal(tc):
    tc.assertNotEqual(torch.ones(2), torch.zeros(2))
    with pytest.raises(AssertionError):
        tc.assertNotEqual(torch.ones(2), torch.ones(2))


def test_assert_not_warn(tc):
    tc.assertNotWarn(lambda: None)
    with pytest.raises(AssertionError, match="UserWarning: careful"):
        tc.assertNotWarn(lambda: warnings.warn("careful", stacklevel=1))


def test_assert_expected_inline(tc):
    tc.assertExpectedInline(str(torch.Size([2, 3])), """torch.Size([2, 3])""")
    with pytest.raises(AssertionError):
        tc.assertExpectedInline("actual", """expected""")


def test_assert_equal_on_rank(tc):
    tc.assertEqualOnRank(1, 1)
    tc.assertEqualOnRank(1, 2, rank=1)  # not this rank: not compared
    with pytest.raises(AssertionError):
        tc.assertEqualOnRank(1, 2, rank=0)


@pytest.fixture
def fake_pg():
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    yield
    dist.destroy_process_group()


def test_dtensors_compare_placements_then_shards(tc, fake_pg):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh = init_device_mesh("cpu", (2,))

    def shard(placement):  # from_local moves no data: the fake group's collectives carry none
        return DTensor.from_local(torch.arange(2.0), mesh, [placement], run_check=False)

    a = shard(Shard(0))
    tc.assertEqual(a, shard(Shard(0)))
    with pytest.raises(AssertionError, match="placements differ"):
        tc.assertEqual(a, shard(Replicate()))
    with pytest.raises(TypeError, match="full_tensor"):
        tc.assertEqual(a, torch.arange(4.0))


def test_local_tensors_compare_per_rank(tc):
    from harness import compat

    missing = compat.local_tensor_missing()
    if missing:
        pytest.skip(missing)
    LocalTensor = compat.local_tensor_type()  # noqa: N806

    a = LocalTensor({0: torch.zeros(2), 1: torch.ones(2)})
    tc.assertEqual(a, LocalTensor({0: torch.zeros(2), 1: torch.ones(2)}))
    with pytest.raises(AssertionError, match="rank 1"):
        tc.assertEqual(a, LocalTensor({0: torch.zeros(2), 1: torch.zeros(2)}))


def test_integers_compare_exactly_like_upstream(tc):
    """ids and hashes are large ints: a relative tolerance must not call two of them equal."""
    a, b = 140359824143760, 140359824141360
    tc.assertNotEqual(a, b)
    with pytest.raises(AssertionError, match="Integers differ"):
        tc.assertEqual(a, b)
    tc.assertEqual(a, b, atol=5000, rtol=0)  # an explicit tolerance still applies


def test_async_collective_results_are_waited_on(tc):
    from harness import compat

    act = compat.async_collective_tensor_type()
    lazy = act(torch.tensor([1.0, 2.0]))
    tc.assertEqual(lazy, torch.tensor([1.0, 2.0]))
    with pytest.raises(AssertionError):
        tc.assertEqual(lazy, torch.tensor([1.0, 3.0]))


def test_attempt_load_from_subprocess(tc, tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.arange(3), path)
    tc._attempt_load_from_subprocess(path, "")
    torch.save({"x": _Opaque()}, tmp_path / "o.pt")
    tc._attempt_load_from_subprocess(tmp_path / "o.pt", "", "Weights only load failed")
    with pytest.raises(AssertionError):  # the message must be the one that really came
        tc._attempt_load_from_subprocess(tmp_path / "o.pt", "", "no such message")


class _Opaque:
    pass
