"""A faster ``__init__`` for the frozen, slotted dataclasses on the path of every message.

``dataclasses`` initialises each field of a frozen instance with
``object.__setattr__(self, name, value)``, which looks ``name`` up in the class every
time. A message through the relay builds about ten such values (the decoded message,
its audit event, ack and event, deliveries, the outcome), and that lookup made up a
noticeable part of the relay's cost per message. :func:`quick_init` gives a class an
``__init__`` that calls each slot's descriptor directly: same parameters, defaults and
``__post_init__``, and the instances are just as frozen (``__setattr__`` still refuses).

Only plain classes qualify: frozen, slotted, every field a positional ``__init__``
parameter with no default factory. Anything else is refused when the module is
imported, so a change to a class cannot silently change how it is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

STOCK_INITS: dict[type, Callable[..., None]] = {}
"""The ``__init__`` dataclasses generated, per class (tests compare both)."""


def quick_init(cls: type[T]) -> type[T]:
    """Replace the dataclass-generated ``__init__`` of ``cls`` (see the module doc)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: quick_init needs a frozen, slotted dataclass")
    stock = cls.__dict__["__init__"]
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    if list(inspect.signature(stock).parameters)[1:] != names:
        raise TypeError(f"{cls.__name__}: every field must be an __init__ parameter")
    namespace: dict[str, Any] = {}
    args, body = [], []
    for i, f in enumerate(fields):
        slot = cls.__dict__.get(f.name)
        if (
            not isinstance(slot, types.MemberDescriptorType)
            or not f.init
            or f.kw_only
            or f.default_factory is not dataclasses.MISSING
        ):
            raise TypeError(f"{cls.__name__}.{f.name}: not a plain positional slot field")
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            namespace[f"_default_{i}"] = f.default
            args.append(f"{f.name}=_default_{i}")
        namespace[f"_set_{i}"] = slot.__set__
        body.append(f"    _set_{i}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # noqa: S102 - the source is built from field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = stock.__doc__
    STOCK_INITS[cls] = stock
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


__all__ = ["STOCK_INITS", "quick_init"]
