"""Building "mixin first" subclasses of Tianshou policies once per base class."""

from __future__ import annotations

from typing import Any


def with_mixin(mixin: type, cls: type, prefix: str, known: dict[type, type], namespace: dict[str, Any]) -> type:
    """``cls`` with ``mixin`` first in its bases (``cls`` itself if it already has it).

    Each class is created once and remembered in ``known``; it is also stored in ``namespace``
    (the defining module's globals) under its name, so pickling by reference keeps working.
    """
    if issubclass(cls, mixin):
        return cls
    mixed = known.get(cls)
    if mixed is None:
        mixed = type(f"{prefix}{cls.__name__}", (mixin, cls), {"__module__": namespace["__name__"]})
        namespace[mixed.__name__] = mixed
        known[cls] = mixed
    return mixed
