"""What a test needs, stated as capabilities rather than backend or device names.

``@requires_capabilities(Capability.distributed.backend)`` admits a test on any
accelerator whose collective backend is registered and available here (nccl,
xccl, hccl or a vendor's, after its plugin is imported), where a list such as
``["nccl", "xccl"]`` would silently leave out the accelerators it does not
name. It is the public twin of PyTorch's private capability gates (its issue
185590). The answer is decided in the parent before any rank is spawned (the
bases ask :func:`unmet` through ``skips.requirement_skip``) and again when the
test body runs, so threads and LocalTensor modes skip the same way.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import unittest
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# unittest leaves this module's frames out of failure tracebacks
__unittest = True


@dataclass(frozen=True)
class Requirement:
    """One capability: its dotted name and how to tell why it is missing here."""

    name: str
    description: str
    check: Callable[[], str | None]  # None when met, else the reason

    def __str__(self) -> str:
        return self.name


def _backend() -> str:
    from harness import devices

    return os.environ.get("HARNESS_BACKEND", "").strip() or devices.PG_BACKEND


def _backend_missing() -> str | None:
    from harness import hosts

    backend = _backend()
    if hosts.backend_available(backend):
        return None
    return f"the cell's backend {backend!r} is not registered or not available here"


def _module_missing(module: str, attr: str | None = None) -> Callable[[], str | None]:
    def check() -> str | None:
        missing = _backend_missing()
        if missing:
            return missing
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found and attr:
            found = hasattr(importlib.import_module(module), attr)
        what = f"{module}.{attr}" if attr else module
        return None if found else f"this torch has no {what}"

    return check


def _accelerator_missing() -> str | None:
    from harness import devices

    if devices.has_accelerator():
        return None
    return f"needs an accelerator device; this cell runs on {devices.DEVICE_TYPE} with none"


class _Namespace:
    def __init__(self, prefix: str, **entries: tuple[str, Callable[[], str | None]]):
        for key, (description, check) in entries.items():
            setattr(self, key, Requirement(f"{prefix}.{key}", description, check))

    def __iter__(self):
        return iter(v for v in vars(self).values() if isinstance(v, Requirement))


class Capability:
    """The capabilities a test may require, grouped as PyTorch groups them."""

    distributed = _Namespace(
        "distributed",
        backend=("the cell's collective backend is registered and available", _backend_missing),
        dtensor=("DTensor over that backend", _module_missing("torch.distributed.tensor")),
        fsdp=("FSDP2 over that backend", _module_missing("torch.distributed.fsdp", "fully_shard")),
    )
    device = _Namespace(
        "device",
        accelerator=("an accelerator device per rank, not the cpu", _accelerator_missing),
    )

    @classmethod
    def all(cls) -> list[Requirement]:
        return [*cls.distributed, *cls.device]


def unmet(requirements: Iterable[Requirement]) -> str | None:
    """Why the first unmet requirement is unmet here, or None when all are met."""
    for requirement in requirements:
        reason = requirement.check()
        if reason is not None:
            return f"requires {requirement.name}: {reason}"
    return None


def requires_capabilities(*requirements: Requirement) -> Callable[[T], T]:
    """Skip a test (or every test of a class) unless this cell has ``requirements``.

    Unknown names fail at decoration time, so a typo is never a silent skip.
    """
    for requirement in requirements:
        if not isinstance(requirement, Requirement):
            known = ", ".join(r.name for r in Capability.all())
            raise TypeError(
                f"requires_capabilities({requirement!r}): pass Capability members ({known})"
            )

    def decorate(target: T) -> T:
        if isinstance(target, type):
            previous = getattr(target, "_harness_capabilities", ())
            target._harness_capabilities = (*previous, *requirements)  # type: ignore[attr-defined]
            return target

        @functools.wraps(target)  # type: ignore[arg-type]
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            reason = unmet(requirements)
            if reason is not None:
                raise unittest.SkipTest(reason)
            return target(*args, **kwargs)  # type: ignore[operator]

        previous = getattr(target, "_harness_capabilities", ())
        wrapper._harness_capabilities = (*previous, *requirements)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def required_by(test: unittest.TestCase, method: str) -> tuple[Requirement, ...]:
    """What ``test``'s class and its ``method`` require, by the kit's decorator or torch's."""
    fn = getattr(type(test), method, None)
    return (
        *getattr(type(test), "_harness_capabilities", ()),
        *getattr(fn, "_harness_capabilities", ()),
        *(_from_torch(type(test), name) for name in _torch_capabilities(fn)),
    )


# --- torch's own @requires_capabilities (torch >= 2.15), decided by the kit's rules ------


def _torch_capabilities(fn: Any) -> tuple[str, ...]:
    if fn is None:
        return ()
    from harness import compat

    return compat.torch_required_capabilities(fn)


def _by_name() -> dict[str, Requirement]:
    return {r.name: r for r in Capability.all()}


def _from_torch(cls: type, name: str) -> Requirement:
    """A capability torch's decorator names: the kit's rule where the kit has one
    (``distributed.backend``), else what torch's test base for the device declares."""
    known = _by_name().get(name)
    if known is not None:
        return known

    def check() -> str | None:
        device = _device_type(cls)
        answer = _torch_answers(cls, device).get(name)
        if answer is False:
            return f"torch's {device} test base does not support it"
        return None  # supported, or declared nowhere: torch's wrapper fails the test, naming it

    return Requirement(name, "declared by torch's device-type test base", check)


def _device_type(cls: type) -> str:
    # an instantiated device-type class's base says it as a string (the kit's is a property)
    for base in cls.__mro__:
        value = vars(base).get("device_type")
        if isinstance(value, str):
            return value
    from harness import devices

    return devices.DEVICE_TYPE


def _torch_answers(cls: type, device: str) -> dict[str, bool]:
    from harness import compat

    return compat.torch_device_capabilities(cls, device)


def capability_answers(cls: type) -> dict[str, bool]:
    """``get_capabilities()`` of a kit class, which torch's decorator asks at run time:
    torch's device base's answers, then the kit's own capabilities by the kit's rules."""
    answers = dict(_torch_answers(cls, _device_type(cls)))
    for requirement in Capability.all():
        answers[requirement.name] = requirement.check() is None
    return answers


__all__ = [
    "Capability",
    "Requirement",
    "capability_answers",
    "required_by",
    "requires_capabilities",
    "unmet",
]
