"""Each backbone's ``Config``: every option is settable from the ``model`` section and reaches the module."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
import torch

from noisycorr.backbones.gpo import GPO
from noisycorr.config import load_config
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.setup import build_method
from noisycorr.factory import get_backbone_class

BUILTINS = ("vse", "sgraf", "global")
SMALL = {"embed_size": 16, "word_dim": 8, "sim_dim": 8}  # sim_dim: sgraf only
IMAGE_SHAPE = {"vse": (4, 6), "sgraf": (4, 6), "global": (6,)}
VOCAB = Vocabulary.build(["a cat sat on the mat", "a dog ran"], min_count=1)
WORD_VECTOR = [0.5, -0.25, 0.125, 1.0, 2.0, -1.0, 0.75, 0.0]  # 8 = SMALL["word_dim"]

# key -> (a value other than the default, what the built module shows of it)
COMMON = {
    "embed_size": (24, lambda m: m.text.rnn.hidden_size),
    "word_dim": (12, lambda m: m.text.embed.embedding_dim),
    "word_vectors": ("VECTORS", lambda m: m.text.embed.weight[VOCAB("cat")].tolist()),
    "text_layers": (2, lambda m: m.text.rnn.num_layers),
    "dropout": (0.25, lambda m: m.text.dropout.p),
}
OPTIONS = {
    "vse": {**COMMON, "text_mlp": (True, lambda m: m.txt_proj is not None)},
    "sgraf": {
        **COMMON,
        "head": ("saf", lambda m: "saf" if hasattr(m, "saf") else "sgr"),
        "sim_dim": (12, lambda m: m.local_proj.out_features),
        "sgr_steps": (2, lambda m: len(m.sgr)),
        "lambda_softmax": (4.5, lambda m: m.lambda_softmax),
        "chunk_elems": (4096, lambda m: m.chunk_elems),
        "checkpoint_blocks": (True, lambda m: m.checkpoint_blocks),
    },
    "global": {**COMMON, "text_pool": ("gpo", lambda m: "gpo" if isinstance(m.txt_pool, GPO) else "mean")},
}
CASES = [(name, key) for name in BUILTINS for key in OPTIONS[name]]


def built(name: str, *extra: str):
    """The backbone that ``build_method`` makes for ``--set model.backbone=name`` plus ``extra`` overrides."""
    known = {f.name for f in fields(get_backbone_class(name).Config)}
    small = [f"model.{k}={v}" for k, v in SMALL.items() if k in known]
    cfg = load_config(None, [f"model.backbone={name}", *small, *extra])
    return build_method(cfg, VOCAB, IMAGE_SHAPE[name]).backbones[0]


# mutant: a field added to VSE.Config (extra: int = 0) with no row in OPTIONS
@pytest.mark.parametrize("name", BUILTINS)
def test_the_option_table_covers_every_config_field(name):
    assert {f.name for f in fields(get_backbone_class(name).Config)} - {"backbone"} == set(OPTIONS[name])


# mutant: Backbone.from_config passes no options (options = {}); and: GlobalMLP.Config without text_pool
@pytest.mark.parametrize("name, key", CASES)
def test_every_option_set_by_override_reaches_the_built_backbone(name, key, tmp_path):
    value, probe = OPTIONS[name][key]
    expected = value
    if value == "VECTORS":
        value = tmp_path / "vectors.txt"
        value.write_text("cat " + " ".join(str(x) for x in WORD_VECTOR) + "\n")
        expected = WORD_VECTOR
    module = built(name, f"model.{key}={value}")
    assert probe(module) == expected
    assert probe(built(name)) != expected, "the test value must differ from the default"


# mutant: VSE.Config.dropout = 0.1 (or SGRAF.Config.lambda_softmax = 10.0): defaults drift from today's
@pytest.mark.parametrize("name", BUILTINS)
def test_config_defaults_are_the_constructor_defaults(name):
    cls = get_backbone_class(name)
    params = inspect.signature(cls.__init__).parameters
    config = cls.Config()
    assert config.backbone == name
    for f in fields(config):
        if f.name != "backbone":
            assert getattr(config, f.name) == params[f.name].default, f.name


# mutant: Backbone.from_config without its isinstance check
def test_from_config_refuses_another_backbones_config():
    vse, sgraf = get_backbone_class("vse"), get_backbone_class("sgraf")
    with pytest.raises(TypeError, match="SGRAF.Config"):
        sgraf.from_config(vse.Config(), vocab_size=10, image_shape=(4, 6))


# mutant: GlobalMLP.__init__ ignores text_pool (always the masked mean)
def test_text_pool_of_global_from_yaml_changes_the_module(tmp_path):
    preset = tmp_path / "glob.yaml"
    preset.write_text("model:\n  backbone: global\n  embed_size: 16\n  word_dim: 8\n  text_pool: gpo\n")
    gpo = build_method(load_config(str(preset)), VOCAB, (6,)).backbones[0].eval()
    mean = built("global").eval()
    assert isinstance(gpo.txt_pool, GPO) and mean.txt_pool is None
    gpo.load_state_dict(mean.state_dict(), strict=False)  # same weights but the pooling's own
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        assert not torch.allclose(gpo.encode_texts(tokens, lengths), mean.encode_texts(tokens, lengths))
