"""Gradient clipping by the engine: ``OptimizerSpec.unclipped`` parameters step with their raw
gradients and stay out of the clipped norm, in the automatic and the manual (StepControl) path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from noisycorr.config import TrainConfig
from noisycorr.engine.optim import Optimizers, Stepper
from noisycorr.methods.base import Method, OptimizerSpec

CLIP = 1.0
G_ENC = torch.tensor([[3.0, 4.0], [0.0, 12.0]])  # norm 13: clipped to norm 1
G_REF = torch.tensor([[30.0, -40.0]])  # norm 50: left as it is when unclipped


class TwoParts(Method):
    """An 'encoder' and a 'refiner' in one optimiser; ``unclipped`` names what clipping skips."""

    def __init__(self, unclip_refiner: bool):
        super().__init__(None, lambda: None)
        self.encoder = nn.Linear(2, 2, bias=False)
        self.refiner = nn.Linear(2, 1, bias=False)
        self.unclip_refiner = unclip_refiner

    def optimizer_specs(self) -> list[OptimizerSpec]:
        (spec,) = super().optimizer_specs()
        if self.unclip_refiner:
            spec.unclipped = list(self.refiner.parameters())
        return [spec]

    def loss(self) -> torch.Tensor:
        """Gradient G_ENC on the encoder's weight and G_REF on the refiner's."""
        return (self.encoder.weight * G_ENC).sum() + (self.refiner.weight * G_REF).sum()


def _setup(unclip_refiner: bool):
    torch.manual_seed(0)
    method = TwoParts(unclip_refiner)
    train = TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip=CLIP)
    stepper = Stepper(Optimizers(method, train), torch.amp.GradScaler("cpu", enabled=False), CLIP)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    return method, stepper, before


def _automatic(method, stepper):
    stepper.update(method.loss(), None)


def _manual(method, stepper):
    stepper.zero_grad()
    stepper.backward(method.loss())
    stepper.step("main")


@pytest.mark.parametrize("path", [_automatic, _manual], ids=["automatic", "manual"])
def test_unclipped_parameters_step_with_raw_gradients_and_stay_out_of_the_norm(path):
    method, stepper, before = _setup(unclip_refiner=True)
    path(method, stepper)
    # SGD, lr 1: the step is the (clipped) gradient; the encoder's norm alone is clipped to CLIP.
    enc_step = before["encoder.weight"] - method.encoder.weight.detach()
    ref_step = before["refiner.weight"] - method.refiner.weight.detach()
    torch.testing.assert_close(enc_step, G_ENC * CLIP / G_ENC.norm(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref_step, G_REF)


@pytest.mark.parametrize("path", [_automatic, _manual], ids=["automatic", "manual"])
def test_by_default_every_parameter_is_clipped_under_one_norm(path):
    method, stepper, before = _setup(unclip_refiner=False)
    path(method, stepper)
    total = torch.sqrt(G_ENC.norm() ** 2 + G_REF.norm() ** 2)
    torch.testing.assert_close(before["encoder.weight"] - method.encoder.weight.detach(), G_ENC * CLIP / total)
    torch.testing.assert_close(before["refiner.weight"] - method.refiner.weight.detach(), G_REF * CLIP / total)


def test_an_unclipped_parameter_outside_the_optimiser_is_refused():
    method = TwoParts(unclip_refiner=False)
    stray = nn.Parameter(torch.zeros(1))
    method.optimizer_specs = lambda: [OptimizerSpec("main", list(method.parameters()), unclipped=[stray])]
    with pytest.raises(RuntimeError, match="unclipped parameter"):
        Optimizers(method, TrainConfig())
