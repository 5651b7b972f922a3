"""A user's walkthrough of the insight tools (docs/insight.md), checked against independent references.

* ``rnnkit diagnose`` figures against a plain float64 loop written from the cell equations with the
  model's weights: ``||dL/dh_t||`` by ``torch.autograd.grad``, gate values and saturation by a
  direct count, the memory horizon by the documented rule;
* the plots say what their captions and tables say: ``memory.png``'s legend in the words of
  ``memory.md`` (never ``T=none``), ``compare.png`` draws no ``± 0`` bar for a one-seed cell (its
  table prints ``n/a``), and ``gradient_norms.png``'s title is not cut at the figure's edge.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.axes
import matplotlib.figure
import pytest
import torch
import torch.nn.functional as F

from rnnkit.insight import gradient_diagnostics, plot_gradient_norms, scale_recurrent_weights
from rnnkit.insight.compare import CellRun, CompareResult
from rnnkit.insight.memory import MemoryBenchmark, MemoryModel, MemoryResult, make_task, task_loss

matplotlib.use("Agg")

SIGMOID = ("input", "forget", "output", "reset", "update")


def _plain_loop(cell: str, model: MemoryModel, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The recurrence from the equations (torch.nn's gate order), float64, with the model's weights."""
    w = {n.split(".")[-1]: p.detach().double() for n, p in model.encoder.named_parameters()}
    wi, wh, bi, bh = w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"]
    h = torch.zeros(x.shape[0], wh.shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros_like(h)
    hs: list[torch.Tensor] = []
    gates: dict[str, list[torch.Tensor]] = {}
    for t in range(x.shape[1]):
        gi, gh = x[:, t].double() @ wi.T + bi, h @ wh.T + bh
        if cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, -1)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            step = {"input": i, "forget": f, "cell_candidate": g, "output": o}
        elif cell == "gru":
            ir, iz, i_n = gi.chunk(3, -1)
            hr, hz, h_n = gh.chunk(3, -1)
            r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
            n = (i_n + r * h_n).tanh()
            h = (1 - z) * n + z * h
            step = {"reset": r, "update": z, "candidate": n}
        else:
            pre = gi + gh
            h = pre.tanh()
            step = {"pre_activation": pre}
        hs.append(h)
        for k, v in step.items():
            gates.setdefault(k, []).append(v.detach())
    return hs, {k: torch.stack(v, 1) for k, v in gates.items()}


def _saturated(name: str, values: torch.Tensor) -> float:
    if name in SIGMOID:
        return float(((values < 0.05) | (values > 0.95)).double().mean())
    bounded = values.tanh() if name == "pre_activation" else values
    return float((bounded.abs() > 0.95).double().mean())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("scale", [None, 2.0])
def test_diagnose_figures_match_a_plain_loop(cell: str, scale: float | None) -> None:
    """grad_norms, gate saturation and the horizon of one adding batch against the plain loop; with
    W_hh = 2 x orthogonal and larger input weights the gates do saturate (a count of 0 == 0 proves little)."""
    spec = make_task("adding")
    x, y = spec.generate(8, 40, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = MemoryModel(spec, cell, 16)
    if scale is not None:
        scale_recurrent_weights(model, scale)
        with torch.no_grad():
            model.encoder.weight_ih_l0.mul_(4)
    report = gradient_diagnostics(model, (x, y), loss_fn=lambda m, b: task_loss(spec, m(b[0]), b[1]),
                                  jacobians=False)

    hs, gates = _plain_loop(cell, model, x)
    pred = (hs[-1] @ model.head.weight.detach().double().T + model.head.bias.detach().double()).squeeze(-1)
    grads = torch.autograd.grad(F.mse_loss(pred, y.double()), hs)
    expected = [float(g.norm(dim=-1).mean()) for g in grads]
    rtol = 1e-4 if scale is None else 5e-3  # float32 layer against the float64 loop (chaotic when scaled)
    assert report.grad_norms == pytest.approx(expected, rel=rtol)

    _, _, returned = model.encoder(x, return_gates=True)
    for name, values in gates.items():
        torch.testing.assert_close(returned["l0"][name].detach().double(), values, atol=1e-4, rtol=1e-4)
    counted = {name: _saturated(name, values) for name, values in gates.items()}
    assert report.saturation["l0"] == pytest.approx(counted, abs=2e-3)
    if scale is not None:
        assert report.saturation_overall > 0

    # the documented rule: smallest k >= 1 with ||dL/dh_(T-1-k)|| < 1e-3 x ||dL/dh_(T-1)||
    last = len(expected) - 1
    horizon = next((k for k in range(1, last + 1) if expected[last - k] < 1e-3 * expected[last]), None)
    assert report.horizon == horizon


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[matplotlib.figure.Figure]:
    """Keep every figure saved (the plot functions close theirs after saving)."""
    saved: list[matplotlib.figure.Figure] = []
    original = matplotlib.figure.Figure.savefig

    def savefig(self: matplotlib.figure.Figure, *args: object, **kwargs: object) -> None:
        saved.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def _result(cell: str, length: int, success: bool) -> MemoryResult:
    return MemoryResult("adding", cell, length, 0, "mse", 0.001 if success else 0.16, 1 / 6, success, 10, 0.1)


def test_memory_plot_legend_reads_as_the_limits_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cell that learns no length and one that fails at none: the legend said 'learns to T=none' and
    'fails from T=none'; a missing limit is now said in words, as memory.md's table does."""
    saved = _capture(monkeypatch)
    bench = MemoryBenchmark(make_task("adding"), [_result("rnn", 6, False), _result("rnn", 40, False),
                                                  _result("lstm", 6, True), _result("lstm", 40, True)],
                            {"budget_steps": 10})
    bench.plot(tmp_path / "memory.png")
    legend = [t.get_text() for t in saved[0].axes[0].get_legend().get_texts()]
    limits = {row["cell"]: row for row in bench.limits()}
    assert limits["rnn"]["longest_learned"] is None and limits["lstm"]["first_failed"] is None
    assert "rnn: learns no T, fails from T=6" in legend
    assert "lstm: learns to T=40, no failure up to T=40" in legend
    assert not any("T=none" in text for text in legend)


def _errorbar_heights(ax: matplotlib.axes.Axes) -> list[float]:
    """Lengths of the drawn error-bar segments of a bar chart (finite ones only: nan is not drawn)."""
    heights = []
    for collection in ax.collections:
        for segment in collection.get_segments():
            if len(segment) < 2:
                continue
            span = float(abs(segment[1][1] - segment[0][1]))
            if math.isfinite(span):
                heights.append(span)
    return heights


def test_compare_plot_draws_no_spread_for_one_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A one-seed cell has no spread ('n/a' in the table); the plot drew '± 0' error bars and a title
    saying 'mean ± std over seeds'. With two seeds the bar is the sample std (statistics.stdev)."""
    import statistics

    saved = _capture(monkeypatch)
    one = CompareResult("text-classification", "accuracy", True,
                        [CellRun("rnn", 0, "r", 0.48, 1.2, 100, 24.0), CellRun("lstm", 0, "l", 0.55, 1.7, 200, 51.0)],
                        ["rnn", "lstm"], "RSS growth, sampled")
    assert [row[3] for row in one.formatted_rows()] == ["n/a", "n/a"]
    one.plot(tmp_path / "one.png")
    assert all(_errorbar_heights(ax) == [] for ax in saved[0].axes)
    assert "± std" not in saved[0]._suptitle.get_text()

    two = CompareResult("text-classification", "accuracy", True,
                        [CellRun("rnn", 0, "r", 0.48, 1.0, 100, 20.0), CellRun("rnn", 1, "r", 0.52, 1.4, 100, 28.0),
                         CellRun("lstm", 0, "l", 0.55, 1.7, 200, 51.0)], ["rnn", "lstm"], "RSS growth, sampled")
    two.plot(tmp_path / "two.png")
    quality = _errorbar_heights(saved[1].axes[0])
    assert quality == pytest.approx([2 * statistics.stdev([0.48, 0.52])])  # mean ± std: the bar spans 2 std
    assert "mean ± std over seeds" in saved[1]._suptitle.get_text()


def test_gradient_plot_title_fits_the_figure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI's title names every run and the data; it ran past the figure's right edge
    ('... on sst_small.tx'). Its lines now fit inside the figure, and none of the words is lost."""
    saved = _capture(monkeypatch)
    spec = make_task("adding")
    x, y = spec.generate(4, 10, torch.Generator().manual_seed(0))
    report = gradient_diagnostics(MemoryModel(spec, "rnn", 8), (x, y), jacobians=False, label="rnn")
    title = "Gradient diagnostics: runs/compare/rnn-seed0, runs/compare/lstm-seed0 on data/sst2/stsa.binary.train"
    plot_gradient_norms([report], tmp_path / "g.png", title=title)
    fig = saved[0]
    text = fig.axes[0].title
    assert text.get_text().split() == title.split()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    box = text.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    width = fig.get_figwidth() * fig.dpi
    assert box.x0 >= 0 and box.x1 <= width


def test_diagnose_errors_on_text_runs_name_the_fix(tmp_path):
    """A HAN or multi-label run said "diagnose supports single-label text classifiers with
    architecture=rnn" (no fix); a text run given an image dataset said "data file not found"."""
    from types import SimpleNamespace

    from rnnkit.tasks.text_classification import DataConfig, TrainedTextClassifier, read_examples

    han = SimpleNamespace(prep=SimpleNamespace(multi_label=True, architecture="han"))
    with pytest.raises(ValueError) as err:
        TrainedTextClassifier.diagnostic_batch(han, tmp_path / "x.csv")  # type: ignore[arg-type]
    message = str(err.value)
    assert "architecture=han, multi-label" in message and "--set model.architecture=rnn" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="builtin datasets are for image-classification; give a text file"):
        read_examples("builtin:digits", DataConfig())
