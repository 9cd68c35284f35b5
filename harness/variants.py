"""A test class run in another mode without being edited: the mode's mixin replaces
what the class inherits from the kit, never what the class itself sets (its own
``device_type``, ``build_device_mesh``, ...). Used by the LocalTensor and fake modes."""

from __future__ import annotations

#: where the kit's own definitions live: what a class inherits from these is replaceable
KIT_MODULES = (
    "harness.bases",
    "harness.testcase",
    "harness.local.bases",
    "harness.local.runner",
    "harness.fake",
    "unittest.case",
)
_made: dict[tuple[type, type], type] = {}


def _defined_by_kit(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass.__module__ in KIT_MODULES
    return True


def mode_variant(cls: type, mixin: type) -> type:
    """``cls`` with ``mixin``'s overrides where ``cls`` did not set its own; made once."""
    if issubclass(cls, mixin):
        return cls
    variant = _made.get((cls, mixin))
    if variant is None:
        overrides = {
            name: value
            for name, value in vars(mixin).items()
            if not name.startswith("__") and _defined_by_kit(cls, name)
        }
        overrides["__module__"] = cls.__module__
        overrides["__qualname__"] = cls.__qualname__
        variant = type(cls.__name__, (cls,), overrides)
        _made[(cls, mixin)] = variant
    return variant
