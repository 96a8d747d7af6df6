"""A faster ``__init__`` for the frozen dataclasses built once per message.

A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``
(its own ``__setattr__`` refuses), which costs about five times a plain attribute store: a
14-field record took ~2 µs to build, and the per-message path builds several (hops, the
detected server, the record with its new ``last_seen``, the verdict, the outcome).  Nothing is
wrong with that but the price, so :func:`fast_init` keeps the class exactly as it is (frozen,
slots, equality, hash, repr, pickling, ``dataclasses.replace``) and only swaps the constructor
for one that, while the instance is being built (and not yet visible to anyone), gives it a
*twin* class with the same slots and no ``__setattr__`` of its own, stores the fields as plain
attributes, and gives it its real class back.  Python allows that class switch exactly when
both classes lay out their instances alike (same ``__slots__``, same base), which the twin is
built to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """Default of a field with a ``default_factory``: call the factory."""


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass ``cls`` a constructor with the same signature and
    result that stores its fields as plain attributes (see the module docstring).

    Only for classes without ``__post_init__`` or ``init=False`` fields (checked).  An
    instance of a subclass is built by the original constructor."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__} has a base class: its layout is not the twin's")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # checked just above
    if any(not f.init for f in fields):
        raise TypeError(f"{cls.__name__} has init=False fields")
    twin = type(cls.__name__, (object,), {"__slots__": cls.__dict__["__slots__"]})
    twin.__qualname__ = cls.__qualname__
    namespace: dict[str, Any] = {
        "_set": object.__setattr__,
        "_cls": cls,
        "_twin": twin,
        "_factory": _Factory,
        "_original": cls.__init__,
    }
    positional: list[str] = []
    keyword: list[str] = []
    stores: list[str] = []
    names: list[str] = []
    for f in fields:
        name = f.name
        names.append(name)
        param = name
        if f.default_factory is not dataclasses.MISSING:
            namespace[f"_make_{name}"] = f.default_factory
            param = f"{name}=_factory"
            stores.append(f"    self.{name} = _make_{name}() if {name} is _factory else {name}")
        else:
            if f.default is not dataclasses.MISSING:
                namespace[f"_default_{name}"] = f.default
                param = f"{name}=_default_{name}"
            stores.append(f"    self.{name} = {name}")
        (keyword if f.kw_only else positional).append(param)
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    passed = ", ".join([f"{n}={n}" for n in names])
    source = "\n".join(
        [
            f"def __init__({signature}):",
            "    if type(self) is not _cls:",
            f"        _original(self, {passed})",
            "        return",
            '    _set(self, "__class__", _twin)',
            *stores,
            "    self.__class__ = _cls",
        ]
    )
    exec(source, namespace)  # generated from the field names, as dataclasses does
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    type.__setattr__(cls, "__init__", init)
    return cls


__all__ = ["fast_init"]
