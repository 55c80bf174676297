"""The contract of a training method: a plug-in ``nn.Module`` driven by the engine."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from noisycorr.backbones.base import Backbone
from noisycorr.errors import InputError


class Method(nn.Module):
    """A paper's training algorithm over one or more backbones.

    Subclasses set ``citation`` and a ``Config`` dataclass, build their backbones from the factory,
    and implement :meth:`training_step`. The engine owns devices, optimisers, schedules, clipping,
    loaders, checkpoints and logging. A method never sees the ground-truth noise mask.
    """

    citation: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    @dataclasses.dataclass
    class Config:
        pass

    def __init__(self, cfg: Any, build_backbone: Callable[[], Backbone]):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def make_config(cls, values: dict[str, Any], source: str = "method") -> Any:
        """Checked ``Config`` from a dict (the YAML ``method`` section without ``name``)."""
        names = [f.name for f in dataclasses.fields(cls.Config)]
        for key in values:
            if key not in names:
                raise InputError(source, f"a key of [method] for {cls.registered_name} among {names}", repr(key))
        return cls.Config(**values)

    @property
    def backbones(self) -> list[Backbone]:
        """The networks whose similarity matrices are averaged at evaluation."""
        return [m for m in self.children() if isinstance(m, Backbone)]

    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Called before each training epoch; returns values to log."""
        return {}

    def training_step(self, batch: Any, epoch: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        """One batch: returns named losses (summed by the engine) and values to log."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""
