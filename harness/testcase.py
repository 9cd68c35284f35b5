"""The assertions upstream DTensor test files call on ``self``.

Upstream's bases inherit PyTorch's private ``common_utils.TestCase``; ours
inherit :class:`TestCase` here, which gives the subset those files use --
``assertEqual`` on tensors, DTensors, LocalTensors, numbers and nested
containers, ``assertExpectedInline``, ``assertNotWarn``, ``assertEqualOnRank``
-- on top of ``torch.testing.assert_close`` and expecttest, so a file moved to
the kit needs only its import changed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import random
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import expecttest
import torch

from harness import compat, hwclass

#: Seed every test starts from, in the parent and in every rank (upstream's value).
# unittest leaves this module's frames out of failure tracebacks
__unittest = True

SEED = 1234

_Msg = str | Callable[[str], str] | None


@functools.cache
def _cpu_only() -> bool:
    return not torch.accelerator.is_available()


def set_rng_seed(seed: int = SEED) -> None:
    if _cpu_only():
        # torch.manual_seed would also queue a seed for a CUDA that may start later,
        # recording a stack trace each time (a millisecond a test, on every rank)
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


def _local_tensor_api() -> tuple[type | None, Callable[[], Any]]:
    """LocalTensor and a context that leaves LocalTensorMode, where torch has them."""

    try:
        cls = compat.private(
            "torch.distributed._local_tensor",
            "LocalTensor",
            feature="LocalTensor comparison",
            min_torch="2.10",
        )
        disable = compat.private(
            "torch.distributed._local_tensor",
            "maybe_disable_local_tensor_mode",
            feature="LocalTensor comparison",
            min_torch="2.10",
        )
    except ImportError:
        return None, contextlib.nullcontext
    return cls, disable


def _is_dtensor(x: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(x, DTensor)


def _where(path: str) -> str:
    return f" (at {path})" if path else ""


class _Comparer:
    """Walks two values side by side and raises AssertionError at the first difference."""

    def __init__(
        self, *, atol, rtol, equal_nan, exact_dtype, exact_device, exact_layout, exact_stride
    ):
        if (atol is None) != (rtol is None):
            atol = atol or 0.0
            rtol = rtol or 0.0
        self.tol = {"atol": atol, "rtol": rtol}
        self.equal_nan = equal_nan
        self.exact_dtype = exact_dtype
        self.exact_device = exact_device
        self.exact_layout = exact_layout
        self.exact_stride = exact_stride
        self.local_cls, self.no_local_mode = _local_tensor_api()

    def compare(self, x: Any, y: Any, path: str = "") -> None:
        if isinstance(x, torch.Tensor) and isinstance(y, Sequence) and not isinstance(y, str):
            y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
        elif isinstance(y, torch.Tensor) and isinstance(x, Sequence) and not isinstance(x, str):
            x = torch.as_tensor(x, dtype=y.dtype, device=y.device)
        x, y = self._numpy_to_tensor(x), self._numpy_to_tensor(y)
        x, y = _waited(x), _waited(y)

        if _is_dtensor(x) or _is_dtensor(y):
            return self._dtensors(x, y, path)
        if self.local_cls is not None and (
            isinstance(x, self.local_cls) or isinstance(y, self.local_cls)
        ):
            return self._local_tensors(x, y, path)
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            return self._tensors(x, y, path)
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return self._tensor_and_scalar(x, y, path)
        if isinstance(x, (str, bytes)) or isinstance(y, (str, bytes)):
            if x != y:
                raise AssertionError(f"Strings differ{_where(path)}: {x!r} != {y!r}")
            return None
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            return self._mappings(x, y, path)
        if isinstance(x, Sequence) and isinstance(y, Sequence):
            return self._sequences(x, y, path)
        if _is_number(x) and _is_number(y):
            return self._numbers(x, y, path)
        if isinstance(x, (set, frozenset)) and isinstance(y, (set, frozenset)):
            if x != y:
                raise AssertionError(f"Sets differ{_where(path)}: {x!r} != {y!r}")
            return None
        if x is None or y is None:
            if x is not y:
                raise AssertionError(f"None compared with a value{_where(path)}: {x!r} != {y!r}")
            return None
        if x != y:
            raise AssertionError(f"Objects differ{_where(path)}: {x!r} != {y!r}")
        return None

    @staticmethod
    def _numpy_to_tensor(x: Any) -> Any:
        if type(x).__module__ == "numpy" and hasattr(x, "dtype") and hasattr(x, "shape"):
            try:
                return torch.as_tensor(x)
            except (TypeError, RuntimeError):
                return x.tolist()
        return x

    def _dtensors(self, x: Any, y: Any, path: str) -> None:
        if not (_is_dtensor(x) and _is_dtensor(y)):
            raise TypeError(
                f"Comparing a DTensor with a non-DTensor is ambiguous{_where(path)}: call "
                ".full_tensor() to compare the whole tensor or .to_local() for this rank's shard"
            )
        if x.placements != y.placements:
            raise AssertionError(
                f"DTensor placements differ{_where(path)}: {x.placements} != {y.placements}"
            )
        if x.device_mesh != y.device_mesh:
            raise AssertionError(
                f"DTensor meshes differ{_where(path)}: {x.device_mesh} != {y.device_mesh}"
            )
        self.compare(x.to_local(), y.to_local(), path)

    def _local_tensors(self, x: Any, y: Any, path: str) -> None:
        def per_rank(v: Any) -> dict[int, Any] | None:
            return dict(v._local_tensors) if isinstance(v, self.local_cls) else None

        xs, ys = per_rank(x), per_rank(y)
        ranks = sorted((xs or ys).keys())
        with self.no_local_mode():
            for r in ranks:
                a = xs[r] if xs is not None else x
                b = ys[r] if ys is not None else y
                self.compare(a, b, f"{path} rank {r}".strip())

    def _tensors(self, x: torch.Tensor, y: torch.Tensor, path: str) -> None:
        if x.is_nested and x.layout == torch.strided:
            x = x.unbind()
        if y.is_nested and y.layout == torch.strided:
            y = y.unbind()
        if isinstance(x, tuple) or isinstance(y, tuple):
            return self.compare(x, y, path)
        where = _where(path)
        torch.testing.assert_close(
            x,
            y,
            equal_nan=self.equal_nan,
            check_device=self.exact_device,
            check_dtype=self.exact_dtype,
            check_layout=self.exact_layout,
            check_stride=self.exact_stride,
            msg=(lambda m: f"{m}\n{where.strip(' ()').capitalize()}") if where else None,
            **self.tol,
        )
        return None

    def _tensor_and_scalar(self, x: Any, y: Any, path: str) -> None:
        tensor, other = (x, y) if isinstance(x, torch.Tensor) else (y, x)
        if not _is_number(other) or tensor.numel() != 1:
            raise AssertionError(
                f"Cannot compare a tensor of shape {tuple(tensor.shape)} with "
                f"{type(other).__name__} {other!r}{_where(path)}"
            )
        value = tensor.item()
        a, b = (value, other) if tensor is x else (other, value)
        self._numbers(a, b, path)

    def _mappings(self, x: Mapping, y: Mapping, path: str) -> None:
        if set(x.keys()) != set(y.keys()):
            raise AssertionError(
                f"Mapping keys differ{_where(path)}: "
                f"only left {sorted(map(repr, set(x) - set(y)))}, "
                f"only right {sorted(map(repr, set(y) - set(x)))}"
            )
        for key in x:
            self.compare(x[key], y[key], f"{path}[{key!r}]")

    def _sequences(self, x: Sequence, y: Sequence, path: str) -> None:
        if len(x) != len(y):
            raise AssertionError(f"Lengths differ{_where(path)}: {len(x)} != {len(y)}")
        for i, (a, b) in enumerate(zip(x, y)):
            self.compare(a, b, f"{path}[{i}]")

    def _numbers(self, x: Any, y: Any, path: str) -> None:
        xs, ys = _local_ints(x), _local_ints(y)
        if xs is not None or ys is not None:  # a simulated rank's int: compare rank by rank
            for r in sorted((xs or ys).keys()):
                a = xs[r] if xs is not None else x
                b = ys[r] if ys is not None else y
                self._numbers(a, b, f"{path} rank {r}".strip())
            return
        x, y = _plain_number(x), _plain_number(y)
        no_tolerance = self.tol["atol"] is None and self.tol["rtol"] is None
        if _is_int(x) and _is_int(y) and no_tolerance:  # ids, hashes, sizes: exact, as upstream
            if x != y:
                raise AssertionError(f"Integers differ{_where(path)}: {x!r} != {y!r}")
            return
        if isinstance(x, bool) and isinstance(y, bool):
            if x != y:
                raise AssertionError(f"Booleans differ{_where(path)}: {x} != {y}")
            return
        if isinstance(x, complex) or isinstance(y, complex):
            close = _complex_close(x, y, self.tol, self.equal_nan)
        else:
            x, y = float(x), float(y)
            if math.isnan(x) or math.isnan(y):
                close = self.equal_nan and math.isnan(x) and math.isnan(y)
            elif math.isinf(x) or math.isinf(y):
                close = x == y
            else:
                atol = self.tol["atol"] if self.tol["atol"] is not None else 1e-5
                rtol = self.tol["rtol"] if self.tol["rtol"] is not None else 1.3e-6
                close = abs(x - y) <= atol + rtol * abs(y)
        if not close:
            raise AssertionError(f"Scalars are not close{_where(path)}: {x!r} != {y!r}")


def _waited(x: Any) -> Any:
    """The value behind an AsyncCollectiveTensor (a functional collective's lazy result)."""
    act = compat.async_collective_tensor_type()
    return x.trigger_wait() if act is not None and isinstance(x, act) else x


def _local_ints(x: Any) -> dict[int, int] | None:
    """Per-rank values of a SymInt made by LocalTensor mode (``self.rank`` and its arithmetic)."""
    if isinstance(x, torch.SymInt):
        return getattr(x.node, "_local_ints", None)
    return None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (bool, int, float, complex, enum.Enum, torch.SymInt, torch.SymFloat)) or (
        type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "shape", None) == ()
    )


def _plain_number(x: Any) -> Any:
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, (torch.SymInt, torch.SymFloat)) or type(x).__module__ == "numpy":
        try:
            return (
                x.item()
                if hasattr(x, "item")
                else (int(x) if isinstance(x, torch.SymInt) else float(x))
            )
        except Exception:
            return x
    return x


def _complex_close(x: Any, y: Any, tol: dict, equal_nan: bool) -> bool:
    x, y = complex(x), complex(y)
    for a, b in ((x.real, y.real), (x.imag, y.imag)):
        if math.isnan(a) or math.isnan(b):
            if not (equal_nan and math.isnan(a) and math.isnan(b)):
                return False
    x = complex(0 if math.isnan(x.real) else x.real, 0 if math.isnan(x.imag) else x.imag)
    y = complex(0 if math.isnan(y.real) else y.real, 0 if math.isnan(y.imag) else y.imag)
    atol = tol["atol"] if tol["atol"] is not None else 1e-5
    rtol = tol["rtol"] if tol["rtol"] is not None else 1.3e-6
    return abs(x - y) <= atol + rtol * abs(y)


#: torch 2.15's ``hw_classification`` enum where the installed torch has it, else the
#: kit's twin (same names and values); the filter reads either (harness.hwclass).
HardwareClassification = compat.hardware_classification() or hwclass.KitHardwareClassification


def _capabilities_of(cls: type) -> dict[str, bool]:
    from harness import requirements

    return requirements.capability_answers(cls)


class TestCase(expecttest.TestCase):
    """unittest.TestCase plus the assertions upstream DTensor tests use."""

    # Minimum atol/rtol a class may set, as upstream's ``precision``/``rel_tol``.
    precision: float = 0.0
    rel_tol: float = 0.0
    maxDiff = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # torch's @requires_capabilities asks type(self).get_capabilities() at run time;
        # set on every class, it answers before torch's device-type base in an
        # instantiate_device_type_tests class, whose MRO puts that base first
        cls.get_capabilities = classmethod(_capabilities_of)  # type: ignore[assignment]

    @classmethod
    def get_capabilities(cls) -> dict[str, bool]:
        """The capabilities torch's decorator asks about, answered by the kit's rules."""
        return _capabilities_of(cls)

    def setUp(self) -> None:
        super().setUp()
        set_rng_seed()

    def assertEqual(  # noqa: N802 (unittest's naming)
        self,
        x: Any,
        y: Any,
        msg: _Msg = None,
        *,
        atol: float | None = None,
        rtol: float | None = None,
        equal_nan: bool = True,
        exact_dtype: bool = True,
        exact_device: bool = False,
        exact_layout: bool = False,
        exact_stride: bool = False,
        exact_is_coalesced: bool = False,
    ) -> None:
        """Tensors, DTensors, LocalTensors, numbers and nested containers, as upstream."""
        __tracebackhide__ = True
        if atol is None and rtol is None and (self.precision or self.rel_tol):
            atol, rtol = self.precision, self.rel_tol
        comparer = _Comparer(
            atol=atol,
            rtol=rtol,
            equal_nan=equal_nan,
            exact_dtype=exact_dtype,
            exact_device=exact_device,
            exact_layout=exact_layout,
            exact_stride=exact_stride,
        )
        try:
            comparer.compare(x, y)
        except AssertionError as exc:
            generated = str(exc)
            if callable(msg):
                text = msg(generated)
            elif msg is not None:
                text = f"{generated}\n{msg}" if self.longMessage else str(msg)
            else:
                text = generated
            raise self.failureException(text) from None

    def assertNotEqual(  # noqa: N802
        self, x: Any, y: Any, msg: _Msg = None, *, atol=None, rtol=None, **kwargs: Any
    ) -> None:
        try:
            self.assertEqual(x, y, atol=atol, rtol=rtol, **kwargs)
        except AssertionError:
            return
        raise self.failureException(msg or f"{x!r} == {y!r}, expected them to differ")

    def assertExpectedInline(  # noqa: N802
        self,
        actual: Any,
        expect: str,
        skip: int = 0,
        ignore_comments: bool = False,
        ignore_empty_lines: bool = False,
    ) -> None:
        actual = actual if isinstance(actual, str) else str(actual)
        if ignore_comments:
            actual, expect = _drop_lines(actual, "#"), _drop_lines(expect, "#")
        if ignore_empty_lines:
            actual, expect = _drop_blank(actual), _drop_blank(expect)
        super().assertExpectedInline(actual, expect, skip=skip + 1)

    def assertNotWarn(self, fn: Callable[[], Any], msg: str = "") -> None:  # noqa: N802
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            previous = torch.is_warn_always_enabled()
            torch.set_warn_always(True)
            try:
                fn()
            finally:
                torch.set_warn_always(previous)
        if caught:
            shown = "; ".join(f"{w.category.__name__}: {w.message}" for w in caught)
            raise self.failureException(msg or f"expected no warning, got {shown}")

    def _attempt_load_from_subprocess(
        self, file: Any, import_string: str, expected_failure_message: str | None = None
    ) -> None:
        """``torch.load(file, weights_only=True)`` in a fresh interpreter after ``import_string``.

        Proves a saved object loads where only ``import_string`` was imported (upstream's
        test_dtensor_save_load_import uses it); with ``expected_failure_message``, proves
        the load fails with that message instead.
        """
        import subprocess
        import sys

        script = f"import torch;{import_string}torch.load({str(file)!r}, weights_only=True)"
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
        )
        if expected_failure_message is None:
            if proc.returncode != 0:
                raise AssertionError(f"loading {file} in a subprocess failed:\n{proc.stderr}")
            return
        with self.assertRaisesRegex(RuntimeError, re.escape(expected_failure_message)):
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr)

    def assertCollectives(  # noqa: N802
        self,
        expected: Any,
        *,
        mesh: Any = None,
        mesh_dim: str | int | None = None,
        bytes_per_rank: int | None = None,
    ) -> Any:
        """A context: the block issues exactly ``expected`` collectives on this rank.

        ``expected``: ``{kind: count}`` (on ``mesh_dim`` of ``mesh`` when given) or
        ``{(kind, mesh_dim): count}``; ``bytes_per_rank``: what this rank hands to
        them in all. The same in native, ``-sim`` and ``fake`` cells (harness.comms).
        """
        from harness.comms import expect_collectives

        return expect_collectives(
            expected, mesh=mesh, mesh_dim=mesh_dim, bytes_per_rank=bytes_per_rank
        )

    def assertEqualOnRank(self, x: Any, y: Any, msg: _Msg = None, *, rank: int = 0) -> None:  # noqa: N802
        """Compare only on ``rank`` (ranks that share one RNG agree only there)."""
        if self.rank == rank:
            self.assertEqual(x, y, msg)

    def assertNotEqualOnRank(self, x: Any, y: Any, msg: _Msg = None, *, rank: int = 0) -> None:  # noqa: N802
        if self.rank == rank:
            self.assertNotEqual(x, y, msg)


def _drop_lines(text: str, prefix: str) -> str:
    return "\n".join(line for line in text.split("\n") if not line.strip().startswith(prefix))


def _drop_blank(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if line.strip())


def run_tests(argv: list[str] | None = None) -> None:
    """``python test_file.py`` entry point: runs the file's tests with unittest.

    PyTorch's ``run_tests`` refuses classes that do not extend its private
    TestCase, so a migrated file takes this one (``harness migrate`` rewrites it).
    """
    import sys
    import unittest

    unittest.main(module="__main__", argv=argv if argv is not None else sys.argv)
