"""DTensorConverter and the op checks, in LocalTensor mode on 4 simulated ranks.

Expected counts are worked out by hand in each row's comment: per tensor
argument, Replicate plus one Shard(d) per dim of size > 1 divisible by 4
(bool, 0-d and unconvertible tensors: one choice); combinations are the
product; hits = combinations x convertible tensors, misses = combinations x
the rest.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from harness import LocalDTensorTestBase, compat

if compat.local_tensor_missing():  # torch < 2.10: the whole module runs LocalTensor mode
    pytest.skip(compat.local_tensor_missing(), allow_module_level=True)

from harness.converter import (
    DTensorConverter,
    check_op,
    check_op_on_dtensor,
    op_strategy_context,
    validate_sharding_rule_sample,
    validate_sharding_rule_sample_backward,
)
from harness.local import simulate

WORLD = 4
aten = torch.ops.aten


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def op_samples() -> list[tuple[str, object, tuple, dict, int]]:
    """(name, op, args, kwargs, combinations). Every tensor here is convertible."""
    torch.manual_seed(0)
    a, b = _rand(4, 8), _rand(4, 8)  # R, S0, S1
    m = _rand(8, 4)  # R, S0, S1
    v8 = _rand(8)  # R, S0
    x3 = _rand(4, 4, 8)  # R, S0, S1, S2
    y3 = _rand(4, 8, 4)  # R, S0, S1, S2
    odd = _rand(3, 4)  # R, S1 (3 is not divisible by 4)
    one = _rand(1, 8)  # R, S1 (size-1 dims are never sharded)
    scalar = torch.tensor(2.5)  # 0-d: R only
    mask = a > 0  # bool: R only
    idx = torch.tensor([0, 3, 5, 7])  # R, S0
    return [
        ("add", aten.add.Tensor, (a, b), {}, 3 * 3),
        ("sub alpha", aten.sub.Tensor, (a, b), {"alpha": 2}, 3 * 3),
        ("mul scalar tensor", aten.mul.Tensor, (a, scalar), {}, 3 * 1),
        ("div broadcast", aten.div.Tensor, (a, v8), {}, 3 * 2),
        ("mm", aten.mm.default, (a, m), {}, 3 * 3),
        ("bmm", aten.bmm.default, (x3, y3), {}, 4 * 4),
        ("addmm", aten.addmm.default, (torch.randn(4), a, m), {}, 2 * 3 * 3),
        ("relu", aten.relu.default, (a,), {}, 3),
        ("neg", aten.neg.default, (a,), {}, 3),
        ("exp", aten.exp.default, (a,), {}, 3),
        ("gelu", aten.gelu.default, (a,), {}, 3),
        ("pow", aten.pow.Tensor_Scalar, (a, 2), {}, 3),
        ("clone", aten.clone.default, (a,), {}, 3),
        ("t", aten.t.default, (a,), {}, 3),
        ("transpose", aten.transpose.int, (x3, 0, 2), {}, 4),
        ("sum dim", aten.sum.dim_IntList, (a, [1]), {}, 3),
        ("mean keepdim", aten.mean.dim, (a, [0], True), {}, 3),
        ("softmax", aten._softmax.default, (a, 1, False), {}, 3),
        ("max dim (tuple out)", aten.max.dim, (a, 1), {}, 3),
        ("cat list", aten.cat.default, ([a, b],), {}, 3 * 3),
        ("where bool", aten.where.self, (mask, a, b), {}, 1 * 3 * 3),
        ("odd dim", aten.mul.Tensor, (odd, odd), {}, 2 * 2),
        ("size-1 dim", aten.add.Tensor, (one, one), {}, 2 * 2),
        ("embedding", aten.embedding.default, (m, idx), {}, 3 * 2),
    ]


def _n_tensors(args: tuple, kwargs: dict) -> int:
    leaves = torch.utils._pytree.tree_leaves((args, kwargs))
    return sum(isinstance(leaf, torch.Tensor) for leaf in leaves)


def _outside_mode():
    """Make a tensor LocalTensorMode cannot (sparse, nested, ...), as a plain one."""
    return compat.local_tensor_module().maybe_disable_local_tensor_mode()


class _Local4(LocalDTensorTestBase):
    """4 simulated ranks; every test body runs once as all of them."""

    @property
    def world_size(self) -> int:
        return WORLD


class ConverterSweep(_Local4):
    def test_mixin_test_op_delegates_to_check_op(self) -> None:
        mesh = self.build_device_mesh()
        self._test_op(mesh, aten.mm.default, _rand(4, 8), _rand(8, 4))
        with self.assertRaises(AssertionError):
            self._test_op(mesh, lambda t: t + 1 if isinstance(t, DTensor) else t, _rand(4, 8))
        dt = distribute_tensor(_rand(4, 8), mesh, [Shard(0)])
        rhs = distribute_tensor(_rand(8, 4), mesh, [Replicate()])
        self._test_op_on_dtensor(aten.mm.default, dt, rhs)

    def test_op_sweep_matches_and_counts(self) -> None:
        samples = op_samples()
        self.assertGreaterEqual(len({op for _, op, *_ in samples}), 20)
        mesh = self.build_device_mesh()
        for name, op, args, kwargs, combos in samples:
            converter = check_op(self, mesh, op, *args, **kwargs)
            n = _n_tensors(args, kwargs)
            self.assertEqual(
                (converter.hit, converter.miss), (combos * n, 0), msg=f"counts for {name}"
            )

    def test_replicate_only_gives_one_combination(self) -> None:
        mesh = self.build_device_mesh()
        a, m = _rand(4, 8), _rand(8, 4)
        converter = DTensorConverter(mesh, (a, m), {}, replicate_only=True)
        layouts = [tuple(t.placements for t in args) for args, _ in converter]
        self.assertEqual(layouts, [((Replicate(),), (Replicate(),))])
        self.assertEqual((converter.hit, converter.miss), (2, 0))

    def test_max_layouts_covers_every_placement_then_draws_the_same_combinations(self) -> None:
        mesh = self.build_device_mesh()
        args = (_rand(4, 8), _rand(8, 4), _rand(4, 4, 8))  # 3 x 3 x 4 = 36 layouts

        def layouts(**options):
            converter = DTensorConverter(mesh, args, {}, **options)
            seen = [tuple(t.placements[0] for t in d_args) for d_args, _ in converter]
            return converter, seen

        full, every = layouts()
        self.assertEqual((full.total, full.capped, len(every)), (36, False, 36))
        capped, seen = layouts(max_layouts=12)
        self.assertEqual((capped.total, capped.capped), (36, True))
        self.assertEqual(len(seen), 12)
        self.assertEqual(len(set(seen)), 12)  # no layout twice
        self.assertTrue(set(seen) <= set(every))
        self.assertEqual(seen[0], (Replicate(),) * 3)  # all Replicate first
        for position, choices in enumerate(((0, 1), (0, 1), (0, 1, 2))):
            placed = {layout[position] for layout in seen}
            self.assertEqual(placed, {Replicate(), *(Shard(d) for d in choices)})
        self.assertEqual(layouts(max_layouts=12)[1], seen)  # same draws on every rank and run
        self.assertEqual(layouts(max_layouts=36)[1], every)  # not capped: the full product

    def test_nested_pytrees_and_kwargs_are_converted_in_place(self) -> None:
        mesh = self.build_device_mesh()
        a = _rand(4, 8)
        args = ([a, {"k": a}], "keep", 3)
        seen = []
        converter = DTensorConverter(mesh, args, {"out_scale": a, "flag": True})
        for d_args, d_kwargs in converter:
            self.assertEqual(d_args[1:], ("keep", 3))
            self.assertIs(d_kwargs["flag"], True)
            tensors = [d_args[0][0], d_args[0][1]["k"], d_kwargs["out_scale"]]
            self.assertTrue(all(isinstance(t, DTensor) for t in tensors))
            seen.append(tuple(t.placements[0] for t in tensors))
        # 3 tensors x (R, S0, S1), every combination exactly once
        self.assertEqual(len(seen), 27)
        self.assertEqual(len(set(seen)), 27)
        self.assertEqual((converter.hit, converter.miss), (81, 0))

    def test_split_without_scatter_gives_every_rank_the_scattered_shards(self) -> None:
        """src_data_rank=None (the op sweep's workers): each simulated rank splits the
        shared input itself, and holds what the scatter from rank 0 gives it."""
        mesh = self.build_device_mesh()
        a, b = _rand(8, 4), torch.nn.Parameter(_rand(4, 12))
        scattered = list(DTensorConverter(mesh, (a, b), {}))
        split = DTensorConverter(mesh, (a, b), {}, src_data_rank=None)
        for (want, _), (got, _) in zip(scattered, split, strict=True):
            for w, g in zip(want, got, strict=True):
                self.assertEqual(g.placements, w.placements)
                self.assertEqual(g.requires_grad, w.requires_grad)
                local_w, local_g = w.to_local(), g.to_local()
                with compat.local_tensor_module().maybe_disable_local_tensor_mode():
                    for rank in range(WORLD):
                        mine, theirs = (
                            t._local_tensors[rank] if hasattr(t, "_local_tensors") else t
                            for t in (local_g, local_w)
                        )
                        self.assertTrue(torch.equal(mine, theirs), (w.placements, rank))

    def test_parameter_scalar_and_bool_handling(self) -> None:
        mesh = self.build_device_mesh()
        param = torch.nn.Parameter(_rand(4, 8))
        converter = DTensorConverter(mesh, (param, torch.tensor(1.0), _rand(4, 8) > 0), {})
        rows = list(converter)
        self.assertEqual(len(rows), 3)  # param R/S0/S1 x scalar R x bool R
        for (p, s, flag), _ in rows:
            self.assertIsInstance(p, torch.nn.Parameter)
            self.assertIsInstance(p, DTensor)
            self.assertTrue(p.requires_grad)
            self.assertEqual(s.placements, (Replicate(),))
            self.assertEqual(flag.placements, (Replicate(),))
        self.assertEqual((converter.hit, converter.miss), (9, 0))


class _Sub(torch.Tensor):
    pass


def unconvertible() -> dict[str, torch.Tensor]:
    base = torch.randn(4, 8)
    return {
        "sparse coo": base.to_sparse(),
        "sparse csr": base.to_sparse_csr(),
        "quantized": torch.quantize_per_tensor(base, 0.1, 0, torch.qint8),
        "nested": torch.nested.nested_tensor([torch.randn(2), torch.randn(3)]),
        "meta": torch.empty(4, 8, device="meta"),
        "neg view": torch.randn(4, 8, dtype=torch.complex64).conj().imag,
        "conj view": torch.randn(4, 8, dtype=torch.complex64).conj(),
        "subclass": base.as_subclass(_Sub),
    }


UNCONVERTIBLE = [
    "sparse coo",
    "sparse csr",
    "quantized",
    "nested",
    "meta",
    "neg view",
    "conj view",
    "subclass",
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", UNCONVERTIBLE)
def test_unconvertible_tensors_are_left_alone_and_counted_as_misses(kind: str) -> None:
    with simulate(WORLD) as sim:
        mesh = sim.build_mesh()
        with sim.mode.disable():
            odd = unconvertible()[kind]
        plain = _rand(4, 8)
        converter = DTensorConverter(mesh, (plain, odd), {})
        rows = list(converter)
    # plain: R, S0, S1; the unconvertible tensor: itself only
    assert len(rows) == 3
    assert all(args[1] is odd and isinstance(args[0], DTensor) for args, _ in rows)
    assert (converter.hit, converter.miss) == (3, 3)
    assert not converter.successful()


class OpChecks(_Local4):
    def test_check_op_fails_when_dtensor_result_differs(self) -> None:
        def lying(t: torch.Tensor) -> torch.Tensor:
            return t * 2 if isinstance(t, DTensor) else t

        mesh = self.build_device_mesh()
        with self.assertRaisesRegex(AssertionError, r"input placements \[R"):
            check_op(self, mesh, lying, _rand(4, 8))

    def test_check_op_fails_on_unconvertible_argument(self) -> None:
        mesh = self.build_device_mesh()
        with _outside_mode():
            sparse = torch.randn(4, 8).to_sparse()
        with self.assertRaisesRegex(AssertionError, "could not convert"):
            check_op(self, mesh, torch.add, _rand(4, 8), sparse)

    def test_check_op_on_dtensor(self) -> None:
        mesh = self.build_device_mesh()
        dt = distribute_tensor(_rand(4, 8), mesh, [Shard(1)])
        check_op_on_dtensor(self, torch.sum, dt, dim=0)
        with self.assertRaises(AssertionError):
            check_op_on_dtensor(self, lambda t: t + (1 if isinstance(t, DTensor) else 0), dt)


class ShardingRuleValidators(_Local4):
    def test_forward_rules(self) -> None:
        mesh = self.build_device_mesh()
        a, m = _rand(4, 8), _rand(8, 4)
        check = validate_sharding_rule_sample
        # row-sharded lhs -> row-sharded product
        self.assertTrue(check(torch.mm, (a, m), {}, [Shard(0), Replicate()], [Shard(0)], mesh))
        # contracting dim sharded on both sides -> partial sums
        self.assertTrue(check(torch.mm, (a, m), {}, [Shard(1), Shard(0)], [Partial()], mesh))
        # ... which are not the product if read as replicated
        self.assertFalse(check(torch.mm, (a, m), {}, [Shard(1), Shard(0)], [Replicate()], mesh))
        # wrong output dim
        self.assertFalse(check(torch.mm, (a, m), {}, [Shard(0), Replicate()], [Shard(1)], mesh))

    def test_backward_rules(self) -> None:
        mesh = self.build_device_mesh()
        a, m = _rand(4, 8), _rand(8, 4)
        check = validate_sharding_rule_sample_backward
        self.assertIs(check(torch.mm, (a, m), {}, [Shard(0), Replicate()], mesh), True)
        ints = torch.arange(8).reshape(4, 2)
        self.assertIsNone(check(torch.neg, (ints,), {}, [Shard(0)], mesh))

        def lying(t: torch.Tensor) -> torch.Tensor:
            return t * 3 if isinstance(t, DTensor) else t * 1

        self.assertIs(check(lying, (a,), {}, [Shard(0)], mesh), False)
        with self.assertRaisesRegex(ValueError, "2 tensor inputs"):
            check(torch.mm, (a, m), {}, [Shard(0)], mesh)


class StrategyOverride(_Local4):
    def _override_and_restore(self, op, table: str, call=None) -> None:
        """``call(op, t)`` applies the op to a tensor (default: ``op(t)``)."""
        from harness import compat

        call = call or (lambda op, t: op(t))
        propagator = compat.sharding_propagator()
        before = getattr(propagator, table)[op]

        def custom(op_schema):
            raise RuntimeError("custom strategy ran")

        mesh = self.build_device_mesh()
        dt = distribute_tensor(_rand(4, 8), mesh, [Shard(1)])
        call(op, dt)  # warm the propagator's cache with the original rule
        with contextlib.suppress(KeyError), op_strategy_context(op, custom):
            self.assertIs(propagator.op_strategy_funcs[op], custom)
            with self.assertRaisesRegex(RuntimeError, "custom strategy ran"):
                call(op, dt)
            raise KeyError("the body fails")
        self.assertIs(getattr(propagator, table)[op], before)
        # the cache was cleared: the original strategy answers again
        self.assertEqual(call(op, dt).full_tensor(), call(op, dt.full_tensor()))

    def test_strategy_restored_even_when_body_raises(self) -> None:
        # squeeze: in op_strategy_funcs from 2.7 to 2.15 (clone moved to single-dim in
        # 2.15). Sharded on dim 1 so no local shard has a size-1 dim: on 2.11, squeeze of
        # a Shard(0) tensor whose shards are one row squeezes the shards (a DTensor bug)
        self._override_and_restore(aten.squeeze.default, "op_strategy_funcs")

    def test_single_dim_strategy_set_aside_and_restored(self) -> None:
        from harness import compat

        table = getattr(compat.sharding_propagator(), "op_single_dim_strategy_funcs", None)
        if table is None:
            self.skipTest("this torch has no single-dim strategies")
        if aten.neg.default in table:  # 2.13 on
            self._override_and_restore(aten.neg.default, "op_single_dim_strategy_funcs")
        else:  # 2.11 keeps only the matmuls there
            self._override_and_restore(
                aten.mm.default, "op_single_dim_strategy_funcs", lambda op, t: op(t, t.T)
            )

    def test_op_without_strategy_is_unregistered_again(self) -> None:
        from harness import compat

        propagator = compat.sharding_propagator()
        op = aten.special_erfcx.default
        self.assertNotIn(op, propagator.op_strategy_funcs)
        with op_strategy_context(op, lambda schema: None):
            self.assertIn(op, propagator.op_strategy_funcs)
        self.assertNotIn(op, propagator.op_strategy_funcs)
