"""The ops capability's engine: each OpInfo sample on plain tensors and as DTensors.

An op's verdict: passed (every sample agrees in every layout DTensorConverter
yields), failed (a wrong shape, ``requires_grad`` or value, or an error DTensor
should not raise), not supported (DTensor has no sharding strategy for an aten op
the samples reach: coverage, not a failure) or skipped with a reason. Known
failures are data: ``xfails/torch-<major>.<minor>.toml``, per world size (see
docs/certification.md and :mod:`harness.report.reference`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
import unittest
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.report.capabilities import OPS_UNSUPPORTED

#: Which ops run: ``HARNESS_OPS`` (``--harness-ops``): off, all, or names/globs.
ENV = "HARNESS_OPS"
XFAILS = Path(__file__).with_name("xfails")
#: Another expectations file than the installed torch's (a patched torch, a test).
EXPECTATIONS_ENV = "HARNESS_OPS_EXPECTATIONS"

# What DTensor raises for an aten op without a sharding strategy.
_NO_STRATEGY = ("does not have a sharding strategy registered",)

# Ops whose samples draw a dropout probability: set to 0, as PyTorch's sweep does,
# so the plain and the distributed run compute the same thing.
_DROPOUT = frozenset(
    {
        "nn.functional.dropout",
        "nn.functional.dropout2d",
        "nn.functional.dropout3d",
        "nn.functional.alpha_dropout",
        "nn.functional.feature_alpha_dropout",
    }
)

#: Where the ops run: ``workers`` (each simulating the ranks; the default where torch
#: has LocalTensor) or ``ranks`` (the cell's pool of rank processes, on its backend).
ON_ENV = "HARNESS_OPS_ON"
_PLACES = ("workers", "ranks")
#: How many worker processes; default: the cores this process may use, at most 8.
WORKERS_ENV = "HARNESS_OPS_WORKERS"
#: A worker grown by more than this (MB of anonymous memory) since it started leaves after its op,
#: and a fresh one takes its place: a sweep's peak does not grow with the ops it ran.
WORKER_MB_ENV = "HARNESS_OPS_WORKER_MB"
WORKER_MB_DEFAULT = 128
#: A record's reason for an op that never returns at that world size: the op is not run.
HANGS = "hangs:"
#: ``raw`` (harness certify): no op is marked as a known failure; every op reports
#: what it ran to, and the report judges it against the reference.
VERDICTS_ENV = "HARNESS_OPS_VERDICTS"


#: The most layouts one sample is checked in (``DTensorConverter(max_layouts=...)``).
#: No sample of torch 2.13's database exceeds 108 at world size 4, 8 or 16, so there
#: the sweep is the full product, as PyTorch's; at 1 and 2, where a mesh divides
#: more dims, one op alone would take an hour (``multi_head_attention_forward``: 27,648
#: layouts of one sample at world size 1), and get every tensor's every placement
#: plus seeded combinations instead.
LAYOUTS_PER_SAMPLE = 256


def raw_verdicts() -> bool:
    import os

    return os.environ.get(VERDICTS_ENV, "").strip() == "raw"


def place() -> str:
    """``HARNESS_OPS_ON``: ``workers`` (unset) or ``ranks``."""
    import os

    from harness.errors import UsageError

    chosen = os.environ.get(ON_ENV, "").strip() or "workers"
    if chosen not in _PLACES:
        raise UsageError(f"{ON_ENV}={chosen!r}: use one of {', '.join(_PLACES)}.")
    return chosen


def _whole_number(env: str, what: str = "a whole number") -> int | None:
    """``env`` as a number >= 1, or None when unset; anything else is one usage line."""
    from harness.errors import UsageError

    raw = os.environ.get(env, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{env}={raw!r}: use {what} >= 1, or unset it.")
    return int(raw)


def workers_wanted() -> int | None:
    """``HARNESS_OPS_WORKERS`` as a number, or None when unset (the default applies)."""
    return _whole_number(WORKERS_ENV)


def worker_budget_mb() -> int:
    """``HARNESS_OPS_WORKER_MB`` as a number, else the default."""
    wanted = _whole_number(WORKER_MB_ENV, "a whole number of MB")
    return WORKER_MB_DEFAULT if wanted is None else wanted


def check_environment() -> None:
    """The capability's environment, checked before anything runs: a bad value stops
    the command with one line naming the variable (not a collection error later)."""
    place()
    workers_wanted()
    worker_budget_mb()


def runs_in_workers() -> bool:
    """Whether the ops run in workers: asked for (the default), torch can simulate, and
    the cell is not fake (whose world LocalTensor cannot hold; its ops tests skip)."""
    from harness import compat

    if os.environ.get("HARNESS_MODE", "").strip().lower() == "fake":
        return False
    return place() == "workers" and compat.local_tensor_missing() is None


def op_key(op: Any) -> str:
    """``name`` or ``name:variant``: how reports and the xfail files name an OpInfo."""
    return f"{op.name}:{op.variant_test_name}" if op.variant_test_name else op.name


def method_name(key: str) -> str:
    return "test_" + re.sub(r"\W", "_", key)


def selection(spec: str | None) -> Callable[[str], bool] | None:
    """None when the capability is off; else a predicate on op keys."""
    spec = (spec or "").strip()
    if spec in ("", "off", "0", "no"):
        return None
    if spec == "all":
        return lambda key: True
    globs = [g.strip() for g in spec.split(",") if g.strip()]
    return lambda key: any(fnmatch.fnmatchcase(key, g) for g in globs)


def selected_ops(spec: str | None) -> dict[str, Any]:
    """{op key: OpInfo} for the selection, in the database's order (empty when off)."""
    wanted = selection(spec)
    if wanted is None:
        return {}
    from harness import compat

    return {op_key(op): op for op in compat.op_database() if wanted(op_key(op))}


@dataclass(frozen=True)
class Expectations:
    """What the installed torch's record says for this world size: DTensor's own failures
    (``xfail``), the ops no sweep compares (``skip``) and the slowest ops (``slow``)."""

    path: Path | None
    xfail: dict[str, str] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)
    #: the world size ``xfail`` is for; None when the record holds none for this
    #: (torch, world size): then no op is marked, and a certification computes the
    #: reference instead (docs/certification.md)
    world_size: int | None = None
    #: the ops that take longest, in seconds on one core: workers start them first,
    #: so no worker is left running one alone at the end (the run's wall time)
    slow: dict[str, float] = field(default_factory=dict)
    #: the world sizes the record holds DTensor's own failures for
    worlds: tuple[int, ...] = ()
    torch: str = ""

    @cached_property
    def hangs(self) -> dict[str, str]:
        """DTensor's own failures that never return (a reason starting ``hangs:``): not
        run, so a certification does not spend the per-op limit on a known hang."""
        return {k: why for k, why in self.xfail.items() if why.startswith(HANGS)}

    def strict(self, world_size: int) -> bool:
        """A listed op that passes fails the run: only at a world size the record holds."""
        return self.world_size == world_size

    def slowest_first(self, keys: Iterable[str]) -> list[str]:
        """``keys`` with the slow ones first, longest first; the rest keep their order."""
        return sorted(keys, key=lambda k: -self.slow.get(k, 0.0))

    def note(self, world_size: int) -> str:
        """Which known failures apply, for the report's ``ran_on`` line."""
        name = self.path.name if self.path else "no record"
        if self.world_size == world_size:
            return f"DTensor's own failures from {name} [world.{world_size}]"
        held = ", ".join(map(str, self.worlds)) or "none"
        return (
            f"{name} holds no DTensor's own failures for torch {self.torch or '?'} at world size "
            f"{world_size} (it holds world sizes: {held}); harness certify computes the reference"
        )


def expectations_file(version: tuple[int, int], folder: Path = XFAILS) -> Path | None:
    """The record for this torch minor, else the nearest other one: the newest older,
    else the oldest newer (for its skips and slow ops, which are about the ops, not the
    torch; another torch's failures are not this one's), else None."""
    found = {}
    for path in folder.glob("torch-*.toml"):
        match = re.fullmatch(r"torch-(\d+)\.(\d+)\.toml", path.name)
        if match:
            found[(int(match[1]), int(match[2]))] = path
    older = [v for v in found if v <= version]
    if older:
        return found[max(older)]
    return found[min(found)] if found else None


def load_expectations(
    path: Path | None,
    known: Iterable[str],
    world_size: int | None = None,
    torch: tuple[int, int] | None = None,
) -> Expectations:
    """Read and check a record (schema 2, :mod:`harness.report.reference`): known ops, a
    reason for each; DTensor's own failures at ``world_size`` when the record is for
    ``torch`` (None: any) and holds that world size."""
    from harness.errors import UsageError
    from harness.report import reference

    if path is None:
        return Expectations(None)
    if not path.is_file():
        raise ValueError(f"{path}: no such expectations file")
    try:
        record = reference.parse(path.read_bytes(), str(path))
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    known = set(known)
    this_torch = torch is None or record.torch == f"{torch[0]}.{torch[1]}"
    skip, slow = record.skip, record.slow
    if this_torch:  # its every key must be an op of this torch
        tables = {"skip": skip, "slow": slow}
        tables.update({f"world.{n}.own": w.own for n, w in record.worlds.items()})
        for table, entries in tables.items():
            for key in entries:
                if key not in known:
                    raise ValueError(f"{path}: [{table}] {key!r} is no OpInfo of this torch")
    else:  # another torch's record lends its skips and slow ops, for the ops this one has
        skip = {k: v for k, v in skip.items() if k in known}
        slow = {k: v for k, v in slow.items() if k in known}
    world = record.at(world_size) if world_size is not None and this_torch else None
    return Expectations(
        path,
        dict(world.own) if world else {},
        skip,
        world_size if world else None,
        slow,
        tuple(sorted(record.worlds)) if this_torch else (),
        record.torch,
    )


def _no_dropout(name: str, args: list, kwargs: dict) -> tuple[list, dict]:
    if name == "nn.functional.multi_head_attention_forward" and len(args) > 10:
        args = [*args[:10], 0.0, *args[11:]]
    elif name in _DROPOUT:
        kwargs = {**kwargs, "p": 0.0}
    return args, kwargs


def _unsupported(exc: BaseException) -> bool:
    return isinstance(exc, NotImplementedError) and any(m in str(exc) for m in _NO_STRATEGY)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _samples(
    op: Any, device: str, seed: int, why_not: list[str], outside: Callable[[], Any]
) -> Iterator[Any]:
    """The samples the database can make, one at a time; its own error ends them, and is noted.

    One at a time because a sweep needs one: ``grid_sampler_3d``'s 30 samples held
    360 MB when all were drawn first. Each is drawn right after seeding
    (:func:`harness.compat.op_samples`), and the random state the checks see is
    put back around each draw, so it is what it was when every sample was drawn
    first: a random op's verdict does not depend on when its samples are made. At
    the sweep's sample sizes a few generators index past a dim (``prod``,
    ``cumprod``: PyTorch's sweep skips those): the database's fault, not DTensor's.
    """
    import torch

    from harness import compat

    with outside():
        draws = compat.op_samples(op, device, torch.float32, requires_grad=True, seed=seed)
        compat.seed_all(seed, device)  # where drawing them all first left the checks
    made = 0
    while True:
        with outside():
            state = _random_state(device)
            try:
                sample = next(draws)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 (the generator, not DTensor, is at fault)
                why_not.append(f"the database cannot make sample {made} ({_first_line(exc)})")
                return
            finally:
                _set_random_state(device, state)
        made += 1
        yield sample


def _random_state(device: str) -> tuple[Any, ...]:
    import random

    import torch

    numpy_random = getattr(sys.modules.get("numpy"), "random", None)
    module = getattr(torch, device, None) if device != "cpu" else None
    return (
        torch.get_rng_state(),
        module.get_rng_state() if module is not None and hasattr(module, "get_rng_state") else None,
        random.getstate(),
        numpy_random.get_state() if numpy_random is not None else None,
    )


def _set_random_state(device: str, state: tuple[Any, ...]) -> None:
    import random

    import torch

    cpu, accelerator, python, numpy_state = state
    torch.set_rng_state(cpu)
    if accelerator is not None:
        getattr(torch, device).set_rng_state(accelerator)
    random.setstate(python)
    if numpy_state is not None:
        sys.modules["numpy"].random.set_state(numpy_state)


def sample_seed(key: str) -> int:
    """The op's seed, the same wherever it runs: what ``OpInfo.sample_inputs`` would take
    inside ``OpsTest.test_<op>`` (the first 4 bytes of the sha256 of its qualified
    name), so the samples are those the capability has always drawn."""
    digest = hashlib.sha256(f"OpsTest.{method_name(key)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _check_output(case: Any, copies: list[Any], requires_grad: bool, ref: Any, where: str) -> None:
    """One output against the plain one: type, shape, ``requires_grad``, then values.

    ``copies`` are what each rank holds of the whole output (one where the ranks
    cannot differ). Bitwise-equal values (the usual case) pass without the kit's
    assertEqual, which is there for the tolerance and the message when they differ.
    """
    import torch

    for copy in copies:
        if not isinstance(copy, torch.Tensor):
            raise AssertionError(f"{where}: got {type(copy).__name__}, expected a tensor")
        if tuple(copy.shape) != tuple(ref.shape):
            raise AssertionError(f"{where}: shape {tuple(copy.shape)}, expected {tuple(ref.shape)}")
    if requires_grad != ref.requires_grad:
        raise AssertionError(
            f"{where}: requires_grad={requires_grad}, expected {ref.requires_grad}"
        )
    for copy in copies:
        if not _bitwise_equal(copy, ref):
            case.assertEqual(copy, ref, msg=where)


def _rank_copies(value: Any) -> list[Any]:
    """A LocalTensor as each simulated rank's copy; anything else as itself."""
    per_rank = getattr(value, "_local_tensors", None)
    return list(per_rank.values()) if isinstance(per_rank, dict) else [value]


def _whole_copies(value: Any, outside: Callable[[], AbstractContextManager]) -> list[Any]:
    """Each rank's copy of the whole output: a DTensor put together from its shards
    where the kit can (outside LocalTensor mode), else gathered by DTensor (inside it)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return _rank_copies(value)
    with outside():
        whole = _assembled(value)
    return whole if whole is not None else _rank_copies(value.full_tensor())


def _assembled(dtensor: Any) -> list[Any] | None:
    """The whole tensor a DTensor of simulated ranks stands for, from its shards; None if unsure.

    What ``full_tensor()`` gives, without the collectives: under LocalTensor each
    rank's shard is at hand, so a ``Shard`` output is its shards joined in mesh
    order and a ``Partial`` one their reduction in rank order, as LocalTensor's
    all-reduce folds them (bitwise the same); a ``Replicate`` output is every
    rank's own copy. Gathering through DTensor cost a fifth of the sweep, and
    the sweep checks the op's sharding, not redistribution (the ``redistribute``
    capability does). Anything else (a mesh of more dims, a placement of DTensor's
    own such as a masked or norm partial, real rank processes) is None, and the
    caller gathers with DTensor. Call it outside LocalTensor mode: the shards
    are plain tensors.
    """
    import functools
    import operator

    import torch
    from torch.distributed.tensor import Partial, Replicate, Shard

    per_rank = getattr(dtensor._local_tensor, "_local_tensors", None)
    mesh = dtensor.device_mesh
    if not isinstance(per_rank, dict) or mesh.ndim != 1:
        return None
    shards = [per_rank[rank] for rank in mesh.mesh.tolist()]
    (placement,) = dtensor.placements
    kind = type(placement)
    if kind is Replicate:
        return shards
    if kind is Shard:
        return [torch.cat(shards, dim=placement.dim)]
    reduce = {
        "sum": operator.add,
        "avg": operator.add,
        "product": operator.mul,
        "min": torch.minimum,
        "max": torch.maximum,
    }
    if kind is Partial and placement.reduce_op in reduce:
        whole = functools.reduce(reduce[placement.reduce_op], shards)
        return [whole / len(shards) if placement.reduce_op == "avg" else whole]
    return None


def _bitwise_equal(mine: Any, ref: Any) -> bool:
    """True when the values are identical; False when unknown (some dtypes have no equal)."""
    import torch

    if mine.dtype != ref.dtype:
        return False
    try:
        return torch.equal(mine.detach(), ref.detach())
    except RuntimeError:  # e.g. complex32 on cpu: the kit's assertEqual decides
        return False


def _empty(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.numel() == 0


def check_opinfo(
    case: Any,
    mesh: Any,
    op: Any,
    device: str,
    outside: Callable[[], AbstractContextManager],
    tick: Callable[[], None] | None = None,
    src_data_rank: int | None = 0,
) -> None:
    """Run every sample of ``op`` plain and in every layout; fail, skip, or return (passed).

    ``outside`` makes the samples and the reference as plain tensors (it leaves
    LocalTensor mode in a -sim cell); ``tick`` is called before each sample and each
    layout (a worker's sign of life). Samples are seeded, so every rank draws
    the same ones; ``src_data_rank`` is how the converter distributes them
    (``None``: each rank splits its own, for ranks that share them). An output
    with no elements is not compared, as in PyTorch's sweep; a sample that fails
    on plain tensors, or holds a tensor DTensor cannot hold, is not checked.
    """
    import torch
    from torch.distributed.tensor import DTensor
    from torch.utils import _pytree as pytree

    from harness.converter import DTensorConverter

    key = op_key(op)
    if torch.float32 not in op.supported_dtypes(device):
        raise unittest.SkipTest(f"{key} has no float32 kernel on {device}")
    checked, why_not = 0, []
    samples = _samples(op, device, sample_seed(key), why_not, outside)
    for index, sample in enumerate(samples):
        if tick is not None and index:
            tick()
        args, kwargs = _no_dropout(op.name, [sample.input, *sample.args], dict(sample.kwargs))
        try:
            with outside():
                expected = pytree.tree_leaves(op.op(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 (the sample, not DTensor, is at fault)
            why_not.append(f"sample {index} fails on plain tensors ({_first_line(exc)})")
            continue
        converter = DTensorConverter(
            mesh, tuple(args), kwargs, max_layouts=LAYOUTS_PER_SAMPLE, src_data_rank=src_data_rank
        )
        for d_args, d_kwargs in converter:
            if tick is not None:  # one layout is a unit of work: a heavy sample has thousands
                tick()
            if not converter.successful():
                what = "a tensor DTensor cannot hold" if converter.miss else "no tensor input"
                why_not.append(f"sample {index} has {what}")
                break
            layout = "[" + ", ".join(str(p) for p in converter.current) + "]"
            where = f"{key} sample {index} with input placements {layout}"
            if converter.capped:
                where += f" (one of {LAYOUTS_PER_SAMPLE} of its {converter.total} layouts)"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = op.op(*d_args, **d_kwargs)
            except Exception as exc:  # noqa: BLE001 (classified below)
                if _unsupported(exc):  # an op-level answer: the other samples add nothing
                    raise unittest.SkipTest(
                        f"{OPS_UNSUPPORTED}: sample {index}: {_first_line(exc)}"
                    ) from None
                raise AssertionError(f"{where} raised {_first_line(exc)}") from exc
            got = pytree.tree_leaves(out)
            if len(got) != len(expected):
                raise AssertionError(f"{where}: {len(got)} outputs, expected {len(expected)}")
            # An output with no elements has no values to compare (and DTensor
            # cannot always gather one); the sample's other outputs still count.
            pairs = [
                (mine, ref)
                for mine, ref in zip(got, expected)
                if isinstance(ref, (torch.Tensor, bool, int, float))
                and not _empty(mine)
                and not _empty(ref)
            ]
            if not pairs:
                why_not.append(f"sample {index} has no output with elements")
                continue
            wholes = [  # a number or a bool (item, equal) is compared as one
                _whole_copies(mine, outside)
                if isinstance(ref, torch.Tensor)
                else (mine.full_tensor() if isinstance(mine, DTensor) else mine)
                for mine, ref in pairs
            ]
            with outside():
                for whole, (mine, ref) in zip(wholes, pairs):
                    if isinstance(ref, torch.Tensor):
                        requires_grad = getattr(mine, "requires_grad", False)
                        _check_output(case, whole, requires_grad, ref, where)
                    else:
                        case.assertEqual(whole, ref, msg=where)
            checked += 1
    if not checked:
        reason = why_not[0] if why_not else "the database has no float32 sample for it"
        raise unittest.SkipTest(f"no sample could be checked: {reason}")
