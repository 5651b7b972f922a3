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
