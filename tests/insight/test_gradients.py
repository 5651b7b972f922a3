"""Gradient diagnostics against independent references on tiny models, and ``rnnkit diagnose``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import rnnkit.nn as rnn
from rnnkit.cli import app
from rnnkit.insight import gradients as g
from rnnkit.insight.memory import MemoryModel, make_task

runner = CliRunner()


def _manual_rnn_grads(layer: rnn.RNN, x: torch.Tensor) -> tuple[list[float], list[torch.Tensor]]:
    """Plain-loop tanh RNN from the layer's weights; dL/dh_t with L = sum(h_(T-1)) by retain_grad."""
    w_ih, w_hh, b_ih, b_hh = (getattr(layer, n).detach().clone().requires_grad_() for n in
                              ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    h = torch.zeros(x.shape[0], layer.hidden_size)
    hs = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        h.retain_grad()
        hs.append(h)
    h.sum().backward()
    return [float(v.grad.norm(dim=-1).mean()) for v in hs], [v.detach() for v in hs]


def test_hidden_state_gradients_match_a_plain_loop():
    layer = rnn.RNN(3, 5, batch_first=True)
    x = torch.randn(4, 12, 3)
    report = g.gradient_diagnostics(layer, x)
    expected, _ = _manual_rnn_grads(layer, x)
    assert report.steps == 12
    assert report.grad_norms == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert report.grad_norms[-1] == pytest.approx(math.sqrt(5))  # dL/dh_(T-1) = ones(5)


def test_lstm_gradients_match_autograd_through_the_fused_model():
    torch.manual_seed(1)
    task = make_task("adding")
    model = MemoryModel(task, "lstm", 6)
    x, y = task.generate(5, 9, torch.Generator().manual_seed(0))
    report = g.gradient_diagnostics(model, (x, y))  # default loss: MSE for float targets
    # reference: h_t is the layer output at t; perturbing a step's *output path* does not reach later
    # steps, so compare with finite differences of the loss w.r.t. an additive shift of h_t inside a loop
    layer = model.encoder
    cell = layer.cell(0)

    def loss_with_shift(t_shift: int, delta: torch.Tensor) -> torch.Tensor:
        state = cell.initial_state(5)
        for t in range(9):
            h, state = cell(x[:, t], state)
            if t == t_shift:
                state = (state[0] + delta, state[1])
        return F.mse_loss(model.head(state[0]).squeeze(-1), y)

    for t in (0, 4, 8):
        delta = torch.zeros(5, 6, requires_grad=True)
        (grad,) = torch.autograd.grad(loss_with_shift(t, delta), delta)
        assert report.grad_norms[t] == pytest.approx(float(grad.norm(dim=-1).mean()), rel=1e-4)
    # central finite differences of every coordinate of h_3 for one sequence, in float64
    model64 = model.double()
    cell64 = model64.encoder.cell(0)
    x1, y1 = x[:1].double(), y[:1].double()
    eps = 1e-6

    def shifted(unit: int, value: float) -> float:
        with torch.no_grad():
            state = cell64.initial_state(1)
            for t in range(9):
                _, state = cell64(x1[:, t], state)
                if t == 3:
                    bumped = state[0].clone()
                    bumped[0, unit] += value
                    state = (bumped, state[1])
            return float(F.mse_loss(model64.head(state[0]).squeeze(-1), y1))

    numeric = torch.tensor([(shifted(u, eps) - shifted(u, -eps)) / (2 * eps) for u in range(6)])
    report64 = g.gradient_diagnostics(model64, (x1, y1))
    assert report64.grad_norms[3] == pytest.approx(float(numeric.norm()), rel=1e-6)


def test_step_jacobians_of_a_tanh_rnn():
    layer = rnn.RNN(2, 4, batch_first=True)
    x = torch.randn(3, 6, 2)
    spectral = g.gradient_diagnostics(layer, x, jacobian_samples=3)
    frobenius = g.gradient_diagnostics(layer, x, norm="frobenius", jacobian_samples=3)
    _, hs = _manual_rnn_grads(layer, x)
    w = layer.weight_hh_l0.detach()
    for t in range(1, 6):
        jac = (1 - hs[t] ** 2).unsqueeze(-1) * w  # diag(1 - h_t^2) W_hh, per sample
        assert spectral.jacobian_step_norms[t] == pytest.approx(float(torch.linalg.matrix_norm(jac, 2).mean()), rel=1e-4)
        assert frobenius.jacobian_step_norms[t] == pytest.approx(float(torch.linalg.matrix_norm(jac).mean()), rel=1e-4)
    assert math.isnan(spectral.jacobian_step_norms[0])
    # the exact product never exceeds the product of the norms (sub-multiplicative)
    for exact, log_bound in zip(spectral.jacobian_product_norm, spectral.jacobian_product_log10):
        assert math.log10(exact) <= log_bound + 1e-6
    assert spectral.jacobian_product_norm[-1] == pytest.approx(1.0)


def test_saturation_fractions_with_hand_set_weights():
    layer = rnn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        bias = layer.bias_ih_l0  # gates i, f, g, o; 4 units each
        bias[0:2] = 10.0  # input gate saturated open on units 0, 1; sigmoid(0) = 0.5 on units 2, 3
        bias[4:8] = -10.0  # forget gate saturated shut everywhere
        bias[8:12] = torch.tensor([3.0, -3.0, 0.5, 0.0])  # tanh: |tanh(3)| = 0.995 on units 0, 1
    report = g.gradient_diagnostics(layer, torch.randn(2, 5, 3))
    assert report.saturation["l0"] == {"input": 0.5, "forget": 1.0, "cell_candidate": 0.5, "output": 0.0}
    assert report.saturation_overall == pytest.approx(0.5)


def test_saturation_fractions_respect_masks_and_rnn_preactivations():
    gates = {"update": torch.tensor([[[0.01], [0.5], [0.99]]]), "cell": torch.ones(1, 3, 1)}
    assert g.saturation_fractions(gates) == {"update": pytest.approx(2 / 3)}
    mask = torch.tensor([[True, True, False]])
    assert g.saturation_fractions(gates, mask=mask) == {"update": 0.5}
    pre = {"pre_activation": torch.tensor([[[3.0], [0.1]]])}
    assert g.saturation_fractions(pre) == {"pre_activation": 0.5}
    assert g.saturation_fractions(pre, nonlinearity="relu") == {}


def test_memory_horizon_rule():
    assert g.memory_horizon([1e-5, 1e-4, 1e-2, 1.0]) == 2
    assert g.memory_horizon([0.5, 0.9, 1.0]) is None
    assert g.memory_horizon([1.0, 0.0]) is None


def test_model_is_left_as_it_was():
    model = MemoryModel(make_task("adding"), "gru", 4)
    model.train()
    x, y = make_task("adding").generate(3, 8)
    before = model(x).detach()
    g.gradient_diagnostics(model, (x, y))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert "_run" not in vars(model.encoder)
    assert torch.allclose(model(x), before)


def test_exploding_initialisation_and_clipping():
    layer = g.scale_recurrent_weights(rnn.RNN(2, 6, batch_first=True), 3.0)
    assert torch.allclose(torch.linalg.svdvals(layer.weight_hh_l0.detach()), torch.full((6,), 3.0), atol=1e-5)
    demo = g.clipping_demo("rnn", length=50, scale=3.0, steps=12, hidden_size=32)
    assert demo["without"]["diverged"] and not demo["with"]["diverged"]
    assert demo["with"]["grad_norm"][0] == demo["without"]["grad_norm"][0] > 100  # same start, exploding


def test_fresh_diagnostics_show_vanishing_and_exploding_gradients():
    reports, clipping = g.diagnose_fresh(["rnn", "lstm"], length=40, hidden_size=16, batch_size=8)
    names = [r.label for r in reports]
    assert names[:2] == ["rnn", "lstm"] and "3 x orthogonal" in names[2]
    vanishing, exploding = reports[0], reports[2]
    assert vanishing.grad_norms[0] < 1e-3 * vanishing.grad_norms[-1] and vanishing.horizon is not None
    assert exploding.grad_norms[0] > 10 * exploding.grad_norms[-1] and exploding.horizon is None
    assert exploding.clipped_grad_norm == 1.0 < exploding.param_grad_norm
    assert clipping is not None


def test_errors():
    with pytest.raises(ValueError, match="spectral, frobenius"):
        g.gradient_diagnostics(rnn.GRU(2, 3), torch.randn(4, 2, 2), norm="nuclear")
    with pytest.raises(ValueError, match="no rnnkit.nn recurrent layer"):
        g.gradient_diagnostics(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.randn(2, 2))


def test_diagnose_cli_fresh(tmp_path):
    out = tmp_path / "diag"
    result = runner.invoke(app, ["diagnose", "--fresh", "--cell", "rnn,gru", "--length", "20", "--hidden-size", "8",
                                 "--samples", "4", "--out", str(out), "--norm", "frobenius"])
    assert result.exit_code == 0, result.output
    assert "| rnn | 20 |" in result.output and "Exploding gradients and clipping" in result.output
    data = json.loads((out / "diagnose.json").read_text())
    assert [r["label"] for r in data["reports"]][:2] == ["rnn", "gru"] and data["reports"][0]["norm"] == "frobenius"
    assert (out / "gradient_norms.png").stat().st_size > 1000
    bad = runner.invoke(app, ["diagnose", "--fresh", "--task", "copy", "--length", "10"])
    assert bad.exit_code == 2 and "too short" in bad.output
    bad = runner.invoke(app, ["diagnose"])
    assert bad.exit_code == 2 and "either RUN folder(s) or --fresh" in bad.output


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_unbounded_candidates_are_left_out_of_saturation(cell):
    layer = rnn.Recurrent(cell, 3, 4, batch_first=True)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        layer.bias_ih_l0[-4:] = 5.0  # candidate pre-activation 5: g(5) = 5.5, far from saturated
    report = g.gradient_diagnostics(layer, torch.randn(2, 6, 3))
    assert "candidate" not in report.saturation["l0"] and report.unbounded_gates == {"candidate": "g"}
    assert report.saturation_overall == 0.0  # gates at sigmoid(0) = 0.5 only
    assert g.gate_activations(layer.cell(0), ["candidate", "update"]) == {"candidate": "g", "update": "sigmoid"}
    gates = {"candidate": torch.full((1, 2, 4), 5.5)}
    assert g.saturation_fractions(gates, cell=layer.cell(0)) == {}
    text = g.diagnostics_markdown([report])
    assert "Left out of `saturated`" in text and "candidate (g(x) = x + 0.5" in text


def test_relu_rnn_has_no_bounded_activation():
    report = g.gradient_diagnostics(rnn.RNN(2, 3, nonlinearity="relu", batch_first=True), torch.randn(2, 4, 2))
    assert report.saturation["l0"] == {} and math.isnan(report.saturation_overall)
    assert report.unbounded_gates == {"pre_activation": "relu"} and "| n/a |" in g.diagnostics_markdown([report])


def test_table_numbers_and_the_open_horizon_bound():
    layer = rnn.RNN(2, 3, batch_first=True)
    report = g.gradient_diagnostics(layer, torch.randn(2, 60, 2), jacobians=False)
    report.grad_norms = [4553524.0] + [1.0] * 59
    report.horizon = None
    healthy = g.gradient_diagnostics(layer, torch.randn(2, 6, 2), jacobians=False)
    healthy.grad_norms = [1.23e-30, 1e-5, 1e-3, 0.1, 0.5, 1.0]
    text = g.diagnostics_markdown([report, healthy])
    row = next(line for line in text.splitlines() if line.startswith(f"| {report.label} | 60 |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[3] == "1" and cells[4] == "4.55e+06" and cells[6] == "> 59"
    assert "4553524.0000" not in text and "| 1.23e-30 |" in text and ">= 59" not in text


def test_fresh_lstm_starts_with_forget_bias_one_and_outlasts_the_rnn():
    model = MemoryModel(make_task("adding"), "lstm", 8)
    assert torch.all(model.encoder.bias_ih_l0[8:16] == 1.0) and torch.all(model.encoder.bias_hh_l0[8:16] == 0.0)
    reports, _ = g.diagnose_fresh(["rnn", "lstm", "gru"], length=100, hidden_size=64, batch_size=16,
                                  exploding_scale=None)
    horizon = {r.label: r.horizon for r in reports}
    assert horizon["rnn"] is not None and (horizon["lstm"] is None or horizon["lstm"] > 1.5 * horizon["rnn"])


def test_clip_norm_zero_means_none_and_negatives_are_refused(tmp_path):
    bad = runner.invoke(app, ["diagnose", "--fresh", "--clip-norm", "-1", "--length", "10"])
    assert bad.exit_code == 2 and "--clip-norm must be a norm >= 0 (0: no clipping), got -1" in bad.output
    out = tmp_path / "d"
    ok = runner.invoke(app, ["diagnose", "--fresh", "--cell", "rnn", "--clip-norm", "0", "--length", "12",
                             "--hidden-size", "4", "--samples", "2", "--out", str(out), "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads((out / "diagnose.json").read_text())
    assert data["clipping"] is None and all(r["clip_norm"] is None for r in data["reports"])
    with pytest.raises(ValueError, match="clip norm > 0"):
        g.clipping_demo(clip_norm=0)
    with pytest.raises(ValueError, match=">= 0"):
        g.gradient_diagnostics(rnn.RNN(2, 3), torch.randn(4, 2, 2), clip_norm=-2.0)


def test_diagnose_run_is_exported_and_unsupported_runs_say_what_is_supported(tmp_path):
    from rnnkit.insight import diagnose_run

    assert callable(diagnose_run)
    data = tmp_path / "x.txt"
    data.write_text("x\n")
    with pytest.raises(ValueError, match="does not support object runs; supported: image-classification, "
                                         "text-classification .*forecasting, tagging, language-model"):
        g.diagnostic_inputs(object(), data)
    with pytest.raises(FileNotFoundError, match="data not found: .*nonexist"):
        g.diagnostic_inputs(object(), tmp_path / "nonexist")


def _train(args: list[str]) -> None:
    result = runner.invoke(app, ["train", *args, "--quiet"])
    assert result.exit_code == 0, result.output


def test_diagnose_overlays_several_trained_runs(tmp_path):
    for cell in ("rnn", "gru"):
        _train(["image-classification", "--train", "builtin:digits", "--out", str(tmp_path), "--name", cell,
                "--set", f"model.cell={cell}", "--set", "train.epochs=1", "--set", "model.hidden_size=8",
                "--set", "data.max_train_examples=100", "--set", "train.accelerator=cpu"])
    out = tmp_path / "diag"
    result = runner.invoke(app, ["diagnose", str(tmp_path / "rnn"), str(tmp_path / "gru"), "--data", "builtin:digits",
                                 "--samples", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| rnn | 8 |" in result.output and "| gru | 8 |" in result.output  # 8 rows of 8 pixels
    assert [r["label"] for r in json.loads((out / "diagnose.json").read_text())["reports"]] == ["rnn", "gru"]
    missing = runner.invoke(app, ["diagnose", str(tmp_path / "rnn"), "--data", str(tmp_path / "nonexist") + "/"])
    assert missing.exit_code == 2 and "data not found" in missing.output
    twice = runner.invoke(app, ["diagnose", str(tmp_path / "rnn"), str(tmp_path / "rnn"), "--data", "builtin:digits"])
    assert twice.exit_code == 2 and "twice" in twice.output


def test_diagnose_forecasting_tagging_and_language_model_runs(tmp_path):
    import numpy as np

    t = np.arange(120)
    series = tmp_path / "sales.csv"
    dates = np.datetime64("1990-01", "M") + t
    series.write_text("date,sales\n" + "".join(f"{d},{10 + 3 * np.sin(v / 2):.4f}\n" for d, v in zip(dates, t)))
    _train(["forecasting", "--train", str(series), "--out", str(tmp_path), "--name", "fc", "--set", "data.target=sales",
            "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "train.accelerator=cpu"])
    conll = tmp_path / "ner.txt"
    conll.write_text("".join("Ann B-PER\nSmith I-PER\nwent O\nto O\nParis B-LOC\n. O\n\n" for _ in range(30)))
    _train(["tagging", "--train", str(conll), "--out", str(tmp_path), "--name", "tag", "--set", "train.epochs=1",
            "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8", "--set", "model.char_hidden_size=4",
            "--set", "train.accelerator=cpu"])
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat and the dog sat on the log\n" * 60)
    _train(["language-model", "--train", str(text), "--out", str(tmp_path), "--name", "lm", "--set", "train.epochs=1",
            "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8", "--set", "train.batch_size=4",
            "--set", "train.bptt=12", "--set", "train.accelerator=cpu"])
    for run, data, steps in (("fc", series, None), ("tag", conll, 6), ("lm", text, 12)):
        report = g.diagnose_run(tmp_path / run, data, samples=4, jacobian_samples=2)
        assert report.label == run and report.layer == ("layers.0" if run == "lm" else "encoder")
        assert steps is None or report.steps == steps
        assert report.grad_norms[-1] > 0 and all(math.isfinite(v) for v in report.grad_norms)
    from rnnkit.tasks import load_trained

    lookback = load_trained(str(tmp_path / "fc")).model.lookback  # type: ignore[attr-defined]
    assert g.diagnose_run(tmp_path / "fc", series, samples=4).steps == lookback  # the encoder reads the lookback


# -- regression tests: tiny norms, zoneout, padding, NaN, long sequences ------------------------
def test_tiny_gradient_norms_are_not_flushed_to_zero():
    """||dL/dh_t|| of 1e-25 is a real value: a float32 norm squares its entries to zero."""
    torch.manual_seed(0)
    layer = rnn.RNN(2, 6, batch_first=True)
    with torch.no_grad():
        layer.weight_hh_l0.mul_(0.05)  # gradients shrink about 20x per step
    x = torch.randn(3, 25, 2)
    report = g.gradient_diagnostics(layer, x, jacobians=False)
    # reference: the same recurrence in float64 by a plain loop
    w_ih, w_hh, b_ih, b_hh = (getattr(layer, n).detach().double().requires_grad_() for n in
                              ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    h = torch.zeros(3, 6, dtype=torch.float64)
    hs = []
    for t in range(25):
        h = torch.tanh(x[:, t].double() @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        h.retain_grad()
        hs.append(h)
    h.sum().backward()
    expected = [float(v.grad.norm(dim=-1).mean()) for v in hs]
    assert expected[0] < 1e-25  # far below float32's sqrt(smallest normal), ~1e-19
    assert report.grad_norms == pytest.approx(expected, rel=1e-3, abs=0)
    assert report.horizon == g.memory_horizon(expected)


def _zoneout_lstm_reference(layer: rnn.LSTM, x: torch.Tensor, rate: float):
    """LSTM with inference-time zoneout, written out: returns the final h and the step function."""
    w_ih, w_hh, b_ih, b_hh = (getattr(layer, n).detach().double().requires_grad_() for n in
                              ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))

    def step(x_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, gg, o = (x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return rate * h + (1 - rate) * h_new, rate * c + (1 - rate) * c_new

    return step


def test_zoneout_layers_are_diagnosed_as_they_run():
    """The diagnosed pass must be the layer's own inference pass: with zoneout, each step mixes in the
    previous state (rate x s_(t-1) + (1 - rate) x s_t), in the loss, the gradients and the Jacobians."""
    torch.manual_seed(0)
    rate = 0.5
    layer = rnn.LSTM(3, 4, batch_first=True, zoneout=rate)
    x = torch.randn(2, 7, 3)
    report = g.gradient_diagnostics(layer, x, jacobian_samples=2)
    layer.eval()
    with torch.no_grad():
        assert report.loss == pytest.approx(float(layer(x)[0][:, -1].sum()), rel=1e-5)
    step = _zoneout_lstm_reference(layer, x, rate)
    h = c = torch.zeros(2, 4, dtype=torch.float64)
    hs, states = [], []
    for t in range(7):
        states.append((h.detach(), c.detach()))
        h, c = step(x[:, t].double(), h, c)
        h.retain_grad()
        hs.append(h)
    h.sum().backward()
    assert report.grad_norms == pytest.approx([float(v.grad.norm(dim=-1).mean()) for v in hs], rel=1e-4)
    for t in (1, 4, 6):  # J_t = d[h_t, c_t] / d[h_(t-1), c_(t-1)], by torch.autograd on the written-out step
        jac = [torch.autograd.functional.jacobian(
            lambda s, b=b, t=t: torch.cat(step(x[b, t].double(), s[:4], s[4:])), torch.cat(states[t], -1)[b])
            for b in range(2)]
        expected = sum(float(torch.linalg.matrix_norm(j, 2)) for j in jac) / 2
        assert report.jacobian_step_norms[t] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("cell", sorted(__import__("rnnkit.cells", fromlist=["CELLS"]).CELLS))
def test_the_traced_pass_is_the_layers_own_forward(cell):
    """For every cell, with zoneout, a mask, two layers and both directions: the loss of the
    diagnosed pass equals the layer's own evaluation-mode output."""
    torch.manual_seed(0)
    layer = rnn.Recurrent(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=True, zoneout=0.3)
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 4, 2])
    weights = torch.randn(3, 6, 8)

    def loss_fn(m, b):
        return (m(b[0], lengths=b[1])[0] * weights).sum()

    report = g.gradient_diagnostics(layer, (x, lengths), loss_fn=loss_fn, jacobian_samples=3)
    layer.eval()
    with torch.no_grad():
        assert report.loss == pytest.approx(float(loss_fn(layer, (x, lengths))), rel=1e-4, abs=1e-5)


class _LastState(torch.nn.Module):
    """A classifier reading each sequence's last real state (h_n), as the task models do."""

    def __init__(self, cell: str = "gru") -> None:
        super().__init__()
        torch.manual_seed(3)
        self.encoder = rnn.Recurrent(cell, 3, 5, batch_first=True)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x, lengths):
        _, h_n = self.encoder(x, lengths=lengths)
        return self.head((h_n[0] if isinstance(h_n, tuple) else h_n)[-1])


def _last_state_loss(model, batch):
    x, lengths, y = batch
    return F.cross_entropy(model(x, lengths), y, reduction="sum")


def test_padding_does_not_change_the_diagnosis():
    """Padded steps are not hidden states: they are left out of the means (and the Jacobian of a padded
    step is the identity, as the layer keeps its state there), so extra padding changes nothing, and
    each value is the mean over the sequences real at that step of what each gives alone."""
    model = _LastState()
    torch.manual_seed(0)
    x = torch.randn(3, 8, 3)
    lengths = torch.tensor([8, 5, 3])
    y = torch.tensor([0, 1, 1])
    report = g.gradient_diagnostics(model, (x, lengths, y), loss_fn=_last_state_loss, jacobian_samples=3)
    padded = torch.cat([x, torch.randn(3, 4, 3)], 1)  # four more padded steps
    again = g.gradient_diagnostics(model, (padded, lengths, y), loss_fn=_last_state_loss, jacobian_samples=3)
    assert again.steps == report.steps == 8
    for key in ("grad_norms", "jacobian_step_norms", "jacobian_product_norm", "jacobian_product_log10"):
        assert getattr(again, key) == pytest.approx(getattr(report, key), rel=1e-6, nan_ok=True)
    assert again.horizon == report.horizon
    # reference: each sequence alone, unpadded, in float64 (||dL_b/dh_t|| by autograd; d s_(L-1)/d s_t by jacobian)
    model64 = _LastState().double()
    cell = model64.encoder.cell(0)
    grads: list[list[float]] = [[] for _ in range(8)]
    products: list[list[float]] = [[] for _ in range(8)]
    for b in range(3):
        n = int(lengths[b])
        xb = x[b, :n].double()
        h = torch.zeros(1, 5, dtype=torch.float64)
        hs = []
        for t in range(n):
            _, (h,) = cell(xb[t:t + 1], (h,))
            h.retain_grad()
            hs.append(h)
        F.cross_entropy(model64.head(h), y[b:b + 1], reduction="sum").backward()
        for t in range(n):
            grads[t].append(float(hs[t].grad.norm()))

            def run_from(s, t=t, n=n, xb=xb):
                for k in range(t + 1, n):
                    _, (s,) = cell(xb[k:k + 1], (s,))
                return s

            jac = torch.autograd.functional.jacobian(run_from, hs[t].detach()).reshape(5, 5)
            products[t].append(float(torch.linalg.matrix_norm(jac, 2)))
    assert report.grad_norms == pytest.approx([sum(v) / len(v) for v in grads], rel=1e-4)
    assert report.jacobian_product_norm == pytest.approx([sum(v) / len(v) for v in products], rel=1e-4)


def test_nan_in_padding_does_not_reach_the_diagnosis():
    model = _LastState("lstm")
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 3])
    y = torch.tensor([0, 1])
    clean = g.gradient_diagnostics(model, (x, lengths, y), loss_fn=_last_state_loss, jacobian_samples=2)
    dirty = x.clone()
    dirty[1, 3:] = math.nan
    report = g.gradient_diagnostics(model, (dirty, lengths, y), loss_fn=_last_state_loss, jacobian_samples=2)
    assert report.grad_norms == pytest.approx(clean.grad_norms)
    assert report.jacobian_product_norm == pytest.approx(clean.jacobian_product_norm)
    assert report.param_grad_norm == pytest.approx(clean.param_grad_norm)


def test_non_finite_losses_are_one_line_errors():
    layer = rnn.GRU(2, 3, batch_first=True)
    x = torch.randn(2, 5, 2)
    x[0, 2, 1] = math.nan
    with pytest.raises(ValueError, match="data holds NaN or inf"):
        g.gradient_diagnostics(layer, x)
    with torch.no_grad():
        layer.weight_hh_l0[0, 0] = math.inf
    with pytest.raises(ValueError, match="weights hold NaN or inf"):
        g.gradient_diagnostics(layer, torch.randn(2, 5, 2))
    assert "_run" not in vars(layer)  # restored after the error


def test_jacobian_products_beyond_float_range_do_not_crash():
    """An exploding product (3^799 > 1e308) is reported as inf (its log10 bound stays exact), not an SVD error."""
    layer = rnn.RNN(1, 3, nonlinearity="relu", batch_first=True, bias=False).double()
    with torch.no_grad():
        layer.weight_hh_l0.copy_(3.0 * torch.eye(3, dtype=torch.float64))
        layer.weight_ih_l0.fill_(1.0)
    report = g.gradient_diagnostics(layer, torch.full((1, 800, 1), 1e-300, dtype=torch.float64),
                                    jacobian_samples=1)
    assert report.jacobian_product_norm[0] == math.inf
    assert report.jacobian_product_norm[-3:] == pytest.approx([9.0, 3.0, 1.0])  # J_t = 3 I
    assert report.jacobian_product_log10[0] == pytest.approx(799 * math.log10(3))


def test_jacobians_in_chunks_match_one_pass(monkeypatch):
    layer = rnn.LSTM(2, 3, batch_first=True)
    x = torch.randn(3, 11, 2)
    whole = g.gradient_diagnostics(layer, x, jacobian_samples=3)
    monkeypatch.setattr(g, "JACOBIAN_CHUNK_ELEMENTS", 3 * 36 * 4)  # 4 steps per chunk
    chunked = g.gradient_diagnostics(layer, x, jacobian_samples=3)
    assert chunked.jacobian_step_norms == pytest.approx(whole.jacobian_step_norms, nan_ok=True)
    assert chunked.jacobian_product_norm == pytest.approx(whole.jacobian_product_norm)
    # and the exact product against a plain product of torch.autograd Jacobians
    cell = layer.cell(0)
    state = cell.initial_state(3)
    prevs = []
    for t in range(11):
        prevs.append(torch.cat(state, -1))
        _, state = cell(x[:, t], state)

    def step(t, s):
        _, new = cell(x[:1, t], (s[:3].unsqueeze(0), s[3:].unsqueeze(0)))
        return torch.cat(new, -1).squeeze(0)

    product = torch.eye(6, dtype=torch.float64)
    for t in range(10, 0, -1):
        product = product @ torch.autograd.functional.jacobian(lambda s, t=t: step(t, s), prevs[t][0]).double()
    first = g.gradient_diagnostics(layer, x[:1], jacobian_samples=1)
    assert first.jacobian_product_norm[0] == pytest.approx(float(torch.linalg.matrix_norm(product, 2)), rel=1e-4)


def test_a_stateful_layer_keeps_its_carried_state():
    layer = rnn.GRU(2, 3, batch_first=True, stateful=True)
    layer(torch.randn(2, 4, 2))
    carried = layer.state.clone()
    g.gradient_diagnostics(layer, torch.randn(2, 5, 2))
    assert torch.equal(layer.state, carried)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_diagnostics_on_cuda_match_the_cpu():
    layer = rnn.LSTM(2, 3, batch_first=True)
    x = torch.randn(2, 6, 2)
    cpu = g.gradient_diagnostics(layer, x, jacobian_samples=2)
    gpu = g.gradient_diagnostics(layer.cuda(), x.cuda(), jacobian_samples=2)
    assert gpu.grad_norms == pytest.approx(cpu.grad_norms, rel=1e-4)
    assert gpu.jacobian_product_norm == pytest.approx(cpu.jacobian_product_norm, rel=1e-4)


def test_fresh_diagnosis_refuses_bad_settings():
    with pytest.raises(ValueError, match="exploding-scale must be a finite number > 0"):
        g.diagnose_fresh(["rnn"], length=10, exploding_scale=math.nan)
    with pytest.raises(ValueError, match="names 'RNN' twice"):
        g.diagnose_fresh(["rnn", "RNN"], length=10)
    bad = runner.invoke(app, ["diagnose", "--fresh", "--cell", "rnn", "--length", "100000000"])
    assert bad.exit_code == 2 and "length 100000000 is too long for the adding task: at most 100,000" in bad.output
    bad = runner.invoke(app, ["bench", "memory", "--cell", "rnn", "--length", "50,100000000"])
    assert bad.exit_code == 2 and "too long" in bad.output


def test_the_markdown_table_keeps_its_columns():
    """Header cells such as ||dL/dh_t|| hold pipes: unescaped, each one starts a new column and the
    table does not render (GitHub needs as many header cells as delimiter cells)."""
    import re

    report = g.gradient_diagnostics(rnn.RNN(2, 3, batch_first=True), torch.randn(2, 4, 2))
    report.label = "a|b"
    table = [line for line in g.diagnostics_markdown([report]).splitlines() if line.startswith("|")]
    counts = [len(re.split(r"(?<!\\)\|", line.strip().strip("|"))) for line in table]
    assert counts == [10, 10, 10]
    assert r"\|\|dL/dh_T-1\|\|" in table[0] and table[2].startswith(r"| a\|b | 4 |")


def test_a_horizon_without_a_reference_is_not_shown_as_long_memory():
    """A loss that never reads the last step (here: only the first output) leaves ||dL/dh_(T-1)|| = 0:
    the horizon rule has no reference, and "> T-1" would claim the gradient survives every lag."""
    layer = rnn.GRU(2, 3, batch_first=True)
    report = g.gradient_diagnostics(layer, torch.randn(2, 6, 2), loss_fn=lambda m, x: m(x)[0][:, 0].sum())
    assert report.grad_norms[-1] == 0.0 and report.grad_norms[0] > 0
    row = next(line for line in g.diagnostics_markdown([report]).splitlines() if line.startswith("| gru | 6 |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[5] == "n/a" and cells[6] == "n/a"  # first/last and horizon


def test_an_unbatched_sequence_is_one_sequence_of_a_batch():
    """A bare layer's default loss reads the last step: for an unbatched [T, I] input that is out[-1],
    not the last unit of every step."""
    torch.manual_seed(0)
    layer = rnn.RNN(2, 3, batch_first=True)
    x = torch.randn(5, 2)
    unbatched = g.gradient_diagnostics(layer, x)
    expected, _ = _manual_rnn_grads(layer, x.unsqueeze(0))
    assert unbatched.grad_norms == pytest.approx(expected, rel=1e-5)
    assert unbatched.grad_norms[-1] == pytest.approx(math.sqrt(3))
