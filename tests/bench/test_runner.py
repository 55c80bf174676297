"""The bench runs every cell once, continues interrupted ones, and pins one noise index per column."""

import json
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import tiny_spec

from noisycorr.bench import pin_noise, run_bench, write_report
from noisycorr.bench.runner import cell_status, run_process
from noisycorr.bench.spec import cell_config, spec_from_dict
from noisycorr.engine.trainer import train
from noisycorr.errors import InputError


class Recorder:
    """A runner that records the commands and trains in this process (fast, no subprocess)."""

    def __init__(self, spec):
        self.spec, self.commands = spec, []

    def __call__(self, cmd, log, env):
        self.commands.append(cmd)
        out = next(a for a in cmd if a.startswith("run.out_dir="))
        cell = next(c for c in self.spec.cells() if f"run.out_dir={c.dir}" == out)
        train(cell_config(cell), resume="--resume" in cmd)
        return 0, 1.0


def _spec(tiny_root, out, **kw):
    return spec_from_dict(tiny_spec(tiny_root, out, **kw), "spec.yaml")


def test_finished_cells_are_not_run_again_and_killed_ones_continue(tiny_root, tmp_path, killed_after_epoch):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.5,), seeds=(0,), methods={"ncr": "demo-ncr"})
    (cell,) = spec.cells()
    pin_noise(spec)
    with killed_after_epoch(0):  # killed right after its first epoch's checkpoint
        train(cell_config(cell))
    first_epoch = (cell.dir / "metrics.csv").read_text().splitlines()
    assert cell_status(cell) == "interrupted" and len(first_epoch) == 2

    rec = Recorder(spec)
    attempts = run_bench(spec, runner=rec, echo=lambda s: None)
    assert len(attempts) == 1 and attempts[0].resumed and "--resume" in rec.commands[0]
    rows = (cell.dir / "metrics.csv").read_text().splitlines()
    assert rows[:2] == first_epoch and len(rows) == 3  # epoch 0 kept, only epoch 1 trained now
    assert cell_status(cell) == "done"
    assert json.loads((cell.dir / "bench.json").read_text())[0]["resumed"] is True

    rec2 = Recorder(spec)
    assert run_bench(spec, runner=rec2, echo=lambda s: None) == [] and rec2.commands == []


def test_a_finished_cell_with_other_settings_is_refused(tiny_root, tmp_path):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0,), methods={"vanilla": "demo"})
    run_bench(spec, runner=Recorder(spec), echo=lambda s: None)
    changed = spec_from_dict(tiny_spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0,),
                                       methods={"vanilla": {"preset": "demo", "set": {"train.lr": 0.5}}}), "s2.yaml")
    with pytest.raises(InputError, match=r"changed keys \['lr'\]"):
        run_bench(changed, runner=Recorder(changed), echo=lambda s: None)


def test_a_finished_two_stage_cell_is_not_refused_for_the_stage_weights_its_run_records(tiny_root, tmp_path):
    # A D2S run saves its config with method.stage1_weights filled in by the stage plan; the spec's cell
    # names none. The bench must compare against the planned config, or every later bench call fails.
    d2s = {"preset": "demo", "set": {"method.name": "d2s", "data.dense_captions": "standin", "method.stage1_epochs": 1,
                                     "method.prompt_tokens": 2, "method.prompt_heads": 2}}
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0,), methods={"d2s": d2s})
    run_bench(spec, runner=Recorder(spec), echo=lambda s: None)
    (cell,) = spec.cells()
    assert cell_status(cell) == "done" and "stage1_weights" in (cell.dir / "config.yaml").read_text()
    rec = Recorder(spec)
    assert run_bench(spec, runner=rec, echo=lambda s: None) == [] and rec.commands == []
    d2s["set"]["method.distill_weight"] = 0.5  # a real change is still refused
    changed = _spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0,), methods={"d2s": d2s})
    with pytest.raises(InputError, match=r"changed keys \['distill_weight'\]"):
        run_bench(changed, runner=Recorder(changed), echo=lambda s: None)


def test_every_cell_of_a_column_trains_on_the_pinned_index(tiny_root, tmp_path):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.5,), seeds=(0, 1), methods={"vanilla": "demo", "van2": "demo"})
    run_bench(spec, runner=Recorder(spec), echo=lambda s: None)
    pins = json.loads((spec.noise_dir / "pins.json").read_text())
    (pin,) = pins.values()
    sums = {json.loads((c.dir / "noise.json").read_text())["checksum"] for c in spec.cells()}
    assert sums == {pin["checksum"]}  # two methods x two seeds, one noise draw (not one per seed)
    assert len(spec.cells()) == 4


def test_a_pinned_file_that_changed_is_refused(tiny_root, tmp_path):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.5,), seeds=(0,))
    pins = pin_noise(spec)
    (pin,) = pins.values()
    idx = np.load(pin.file)
    np.save(pin.file, np.roll(idx, 1))
    with pytest.raises(InputError, match="changed after cells were run"):
        pin_noise(spec)


def test_the_report_refuses_cells_with_different_noise_side_by_side(tiny_root, tmp_path):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.5,), seeds=(0, 1), methods={"vanilla": "demo"})
    run_bench(spec, runner=Recorder(spec), echo=lambda s: None)
    write_report(spec, plots=False)  # consistent: fine
    c1 = spec.cells()[1]
    record = json.loads((c1.dir / "noise.json").read_text())
    record["checksum"] = "0" * 64  # as if this seed had drawn its own noise
    (c1.dir / "noise.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="to compare the two cells"):
        write_report(spec, plots=False)


def test_real_subprocess_records_exit_code_and_peak_memory(tmp_path):
    import sys

    code, rss = run_process([sys.executable, "-c", "x = bytearray(50 * 2**20); raise SystemExit(3)"],
                            tmp_path / "log.txt", env={})
    assert code == 3 and rss > 50


def test_failed_cells_are_reported_and_retried(tiny_root, tmp_path):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0,), methods={"vanilla": "demo"})
    attempts = run_bench(spec, runner=lambda cmd, log, env: (1, 0.0), echo=lambda s: None)
    assert attempts[0].returncode == 1 and cell_status(spec.cells()[0]) == "new"
    again = run_bench(spec, runner=Recorder(spec), echo=lambda s: None)
    assert len(again) == 1 and cell_status(spec.cells()[0]) == "done"


def test_paths_in_records_are_the_cells(tiny_root, tmp_path):
    spec = _spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0,), methods={"vanilla": "demo"})
    run_bench(spec, runner=Recorder(spec), echo=lambda s: None)
    assert Path(spec.cells()[0].dir, "results.json").is_file()


def test_only_filters_the_cells_trained_and_interrupted_ones_go_first(tiny_root, tmp_path):
    from noisycorr.bench.runner import cell_filter

    spec = _spec(tiny_root, tmp_path / "b", rates=(0.0, 0.5), seeds=(0, 1), methods={"vanilla": "demo"})
    keep = cell_filter(["rate=0.5", "seed=1,0"])
    assert [c.key for c in spec.cells() if keep(c)] == ["tiny/per_caption-0.5/vanilla/seed0",
                                                         "tiny/per_caption-0.5/vanilla/seed1"]
    last = spec.cells()[-1]
    last.dir.mkdir(parents=True)
    (last.dir / "checkpoint.pt").write_bytes(b"")  # looks interrupted: it must be resumed first
    seen = []
    run_bench(spec, runner=lambda cmd, log, env: (seen.append(cmd) or (1, 0.0)), echo=lambda s: None, only=keep)
    assert len(seen) == 2 and "--resume" in seen[0] and f"run.out_dir={last.dir}" in seen[0]
    with pytest.raises(InputError, match="--only"):
        cell_filter(["colour=red"])


def test_a_cell_trained_by_another_bench_process_is_skipped(tiny_root, tmp_path):
    import fcntl

    spec = _spec(tiny_root, tmp_path / "b", rates=(0.0,), seeds=(0, 1), methods={"vanilla": "demo"})
    busy = spec.cells()[0]
    busy.dir.mkdir(parents=True)
    with open(busy.dir / "bench.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another bench holds this cell
        assert cell_status(busy) == "training"
        seen = []
        made = run_bench(spec, runner=lambda cmd, log, env: (seen.append(cmd) or (0, 0.0)), echo=lambda s: None)
    assert len(made) == 1 and made[0].cell == spec.cells()[1].key and len(seen) == 1
