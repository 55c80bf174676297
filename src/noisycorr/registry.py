"""Name -> class tables for backbones and methods, and the ``register_*`` decorators that fill them.

This module imports no plug-in: backbones and methods import it to register themselves. Lookups that
need the built-in plug-ins loaded (``get_*_class``, ``create_*``, ``list_*``) live in
:mod:`noisycorr.factory`, which imports the plug-in packages first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from noisycorr.errors import InputError

T = TypeVar("T")

BACKBONES: dict[str, type] = {}
METHODS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = cls
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def lookup(table: dict[str, type], kind: str, name: str) -> type:
    """The class registered as ``name`` in ``table`` (one-line error naming the choices)."""
    if name not in table:
        raise InputError(f"{kind} name", f"one of {sorted(table)}", repr(name))
    return table[name]


def register_backbone(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a backbone available as ``name``."""
    return _register(BACKBONES, "backbone", name)


def register_method(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a training method available as ``name``."""
    return _register(METHODS, "method", name)
