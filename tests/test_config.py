import pytest
import yaml

from noisycorr.config import Config, load_config, parse_overrides, preset_dir, save_config
from noisycorr.errors import InputError


def test_every_preset_resolves_and_checks_its_method_section():
    from noisycorr.factory import get_method_class

    names = sorted(p.stem for p in preset_dir().glob("*.yaml"))
    assert {"demo", "f30k-sgraf", "f30k-vse", "coco-sgraf", "cc152k-sgraf", "flickr-dev-vse"} <= set(names)
    for name in names:
        if yaml.safe_load((preset_dir() / f"{name}.yaml").read_text()).get("task", "pairs") != "pairs":
            continue  # labelled-task presets have their own schema (tests/labeled)
        cfg = load_config(name)
        values = dict(cfg.method)
        get_method_class(values.pop("name")).make_config(values)


def test_published_schedules_in_presets():
    sgr = load_config("f30k-sgraf")
    assert (sgr.train.epochs, sgr.train.lr, sgr.train.lr_update, sgr.train.batch_size) == (40, 2e-4, 30, 128)
    coco = load_config("coco-sgraf")
    assert (coco.train.epochs, coco.train.lr_update, coco.eval.protocol) == (20, 10, "coco5fold1k")
    vse = load_config("f30k-vse")
    assert (vse.train.epochs, vse.train.lr, vse.train.lr_update, vse.train.optimizer) == (25, 5e-4, 15, "adamw")
    assert load_config("cc152k-vse").data.captions_per_image == 1


def test_overrides_parse_yaml_scalars_and_win_over_preset():
    cfg = load_config("demo", ["train.lr=1e-3", "train.epochs=3", "data.vocab=null", "method.margin=0.1"])
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 3 and cfg.data.vocab is None
    assert cfg.method["margin"] == 0.1
    assert parse_overrides(["a.b.c=x"]) == {"a": {"b": {"c": "x"}}}


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["train.lrr=1"], "'lrr'"),
        (["bogus.x=1"], "'bogus'"),
        (["train.epochs=many"], "int for train.epochs"),
        (["train.amp=3"], "bool for train.amp"),
        (["noequals"], "section.key=value"),
    ],
)
def test_unknown_or_mistyped_keys_are_one_line_errors(override, fragment):
    with pytest.raises(InputError) as err:
        load_config(None, override)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_method_key_names_the_method():
    from noisycorr.factory import get_method_class

    with pytest.raises(InputError, match="vanilla"):
        get_method_class("vanilla").make_config({"nope": 1})


def test_unknown_preset_and_resolved_config_roundtrip(tmp_path):
    with pytest.raises(InputError, match="presets"):
        load_config("no-such-preset")
    cfg = load_config("flickr-dev-sgraf")
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(str(tmp_path / "c.yaml"))
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again, Config) and again.model.backbone == "sgraf"


# mutant: model_config keeps only the backbone's keys (values filtered to `known`), dropping the rest
@pytest.mark.parametrize("preset, key", [("flickr-dev-vse", "sim_dim"), ("flickr-dev-sgraf", "text_pool")])
def test_unknown_model_key_names_the_key_the_backbone_and_its_keys(preset, key):
    with pytest.raises(InputError) as err:
        load_config(preset, [f"model.{key}=8"])
    msg, backbone = str(err.value), load_config(preset).model.backbone
    assert f"'{key}'" in msg and f"backbone '{backbone}'" in msg and "'embed_size'" in msg and "\n" not in msg


# mutant: model_config without its list_backbones() check (the registry's error names no config key)
def test_unknown_backbone_is_a_one_line_error_naming_the_key():
    with pytest.raises(InputError) as err:
        load_config("demo", ["model.backbone=resnet"])
    msg = str(err.value)
    assert "model.backbone" in msg and "'resnet'" in msg and "'sgraf'" in msg and "\n" not in msg


# mutant: model_config without the null filter (`values = {k: v ... if k in known or v is not None}`)
def test_changing_the_backbone_rejects_the_presets_other_keys_unless_set_to_null():
    with pytest.raises(InputError, match="'text_mlp'"):
        load_config("flickr-dev-in2r", ["model.backbone=sgraf"])
    cfg = load_config("flickr-dev-in2r", ["model.backbone=sgraf", "model.text_mlp=null"])
    assert cfg.model.backbone == "sgraf" and (cfg.model.embed_size, cfg.model.dropout) == (256, 0.3)
    assert "text_mlp" not in cfg.to_dict()["model"]


# mutant: apply_sections without its `section == "model"` branch (keys checked against the default VSE.Config)
def test_resolved_config_of_another_backbone_is_flat_and_loads_back(tmp_path):
    from noisycorr.backbones import GlobalMLP

    cfg = load_config("flickr-dev-global", ["model.text_pool=gpo"])
    save_config(cfg, tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())["model"]
    assert saved["backbone"] == "global" and saved["text_pool"] == "gpo"
    assert all(not isinstance(v, (dict, list)) for v in saved.values())
    again = load_config(str(tmp_path / "c.yaml"))
    assert isinstance(again.model, GlobalMLP.Config) and again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("preset,override,key", [
    ("demo", "train.epochs=0", "train.epochs"),
    ("demo", "train.batch_size=-1", "train.batch_size"),
    ("demo", "train.lr=-1e-4", "train.lr"),
    ("demo", "train.lr_update=0", "train.lr_update"),
    ("demo", "train.grad_clip=-1", "train.grad_clip"),
    ("demo", "train.threads=0", "train.threads"),
    ("demo", "noise.rate=-0.1", "noise.rate"),
    ("demo", "noise.protocol=per_pair", "noise.protocol"),
    ("demo", "data.region_drop=1.0", "data.region_drop"),
    ("demo", "eval.img_chunk=0", "eval.img_chunk"),
    ("wiki-mrl", "data.val_size=0", "data.val_size"),
    ("wiki-nirnl", "model.hidden=0", "model.hidden"),
])
def test_values_out_of_range_are_refused_by_the_loader(preset, override, key):
    with pytest.raises(InputError) as err:
        load_config(preset, [override])
    assert err.value.where == key and str(err.value).count("expected") == 1


def test_values_at_the_edges_of_their_ranges_are_accepted():
    cfg = load_config("demo", ["train.epochs=1", "train.batch_size=1", "noise.rate=1.0", "train.grad_clip=0",
                               "train.threads=null", "data.region_drop=0.0"])
    assert (cfg.train.epochs, cfg.noise.rate, cfg.train.threads) == (1, 1.0, None)


def test_shipped_presets_find_the_shared_data_from_any_folder(tmp_path, monkeypatch):
    shared = tmp_path / "shared-data"
    shared.mkdir()
    monkeypatch.setenv("NOISYCORR_SHARED_DATA", str(shared))
    monkeypatch.chdir(tmp_path)
    assert load_config("flickr-dev-vse").data.root == str(shared / "flickr-dev")
    assert load_config("flickr-dev-ncr").data.root == str(shared / "flickr-dev")  # through `extends`
    assert load_config("wiki-mrl").data.root == str(shared / "wikipedia" / "wikiData_with_labels.mat")
    assert load_config("coco-vse").data.root == "data/coco_precomp"  # the user's own folder: as written
    own = tmp_path / "mine.yaml"
    own.write_text("data:\n  root: ../shared/data/flickr-dev\n")
    assert load_config(str(own)).data.root == "../shared/data/flickr-dev"


def test_a_missing_data_folder_says_how_to_point_data_root(tmp_path, monkeypatch):
    from noisycorr.engine.setup import data_root

    monkeypatch.setenv("NOISYCORR_SHARED_DATA", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("flickr-dev-vse")
    with pytest.raises(InputError, match=r"--set data.root=FOLDER.*NOISYCORR_SHARED_DATA"):
        data_root(cfg)
