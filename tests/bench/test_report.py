"""Aggregation of seeds and the report files, from cell folders written by hand."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import tiny_spec

from noisycorr.bench.report import aggregate, write_report
from noisycorr.bench.spec import spec_from_dict
from noisycorr.errors import InputError


def test_aggregate_is_mean_and_sample_sd_of_known_values():
    s = aggregate([200.0, 210.0, None, 230.0])
    assert s.n == 3 and s.mean == pytest.approx(640 / 3)
    assert s.sd == pytest.approx(np.std([200, 210, 230], ddof=1))
    assert s.text() == f"{640 / 3:.1f} ± {np.std([200, 210, 230], ddof=1):.1f}"
    one = aggregate([5.0])
    assert one.n == 1 and math.isnan(one.sd) and one.text() == "5.0"
    assert aggregate([None]).text() == "—"


def _fake_cell(cell, rsum, i2t, t2i, auc, checksum, epochs=(10.0, 20.0)):
    cell.dir.mkdir(parents=True)
    test = {"rsum": rsum, "i2t_r1": i2t, "t2i_r1": t2i}
    res = {"best": {"epoch": 1}, "test": test, "resources": {"peak_rss_mib": 300.0 + rsum}}
    if auc is not None:
        res["detection"] = {"auc": auc}
    (cell.dir / "results.json").write_text(json.dumps(res))
    (cell.dir / "noise.json").write_text(json.dumps({"checksum": checksum}))
    rows = "epoch,select_seconds,train_seconds\n" + "".join(f"{k},1.0,{s}\n" for k, s in enumerate(epochs))
    (cell.dir / "metrics.csv").write_text(rows)


def test_the_table_aggregates_seeds_per_method_and_rate(tmp_path):
    spec = spec_from_dict(tiny_spec(Path("/nowhere"), tmp_path / "b", rates=(0.0, 0.4), seeds=(0, 1, 2)), "s.yaml")
    values, aucs = {}, {}
    for k, cell in enumerate(spec.cells()):
        if cell.method == "ncr" and cell.rate == 0.4 and cell.seed == 2:
            continue  # one unfinished seed
        rsum = 100.0 + 10 * k
        values.setdefault((cell.method, cell.rate), []).append(rsum)
        auc = None if cell.rate == 0 else 0.5 + 0.01 * k
        aucs.setdefault((cell.method, cell.rate), []).append(auc)
        _fake_cell(cell, rsum, rsum / 10, rsum / 20, auc, None if cell.rate == 0 else "a" * 64)
    path = write_report(spec, plots=False)
    with open(spec.report_dir / "summary.csv") as f:
        rows = {(r["method"], float(r["rate"])): r for r in csv.DictReader(f)}
    for key, vals in values.items():
        row = rows[key]
        assert float(row["rsum_mean"]) == pytest.approx(np.mean(vals), abs=1e-3)
        assert float(row["rsum_sd"]) == pytest.approx(np.std(vals, ddof=1), abs=1e-3)
        assert int(row["seeds_done"]) == len(vals)
        assert float(row["epoch_seconds_mean"]) == pytest.approx(16.0)
    text = path.read_text()
    ncr_04 = values[("ncr", 0.4)]
    vanilla_04 = values[("vanilla", 0.4)]
    assert np.mean(ncr_04) > np.mean(vanilla_04)  # the column's best mean, and only it, is in bold
    assert f"**{np.mean(ncr_04):.1f} ± {np.std(ncr_04, ddof=1):.1f}**" in text
    assert f"| vanilla | {np.mean(values[('vanilla', 0.0)]):.1f}" in text
    assert f"{np.mean(vanilla_04):.1f} ± {np.std(vanilla_04, ddof=1):.1f} (" in text
    assert f"**{np.mean(vanilla_04):.1f}" not in text
    assert "2 of 3 seeds" in text
    det = aucs[("ncr", 0.4)]
    assert f"| ncr | {np.mean(det):.3f} ± {np.std(det, ddof=1):.3f} |" in text
    with open(spec.report_dir / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 12 and sum(c["status"] == "new" for c in cells) == 1


# mutant killed: the table shows the first seed's value instead of the seed mean
# mutant killed: an unfinished cell's curve joins the mean
def test_curves_are_tabled_per_epoch_as_seed_means_and_plotted(tmp_path):
    """A ``curves`` column of metrics.csv appears epoch by epoch, averaged over the finished seeds only,
    for the methods that log it; a plot per column is written."""
    raw = tiny_spec(Path("/nowhere"), tmp_path / "b", rates=(0.5,), seeds=(0, 1, 2))
    raw["curves"] = ["diag_anchor_clean", "not_logged"]
    spec = spec_from_dict(raw, "s.yaml")
    logged = {0: [0.8, 0.7, 0.6], 1: [0.9, 0.5, 0.2], 2: [0.1, 0.1, 0.1]}
    for cell in spec.cells():
        _fake_cell(cell, 100.0, 10.0, 5.0, 0.9, "a" * 64, epochs=(1.0, 2.0, 3.0))
        if cell.method == "ncr":
            rows = "epoch,select_seconds,train_seconds,diag_anchor_clean\n" + "".join(
                f"{k},1.0,1.0,{v}\n" for k, v in enumerate(logged[cell.seed]))
            (cell.dir / "metrics.csv").write_text(rows)
            if cell.seed == 2:
                (cell.dir / "results.json").unlink()  # unfinished: left out of the means
    text = write_report(spec, plots=True).read_text()
    assert "`diag_anchor_clean` per epoch" in text and "`not_logged`" not in text
    assert "| ncr | 50 % | 0.850 | 0.600 | 0.400 |" in text
    assert "| vanilla | 50 %" not in text.split("`diag_anchor_clean` per epoch")[1].split("\n\n")[1]
    pytest.importorskip("matplotlib")
    assert (spec.report_dir / "curve_diag_anchor_clean_tiny_per_caption.png").is_file()
    assert not (spec.report_dir / "curve_not_logged_tiny_per_caption.png").exists()


def test_curves_must_be_a_list_of_column_names(tmp_path):
    raw = tiny_spec(Path("/nowhere"), tmp_path / "b")
    raw["curves"] = "diag_anchor_clean"
    with pytest.raises(InputError, match="curves"):
        spec_from_dict(raw, "s.yaml")
