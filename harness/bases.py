"""Test bases with upstream's names: a test body runs on every rank.

``DTensorTestBase`` runs each test on fresh rank processes, ``DTensorContinuousTestBase``
on a pool kept for the class, ``DTensorOpTestBase`` (upstream's threads base) on
rank threads of the test process (:mod:`harness.ranks.threads`). The parent never
runs a test body: it decides the timeout, the rerun line and requirement skips,
then hands the test as a :class:`harness.ranks.Job` to its mode's runner, chosen
from one table, :data:`RUNNERS`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import os
import shlex
import sys
import time
import types
import unittest
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import torch
import torch.distributed as dist

from harness import compat, devices, fake, ranks
from harness.devices import (  # noqa: F401 (re-exported: upstream's module has them)
    ACCELERATOR_DIST_BACKENDS,
    DEVICE_COUNT,
    DEVICE_TYPE,
    NUM_DEVICES,
    PG_BACKEND,
)
from harness.ranks import external
from harness.skips import (  # noqa: F401 (re-exported)
    TEST_SKIPS,
    TestSkip,
    accelerator_budget,
    requirement_skip,
    skip_if_lt_x_gpu,
    skip_unless_torch_gpu,
)
from harness.testcase import TestCase

# unittest leaves this module's frames out of failure tracebacks
__unittest = True

T = TypeVar("T")

#: mode -> its runner, ``module:function`` (imported on first use). Every runner
#: takes a :class:`harness.ranks.Job` and returns a :class:`harness.ranks.Verdict`
#: (see :mod:`harness.ranks.runner`): a new mode is one module and one row here.
RUNNERS: dict[str, str] = {
    "process": "harness.ranks.run:run_in_processes",
    "pool": "harness.ranks.run:run_in_pool",
    "threads": "harness.ranks.threads:run_in_threads",
    "local": "harness.local.runner:run_job",
    "fake": "harness.ranks.fake:run_fake",
    "external": "harness.ranks.external:run_test",  # chosen by a launcher, not by a class
}
#: What a class's ``rank_mode`` may say.
MODES = tuple(mode for mode in RUNNERS if mode != "external")
#: Modes whose ranks meet for every test, so even a skipped one goes to the runner.
MEET_FOR_SKIPS = frozenset({"external"})


def timeout_after(seconds: float) -> Callable[[T], T]:
    """Per-test timeout in seconds; a hang past it fails with every rank's stack."""

    def decorator(func: T) -> T:
        func._harness_timeout = float(seconds)  # type: ignore[attr-defined]
        return func

    return decorator


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def effective_mode(test: Any) -> str:
    """The mode ``test`` runs in (see :func:`class_mode`)."""
    return class_mode(type(test))


def class_mode(cls: type) -> str:
    """The cell's ``fake`` or ``local`` when it says so, ``local`` when the class asks
    for LocalTensor, else the class's mode."""
    cell_mode = devices.harness_mode()
    if cell_mode == "fake":
        return "fake"
    mode = getattr(cls, "rank_mode", "process")
    if mode == "local" or cell_mode == "local":
        return "local"
    return mode


def effective_timeout(test: Any, method: str) -> float:
    """The test's decorator, else the class's ``timeout``, else the cell's default."""
    return timeout_for(type(test), method)


def timeout_for(cls: type, method: str) -> float:
    """:func:`effective_timeout` of a test of ``cls`` (no instance needed)."""
    fn = getattr(cls, method, None)
    for value in (getattr(fn, "_harness_timeout", None), getattr(cls, "timeout", None)):
        seconds = _seconds(value)
        if seconds is not None and seconds > 0:
            return seconds
    return devices.default_timeout()


def rerun_command(test: Any, method: str) -> str:
    """``pytest path::Class::method``, relative to the current folder when possible."""
    cls = type(test)
    try:
        path = inspect.getfile(cls)
    except (TypeError, OSError):
        return f"python -m unittest {cls.__module__}.{cls.__qualname__}.{method}"
    try:
        rel = os.path.relpath(path)
        path = rel if not rel.startswith("..") else path
    except ValueError:
        pass
    return shlex.join(["pytest", f"{path}::{cls.__qualname__}::{method}"])


def _runner(mode: str) -> ranks.Runner:
    module, _, name = RUNNERS[mode].partition(":")
    return getattr(importlib.import_module(module), name)


def _dispatch(test: Any, method: str) -> Any:
    """Run ``method`` of ``test`` on its ranks (parent side): pick the mode's runner."""
    __tracebackhide__ = True
    import unittest

    mode = effective_mode(test)
    if mode not in MODES:
        raise ValueError(f"{type(test).__name__}.rank_mode={mode!r}: use one of {MODES}")
    if mode == "pool" and not hasattr(type(test), "_harness_init_rank"):
        raise ValueError(
            f"{type(test).__name__}.rank_mode='pool': this base makes a process group per "
            "test; derive from DTensorContinuousTestBase to keep one for the class"
        )
    if mode not in ("local", "fake") and external.launched() is not None:
        mode = "external"  # this process is one torchrun/Slurm rank
    skip = fake.fake_skip(test, method) if mode == "fake" else None
    job = ranks.Job(
        test=test,
        method=method,
        world_size=int(test.world_size),
        timeout=effective_timeout(test, method),
        rerun=rerun_command(test, method),
        class_timeout=_seconds(getattr(type(test), "timeout", None)) or devices.default_timeout(),
        skip=skip or requirement_skip(test, method, local=(mode == "local"), fake=(mode == "fake")),
    )
    if job.skip is not None and mode not in MEET_FOR_SKIPS:
        raise unittest.SkipTest(job.skip)  # decided here: no rank is started for it
    _runner(mode)(job).raise_if_not_passed()
    return None


def _cell_world_size() -> int:
    """The cell's world size; in a rank, the one its parent started it with. Those agree
    unless the environment changed after the fork server imported this module, and
    then the parent's word is the one its ranks were started for."""
    spec = ranks.current_spec()
    return spec.world_size if spec is not None else NUM_DEVICES


class _RankedTestCase(TestCase):
    """What every base shares: the method swap, ``rank``, and the parent/rank split."""

    #: How the class runs its tests: process, pool, threads or local.
    rank_mode: ClassVar[str] = "process"
    #: Per-test timeout in seconds (or a timedelta) for this class; None: the cell's.
    timeout: ClassVar[float | timedelta | None] = None
    MAIN_PROCESS_RANK = -1

    def __init__(self, method_name: str = "runTest", methodName: str = "runTest") -> None:  # noqa: N803
        if methodName != "runTest":
            method_name = methodName
        super().__init__(method_name)
        self._rank = self.MAIN_PROCESS_RANK
        self._harness_direct = False
        self.file_name = ""
        fn = getattr(self, method_name, None)
        if fn is None:
            if method_name != "runTest":
                raise ValueError(f"no such test method in {type(self)}: {method_name}")
            return
        setattr(self, method_name, self._swap(fn, method_name))

    def _swap(self, fn: Callable[..., Any], method_name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run_or_dispatch(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if self._harness_direct or ranks.current_rank() is not None:
                return fn(*args, **kwargs)
            return _dispatch(self, method_name)

        return run_or_dispatch

    @property
    def rank(self) -> int:
        return self._rank

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def world_size(self) -> int:
        return _cell_world_size()

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @classmethod
    def _harness_init_thread_rank(cls, spec: Any) -> None:
        """Runs in each rank thread before its test (threads mode); the runner makes the group."""
        _bind_device(getattr(cls, "_pool_device_type", lambda: "cpu")(), spec.rank)

    def _pg_after_error(self) -> None:
        """A test failed inside ``with_comms``: drop the group so peers fail fast."""
        if _runner_made_group():
            return  # threads mode: the runner aborts the run instead
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    def _spawn_processes(self) -> None:
        """Upstream subclasses call this from setUp; ranks start when the test runs."""

    def join_or_run(self, fn: Callable[[], Any]) -> Callable[..., Any]:
        return types.MethodType(lambda _self: fn(), self)


def run_subtests(
    test: Any,
    subtest_config: dict[str, list[Any]],
    test_fn: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> None:
    """Run ``test_fn`` once per combination of ``subtest_config``, each as a subTest.

    One rank spawn and one process group serve every combination.
    """
    keys = list(subtest_config)
    for values in itertools.product(*(subtest_config[k] for k in keys)):
        sub = dict(zip(keys, values))
        with test.subTest(**sub):
            _reset_dynamo()
            test_fn(*args, **kwargs, **sub)
            _reset_dynamo()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def _reset_dynamo() -> None:
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()


class DTensorTestMixin:
    """Helpers shared by the process and pool bases (upstream's names)."""

    @property
    def is_local_tensor_enabled(self) -> bool:
        return False

    @property
    def device_type(self) -> str:
        # the job's budget, not this host's count: two 8-GPU nodes serve 16 ranks
        if not devices.has_accelerator() or accelerator_budget() < self.world_size:
            return "cpu"
        return DEVICE_TYPE

    @property
    def backend(self) -> str:
        device = self.device_type
        return PG_BACKEND if device == DEVICE_TYPE else devices.default_backend(device)

    def build_device_mesh(self):
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(self.device_type, (self.world_size,))

    def init_manual_seed_for_rank(self) -> None:
        torch.manual_seed(self.rank)

    def _test_op(self, mesh, op_call, *args, **kwargs) -> None:
        from harness.converter import check_op

        check_op(self, mesh, op_call, *args, **kwargs)

    def _test_op_on_dtensor(self, op_call, *args, **kwargs) -> None:
        from harness.converter import check_op_on_dtensor

        check_op_on_dtensor(self, op_call, *args, **kwargs)

    def run_subtests(self, *args: Any, **kwargs: Any) -> None:
        run_subtests(self, *args, **kwargs)


def _pg_timeout() -> timedelta:
    spec = ranks.current_spec()
    seconds = (
        spec.pg_timeout if spec is not None else ranks.pg_timeout_for(devices.default_timeout())
    )
    return timedelta(seconds=seconds)


def _runner_made_group() -> bool:
    """True on a rank thread, whose default group the threads runner made and owns."""
    from harness.ranks.threaded_pg import BACKEND

    return dist.is_initialized() and dist.get_backend() == BACKEND


def _bind_device(device_type: str, rank: int) -> None:
    # More ranks than devices only where they may share one (threads, e.g. world
    # size 4 on a one-GPU machine): rank r gets device r mod count, as upstream's
    count = devices.host_device_count(device_type) if device_type != "cpu" else 0
    if count > 0:
        devices.bind_device(device_type, rank % count)


class DTensorTestBase(DTensorTestMixin, _RankedTestCase):
    """Each test runs on ``world_size`` fresh rank processes (upstream's process base)."""

    rank_mode: ClassVar[str] = "process"

    def init_pg(self, eager_init: bool = False, backend: str | None = None) -> None:
        """Start the default process group on this rank (``with_comms`` calls it)."""
        import unittest

        if _runner_made_group():
            return
        backend = backend or self.backend
        if devices.needs_accelerator(backend):
            from harness.skips import accelerator_budget, multi_gpu_skip

            if accelerator_budget() < self.world_size:
                raise unittest.SkipTest(multi_gpu_skip(self.world_size).message)
        device_id = None
        if devices.needs_accelerator(backend):
            devices.bind_device(self.device_type, self.rank)
            if eager_init:
                device_id = torch.device(f"{self.device_type}:{self.rank}")
        dist.init_process_group(
            backend=backend,
            world_size=self.world_size,
            rank=self.rank,
            init_method=f"file://{self.file_name}",
            device_id=device_id,
            timeout=_pg_timeout(),
        )

    def destroy_pg(self, device_id: int | None = None) -> None:
        """Barrier on this class's device, then destroy the default group."""
        if _runner_made_group():
            return
        if self.device_type == "cpu":
            dist.barrier()
        else:
            if device_id is None:
                device_id = torch.accelerator.current_device_index()
            dist.barrier(device_ids=[device_id])
        dist.destroy_process_group()


class _PoolBase(_RankedTestCase):
    """Ranks live for the class; the process group is made once per rank."""

    rank_mode: ClassVar[str] = "pool"

    @classmethod
    def backend_str(cls) -> str:
        return PG_BACKEND

    @classmethod
    def _pool_device_type(cls) -> str:
        return DEVICE_TYPE

    @classmethod
    def _harness_init_rank(cls, spec: Any) -> None:
        """Runs once in each pool rank, before any test."""
        _bind_device(cls._pool_device_type(), spec.rank)
        store = dist.FileStore(spec.store_path, spec.world_size)
        dist.init_process_group(
            backend=cls.backend_str(),
            world_size=spec.world_size,
            rank=spec.rank,
            store=store,
            timeout=timedelta(seconds=spec.pg_timeout),
        )

    @classmethod
    def _harness_exit_rank(cls, spec: Any) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def init_pg(self, eager_init: bool = False, backend: str | None = None) -> None:
        """The pool made the process group already; ``with_comms`` is a pass-through."""

    def destroy_pg(self, device_id: int | None = None) -> None:
        """The group lives as long as the pool."""

    def _pg_after_error(self) -> None:
        """Keep the pool's group: the runner replaces the ranks if it broke."""

    @classmethod
    def tearDownClass(cls) -> None:
        ranks.close_pool(cls)
        super().tearDownClass()


class DTensorContinuousTestBase(DTensorTestMixin, _PoolBase):
    """Ranks spawned once per class, tests sent to them (upstream's continuous base)."""

    rank_mode: ClassVar[str] = "pool"

    @classmethod
    def backend_str(cls) -> str:
        return PG_BACKEND

    @property
    def backend(self) -> str:
        return type(self).backend_str()


class DTensorOpTestBase(_PoolBase):
    """Upstream's threads base for op coverage: each test's ranks are threads of this process."""

    rank_mode: ClassVar[str] = "threads"

    @property
    def device_type(self) -> str:
        return DEVICE_TYPE

    @property
    def backend(self) -> str:
        return PG_BACKEND

    def build_device_mesh(self):
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(self.device_type, (self.world_size,))


TestFunc = Callable[..., object]


def _unless_torch_lacks(func: TestFunc, *args: Any, **kwargs: Any) -> Any:
    """Run ``func``; a feature the installed torch lacks makes the test a skip naming it."""
    try:
        return func(*args, **kwargs)
    except compat.TorchFeatureMissing as exc:
        raise unittest.SkipTest(str(exc)) from None


def with_comms(eager_init: TestFunc | bool = False, backend: str | None = None) -> Any:
    """Start the process group around a test (bare, or with ``eager_init=``/``backend=``)."""

    def decorator(func: TestFunc, eager_init: bool = False, backend: str | None = None) -> TestFunc:
        @functools.wraps(func)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not hasattr(self, "init_pg"):
                return func(self, *args, **kwargs)
            self.init_pg(eager_init, backend)
            try:
                out = _unless_torch_lacks(func, self, *args, **kwargs)
            except BaseException as exc:
                # When it failed, not when the rank got round to reporting it: the
                # parent shows the first failure as the cause, the others after it.
                exc._harness_failed_at = time.time()  # type: ignore[attr-defined]
                _pg_after_error = getattr(self, "_pg_after_error", None)
                if _pg_after_error is not None:
                    _pg_after_error()
                elif dist.is_initialized():
                    dist.destroy_process_group()
                raise
            self.destroy_pg()
            return out

        return wrapper

    if callable(eager_init):
        return decorator(eager_init)
    return functools.partial(decorator, eager_init=eager_init, backend=backend)


__all__ = [
    "ACCELERATOR_DIST_BACKENDS",
    "DEVICE_COUNT",
    "DEVICE_TYPE",
    "NUM_DEVICES",
    "PG_BACKEND",
    "TEST_SKIPS",
    "DTensorContinuousTestBase",
    "DTensorOpTestBase",
    "DTensorTestBase",
    "DTensorTestMixin",
    "TestSkip",
    "run_subtests",
    "skip_if_lt_x_gpu",
    "skip_unless_torch_gpu",
    "timeout_after",
    "with_comms",
]
