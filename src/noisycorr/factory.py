"""Look up, create and list the registered backbones and methods (built-ins loaded first).

``register_backbone`` / ``register_method`` (in :mod:`noisycorr.registry`) add user plug-ins; a class
registered from any module, a test file included, is found here like a built-in one.
"""

from __future__ import annotations

from typing import Any

import noisycorr.backbones  # noqa: F401  (runs the built-in @register_backbone decorators)
import noisycorr.methods  # noqa: F401  (runs the built-in @register_method decorators)
from noisycorr.registry import BACKBONES, METHODS, lookup


def get_backbone_class(name: str) -> type:
    return lookup(BACKBONES, "backbone", name)


def get_method_class(name: str) -> type:
    return lookup(METHODS, "method", name)


def create_backbone(name: str, **kwargs: Any) -> Any:
    """Instantiate the backbone registered as ``name``."""
    return get_backbone_class(name)(**kwargs)


def create_method(name: str, **kwargs: Any) -> Any:
    """Instantiate the method registered as ``name``."""
    return get_method_class(name)(**kwargs)


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def list_methods() -> list[str]:
    return sorted(METHODS)
