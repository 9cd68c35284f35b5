"""DTensorConverter and the op checks built on it.

An op check runs an aten op (or any torch function) on plain tensors and again
on every way of distributing its tensor arguments, and asserts the two agree.
The converter enumerates those ways: per tensor argument, Replicate or an even
Shard(d); the check multiplies them out.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from harness import compat

# Re-exported: the sharding-rule validators live next door but are part of the
# converter's public surface (harness._EXPORTS names this module).
from harness.op_checks import (  # noqa: F401
    op_strategy_context,
    validate_sharding_rule_sample,
    validate_sharding_rule_sample_backward,
)

__all__ = [
    "DTensorConverter",
    "check_op",
    "check_op_on_dtensor",
    "op_strategy_context",
    "validate_sharding_rule_sample",
    "validate_sharding_rule_sample_backward",
]


#: The largest tensor (bytes) whose distributed layouts a converter keeps for reuse.
_CACHED_BYTES = 1 << 20


def _unsupported(t: torch.Tensor) -> bool:
    """Layouts and views DTensor cannot hold: left alone, counted as misses."""
    is_functional = getattr(torch, "_is_functional_tensor", lambda _: False)
    return (
        t.is_sparse
        or t.is_sparse_csr
        or t.is_mkldnn
        or t.is_quantized
        or t.is_nested
        or bool(is_functional(t))
        or t.is_neg()
        or t.is_conj()
        or t.device.type in ("meta", "lazy")
    )


class DTensorConverter:
    """Iterate ``(args, kwargs)`` with tensors swapped for DTensors, every layout once.

    For each tensor leaf of ``args`` and ``kwargs`` (pytrees: lists, tuples,
    dicts, nested) the choices are Replicate and Shard(d) for every dim ``d``
    whose size is above 1 and divisible by the mesh size; bool tensors only
    Replicate (collectives do not take bool), and ``replicate_only=True``
    restricts every tensor to Replicate; a tensor that cannot be converted
    has one choice (itself). Iteration yields the Cartesian product. On an
    n-D mesh a choice applies on every mesh dim.

    ``hit`` counts tensors converted, ``miss`` tensors left as they were
    (sparse, quantized, nested, meta, neg/conj views, tensor subclasses);
    both accumulate over the iteration. ``successful()`` is true when
    something converted and nothing was missed. 0-d tensors are replicated;
    an ``nn.Parameter`` comes back as an ``nn.Parameter`` wrapping a DTensor.

    ``max_layouts`` bounds the iteration where the product is larger (``total``
    says how large; ``capped`` whether it was cut): all Replicate, then every
    tensor alone in each of its choices (the others replicated), then combinations
    drawn at random with a fixed seed. A product grows with the tensors' count and
    with how many dims the mesh divides: ``multi_head_attention_forward`` has one
    sample of 3,888 layouts at world size 2 and 27,648 at 1, and 64 at 4.

    ``src_data_rank`` is ``distribute_tensor``'s: by default rank 0's inputs are
    scattered; ``None`` has each rank split its own copy, with no collective, which
    is right only where every rank holds the same inputs (LocalTensor's ranks share
    the one plain tensor): the op sweep's workers, where the scatter was a tenth of
    their time.
    """

    # exact types converted; any other tensor-like (a subclass) is a miss
    _plain_types = tuple(
        t for t in (torch.Tensor, nn.Parameter, compat.local_tensor_type()) if t is not None
    )

    def __init__(
        self,
        mesh: DeviceMesh,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        replicate_only: bool = False,
        max_layouts: int | None = None,
        src_data_rank: int | None = 0,
    ) -> None:
        self.hit = 0
        self.src_data_rank = src_data_rank
        self.miss = 0
        # (tensor, layout) -> (DTensor, its version, the tensor's version): one
        # distribute_tensor per pair, not per combination, which repeats each pair;
        # rebuilt if an op changed either in place
        self._made: dict[tuple[int, tuple[Placement, ...]], tuple[torch.Tensor, int, int]] = {}
        self.mesh = mesh
        self.args = args
        self.kwargs = kwargs
        self.replicate_only = replicate_only
        self.flatten_args, self.flatten_args_spec = tree_flatten(args)
        self.flatten_kwargs, self.flatten_kwargs_spec = tree_flatten(kwargs)
        tensors = [
            leaf
            for leaf in (*self.flatten_args, *self.flatten_kwargs)
            if isinstance(leaf, torch.Tensor)
        ]
        choices = [self.gen_sharding_choices_for_arg(t) for t in tensors]
        #: how many layouts the full product has
        self.total = math.prod(len(c) for c in choices)
        #: whether ``max_layouts`` cut the iteration short of ``total``
        self.capped = max_layouts is not None and self.total > max_layouts
        self.sharding_combs: Iterator[tuple[Placement, ...]] = (
            _covering(choices, max_layouts) if self.capped else itertools.product(*choices)
        )
        #: the per-tensor placements of the last yielded combination, for messages
        self.current: tuple[Placement, ...] = ()

    def successful(self) -> bool:
        return self.hit > 0 and self.miss == 0

    def is_supported_tensor(self, t: torch.Tensor) -> bool:
        return not _unsupported(t)

    def _convertible(self, t: torch.Tensor) -> bool:
        return type(t) in self._plain_types and self.is_supported_tensor(t)

    def gen_sharding_choices_for_arg(self, arg: torch.Tensor) -> Sequence[Placement]:
        if self.replicate_only or arg.dtype == torch.bool or not self._convertible(arg):
            return [Replicate()]  # one choice: left alone, or replicated
        size = self.mesh.size()
        return [Replicate()] + [
            Shard(dim) for dim, extent in enumerate(arg.shape) if extent > 1 and extent % size == 0
        ]

    def __iter__(self) -> DTensorConverter:
        return self

    def __next__(self) -> tuple[tuple[object, ...], dict[str, object]]:
        self.current = next(self.sharding_combs)  # StopIteration ends the loop
        choices = iter(self.current)

        def convert(leaves: list[object]) -> list[object]:
            return [
                self.to_dist_tensor(leaf, self.mesh, [next(choices)])
                if isinstance(leaf, torch.Tensor)
                else leaf
                for leaf in leaves
            ]

        new_args = convert(self.flatten_args)
        new_kwargs = convert(self.flatten_kwargs)
        return (
            tree_unflatten(new_args, self.flatten_args_spec),
            tree_unflatten(new_kwargs, self.flatten_kwargs_spec),
        )

    def to_dist_tensor(
        self, t: torch.Tensor, mesh: DeviceMesh, placements: list[Placement]
    ) -> torch.Tensor:
        if type(t) not in self._plain_types:
            if torch.overrides.is_tensor_like(t):
                # A DTensor of a tensor subclass is undefined territory: skip it.
                self.miss += 1
                return t
            raise TypeError(f"DTensorConverter can only convert tensors, got {type(t).__name__}")
        if not self.is_supported_tensor(t):
            self.miss += 1
            return t
        self.hit += 1
        if t.ndim == 0:
            layout: Sequence[Placement] = [Replicate()] * mesh.ndim
        elif len(placements) == mesh.ndim:
            layout = placements
        else:
            layout = list(placements) * mesh.ndim
        dist = self._distribute(t, mesh, tuple(layout))
        if isinstance(t, nn.Parameter):
            return nn.Parameter(dist, requires_grad=dist.requires_grad)
        return dist

    def _distribute(
        self, t: torch.Tensor, mesh: DeviceMesh, layout: tuple[Placement, ...]
    ) -> torch.Tensor:
        """``distribute_tensor``, once per tensor and layout while nothing changes it.

        Only tensors up to ``_CACHED_BYTES`` are kept: many combinations of small
        inputs are where distributing again costs time, while keeping every layout
        of a large one costs its size several times over (a Replicate under
        LocalTensor holds a copy per rank). Not measured alone: the large peaks
        measured in the sweep came from drawing every sample first and from freed
        memory glibc kept (harness.conformance._ops, _ops_workers).
        """
        if t.numel() * t.element_size() > _CACHED_BYTES:
            return distribute_tensor(t, mesh, list(layout), src_data_rank=self.src_data_rank)
        key = (id(t), layout)
        made = self._made.get(key)
        if made is not None and made[0]._version == made[1] and t._version == made[2]:
            return made[0]
        dist = distribute_tensor(t, mesh, list(layout), src_data_rank=self.src_data_rank)
        self._made[key] = (dist, dist._version, t._version)
        return dist


def _covering(choices: list[Sequence[Placement]], limit: int) -> Iterator[tuple[Placement, ...]]:
    """At most ``limit`` layouts of the product of ``choices``: each tensor's every
    choice at least once (the rest at their first, Replicate), then seeded draws."""
    seen: set[tuple[int, ...]] = set()

    def emit(index: tuple[int, ...]) -> Iterator[tuple[Placement, ...]]:
        if index not in seen and len(seen) < limit:
            seen.add(index)
            yield tuple(c[i] for c, i in zip(choices, index))

    plain = (0,) * len(choices)
    yield from emit(plain)
    for tensor, options in enumerate(choices):
        for pick in range(1, len(options)):
            yield from emit(plain[:tensor] + (pick,) + plain[tensor + 1 :])
    draw = random.Random(0)  # the same layouts on every rank and every run
    total = math.prod(len(c) for c in choices)
    while len(seen) < min(limit, total):
        yield from emit(tuple(draw.randrange(len(c)) for c in choices))


def _full(value: object) -> object:
    return value.full_tensor() if isinstance(value, DTensor) else value


def _describe(converter: DTensorConverter) -> str:
    return "[" + ", ".join(str(p) for p in converter.current) + "]"


def check_op(
    case: Any, mesh: DeviceMesh, op: Callable, *args: Any, **kwargs: Any
) -> DTensorConverter:
    """``op`` on every DTensor layout of the inputs equals ``op`` on plain inputs.

    ``case`` is the running unittest.TestCase (assertions go through it). Every
    tensor argument must be convertible; a layout that disagrees fails with the
    layout in the message. Returns the spent converter (its hit and miss counts).
    """
    expected = tree_flatten(op(*args, **kwargs))[0]
    converter = DTensorConverter(mesh, args, kwargs)
    for d_args, d_kwargs in converter:
        case.assertTrue(
            converter.successful(),
            f"{op}: DTensorConverter could not convert every tensor argument "
            f"({converter.miss} left as plain tensors)",
        )
        got = [_full(leaf) for leaf in tree_flatten(op(*d_args, **d_kwargs))[0]]
        case.assertEqual(got, expected, msg=f"{op} with input placements {_describe(converter)}")
    return converter


def check_op_on_dtensor(case: Any, op: Callable, *args: Any, **kwargs: Any) -> None:
    """``op`` on the given DTensors, gathered, equals ``op`` on their full tensors."""
    leaves, spec = tree_flatten(args)
    full_args = tree_unflatten(
        [
            leaf.full_tensor().detach().clone() if isinstance(leaf, DTensor) else leaf
            for leaf in leaves
        ],
        spec,
    )
    full_kwargs = {key: _full(value) for key, value in kwargs.items()}
    expected = tree_flatten(op(*full_args, **full_kwargs))[0]
    got = [_full(leaf) for leaf in tree_flatten(op(*args, **kwargs))[0]]
    case.assertEqual(expected, got, msg=f"{op} on DTensor inputs vs their full tensors")
