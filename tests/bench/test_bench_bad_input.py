"""Issue 22, `noisycorr bench`: bad input is refused before any cell runs; a failed cell's cause is printed
(from its train.log), a retry is not suggested for bad input, and no empty report is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bench_helpers import tiny_spec

import noisycorr.bench as bench_pkg
from noisycorr.bench.runner import failure_cause
from noisycorr.cli.main import main


def _spec_file(tmp_path: Path, root: Path, out: Path) -> Path:
    spec = tiny_spec(root, out, rates=(0.0,), seeds=(0,), methods={"vanilla": "demo"})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _one_line_error(capsys, argv, *fragments) -> str:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2, err
    assert err.startswith("noisycorr: error: ") and "\n" not in err and "Traceback" not in err, err
    assert "expected " in err and ", found " in err, err
    for frag in fragments:
        assert frag in err, err
    return captured.out


def test_bench_bad_setting_fails_before_any_cell(capsys, tiny_root, tmp_path):
    out = tmp_path / "b"
    _one_line_error(capsys, ["bench", _spec_file(tmp_path, tiny_root, out), "--set", "train.epochs=0"],
                    "train.epochs", "found 0")
    assert not out.exists()


def test_bench_missing_data_folder_fails_before_any_cell(capsys, tmp_path):
    out = tmp_path / "b"
    _one_line_error(capsys, ["bench", _spec_file(tmp_path, tmp_path / "nowhere", out)], "nowhere", "data.root")
    assert not out.exists()


def test_bench_output_folder_under_a_file(capsys, tiny_root, tmp_path):
    (tmp_path / "afile").write_text("x")
    _one_line_error(capsys, ["bench", _spec_file(tmp_path, tiny_root, tmp_path / "afile" / "b")], "afile is a file")


def _fake_runner(monkeypatch, log_text: str, code: int) -> None:
    real = bench_pkg.run_bench

    def runner(cmd, log, env):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(log_text)
        return code, 1.0

    monkeypatch.setattr(bench_pkg, "run_bench", lambda spec, **kw: real(spec, runner=runner, **kw))


def test_bench_cell_refusing_its_input_prints_the_cause_and_no_report(capsys, tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "b"
    line = "noisycorr: error: /d/train_caps.txt: row 7: expected a caption, found an empty line"
    _fake_runner(monkeypatch, f"loading\n{line}\n", 2)
    stdout = _one_line_error(capsys, ["bench", _spec_file(tmp_path, tiny_root, out)], "train_caps.txt: row 7")
    assert f"cause: {line}" in stdout and "no report written" in stdout
    assert not (out / "report").exists()


def test_bench_crashed_cell_prints_the_cause_and_no_empty_report(capsys, tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "b"
    _fake_runner(monkeypatch, "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n", 1)
    assert main(["bench", str(_spec_file(tmp_path, tiny_root, out))]) == 1
    captured = capsys.readouterr()
    assert "RuntimeError: CUDA out of memory" in captured.err and captured.err.count("\n") == 1
    assert "run the same command again to retry" not in captured.err
    assert not (out / "report").exists()


@pytest.mark.parametrize("text,cause", [
    ("a\nnoisycorr: error: x: expected a, found b\nmore\n", "noisycorr: error: x: expected a, found b"),
    ("Traceback (most recent call last):\n  File \"t.py\"\nValueError: bad\n", "ValueError: bad"),
    ("just output\nlast words\n", "last words"),
    ("", None),
])
def test_failure_cause_is_the_last_error_line(tmp_path, text, cause):
    (tmp_path / "train.log").write_text(text)
    assert failure_cause(tmp_path / "train.log") == cause


def test_rsum_plot_axis_is_in_percent(tiny_root, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisycorr.bench.report import CellRecord, _plot_group
    from noisycorr.bench.spec import spec_from_dict

    spec = spec_from_dict(tiny_spec(tiny_root, tmp_path / "b", rates=(0.0, 0.2, 0.5)), "spec.yaml")
    records = [CellRecord(c, "done", rsum=300.0 - 100 * c.rate) for c in spec.cells()]
    axes = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: axes.extend(fig.axes) or real_close(fig))
    _plot_group(spec, records, "tiny", "per_caption", [0.0, 0.2, 0.5], ["vanilla", "ncr"], tmp_path)
    ax = axes[0]
    assert "(%)" in ax.get_xlabel()
    assert list(ax.get_xticks()) == [0.0, 20.0, 50.0]
    assert list(ax.lines[0].get_xdata()) == [0.0, 20.0, 50.0]


def test_one_rate_plots_a_bar_per_method_with_its_mean(tiny_root, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisycorr.bench.report import CellRecord, _plot_group
    from noisycorr.bench.spec import spec_from_dict

    spec = spec_from_dict(tiny_spec(tiny_root, tmp_path / "b", rates=(0.6,)), "spec.yaml")
    rsum = {("vanilla", 0): 100.0, ("vanilla", 1): 110.0, ("ncr", 0): 150.0, ("ncr", 1): 154.0}
    records = [CellRecord(c, "done", rsum=rsum[(c.method, c.seed)]) for c in spec.cells()]
    axes = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: axes.extend(fig.axes) or real_close(fig))
    _plot_group(spec, records, "tiny", "per_caption", [0.6], ["vanilla", "ncr"], tmp_path)
    ax = axes[0]
    widths = {t.get_text(): p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches)}
    assert widths == {"vanilla (n=2)": 105.0, "ncr (n=2)": 152.0}
    assert "60 %" in ax.get_title()
