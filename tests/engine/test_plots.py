"""curves.png: integer epoch ticks numbered from 1, and a line where the warm-up ends."""

from __future__ import annotations

import pytest

from noisycorr.engine.plots import plot_history, warmup_epochs_of


def _rows(n: int, **columns) -> list[dict]:
    return [{"epoch": e, "val_rsum": 100.0 + e, **{k: v(e) for k, v in columns.items()}} for e in range(n)]


@pytest.mark.parametrize("rows,expected", [
    (_rows(6, warmup=lambda e: float(e < 2), loss_warmup_A=lambda e: 1.0), 2),  # NCR / IN2R / BiCro flag
    (_rows(6, hardest=lambda e: float(e >= 3), loss_triplet=lambda e: 1.0), 3),  # the baseline's mean warm-up
    ([{**r, **({"loss_warmup_A": 1.0} if r["epoch"] < 1 else {"loss_clean": 0.5})} for r in _rows(4)], 1),
    (_rows(5, hardest=lambda e: 1.0, loss_triplet=lambda e: 1.0), 0),  # no warm-up
    (_rows(1, warmup=lambda e: 1.0), 0),
])
def test_warmup_end_is_read_from_the_rows(rows, expected):
    assert warmup_epochs_of(rows) == expected


def _draw(tmp_path, monkeypatch, rows, **kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig) or real_close(fig))
    plot_history(rows, tmp_path / "curves.png", **kw)
    assert (tmp_path / "curves.png").stat().st_size > 0
    return figs[0].axes


def _vertical_lines(ax) -> list[float]:
    return [line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]


def test_curves_mark_the_warmup_end_and_use_integer_ticks(tmp_path, monkeypatch):
    rows = _rows(5, warmup=lambda e: float(e < 2), loss_warmup_A=lambda e: 2.0 if e < 2 else float("nan"),
                 loss_clean=lambda e: 0.5)
    ax_loss, ax_val = _draw(tmp_path, monkeypatch, rows)
    assert 2.5 in _vertical_lines(ax_loss) and 2.5 in _vertical_lines(ax_val)
    for ax in (ax_loss, ax_val):
        visible = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert visible and all(float(t).is_integer() for t in visible), visible
    assert any("warm-up ends" in t.get_text() for t in ax_loss.get_legend().get_texts())


def test_curves_take_an_explicit_warmup_and_draw_none_without_one(tmp_path, monkeypatch):
    rows = _rows(4, loss_triplet=lambda e: 1.0)
    ax_loss, _ = _draw(tmp_path, monkeypatch, rows)
    assert _vertical_lines(ax_loss) == []
    ax_loss, _ = _draw(tmp_path, monkeypatch, rows, warmup_epochs=1)
    assert _vertical_lines(ax_loss) == [1.5]
