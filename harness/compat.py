"""The one place that touches torch's private modules.

PyTorch's DTensor internals (``torch.distributed._local_tensor``,
``torch.distributed.tensor._*``) move between releases. Every such import in
the kit goes through this module, behind a version gate that names the feature
and the minimum torch that has it, so a user on an older torch gets one clear
error instead of an AttributeError deep inside a test.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from functools import cache
from typing import Any


class TorchFeatureMissing(ImportError):
    """The installed torch lacks a private API the kit needs for one feature."""


@cache
def torch_version() -> tuple[int, int]:
    import torch

    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def private(module: str, name: str, *, feature: str, min_torch: str) -> Any:
    """Return ``module.name`` (``name`` may be dotted) or raise TorchFeatureMissing."""
    try:
        return functools.reduce(getattr, name.split("."), importlib.import_module(module))
    except (ImportError, AttributeError) as exc:
        import torch

        raise TorchFeatureMissing(
            f"{feature} needs torch >= {min_torch} ({module}.{name}); "
            f"the installed torch is {torch.__version__}. "
            f"Upgrade torch, or skip this feature."
        ) from exc


# --- models, converter, op checks, shard order (issue 5) ---------------------


def local_tensor_type() -> type | None:
    """LocalTensor's class, or None where torch has no LocalTensor mode.

    The converter treats a LocalTensor like a plain tensor; without LocalTensor
    mode nothing can be one, so None is a fine answer rather than an error.
    """
    try:
        return private(
            "torch.distributed._local_tensor",
            "LocalTensor",
            feature="LocalTensor",
            min_torch="2.10",
        )
    except TorchFeatureMissing:
        return None


def shard_order_entry() -> Any:
    """torch's ShardOrderEntry (tensor dim -> ordered mesh dims)."""
    return private(
        "torch.distributed.tensor._dtensor_spec",
        "ShardOrderEntry",
        feature="shard-order helpers",
        min_torch="2.10",
    )


def redistribute_local_tensor() -> Any:
    """The spec-to-spec redistribution that honours a shard order."""
    return private(
        "torch.distributed.tensor._redistribute",
        "redistribute_local_tensor",
        feature="redistribution with a shard order",
        min_torch="2.10",
    )


def concatenate_meshes() -> Any:
    """DeviceMesh._concatenate: one n-D mesh from 1-D submeshes of one root."""
    from torch.distributed.device_mesh import DeviceMesh

    fn = getattr(DeviceMesh, "_concatenate", None)
    if fn is None:
        import torch

        raise TorchFeatureMissing(
            "ExpertParallelWithTP needs torch >= 2.10 (DeviceMesh._concatenate); "
            f"the installed torch is {torch.__version__}. Upgrade torch, or use "
            "ExpertParallel (EP without TP)."
        )
    return fn


def sharding_propagator() -> Any:
    """The process-wide sharding propagator DTensor dispatches through."""
    from torch.distributed.tensor import DTensor

    try:
        return DTensor._op_dispatcher.sharding_propagator
    except AttributeError as exc:
        import torch

        raise TorchFeatureMissing(
            "op_strategy_context needs torch >= 2.11 (DTensor._op_dispatcher."
            f"sharding_propagator); the installed torch is {torch.__version__}."
        ) from exc


def register_op_strategy() -> Any:
    """The decorator that registers a sharding strategy for an aten op."""
    return private(
        "torch.distributed.tensor._ops.utils",
        "register_op_strategy",
        feature="op_strategy_context",
        min_torch="2.11",
    )


def clear_sharding_prop_cache() -> Any:
    """Drop cached sharding decisions, so a swapped strategy takes effect."""
    return private(
        "torch.distributed.tensor.debug",
        "_clear_sharding_prop_cache",
        feature="op_strategy_context",
        min_torch="2.11",
    )


# --- LocalTensor mode (harness.local) ----------------------------------------

#: First torch release that ships torch.distributed._local_tensor.
LOCAL_TENSOR_MIN_TORCH = "2.10"


def local_tensor_module() -> Any:
    """``torch.distributed._local_tensor``: one process simulating every rank."""
    try:
        return importlib.import_module("torch.distributed._local_tensor")
    except ImportError as exc:
        import torch

        raise TorchFeatureMissing(
            f"LocalTensor mode needs torch >= {LOCAL_TENSOR_MIN_TORCH} "
            "(torch.distributed._local_tensor); the installed torch is "
            f"{torch.__version__}. Upgrade torch, or run this cell in native mode."
        ) from exc


def local_tensor_missing() -> str | None:
    """Why LocalTensor mode cannot run on the installed torch, or None when it can."""
    try:
        local_tensor_module()
    except TorchFeatureMissing as exc:
        return str(exc)
    return None


def local_tensor_collective_groups() -> Any:
    """The helper that maps one process group to every simulated rank's fiber."""
    return private(
        "torch.distributed._local_tensor._c10d",
        "_prepare_collective_groups",
        feature="LocalTensor mode",
        min_torch=LOCAL_TENSOR_MIN_TORCH,
    )


def register_fake_backend() -> None:
    """Register c10d's ``fake`` backend, as torch's own testing module does.

    torch registers ``fake`` only when ``torch.testing._internal`` is imported;
    the kit must not import that, so it registers the same C++ process group.
    A no-op when something has registered it already.
    """
    import torch.distributed as dist

    from harness import hosts

    if backend_registered("fake"):
        return
    fake_pg = private(
        "torch._C._distributed_c10d",
        "FakeProcessGroup",
        feature="LocalTensor mode (fake process group)",
        min_torch=LOCAL_TENSOR_MIN_TORCH,
    )

    def create(common_opts: Any, backend_opts: Any) -> Any:
        return fake_pg._create_internal(
            common_opts.group_rank, common_opts.group_size, backend_opts
        )

    dist.Backend.register_backend("fake", create, extended_api=True, devices=hosts.device_types())


#: torch whose c10d FakeProcessGroup the kit registers itself (_create_internal)
FAKE_GROUP_MIN_TORCH = "2.10"
#: the oldest torch whose testing package registers the ``fake`` backend
FAKE_GROUP_OLDEST_TORCH = "2.2"


def fake_group_missing() -> str | None:
    """Why this torch cannot start the ``fake`` process group, or None once it can.

    torch registers ``fake`` only from its testing package
    (``torch.testing._internal.distributed.fake_pg``) and has no public way to
    register it (2.13 lists the name but refuses it until someone registers it).
    From 2.10 the kit registers the same C++ group itself; before that it imports
    the testing module, here and only here.
    """
    if backend_registered("fake"):
        return None
    try:  # the C++ group with the factory the kit's registration calls
        private(
            "torch._C._distributed_c10d",
            "FakeProcessGroup._create_internal",
            feature="fake mode",
            min_torch=FAKE_GROUP_MIN_TORCH,
        )
        register_fake_backend()
        return None
    except TorchFeatureMissing:
        pass
    try:
        importlib.import_module("torch.testing._internal.distributed.fake_pg")
    except ImportError as exc:
        import torch

        return (
            f"fake mode needs torch's fake process group (torch >= {FAKE_GROUP_OLDEST_TORCH}; "
            f"the installed torch is {torch.__version__}: {exc}); upgrade torch, or run "
            "a native or -sim cell instead"
        )
    return None if backend_registered("fake") else "torch's testing package did not register fake"


def init_fake_group(rank: int, world_size: int) -> None:
    """This process becomes rank ``rank`` of a fake group of ``world_size``."""
    import torch.distributed as dist

    missing = fake_group_missing()
    if missing:
        raise TorchFeatureMissing(missing)
    dist.init_process_group("fake", store=dist.HashStore(), rank=rank, world_size=world_size)


def set_record_function(enabled: bool) -> None:
    """Turn profiler record-function hooks on or off (off speeds LocalTensor up)."""
    import torch

    torch.autograd._enable_record_function(enabled)


def reset_dtensor_rng_tracker() -> None:
    """Forget DTensor's RNG tracker, so the next test seeds a fresh one."""
    random_mod = importlib.import_module("torch.distributed.tensor._random")
    random_mod._rng_tracker = None


@cache  # asked on every comparison; the answer cannot change in a process
def async_collective_tensor_type() -> type | None:
    """Functional collectives' lazy result, which comparisons must wait on; None if absent."""
    try:
        return private(
            "torch.distributed._functional_collectives",
            "AsyncCollectiveTensor",
            feature="comparing async collective results",
            min_torch="2.1",
        )
    except TorchFeatureMissing:
        return None


# --- c10d internals behind the threads base (harness.ranks.threaded_pg) --------

#: The threads base swaps c10d's per-process tables for per-thread ones and puts
#: the C++ group registry in its thread-isolation mode; all of it private c10d.
_THREADS = {"feature": "the threads base (its own process group)", "min_torch": "2.7"}
_C10D = "torch.distributed.distributed_c10d"


def c10d_world_class() -> type:
    """c10d's ``_World``: the tables of process groups a process keeps."""
    return private(_C10D, "_World", **_THREADS)


def c10d_world() -> Any:
    """The ``_World`` object c10d reads its groups from."""
    return private(_C10D, "_world", **_THREADS)


def set_c10d_world(world: Any) -> None:
    """Make c10d read its groups from ``world`` (the threads base's per-thread switch)."""
    c10d_world()  # the gate: a torch without _world gets the one clear error
    importlib.import_module(_C10D)._world = world


def backend_registered(name: str) -> bool:
    """Whether a c10d backend named ``name`` has been registered (built-ins excluded)."""
    return name.upper() in private(_C10D, "Backend._plugins", **_THREADS)


@cache
def set_thread_isolation_mode() -> Any:
    """The switch that gives each thread its own C++ registry of process groups."""
    return private("torch._C._distributed_c10d", "_set_thread_isolation_mode", **_THREADS)


@cache
def create_work_from_future() -> Any:
    """Wrap a completed Future as the Work object a collective returns."""
    return private("torch._C._distributed_c10d", "_create_work_from_future", **_THREADS)


# --- OpInfo database (the ops capability, issue 18) --------------------------

#: The one sanctioned use of torch.testing._internal: op samples for the ops capability.
OP_DB_MIN_TORCH = "2.7"

#: Sample sizes the database's generators read, set as PyTorch's own DTensor op
#: sweep sets them, so every world size up to 4 shards the samples evenly.
OP_SAMPLE_SIZES = {"L": 24, "M": 12, "S": 4, "XS": 2}


@cache
def op_database() -> tuple[Any, ...]:
    """torch's OpInfo list (``common_methods_invocations.op_db``), sample sizes set once."""
    if torch_version() < tuple(int(p) for p in OP_DB_MIN_TORCH.split(".")):
        import torch

        raise TorchFeatureMissing(
            f"the ops capability needs torch >= {OP_DB_MIN_TORCH}; "
            f"the installed torch is {torch.__version__}."
        )
    module = importlib.import_module("torch.testing._internal.common_methods_invocations")
    for name, value in OP_SAMPLE_SIZES.items():
        setattr(module, name, value)
    return tuple(private(module.__name__, "op_db", feature="the ops capability", min_torch="2.7"))


def op_samples(op: Any, device: str, dtype: Any, *, requires_grad: bool, seed: int) -> Any:
    """``op``'s SampleInputs, each drawn right after seeding, as ``OpInfo.sample_inputs`` does.

    Not through ``sample_inputs`` itself: it walks the caller's whole stack (with
    source lines) twice per call to find the running test, which cost a sixth of
    the sweep; and it seeds from that test's name, so the same op would draw
    different samples in a pytest test and in a worker.
    """
    samples = iter(op.sample_inputs_func(op, device, dtype, requires_grad))
    while True:
        seed_all(seed, device)
        try:
            yield next(samples)
        except StopIteration:
            return


def seed_all(seed: int, device: str = "cpu") -> None:
    """Seed torch on CPU and ``device``, Python's ``random`` and numpy's, as a sample draw does.

    Not ``torch.manual_seed``: it also queues a seed for every device module not yet
    initialised, formatting a stack trace for each, which cost 2.4% of the sweep.
    """
    import random

    import torch

    torch.default_generator.manual_seed(seed)
    module = getattr(torch, device, None) if device != "cpu" else None
    if module is not None and hasattr(module, "manual_seed_all"):
        module.manual_seed_all(seed)
    random.seed(seed)
    numpy_random = getattr(sys.modules.get("numpy"), "random", None)
    if numpy_random is not None:
        numpy_random.seed(seed)


# --- torch 2.15's test idioms: hw_classification, requires_capabilities ---------

_COMMON_UTILS = "torch.testing._internal.common_utils"
_COMMON_DEVICE_TYPE = "torch.testing._internal.common_device_type"


def hardware_classification() -> Any:
    """torch's ``HardwareClassification`` enum (torch >= 2.15), or None where it has none."""
    try:
        return private(
            _COMMON_UTILS, "HardwareClassification", feature="hw_classification", min_torch="2.15"
        )
    except TorchFeatureMissing:
        return None


def torch_requires_capabilities() -> Any:
    """torch's own ``requires_capabilities`` decorator (torch >= 2.15), or None."""
    try:
        return private(
            _COMMON_DEVICE_TYPE,
            "requires_capabilities",
            feature="torch's requires_capabilities",
            min_torch="2.15",
        )
    except TorchFeatureMissing:
        return None


def torch_required_capabilities(fn: Any) -> tuple[str, ...]:
    """The capabilities torch's ``requires_capabilities`` put on ``fn`` (and what it wraps).

    torch keeps them only in its wrapper's closure (``caps_set``): the wrapper is told
    by its code object (every wrapper torch's decorator makes shares one), and only
    that closure cell is read.
    """
    code = _torch_capability_wrapper_code()
    found: list[str] = []
    seen = 0
    while code is not None and fn is not None and seen < 16:
        if getattr(fn, "__code__", None) is code and fn.__closure__ is not None:
            caps = fn.__closure__[code.co_freevars.index("caps_set")].cell_contents
            found.extend(sorted(str(c) for c in caps))
        fn = getattr(fn, "__wrapped__", None)
        seen += 1
    return tuple(dict.fromkeys(found))


@cache
def _torch_capability_wrapper_code() -> Any:
    decorator = torch_requires_capabilities()
    if decorator is None:
        return None
    code = decorator("probe")(lambda self: None).__code__
    return code if "caps_set" in code.co_freevars else None


def torch_device_capabilities(cls: type, device_type: str) -> dict[str, bool]:
    """What torch's device-type test base says this device supports ({} where none).

    ``cls`` an instantiated device-type class: its own base answers; otherwise the
    base torch has for ``device_type`` (CPUTestBase for cpu, ...).
    """
    try:
        module = importlib.import_module(_COMMON_DEVICE_TYPE)
    except ImportError:
        return {}
    root = getattr(module, "DeviceTypeTestBase", None)
    if root is None or not hasattr(root, "_capabilities"):
        return {}  # torch < 2.15: no capability map
    base = next((b for b in cls.__mro__ if issubclass(b, root) and b is not root), None)
    if base is None:
        bases = [*module.get_device_type_test_bases(), *vars(module).values()]
        base = next(
            (
                b
                for b in bases
                if isinstance(b, type)
                and issubclass(b, root)
                and getattr(b, "device_type", None) == device_type
            ),
            None,
        )
    if base is None:
        return {}
    return {str(k): bool(fn()) for k, fn in base._capabilities().items()}
