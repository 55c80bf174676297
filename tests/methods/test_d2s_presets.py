"""Each D2S preset is its twin without distillation plus D2S's own options: a preset layer that names
another method starts its method section afresh, so a D2S preset must repeat its twin's method settings
(flickr-dev-d2s-ncr once trained NCR's defaults instead of flickr-dev-ncr's warm-up and epoch counting)."""

from __future__ import annotations

import dataclasses

import pytest

from noisycorr.config import load_config
from noisycorr.factory import get_method_class

TWINS = [
    ("flickr-dev-d2s", "flickr-dev-vse"),
    ("f30k-d2s", "f30k-vse"),
    ("coco-d2s", "coco-vse"),
    ("flickr-dev-d2s-ncr", "flickr-dev-ncr"),
    ("f30k-d2s-ncr", "f30k-ncr"),
    ("coco-d2s-ncr", "coco-ncr"),
]


def _fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get_method_class(method).Config)}


@pytest.mark.parametrize(("preset", "twin"), TWINS)
def test_a_d2s_preset_trains_its_twins_method_and_schedule(preset: str, twin: str) -> None:
    cfg, base = load_config(preset, []), load_config(twin, [])
    own = _fields(cfg.method["name"]) - _fields(base.method["name"])
    assert own >= {"stage1_epochs", "distill_weight", "student_head"}
    method = {k: v for k, v in cfg.method.items() if k not in own and k != "name"}
    assert method == {k: v for k, v in base.method.items() if k != "name"}
    assert cfg.train == base.train and cfg.noise == base.noise
