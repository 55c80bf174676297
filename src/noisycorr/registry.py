"""Name -> class registries for backbones and methods (``register_*`` / ``create_*`` / ``list_*``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from noisycorr.errors import InputError

T = TypeVar("T")

_BACKBONES: dict[str, type] = {}
_METHODS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = cls
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _get(table: dict[str, type], kind: str, name: str) -> type:
    _load_builtins()
    if name not in table:
        raise InputError(f"{kind} name", f"one of {sorted(table)}", repr(name))
    return table[name]


def register_backbone(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a backbone available as ``name``."""
    return _register(_BACKBONES, "backbone", name)


def register_method(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a training method available as ``name``."""
    return _register(_METHODS, "method", name)


def get_backbone_class(name: str) -> type:
    return _get(_BACKBONES, "backbone", name)


def get_method_class(name: str) -> type:
    return _get(_METHODS, "method", name)


def create_backbone(name: str, **kwargs: Any) -> Any:
    """Instantiate the backbone registered as ``name``."""
    return get_backbone_class(name)(**kwargs)


def create_method(name: str, **kwargs: Any) -> Any:
    """Instantiate the method registered as ``name``."""
    return get_method_class(name)(**kwargs)


def list_backbones() -> list[str]:
    _load_builtins()
    return sorted(_BACKBONES)


def list_methods() -> list[str]:
    _load_builtins()
    return sorted(_METHODS)


def _load_builtins() -> None:
    # Importing the subpackages runs their @register_* decorators.
    import noisycorr.backbones
    import noisycorr.methods  # noqa: F401
