"""The optimisers a method asks for, their learning-rate schedules, and the step machinery
(AMP scaling, clipping) shared by automatic and manual optimisation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from noisycorr.config import TrainConfig
from noisycorr.distributed import average_gradients
from noisycorr.errors import InputError
from noisycorr.methods.base import Method, OptimizerSpec

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "constant", "cosine")


def schedule_factor(train: TrainConfig, schedule: str, epoch: int, *, start: int = 0) -> float:
    """Learning-rate multiplier of the run's ``epoch`` for a schedule that counts from epoch ``start``.

    With ``e = max(epoch - start, 0)`` (the epochs before ``start``, e.g. a warm-up that the
    authors run before their epoch counter starts, take the schedule's first value) and
    ``n = epochs - start``: ``step``: ``lr_decay ** (e // lr_update)``; ``constant``: 1;
    ``cosine``: ``(1 + cos(pi * e / n)) / 2``.
    """
    e = max(epoch - start, 0)
    if schedule == "step":
        return train.lr_decay ** (e // max(train.lr_update, 1))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * e / max(train.epochs - start, 1)))
    raise InputError("train.schedule", f"one of {', '.join(SCHEDULES)}", repr(schedule))


def _torch_optimizer(kind: str, params: list[Any], lr: float, weight_decay: float, train: TrainConfig):
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(train.beta1, train.beta2), weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(train.beta1, train.beta2), weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=weight_decay)
    raise InputError("train.optimizer", f"one of {', '.join(OPTIMIZERS)}", repr(kind))


def _spec_params(spec: OptimizerSpec) -> Iterable[torch.nn.Parameter]:
    for item in spec.params:
        if isinstance(item, dict):
            yield from item["params"]
        else:
            yield item


class Optimizers:
    """The method's named optimisers built from its :class:`OptimizerSpec` list.

    Every trainable parameter of the method must belong to exactly one spec. The learning-rate
    schedules count from the method's :meth:`~noisycorr.methods.base.Method.schedule_start`.
    """

    def __init__(self, method: Method, train: TrainConfig):
        self.train = train
        self.start = max(int(method.schedule_start()), 0)
        self.specs = {spec.name: spec for spec in method.optimizer_specs()}
        if not self.specs:
            raise RuntimeError(f"{type(method).__name__}.optimizer_specs() returned no optimiser")
        owner: dict[int, str] = {}
        for name, spec in self.specs.items():
            for p in _spec_params(spec):
                if id(p) in owner:
                    raise RuntimeError(f"a parameter is in optimisers {owner[id(p)]!r} and {name!r}")
                owner[id(p)] = name
        names = {id(p): n for n, p in method.named_parameters()}
        orphans = [names[id(p)] for p in method.parameters() if p.requires_grad and id(p) not in owner]
        if orphans:
            raise RuntimeError(f"trainable parameters in no optimiser: {orphans[:5]} ({len(orphans)} in all)")
        self.base_lr = {n: (s.lr if s.lr is not None else train.lr) for n, s in self.specs.items()}
        self.torch = {
            n: _torch_optimizer(
                s.optimizer or train.optimizer,
                list(s.params),
                self.base_lr[n],
                train.weight_decay if s.weight_decay is None else s.weight_decay,
                train,
            )
            for n, s in self.specs.items()
        }
        self.params = {n: [p for g in o.param_groups for p in g["params"]] for n, o in self.torch.items()}
        # What gradient clipping covers: each optimiser's parameters less its spec's ``unclipped``.
        self.clipped: dict[str, list[torch.nn.Parameter]] = {}
        for n, params in self.params.items():
            skip = {id(p) for p in self.specs[n].unclipped}
            if not skip <= {id(p) for p in params}:
                raise RuntimeError(f"optimiser {n!r}: an unclipped parameter is not among its parameters")
            self.clipped[n] = [p for p in params if id(p) not in skip]

    def names(self) -> list[str]:
        return list(self.torch)

    def set_epoch(self, epoch: int) -> dict[str, float]:
        """Set every optimiser's lr for ``epoch``; returns the lrs (``lr`` for ``main``, ``lr_NAME`` else)."""
        out = {}
        for name, opt in self.torch.items():
            schedule = self.specs[name].schedule or self.train.schedule
            lr = self.base_lr[name] * schedule_factor(self.train, schedule, epoch, start=self.start)
            for group in opt.param_groups:
                group["lr"] = lr
            out["lr" if name == "main" else f"lr_{name}"] = lr
        return out

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.torch.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, opt in self.torch.items():
            opt.load_state_dict(state[name])


class NonFiniteLoss(RuntimeError):
    """A loss handed to backward was NaN or infinite (on this rank or another one)."""


class Stepper:
    """Backward and step with AMP scaling and clipping: the engine's own updates and the
    :class:`~noisycorr.methods.context.StepControl` of manual optimisation.

    Before a step the gradients are averaged over the ranks of a multi-process run (a no-op in one
    process). A NaN or infinite loss given to ``backward`` stops the run at the next step on every
    rank (:class:`NonFiniteLoss`), before the optimiser moves; under AMP the scaler handles
    overflows and the check is off.
    """

    def __init__(self, optimizers: Optimizers, scaler: torch.amp.GradScaler, grad_clip: float):
        self.optimizers, self.scaler, self.grad_clip = optimizers, scaler, grad_clip
        self._nonfinite = False

    def _pick(self, name: str | None) -> list[str]:
        if name is None:
            return self.optimizers.names()
        if name not in self.optimizers.torch:
            raise RuntimeError(f"no optimiser {name!r} (the method declares {self.optimizers.names()})")
        return [name]

    def optimizer(self, name: str = "main") -> torch.optim.Optimizer:
        return self.optimizers.torch[self._pick(name)[0]]

    def lr(self, name: str = "main") -> float:
        return float(self.optimizer(name).param_groups[0]["lr"])

    def zero_grad(self, name: str | None = None) -> None:
        for n in self._pick(name):
            self.optimizers.torch[n].zero_grad(set_to_none=True)

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        if not self.scaler.is_enabled() and not bool(torch.isfinite(loss.detach()).all()):
            self._nonfinite = True
        self.scaler.scale(loss).backward(**kwargs)

    def _clip_and_step(self, names: list[str]) -> None:
        params = [p for n in names for p in self.optimizers.params[n]]
        nonfinite = average_gradients(params, flag=self._nonfinite)
        self._nonfinite = False
        if nonfinite:
            raise NonFiniteLoss("a training loss is NaN or infinite")
        for n in names:
            opt = self.optimizers.torch[n]
            if self.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.optimizers.clipped[n], self.grad_clip)
            self.scaler.step(opt)
        self.scaler.update()

    def step(self, name: str | None = "main") -> None:
        self._clip_and_step(self._pick(name))

    def update(self, loss: Tensor, names: tuple[str, ...] | None) -> None:
        """One automatic update: zero the named optimisers' grads, backward, clip, step."""
        picked = self.optimizers.names() if names is None else [n for name in names for n in self._pick(name)]
        for n in picked:
            self.optimizers.torch[n].zero_grad(set_to_none=True)
        self.backward(loss)
        self._clip_and_step(picked)
