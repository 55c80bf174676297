from pathlib import Path

import pytest
import yaml
from bench_helpers import tiny_spec

from noisycorr.bench.spec import cell_config, load_spec, spec_dir, spec_from_dict
from noisycorr.errors import InputError


def test_grid_has_one_cell_per_dataset_protocol_rate_method_seed(tmp_path):
    spec = spec_from_dict(tiny_spec(Path("/data"), tmp_path / "b", rates=(0.0, 0.2, 0.5)), "spec.yaml")
    cells = spec.cells()
    assert len(cells) == 3 * 2 * 2
    assert len({c.dir for c in cells}) == len(cells)
    assert cells[0].dir == tmp_path / "b" / "tiny" / "per_caption-0" / "vanilla" / "seed0"
    assert {c.key for c in cells} >= {"tiny/per_caption-0.2/ncr/seed1", "tiny/per_caption-0.5/vanilla/seed0"}


def test_settings_are_layered_from_general_to_particular(tmp_path, tiny_root):
    raw = tiny_spec(tiny_root, tmp_path / "b", rates=(0.5,), seeds=(3,))
    raw["set"]["train.lr"] = 0.1
    raw["datasets"]["tiny"]["set"] = {"train.lr": 0.2}
    raw["datasets"]["tiny"]["methods"] = {"ncr": {"preset": "demo-ncr", "set": {"train.lr": 0.3}}}
    spec = spec_from_dict(raw, "spec.yaml", extra=["train.batch_size=8"])
    (cell,) = spec.cells()
    cfg = cell_config(cell)
    assert cfg.train.lr == 0.3 and cfg.train.seed == 3 and cfg.train.batch_size == 8
    assert cfg.noise.rate == 0.5 and cfg.noise.seed == 0
    assert cfg.noise.file == str(tmp_path / "b" / "noise" / "tiny" / "per_caption-0.5.npy")
    assert cfg.run.out_dir == str(cell.dir) and cfg.method["name"] == "ncr"


def test_given_files_and_templates(tmp_path):
    raw = tiny_spec(Path("/data"), tmp_path / "b", rates=(0.2, 0.4))
    raw["datasets"]["tiny"]["noise"]["files"] = "/idx/f30k_{rate}.npy"
    spec = spec_from_dict(raw, "s.yaml")
    files = {cell_config_file(spec, c) for c in spec.cells()}
    assert files == {"/idx/f30k_0.2.npy", "/idx/f30k_0.4.npy"}


def cell_config_file(spec, cell):
    return cell.noise_file


@pytest.mark.parametrize(
    "edit, found",
    [
        (lambda r: r.update(seeds=[0, 0]), "[0, 0]"),
        (lambda r: r.update(colour="red"), "'colour'"),
        (lambda r: r["datasets"]["tiny"]["noise"].update(rates=[1.5]), "1.5"),
        (lambda r: r["datasets"]["tiny"]["noise"].update(protocol="per_pixel"), "'per_pixel'"),
        (lambda r: r["datasets"]["tiny"].update(methods={"ncr": {"set": {}}}), "no preset"),
        (lambda r: r.pop("out"), "none"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path, edit, found):
    raw = tiny_spec(Path("/data"), tmp_path / "b")
    edit(raw)
    with pytest.raises(InputError) as err:
        spec_from_dict(raw, "spec.yaml")
    assert str(err.value).startswith("spec.yaml") and found in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_config_key_fails_before_anything_runs(tmp_path, tiny_root):
    raw = tiny_spec(tiny_root, tmp_path / "b")
    raw["set"]["train.colour"] = 1
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="colour"):
        load_spec(str(path))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in spec_dir().glob("*.yaml")))
def test_shipped_specs_parse_and_resolve(name):
    spec = load_spec(name)
    assert spec.cells() and spec.description


def test_shipped_specs_find_their_shared_noise_files_from_any_folder(tmp_path, monkeypatch, shared_data):
    """paper-f30k names DECL's noise files as ../shared/data/...: they resolve from any folder."""
    monkeypatch.chdir(tmp_path)
    spec = load_spec("paper-f30k", out=str(tmp_path / "b"))
    given = [c.noise_file for c in spec.cells() if c.noise_file and "noise_inx" in c.noise_file]
    assert given and all(Path(f).is_absolute() and Path(f).is_file() for f in given)


def test_a_value_may_name_its_cells_folder_fields(tmp_path, tiny_root):
    raw = tiny_spec(tiny_root, tmp_path / "b", rates=(0.0, 0.4), seeds=(0, 2))
    shared = "{out}/{dataset}/{protocol}-{rate}/vanilla/seed{seed}/x"
    raw["datasets"]["tiny"]["methods"] = {"ncr": {"preset": "demo-ncr", "set": {"data.dense_captions": shared}}}
    spec = spec_from_dict(raw, "spec.yaml")
    got = {c.key: cell_config(c).data.dense_captions for c in spec.cells()}
    out = tmp_path / "b" / "tiny"
    assert got == {f"tiny/per_caption-{r}/ncr/seed{s}": f"{out}/per_caption-{r}/vanilla/seed{s}/x"
                   for r in ("0", "0.4") for s in (0, 2)}
