"""The raw mixture posterior (no monotone correction) is selectable from YAML and reaches the
per-epoch split: NCR's raw GMM posterior (``method.monotone: false``), BiCro's raw Beta-mixture
posterior (its preset's default)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_helpers import FakeEpochContext

import noisycorr.methods.coteaching as coteaching
from noisycorr.backbones.vse import VSE
from noisycorr.config import load_config
from noisycorr.factory import get_method_class


def _method_from(cfg):
    """What the engine's ``build_method`` does with the ``method`` section, over a tiny VSE."""
    values = dict(cfg.method)
    cls = get_method_class(str(values.pop("name")))
    torch.manual_seed(0)
    return cls(cls.make_config(values), lambda: VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8))


def _estimators_seen(method, monkeypatch) -> set[tuple[str, bool]]:
    """(estimator, monotone) of every clean-probability fit of the first epoch after the warm-up."""
    seen = set()
    real = coteaching.clean_probability

    def spy(losses, *, estimator="gmm", seed=0, monotone=True):
        seen.add((estimator, monotone))
        return real(losses, estimator=estimator, seed=seed, monotone=monotone)

    monkeypatch.setattr(coteaching, "clean_probability", spy)
    method.on_epoch_start(method.cfg.warmup_epochs, FakeEpochContext(epochs=method.cfg.warmup_epochs + 4))
    return seen


# mutant killed: fit_selections passes monotone=True whatever the config says
# mutant killed: NCR.Config.monotone default flipped to False (the preset would silently use the raw posterior)
@pytest.mark.parametrize("via", ["set", "yaml"])
def test_ncr_monotone_false_from_yaml_reaches_the_gmm_split(via, tmp_path: Path, monkeypatch):
    if via == "set":
        cfg = load_config("flickr-dev-ncr", ["method.monotone=false"])
    else:
        preset = tmp_path / "raw.yaml"
        preset.write_text("extends: flickr-dev-ncr\nmethod:\n  monotone: false\n")
        cfg = load_config(str(preset))
    ncr = _method_from(cfg)
    assert ncr.cfg.monotone is False
    assert _estimators_seen(ncr, monkeypatch) == {("gmm", False)}
    default = _method_from(load_config("flickr-dev-ncr"))
    assert _estimators_seen(default, monkeypatch) == {("gmm", True)}


# mutant killed: BiCro.Config.monotone = True (the Beta mixture's posterior corrected)
# mutant killed: BiCro.Config.estimator = "gmm"
def test_bicro_uses_the_raw_beta_mixture_posterior_and_can_choose_the_monotone_one(monkeypatch):
    defaults = ["method.name=bicro"]  # a preset that sets neither: BiCro's own defaults
    bicro = _method_from(load_config("flickr-dev-vse", defaults))
    assert _estimators_seen(bicro, monkeypatch) == {("bmm", False)}
    corrected = _method_from(load_config("flickr-dev-vse", [*defaults, "method.monotone=true"]))
    assert _estimators_seen(corrected, monkeypatch) == {("bmm", True)}


# mutant killed: flickr-dev-bicro without its estimator/monotone lines (BiCro's raw Beta split returns)
def test_flickr_dev_bicro_splits_with_ncrs_monotone_gaussian_mixture(monkeypatch):
    assert _estimators_seen(_method_from(load_config("flickr-dev-bicro")), monkeypatch) == {("gmm", True)}
    bicropp = load_config("flickr-dev-bicropp").method
    assert (bicropp["estimator"], bicropp["monotone"]) == ("gmm", True)
