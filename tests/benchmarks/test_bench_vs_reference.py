"""benchmarks/bench_vs_reference.py: every configuration runs on our code (tiny sizes here) and the
table compares each figure with the reference's in the right direction."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_vs_reference.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_reference", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vs_reference"] = module
    spec.loader.exec_module(module)
    module.perfutil.NO_WAIT = True
    return module


@pytest.fixture
def tiny(bench, monkeypatch):
    monkeypatch.setattr(bench, "VOCAB", 60)
    monkeypatch.setattr(bench, "REGIONS", 6)
    monkeypatch.setattr(bench, "IMG_DIM", 24)
    small = ["model.embed_size=16", "model.word_dim=8"]
    overrides = {"f30k-ncr": [*small, "model.sim_dim=8"], "f30k-in2r": [*small, "method.queue_size=64"]}
    monkeypatch.setattr(bench, "EXTRA_OVERRIDES", overrides)
    sizes = {"n_img": 6, "n_cap": 30, "batch": 8}
    for name, p in bench.CONFIGS.items():
        monkeypatch.setitem(bench.CONFIGS, name, {**p, **{k: v for k, v in sizes.items() if k in p}})
    return bench


def _fake_reference(bench):
    """Reference results shaped like ../shared/perf/ref_bench.py's JSON, every figure 2.0 (MiB 2000)."""
    metrics = {
        "ncr_eval": [("pairs/s (SGR, shard_attn_scores shard 1000)", 2.0, ""),
                     ("peak RSS during similarity", 2000.0, "process VmHWM; RSS before 1500.0 MiB")],
        "ncr_train": [("train step SGR b8 (fwd+bwd+clip+Adam)", 2.0, ""), ("peak RSS", 2000.0, "")],
        "ncr_evalloss": [("eval_loss pass per 8 samples (SGR)", 2.0, ""), ("predict pass per 8 samples", 2.0, "")],
        "ncr_cotrain": [("co-training iteration SGR b8", 2.0, ""), ("peak RSS", 2000.0, "")],
        "in2r_train": [("VSE train step b8", 2.0, ""), ("VSE warm-up step b8", 2.0, "")],
        "in2r_cotrain": [("IN2R co-training iteration b8", 2.0, ""), ("peak RSS", 2000.0, "")],
        "in2r_evalloss": [("eval_loss pass per 8 samples (VSE)", 2.0, "")],
        "in2r_eval": [("encode 6 images (img_enc, batch 128)", 2.0, ""), ("encode 30 captions", 2.0, ""),
                      ("encode_data (authors') over 30 pairs", 2.0, ""), ("similarity 6 x 30", 2.0, "")],
    }
    return {
        name: {"config": name, "figures": [dict(metric=m, value=v, unit="", note=n) for m, v, n in metrics[p["kind"]]]}
        for name, p in bench.CONFIGS.items()
    }


@pytest.mark.parametrize(
    "kind", ["ncr_eval", "ncr_train", "ncr_evalloss", "ncr_cotrain", "in2r_train", "in2r_cotrain", "in2r_evalloss",
             "in2r_eval"],
)
def test_each_kind_runs_on_our_code_and_is_compared(tiny, kind):
    name = next(n for n, p in tiny.CONFIGS.items() if p["kind"] == kind)
    res = tiny.run_config(name, reps=1)
    wanted = [key for k, key, *_ in tiny.COMPARE if k == kind]
    for key in wanted:
        assert res[key] >= 0 if "rss" in key else res[key] > 0, (key, res)
    rows = tiny.table({name: res}, _fake_reference(tiny))
    assert {r["figure"] for r in rows} >= {k for k in wanted if k != "work_rss_mib"}
    for r in rows:
        assert r["reference"] is not None, r
        assert r["ratio"] is not None or r["ours"] == 0, r


def test_ratio_direction(bench):
    """> 1 means ours is better: higher rate, lower time, lower memory; working memory from the note."""
    ours = {
        "ncr_eval_sgr_100x500": {"pairs_per_s": 4.0, "peak_rss_mib": 1000.0, "work_rss_mib": 100.0},
        "ncr_train_sgr_b128": {"step_s": 1.0, "peak_rss_mib": 4000.0},
    }
    ref = _fake_reference(bench)
    rows = {(r["config"], r["figure"]): r for r in bench.table(ours, ref)}
    assert rows[("ncr_eval_sgr_100x500", "pairs_per_s")]["ratio"] == 2.0
    assert rows[("ncr_eval_sgr_100x500", "peak_rss_mib")]["ratio"] == 2.0
    work = rows[("ncr_eval_sgr_100x500", "working memory (peak - before)")]
    assert work["reference"] == 500.0 and work["ratio"] == 5.0
    assert rows[("ncr_train_sgr_b128", "step_s")]["ratio"] == 2.0
    assert rows[("ncr_train_sgr_b128", "peak_rss_mib")]["ratio"] == 0.5
    assert "| ×2 |" in bench.markdown(list(rows.values()))
