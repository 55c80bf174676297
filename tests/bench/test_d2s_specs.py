"""The D2S bench specs: d2s-flickr-dev shares its vanilla and NCR cells (folders, noise files and settings)
with the flickr-dev and in2r-flickr-dev specs, its D2S cells build their own stand-in dense texts, and
d2s-ablation-flickr-dev varies only the student head and the distillation weight of those cells (and reuses
their stage 1); d2s-consensus-flickr-dev changes only the stand-in of its own cells."""

from __future__ import annotations

from noisycorr.bench.spec import Cell, cell_config, load_spec


def _by_key(name: str) -> dict[str, Cell]:
    return {c.key: c for c in load_spec(name).cells()}


def _same_cell(a: Cell, b: Cell) -> None:
    assert a.dir == b.dir and a.noise_file == b.noise_file
    assert cell_config(a).to_dict() == cell_config(b).to_dict()


def test_d2s_flickr_dev_shares_its_twins_without_distillation_with_the_other_flickr_dev_specs() -> None:
    spec = load_spec("d2s-flickr-dev")
    cells = _by_key("d2s-flickr-dev")
    assert spec.seeds == (0, 1) and spec.datasets[0].noise[0].rates == (0.0, 0.4)
    assert {c.method for c in cells.values()} == {"vanilla", "d2s", "ncr", "d2s-ncr"} and len(cells) == 16
    others = {**_by_key("flickr-dev"), **_by_key("in2r-flickr-dev")}
    shared = [c for c in cells.values() if c.method in ("vanilla", "ncr")]
    for cell in shared:  # clean cells from flickr-dev, 40 % from both
        _same_cell(cell, others[cell.key])
    assert {c.rate for c in shared} == {0.0, 0.4}
    for cell in cells.values():
        cfg = cell_config(cell)
        assert cfg.train.epochs == 12 and cfg.train.lr_update == 8 and cfg.noise.seed == 0
        if cell.method.startswith("d2s"):
            assert cfg.method["name"] == cell.method and cfg.data.dense_captions == "standin"
            twin = cell_config(cells[cell.key.replace(f"/{cell.method}/", f"/{cell.method[4:] or 'vanilla'}/")])
            assert cfg.noise == twin.noise and cfg.train == twin.train


def test_d2s_ablation_varies_one_setting_of_the_shared_d2s_cells() -> None:
    cells = _by_key("d2s-ablation-flickr-dev")
    full = _by_key("d2s-flickr-dev")
    assert {c.rate for c in cells.values()} == {0.4} and len(cells) == 6
    for key, cell in cells.items():
        cfg = cell_config(cell)
        base = full[key.replace(f"/{cell.method}/", "/d2s/")]
        if cell.method == "d2s":
            _same_cell(cell, base)
            continue
        differ = {k for k, v in cfg.method.items() if cell_config(base).method.get(k) != v}
        assert differ == {"plain": {"student_head"}, "nodistill": {"distill_weight"}}[cell.method[4:]] | {"stage1_dir"}
        assert cfg.method["stage1_dir"] == str(base.dir / "stage1")  # the full cell's stage 1, trained once
        assert cfg.method["student_head" if cell.method == "d2s-plain" else "distill_weight"] in ("plain", 0.0)
        assert cfg.data.dense_captions == "standin" and cell.noise_file == base.noise_file


def test_d2s_consensus_shares_the_d2s_cells_and_changes_only_the_standin_of_its_own() -> None:
    cells = _by_key("d2s-consensus-flickr-dev")
    full = _by_key("d2s-flickr-dev")
    assert {c.rate for c in cells.values()} == {0.4} and len(cells) == 18
    for key, cell in cells.items():
        if cell.seed < 2 and not cell.method.endswith("-cons"):
            _same_cell(cell, full[key])
            continue
        base = full[key.replace(f"/{cell.method}/", f"/{cell.method.removesuffix('-cons')}/").replace("seed2", "seed0")]
        cfg, twin = cell_config(cell).to_dict(), cell_config(base).to_dict()
        assert cfg["train"].pop("seed") == cell.seed and twin["train"].pop("seed") == base.seed
        if cell.method.endswith("-cons"):
            assert cfg["data"].pop("dense_captions") == "standin-consensus"
            assert twin["data"].pop("dense_captions") == "standin"
        assert cfg["run"].pop("out_dir") != twin["run"].pop("out_dir") and cell.noise_file == base.noise_file
        assert cfg == twin  # a -cons cell has its own stage 1 (default <out>/stage1): its texts differ
