"""benchmarks/bench_labels_wiki.py: every row of its table names the protocol of its figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_labels_wiki.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_labels_wiki", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(folder: Path, scope: str, val: str, avg: float) -> None:
    folder.mkdir(parents=True)
    res = {
        "test": {"i2t_map": avg, "t2i_map": avg, "avg_map": avg},
        "best": {"epoch": 0},
        "train_seconds": 1.0,
        "noise": {"scope": scope},
        "split": {"val": val},
    }
    (folder / "results.json").write_text(json.dumps(res))


# mutant killed: protocol() dropped from the row
# mutant killed: a cell whose seeds disagree reports the first seed's scope instead of "mixed"
def test_each_row_states_its_noise_scope_and_validation(tmp_path: Path) -> None:
    bench = _bench()
    _fake_run(bench.run_dir(tmp_path, "mrl", 0.6, 0), "per_modality", "train", 0.25)
    _fake_run(bench.run_dir(tmp_path, "nirnl", 0.6, 0), "per_pair", "test_head", 0.26)
    _fake_run(bench.run_dir(tmp_path, "ce", 0.6, 0), "per_pair", "train", 0.2)
    _fake_run(bench.run_dir(tmp_path, "ce", 0.6, 1), "per_modality", "train", 0.2)
    rows = {r["method"]: r for r in bench.summarise(tmp_path, ["mrl", "nirnl", "ce"], [0.6], [0, 1])}
    assert (rows["mrl"]["noise_scope"], rows["mrl"]["val"]) == ("per_modality", "train")
    assert (rows["nirnl"]["noise_scope"], rows["nirnl"]["val"]) == ("per_pair", "test_head")
    assert (rows["ce"]["noise_scope"], rows["ce"]["val"]) == ("mixed", "train")
