"""A process group whose ranks are threads of one process.

Why: op-coverage suites (``DTensorOpTestBase``) run hundreds of tiny tests; on
threads a test costs milliseconds and the ranks share one copy of torch.
PyTorch's own threaded group lives in ``torch.testing._internal``, which is not
a public API, so the kit has its own, built on public extension points only:
``Backend.register_backend`` and a Python subclass of ``ProcessGroup``.

Two things make ``torch.distributed`` per-thread while a threaded test runs:
``_world`` (c10d's tables of groups) is swapped for a switch that gives each
rank thread its own tables, and the C++ group registry is put in its
thread-isolation mode. Threads that are not ranks keep the real tables.

A collective is a rendezvous: every rank drops its tensors into the group's
round for that call, and the last one to arrive does the data movement for
all. A rank whose test has ended (failed, skipped or passed) without calling it
makes its peers fail at once, not at the timeout; a rank that is still running
but never arrives is named in a timeout error.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import ReduceOp

from harness import compat, hosts
from harness.ranks import clock

BACKEND = "harness_threads"

_LOCAL = threading.local()  # .world (this rank thread's c10d tables), .run (its ThreadRun)


# --- per-thread c10d tables ----------------------------------------------------------------


def _module_level_tables() -> dict[str, Any]:
    """The ``_World`` properties that are module globals: they must be per thread.

    Found at run time, not listed, so a torch that adds a table is still covered:
    two fresh ``_World`` objects returning the very same container share a global.
    """
    world_class = compat.c10d_world_class()
    a, b = world_class(), world_class()
    tables = {}
    for name, attr in vars(world_class).items():
        if not isinstance(attr, property):
            continue
        try:
            value = getattr(a, name)
        except Exception:  # noqa: BLE001 (a property that needs a live group)
            continue
        if isinstance(value, (dict, list)) and value is getattr(b, name):
            tables[name] = type(value)
        elif isinstance(value, int) and not isinstance(value, bool) and attr.fset is not None:
            tables[name] = int  # a counter with a setter (group_count)
    return tables


@functools.cache
def _thread_world_class() -> type:
    tables = _module_level_tables()

    def table(name: str) -> property:
        return property(
            lambda self: self._tables[name],
            lambda self, value: self._tables.__setitem__(name, value),
        )

    world_class = compat.c10d_world_class()

    def __init__(self) -> None:  # noqa: N807
        world_class.__init__(self)
        self._tables = {name: kind() for name, kind in tables.items()}

    namespace = {"__init__": __init__, **{name: table(name) for name in tables}}
    return type("ThreadWorld", (world_class,), namespace)


class _WorldSwitch:
    """Stands in for ``c10d._world``: a rank thread's own tables, else the real ones."""

    def __init__(self, real: Any) -> None:
        object.__setattr__(self, "_real", real)

    def _current(self) -> Any:
        return getattr(_LOCAL, "world", None) or self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._current(), name, value)


_INSTALL_LOCK = threading.Lock()


def _install() -> None:
    with _INSTALL_LOCK:
        if not isinstance(compat.c10d_world(), _WorldSwitch):
            compat.set_c10d_world(_WorldSwitch(compat.c10d_world()))
        if not compat.backend_registered(BACKEND):
            dist.Backend.register_backend(
                BACKEND, _create_group, extended_api=True, devices=hosts.device_types()
            )


# --- rounds: one collective call on one group ------------------------------------------------


class CollectiveError(RuntimeError):
    """A threaded collective could not complete: a timeout, a mismatch or an aborted run."""


class _Round:
    def __init__(self, size: int) -> None:
        self.data: list[Any] = [None] * size
        self.kinds: list[str | None] = [None] * size
        self.arrived = 0
        self.left = 0
        self.done = False
        self.error: str | None = None


class _Exchange:
    """Every collective of one group in one run, in call order."""

    def __init__(self, name: str, global_ranks: list[int], run: ThreadRun) -> None:
        self.name, self.size, self.run = name, len(global_ranks), run
        self.global_ranks = global_ranks
        self.rounds: dict[int, _Round] = {}
        self.mailboxes: dict[tuple[int, int, int], list[torch.Tensor]] = {}

    def join(self, seq: int, rank: int, kind: str, data: Any, work: Callable[[list], None]) -> None:
        cond, timeout = self.run.cond, self.run.timeout
        with cond:
            rnd = self.rounds.setdefault(seq, _Round(self.size))
            rnd.data[rank], rnd.kinds[rank] = data, kind
            rnd.arrived += 1
            if rnd.arrived == self.size:
                rnd.error = self._check_kinds(seq, rnd) or self._do(work, rnd)
                rnd.done = True
                cond.notify_all()
            elif not clock.wait_for(cond, lambda: rnd.done or self._hopeless(rnd), timeout):
                rnd.error = (
                    f"{kind} #{seq} on group {self.name!r} timed out after {timeout:g} s: "
                    f"group rank(s) {self._missing(rnd)} never called it"
                )
                self.run.abort(rnd.error)
            elif not rnd.done:
                raise CollectiveError(
                    f"{kind} #{seq} on group {self.name!r} cannot complete: {self._why(rnd)}"
                )
            rnd.left += 1
            if rnd.left == self.size:
                del self.rounds[seq]
            if rnd.error:
                raise CollectiveError(rnd.error)

    def _missing(self, rnd: _Round) -> list[int]:
        return [r for r, k in enumerate(rnd.kinds) if k is None]

    def _gone(self, rnd: _Round) -> list[int]:
        """Global ranks this round still waits for that have already finished their test."""
        missing = (self.global_ranks[r] for r in self._missing(rnd))
        return [g for g in missing if g in self.run.finished]

    def _hopeless(self, rnd: _Round) -> bool:
        return self.run.aborted is not None or bool(self._gone(rnd))

    def _why(self, rnd: _Round) -> str:
        gone = self._gone(rnd)
        if gone:
            how = ", ".join(f"rank {g} {self.run.finished[g]}" for g in gone)
            return f"{how} the test without calling it"
        return str(self.run.aborted)

    def _check_kinds(self, seq: int, rnd: _Round) -> str | None:
        if len(set(rnd.kinds)) == 1:
            return None
        calls = ", ".join(f"rank {r}: {k}" for r, k in enumerate(rnd.kinds))
        return f"collective #{seq} on group {self.name!r} differs between ranks ({calls})"

    @staticmethod
    def _do(work: Callable[[list], None], rnd: _Round) -> str | None:
        try:
            with torch.no_grad():
                work(rnd.data)
        except Exception as exc:  # noqa: BLE001 (every rank gets the same error)
            return f"{type(exc).__name__}: {exc}"
        return None


class ThreadRun:
    """One test's ranks: their groups' exchanges, the abort flag, the collective timeout."""

    def __init__(self, world_size: int, timeout: float) -> None:
        self.world_size, self.timeout = world_size, timeout
        self.cond = threading.Condition()
        self.exchanges: dict[str, _Exchange] = {}
        self.aborted: str | None = None
        self.finished: dict[int, str] = {}  # global rank -> how its test ended
        self.store = dist.HashStore()

    def exchange(self, name: str, global_ranks: list[int]) -> _Exchange:
        with self.cond:
            ex = self.exchanges.get(name)
            if ex is None:
                ex = self.exchanges[name] = _Exchange(name, global_ranks, self)
            return ex

    def finish(self, rank: int, status: str) -> None:
        """Rank ``rank``'s test ended: peers waiting for it in a collective fail now."""
        with self.cond:
            self.finished[rank] = {"passed": "passed", "skipped": "skipped"}.get(status, "failed")
            self.cond.notify_all()

    def abort(self, why: str) -> None:
        with self.cond:
            if self.aborted is None:
                self.aborted = why
            self.cond.notify_all()

    @contextlib.contextmanager
    def rank_thread(self) -> Iterator[None]:
        """Give the calling thread its own c10d tables for the length of a test."""
        _LOCAL.world, _LOCAL.run = _thread_world_class()(), self
        try:
            yield
        finally:
            if dist.is_initialized():
                with contextlib.suppress(Exception):
                    dist.destroy_process_group()
            _LOCAL.world = _LOCAL.run = None


@contextlib.contextmanager
def threaded_world() -> Iterator[None]:
    """While it is open, rank threads see their own groups (c10d and its C++ registry)."""
    _install()
    isolate = compat.set_thread_isolation_mode()
    isolate(True)
    # Backward must run on the rank's own thread, where its groups are.
    autograd_threads = torch.autograd.set_multithreading_enabled(False)
    try:
        yield
    finally:
        autograd_threads.__exit__(None, None, None)
        isolate(False)


# --- the process group ---------------------------------------------------------------------


def _create_group(options: Any, _backend_options: Any) -> ThreadedProcessGroup:
    run = getattr(_LOCAL, "run", None)
    if run is None:
        raise RuntimeError(
            f"backend {BACKEND!r} only works on the ranks of a threaded test "
            "(DTensorOpTestBase, or rank_mode = 'threads')"
        )
    ranks = list(options.global_ranks_in_group) or list(range(options.group_size))
    exchange = run.exchange(str(options.group_id), ranks)
    return ThreadedProcessGroup(options.group_rank, options.group_size, exchange)


def _done(result: Any) -> Any:
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(result)
    return compat.create_work_from_future()(fut)


def _reduce(tensors: list[torch.Tensor], op: Any) -> torch.Tensor:
    stacked = torch.stack([t.to(tensors[0].device) for t in tensors])
    if op == ReduceOp.SUM:
        return stacked.sum(0)
    if op == ReduceOp.AVG:
        total = stacked.sum(0)
        if total.is_floating_point() or total.is_complex():
            return total / len(tensors)
        return total.div(len(tensors), rounding_mode="floor")
    if op == ReduceOp.PRODUCT:
        return stacked.prod(0)
    if op == ReduceOp.MIN:
        return stacked.amin(0)
    if op == ReduceOp.MAX:
        return stacked.amax(0)
    bitwise = {
        ReduceOp.BAND: operator.and_,
        ReduceOp.BOR: operator.or_,
        ReduceOp.BXOR: operator.xor,
    }
    for kind, fn in bitwise.items():
        if op == kind:
            return functools.reduce(fn, list(stacked))
    raise NotImplementedError(f"{BACKEND}: reduce op {op} is not supported")


def _put(dst: torch.Tensor, src: torch.Tensor) -> None:
    # detach: the data movement is not part of the autograd graph, as in a real backend
    dst.detach().copy_(src)


def _split(t: torch.Tensor, sizes: list[int] | None, parts: int) -> list[torch.Tensor]:
    if sizes:
        return list(torch.split(t, list(sizes)))
    return list(torch.chunk(t, parts)) if t.numel() else [t] * parts


class ThreadedProcessGroup(dist.ProcessGroup):
    """One rank's handle on a group; the data moves in :class:`_Exchange`."""

    def __init__(self, rank: int, size: int, exchange: _Exchange) -> None:
        super().__init__(rank, size)
        self._rank, self._size, self._ex, self._seq = rank, size, exchange, 0

    # c10d's base class keeps the name on its backend, which a Python group lacks
    @property
    def group_name(self) -> str:
        return self._ex.name

    def getGroupName(self) -> str:  # noqa: N802 (c10d's names, called from C++)
        return self._ex.name

    def getGroupDesc(self) -> str:  # noqa: N802
        return self._ex.name

    def getBackendName(self) -> str:  # noqa: N802
        return BACKEND

    def __repr__(self) -> str:
        return f"ThreadedProcessGroup(rank={self._rank}, size={self._size}, name={self._ex.name!r})"

    def _join(self, kind: str, data: Any, work: Callable[[list], None], result: Any) -> Any:
        seq, self._seq = self._seq, self._seq + 1
        self._ex.join(seq, self._rank, kind, data, work)
        return _done(result)

    # reductions
    def allreduce(self, tensors, opts=None):
        op = opts.reduceOp if opts is not None else ReduceOp.SUM

        def work(data):
            for i in range(len(data[0])):
                out = _reduce([d[i] for d in data], op)
                for d in data:
                    _put(d[i], out)

        return self._join("allreduce", tensors, work, tensors)

    allreduce_coalesced = allreduce

    def reduce(self, tensors, opts=None):
        op, root = opts.reduceOp, opts.rootRank

        def work(data):
            for i in range(len(data[0])):
                _put(data[root][i], _reduce([d[i] for d in data], op))

        return self._join("reduce", tensors, work, tensors)

    def reduce_scatter(self, outputs, input_lists, opts=None):
        op = opts.reduceOp if opts is not None else ReduceOp.SUM

        def work(data):
            for r, (outs, _) in enumerate(data):
                for i, out in enumerate(outs):
                    _put(out, _reduce([ins[i][r] for _, ins in data], op))

        return self._join("reduce_scatter", (outputs, input_lists), work, outputs)

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        op = opts.reduceOp if opts is not None else ReduceOp.SUM

        def work(data):
            for r, (outs, _) in enumerate(data):
                for i, out in enumerate(outs):
                    pieces = [torch.chunk(ins[i], self._size)[r] for _, ins in data]
                    _put(out, _reduce(pieces, op).view_as(out))

        return self._join("reduce_scatter_tensor", (outputs, inputs), work, outputs)

    def _reduce_scatter_base(self, output, input, opts=None):  # noqa: A002
        return self.reduce_scatter_tensor_coalesced([output], [input], opts)

    reduce_scatter_single = _reduce_scatter_base

    # gathers
    def allgather(self, output_lists, inputs, opts=None):
        def work(data):
            for outs, _ in data:
                for i, per_rank in enumerate(outs):
                    for r, out in enumerate(per_rank):
                        _put(out, data[r][1][i])

        return self._join("allgather", (output_lists, inputs), work, output_lists)

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        def work(data):
            for outs, _ in data:
                for i, out in enumerate(outs):
                    gathered = torch.cat([ins[i].reshape(-1) for _, ins in data])
                    _put(out, gathered.view_as(out))

        return self._join("allgather_into_tensor", (outputs, inputs), work, outputs)

    def _allgather_base(self, output, input, opts=None):  # noqa: A002
        return self.allgather_into_tensor_coalesced([output], [input], opts)

    all_gather_single = _allgather_base

    def gather(self, output_lists, inputs, opts=None):
        root = opts.rootRank

        def work(data):
            for i, per_rank in enumerate(data[root][0]):
                for r, out in enumerate(per_rank):
                    _put(out, data[r][1][i])

        return self._join("gather", (output_lists, inputs), work, output_lists)

    # one to many
    def broadcast(self, tensors, opts=None):
        root = opts.rootRank if opts is not None else 0

        def work(data):
            for d in data:
                for out, src in zip(d, data[root]):
                    _put(out, src)

        return self._join("broadcast", tensors, work, tensors)

    def scatter(self, outputs, input_lists, opts=None):
        root = opts.rootRank

        def work(data):
            for r, (outs, _) in enumerate(data):
                for i, out in enumerate(outs):
                    _put(out, data[root][1][i][r])

        return self._join("scatter", (outputs, input_lists), work, outputs)

    # all to all
    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):  # noqa: A002
        def work(data):
            pieces = [_split(ins, in_sizes, self._size) for _, ins, _, in_sizes in data]
            for r, (out, _, out_sizes, _) in enumerate(data):
                targets = _split(out, out_sizes, self._size)
                for k, target in enumerate(targets):
                    _put(target, pieces[k][r])

        data = (output, input, output_split_sizes, input_split_sizes)
        return self._join("alltoall", data, work, output)

    all_to_all_single = alltoall_base

    def alltoall(self, outputs, inputs, opts=None):
        def work(data):
            for r, (outs, _) in enumerate(data):
                for k, out in enumerate(outs):
                    _put(out, data[k][1][r])

        return self._join("alltoall_list", (outputs, inputs), work, outputs)

    def barrier(self, opts=None):
        return self._join("barrier", None, lambda data: None, None)

    # point to point: a mailbox per (source, destination, tag)
    def send(self, tensors, dst, tag):
        ex = self._ex
        with ex.run.cond:
            box = ex.mailboxes.setdefault((self._rank, dst, tag), [])
            box.extend(t.detach().clone() for t in tensors)
            ex.run.cond.notify_all()
        return _done(tensors)

    def recv(self, tensors, src, tag):
        ex, run = self._ex, self._ex.run
        sender = ex.global_ranks[src]
        what = f"recv from group rank {src} (tag {tag}) on group {ex.name!r}"

        def hopeless() -> bool:  # nothing more will come: the sender's test has ended
            return run.aborted is not None or sender in run.finished

        with run.cond:
            for out in tensors:
                box = ex.mailboxes.setdefault((src, self._rank, tag), [])
                if not clock.wait_for(run.cond, lambda b=box: b or hopeless(), run.timeout):
                    raise CollectiveError(f"{what} timed out after {run.timeout:g} s")
                if not box:
                    why = run.aborted
                    if sender in run.finished:
                        why = f"rank {sender} {run.finished[sender]} the test without sending it"
                    raise CollectiveError(f"{what} cannot complete: {why}")
                _put(out, box.pop(0))
        return _done(tensors)


def init_rank(run: ThreadRun, rank: int, timeout: float) -> None:
    """The default group for the calling rank thread (inside ``run.rank_thread()``)."""
    dist.init_process_group(
        backend=BACKEND,
        rank=rank,
        world_size=run.world_size,
        store=run.store,
        timeout=timedelta(seconds=timeout),
    )
