"""Run plots tell the truth: the loss of a step the guard dropped never enters a curve or its
smoothing, the axis spans the healthy losses (and says so when a dropped one is off scale),
lr and grad-norm plots name their y axis, a fine-tune's plot shows the forgetting curve."""

from __future__ import annotations

import math

import pytest

from genlab.track import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_run makes, kept open for inspection instead of saved."""
    kept = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: kept.__setitem__(path.name, fig))
    return kept


def _drill(steps: int = 60) -> tuple[list[dict], list[dict]]:
    records = []
    for s in range(1, steps + 1):
        loss = 2.0 + math.exp(-s / 20) + 0.01 * math.sin(s)
        records.append({"step": s, "train/loss": loss, "train/lr": 1e-3, "train/grad_norm": 0.5})
        if s % 20 == 0:
            records[-1]["val/loss"] = loss + 0.05
            records[-1]["val_original/loss"] = 1.5 + s / 1000
    records[19]["train/loss"] = float("nan")  # step 20
    records[39]["train/loss"] = 222.0  # step 40: a x100 spike
    events = [
        {"step": 20, "kind": "nonfinite_loss", "action": "skip", "detail": {}},
        {"step": 40, "kind": "loss_spike", "action": "skip", "detail": {}},
    ]
    return records, events


def test_dropped_losses_stay_out_of_the_curves_and_the_axis(figures, tmp_path):
    records, events = _drill()
    plots.plot_run(records, events, tmp_path)
    ax = figures["loss.png"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    smoothed = lines["train/loss (smoothed)"]
    healthy = [(r["step"], r["train/loss"]) for r in records if r["step"] not in (20, 40)]
    assert list(smoothed.get_xdata()) == [s for s, _ in healthy]
    ema, expected = None, []  # the smoothing, derived here: an EMA with alpha 0.1
    for _, v in healthy:
        ema = v if ema is None else 0.9 * ema + 0.1 * v
        expected.append(ema)
    assert list(smoothed.get_ydata()) == pytest.approx(expected)
    low, high = ax.get_ylim()
    assert high < 4 and low > 1  # the healthy range (1.5 .. 3), not the spike (222)
    markers = lines["loss of a dropped step"]
    assert list(markers.get_xdata()) == [20] and markers.get_ydata()[0] == high
    assert "clipped to healthy losses" in ax.get_title()
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["nan", "222"]  # what each off-scale dropped step held
    assert "val_original/loss (original data: forgetting)" in lines


def test_a_clean_run_is_not_clipped_and_lr_and_grad_norm_name_their_axes(figures, tmp_path):
    records, _ = _drill()
    records[19]["train/loss"] = records[18]["train/loss"]
    records[39]["train/loss"] = records[38]["train/loss"]
    plots.plot_run(records, [], tmp_path)
    ax = figures["loss.png"].axes[0]
    assert ax.get_title() == "loss" and not ax.texts
    assert figures["lr.png"].axes[0].get_ylabel() == "learning rate"
    grad = figures["grad_norm.png"].axes[0]
    assert grad.get_ylabel() == "gradient norm" and "before clipping" in grad.get_title()


def test_log_axes_label_their_ticks_with_plain_numbers(figures, tmp_path):
    """No mathtext (10^-1 costs ~0.25 s of parser set-up per process): each labelled tick on
    the grad-norm plot's log axis reads as the number it marks."""
    for top, bottom, must_show in ((3.0, 0.015, {0.1, 1.0}), (0.9, 0.25, {0.3})):
        records = [
            {"step": s, "train/loss": 1.0, "train/grad_norm": top * (bottom / top) ** (s / 99)}
            for s in range(100)
        ]
        plots.plot_run(records, [], tmp_path)
        ax = figures["grad_norm.png"].axes[0]
        assert ax.get_yscale() == "log"
        figures["grad_norm.png"].canvas.draw()
        low, high = ax.get_ylim()
        shown = {
            tick.get_loc(): tick.label1.get_text()
            for tick in [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
            if tick.label1.get_visible()
            and tick.label1.get_text()
            and low <= tick.get_loc() <= high
        }
        # the decades across a wide range; within one decade, minor ticks get labels
        assert must_show <= {round(loc, 6) for loc in shown}
        for loc, text in shown.items():
            assert "$" not in text
            assert float(text.replace("\u2212", "-")) == pytest.approx(loc, rel=1e-3)


def test_document_lengths_use_a_log_axis_when_they_span_decades(tmp_path, monkeypatch):
    from genlab.data.provenance import _plot_lengths
    from genlab.track import figures

    closed = []  # the figures, kept to look at instead of saved
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, dpi: closed.append(fig))
    _plot_lengths(tmp_path / "a.png", {"train": [12, 40, 300, 2_000, 90_000], "val": [50]})
    _plot_lengths(tmp_path / "b.png", {"train": [100, 120, 150], "val": [110]})
    spread, narrow = (fig.axes[0] for fig in closed)
    assert spread.get_xscale() == "log" and "log scale" in spread.get_xlabel()
    assert narrow.get_xscale() == "linear"


def test_plots_are_redrawn_at_most_every_refresh_interval(tmp_path, monkeypatch):
    """Checkpoints every 5 steps: a short run draws its plots once, at the end; with no
    interval, every checkpoint whose previous drawing has finished draws again."""
    from genlab.training import loop, run_plots
    from testkit import tiny_config

    drawn: list[int] = []
    monkeypatch.setattr(plots, "plot_run", lambda records, events, out: drawn.append(len(records)))
    settings = ["train.max_steps=20", "train.checkpoint_every=5", "train.async_checkpoint=false"]
    loop.train(tiny_config(*settings), tmp_path / "a")
    assert drawn == [20]  # once, with every step's record
    drawn.clear()
    monkeypatch.setattr(run_plots, "PLOT_REFRESH_S", 0.0)
    loop.train(tiny_config(*settings), tmp_path / "b")
    assert drawn == [5, 10, 15, 20, 20]  # each checkpoint (synchronous drawing), then the end
