"""Mutation testing, round 7: model saving/loading, gradient diagnostics, memory tasks, cell
comparison, reports and run folders.

Each test here was written because a plausible wrong rule (a checksum that ignores a tensor's
name or dtype, a reversed Jacobian product, a success rule with ``>=``, a recommendation that
ignores the spread, a fingerprint without the modification time ...) left the rest of the
suite passing. Expected values come from independent references: hand computations,
``torch.autograd`` on a plain loop, the published task definitions (the adding problem of
Hochreiter and Schmidhuber 1997 / Le et al. 2015, the copy task of Arjovsky et al. 2016), files
built with ``safetensors`` directly, never from the code path under test.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import rnnkit.nn as rnn
from rnnkit.layers import Dense, Input
from rnnkit.models import Sequential, load_model


# -- saving: the checksum guards every part of a tensor ----------------------------------------
def _two_kernel_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(3), Dense(3)])
    path = tmp_path / "m"
    model.save(path)
    return path


def _rewrite_weights(path: Path, change) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    save_file(change(dict(tensors)), str(path / "model.safetensors"), metadata={"format": "pt"})


def _square_pair(tensors: dict) -> tuple[str, str]:
    names = [k for k, v in tensors.items() if tuple(v.shape) == (3, 3)]
    assert len(names) == 2
    return names[0], names[1]


def test_swapping_two_same_shaped_weights_is_refused_by_the_checksum(tmp_path):
    path = _two_kernel_model(tmp_path)

    def swap(t):
        a, b = _square_pair(t)
        assert not torch.equal(t[a], t[b])
        t[a], t[b] = t[b], t[a]
        return t

    _rewrite_weights(path, swap)
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


def test_a_weight_reinterpreted_as_another_dtype_is_refused_by_the_checksum(tmp_path):
    path = _two_kernel_model(tmp_path)

    def retype(t):
        a, _ = _square_pair(t)
        t[a] = t[a].view(torch.int32)  # same bytes, same shape, another dtype
        return t

    _rewrite_weights(path, retype)
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


def test_a_reshaped_weight_is_refused_by_the_checksum(tmp_path):
    path = _two_kernel_model(tmp_path)

    def reshape(t):
        a, _ = _square_pair(t)
        t[a] = t[a].reshape(9)  # same bytes, another shape
        return t

    _rewrite_weights(path, reshape)
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


def test_a_renamed_weight_is_refused_by_the_checksum_even_when_not_strict(tmp_path):
    torch.manual_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(2)])
    path = tmp_path / "m"
    model.save(path)
    last = max(model.state_dict())

    def rename(t):  # the new name sorts where the old one did: only the name changed
        t[last + "x"] = t.pop(last)
        assert sorted(t)[-1] == last + "x"
        return t

    _rewrite_weights(path, rename)
    fresh = Sequential([Input(shape=(3,)), Dense(2)])
    with pytest.raises(ValueError, match="checksum"):
        fresh.load_weights(path, strict=False)


def test_load_weights_from_a_folder_checks_the_checksum(tmp_path):
    path = _two_kernel_model(tmp_path)
    _rewrite_weights(path, lambda t: {k: v + 1.0 for k, v in t.items()})
    fresh = Sequential([Input(shape=(3,)), Dense(3), Dense(3)])
    with pytest.raises(ValueError, match="checksum"):
        fresh.load_weights(path)


def test_load_weights_from_a_single_file_save_checks_its_checksum(tmp_path):
    torch.manual_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(2)])
    file = str(tmp_path / "m.safetensors")
    model.save(file)
    with safe_open(file, framework="pt") as f:
        metadata = f.metadata()
    assert "weights_sha256" in json.loads(metadata["rnnkit_config"])
    save_file({k: v + 1.0 for k, v in load_file(file).items()}, file, metadata=metadata)
    fresh = Sequential([Input(shape=(3,)), Dense(2)])
    with pytest.raises(ValueError, match="checksum"):
        fresh.load_weights(file)
    model.save(file)  # an intact save still loads, and a weights-only file has no checksum to check
    fresh.load_weights(file)
    model.save_weights(tmp_path / "w.safetensors")
    fresh.load_weights(tmp_path / "w.safetensors")
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_boolean_format_version_is_refused(tmp_path):
    path = _two_kernel_model(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = True  # JSON true is not the integer 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version"):
        load_model(path)


def test_a_folder_config_that_is_not_an_object_is_a_one_line_error(tmp_path):
    path = _two_kernel_model(tmp_path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        load_model(path)


def test_load_weights_names_a_shape_mismatch_even_when_not_strict(tmp_path):
    small = Sequential([Input(shape=(3,)), Dense(2)])
    small.save_weights(tmp_path / "w.safetensors")
    wide = Sequential([Input(shape=(3,)), Dense(4)])
    names = set(wide.state_dict())
    assert names == set(load_file(str(tmp_path / "w.safetensors")))  # same names, other shapes
    with pytest.raises(ValueError, match="has shape"):
        wide.load_weights(tmp_path / "w.safetensors", strict=False)


def test_load_weights_reports_unexpected_tensors_as_a_value_error(tmp_path):
    model = Sequential([Input(shape=(3,)), Dense(2)])
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors["bogus"] = torch.zeros(2)
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="unexpected \\['bogus'\\]"):
        model.load_weights(tmp_path / "w.safetensors")


def _fitted_adam(tmp_path: Path) -> tuple[Sequential, Path]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Sequential([Input(shape=(3,)), Dense(2)])
    model.compile("adam", "mse")
    model.fit(rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32"), epochs=1,
              batch_size=4, verbose=0)
    path = tmp_path / "m"
    model.save(path, include_optimizer=True)
    return model, path


def _rewrite_optimizer(path: Path, tensors_change=None, meta_change=None) -> None:
    file = str(path / "optimizer.safetensors")
    with safe_open(file, framework="pt") as f:
        meta = json.loads(f.metadata()["rnnkit_optimizer"])
    tensors = load_file(file)
    if tensors_change:
        tensors = tensors_change(tensors)
    if meta_change:
        meta_change(meta)
    save_file(tensors, file, metadata={"rnnkit_optimizer": json.dumps(meta)})


def test_damaged_optimizer_tensors_are_refused(tmp_path):
    _, path = _fitted_adam(tmp_path)
    _rewrite_optimizer(path, tensors_change=lambda t: {k: v + 1.0 for k, v in t.items()})
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


def test_an_optimizer_file_of_another_optimizer_class_is_refused(tmp_path):
    _, path = _fitted_adam(tmp_path)
    _rewrite_optimizer(path, meta_change=lambda m: m.update(optimizer_class="RMSprop"))
    with pytest.raises(ValueError, match="RMSprop"):
        load_model(path)


def test_an_optimizer_file_for_other_parameter_shapes_is_refused(tmp_path):
    _, path = _fitted_adam(tmp_path)
    _rewrite_optimizer(path, meta_change=lambda m: m.update(param_shapes=[[2, 3], [7]]))
    with pytest.raises(ValueError, match="other shapes"):
        load_model(path)


def test_saving_again_without_the_optimizer_removes_the_old_optimizer_file(tmp_path):
    model, path = _fitted_adam(tmp_path)
    assert (path / "optimizer.safetensors").is_file()
    model.save(path, include_optimizer=False)  # an old optimizer file would be restored as this save's
    assert not (path / "optimizer.safetensors").exists()
    assert load_model(path).optimizer.iterations == 0


def test_a_save_that_fails_writing_the_weights_keeps_the_previous_save_loadable(tmp_path, monkeypatch):
    import rnnkit.models.saving as saving

    path = _two_kernel_model(tmp_path)
    before = load_model(path)
    x = torch.randn(4, 3)
    torch.manual_seed(1)
    other = Sequential([Input(shape=(3,)), Dense(3), Dense(3)])

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saving, "save_file", fail)
    with pytest.raises(OSError, match="No space left"):
        other.save(path)
    monkeypatch.undo()
    torch.testing.assert_close(load_model(path)(x), before(x))  # the old pair: config and weights together


def test_compile_false_loads_an_uncompiled_model(tmp_path):
    _, path = _fitted_adam(tmp_path)
    assert load_model(path, compile=False).compiled is None


def test_custom_object_scope_restores_the_registry():
    from rnnkit.layers.base import LAYERS
    from rnnkit.models.saving import custom_object_scope

    class Round7Only(Dense):
        pass

    class FakeDense(Dense):
        pass

    before = dict(LAYERS)
    with custom_object_scope({"Round7Only": Round7Only, "Dense": FakeDense}):
        assert LAYERS["Round7Only"] is Round7Only and LAYERS["Dense"] is FakeDense
    assert "Round7Only" not in LAYERS
    assert LAYERS["Dense"] is Dense
    assert dict(LAYERS) == before


# -- gradients: Jacobian products against autograd on a plain loop -----------------------------
def _plain_rnn(layer, x):
    w_ih, w_hh, b_ih, b_hh = (getattr(layer, n).detach().double() for n in
                              ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    x = x.double()

    def step(h, t):
        return torch.tanh(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)

    h = torch.zeros(x.shape[0], w_hh.shape[0], dtype=torch.float64)
    hs = []
    for t in range(x.shape[1]):
        h = step(h, t)
        hs.append(h)
    return hs, step, w_hh


def test_exact_jacobian_products_and_their_bound_match_autograd():
    from rnnkit.insight import gradients as g

    torch.manual_seed(3)
    layer = rnn.RNN(2, 4, batch_first=True)
    with torch.no_grad():
        layer.weight_hh_l0.mul_(2.5)  # norms well away from 1, so the per-step rescaling matters
    x = torch.randn(3, 7, 2)
    report = g.gradient_diagnostics(layer, x, jacobian_samples=3)
    hs, step, w_hh = _plain_rnn(layer, x)
    steps = x.shape[1]
    for t in range(steps):
        exact, products = [], []
        for b in range(3):
            def run_from(h, b=b, t=t):
                h = h.unsqueeze(0)
                for k in range(t + 1, steps):
                    h = torch.tanh(x[b:b + 1, k].double() @ layer.weight_ih_l0.detach().double().T
                                   + layer.bias_ih_l0.detach().double() + h @ w_hh.T
                                   + layer.bias_hh_l0.detach().double())
                return h.squeeze(0)

            jac = torch.autograd.functional.jacobian(run_from, hs[t][b])
            exact.append(float(torch.linalg.matrix_norm(jac, 2)))
            prod = 1.0
            for k in range(t + 1, steps):
                prod *= float(torch.linalg.matrix_norm((1 - hs[k][b] ** 2).unsqueeze(-1) * w_hh, 2))
            products.append(prod)
        assert report.jacobian_product_norm[t] == pytest.approx(sum(exact) / 3, rel=1e-4)
        assert report.jacobian_product_log10[t] == pytest.approx(math.log10(sum(products) / 3), abs=1e-4)


class _LastRealState(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = rnn.RNN(2, 4, batch_first=True)

    def forward(self, x, lengths):
        return self.encoder(x, lengths=lengths)[1][0]


def test_step_jacobian_norms_are_means_over_the_real_sequences_only():
    from rnnkit.insight import gradients as g

    torch.manual_seed(5)
    model = _LastRealState()
    x = torch.randn(2, 6, 2)
    lengths = torch.tensor([6, 3])
    report = g.gradient_diagnostics(model, (x, lengths), loss_fn=lambda m, b: m(*b).sum(), jacobian_samples=2)
    hs, _, w_hh = _plain_rnn(model.encoder, x)  # padding only follows the real steps: the prefix is exact
    for t in range(1, 6):
        real = [b for b in range(2) if t < int(lengths[b])]
        norms = [float(torch.linalg.matrix_norm((1 - hs[t][b] ** 2).unsqueeze(-1) * w_hh, 2)) for b in real]
        assert report.jacobian_step_norms[t] == pytest.approx(sum(norms) / len(norms), rel=1e-4)


def test_the_clipping_demo_without_clipping_is_plain_sgd():
    from rnnkit.insight.gradients import clipping_demo, scale_recurrent_weights
    from rnnkit.insight.memory import MemoryModel, make_task

    settings = {"length": 30, "scale": 4.0, "clip_norm": 1.0, "steps": 3, "learning_rate": 0.05, "batch_size": 8,
                "hidden_size": 16, "seed": 0}
    demo = clipping_demo("rnn", **settings)
    # reference: the same initial weights and batches, torch SGD with no clipping at all
    task = make_task("adding")
    torch.manual_seed(0)
    model = scale_recurrent_weights(MemoryModel(task, "rnn", 16), 4.0, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    losses, norms = [], []
    for _ in range(3):
        x, y = task.generate(8, 30, gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        norms.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters())))
        losses.append(float(loss.detach()))
        opt.step()
    assert max(norms[:-1]) > 1e3  # large enough that any clipping would change the run
    assert demo["without"]["loss"] == pytest.approx(losses, rel=1e-4)
    assert demo["without"]["grad_norm"] == pytest.approx(norms, rel=1e-4)
    assert max(demo["with"]["grad_norm"]) > 1.0 and demo["with"]["clip_norm"] == 1.0


def test_the_reverse_direction_is_reported_in_time_order():
    from rnnkit.insight import gradients as g

    torch.manual_seed(0)
    layer = rnn.RNN(2, 3, batch_first=True, bidirectional=True)
    x = torch.randn(2, 5, 2)
    report = g.gradient_diagnostics(layer, x, jacobians=False)
    # L = sum of the output at the last step; the backward direction's output there is its *first*
    # processed state, which no other backward state feeds: dL/dh_rev_t = 0 for t < T-1, ones at T-1
    assert report.grad_norms_by_layer["l0_reverse"] == pytest.approx([0.0, 0.0, 0.0, 0.0, math.sqrt(3)])


def test_parameter_gradient_norm_is_the_global_l2_norm_and_clipping_takes_the_smaller():
    from rnnkit.insight import gradients as g

    torch.manual_seed(0)
    layer = rnn.RNN(2, 3, batch_first=True)
    x = torch.randn(2, 4, 2)
    params = [getattr(layer, n).detach().double().clone().requires_grad_() for n in
              ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    w_ih, w_hh, b_ih, b_hh = params
    h = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(4):
        h = torch.tanh(x[:, t].double() @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    h.sum().backward()
    expected = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    report = g.gradient_diagnostics(layer, x, jacobians=False, clip_norm=1e-3)
    assert report.param_grad_norm == pytest.approx(expected, rel=1e-5)
    assert report.clipped_grad_norm == pytest.approx(1e-3)
    loose = g.gradient_diagnostics(layer, x, jacobians=False, clip_norm=1e6)
    assert loose.clipped_grad_norm == pytest.approx(expected, rel=1e-5)
    summary = report.summary()
    assert summary["ratio_first_to_last"] == pytest.approx(report.grad_norms[0] / report.grad_norms[-1])


def test_memory_horizon_boundaries():
    from rnnkit.insight.gradients import memory_horizon

    # the reference is the last step's norm, not the largest one
    assert memory_horizon([5.0, 1.5e-3, 1.0]) is None
    # "below threshold x reference" is strict
    assert memory_horizon([0.5, 1.0], threshold=0.5) is None
    assert memory_horizon([0.49, 1.0], threshold=0.5) == 1


def test_saturation_thresholds_are_strict_and_pre_activations_pass_through_tanh():
    from rnnkit.insight.gradients import saturation_fractions

    sig = {"forget": torch.tensor([[[0.05], [0.95], [0.04], [0.96]]])}
    assert saturation_fractions(sig) == {"forget": pytest.approx(0.5)}
    # tanh(1.5) = 0.905 is not saturated though 1.5 > 0.95; tanh(2) = 0.964 is
    pre = {"pre_activation": torch.tensor([[[1.5], [2.0], [-2.0], [-1.5]]])}
    assert saturation_fractions(pre) == {"pre_activation": pytest.approx(0.5)}


# -- memory tasks: the published definitions --------------------------------------------------
def test_copy_data_use_every_symbol_of_the_alphabet():
    from rnnkit.insight.memory import copy_memory, selective_copy

    gen = torch.Generator().manual_seed(0)
    for make in (copy_memory, selective_copy):
        x, y = make(400, 25, symbols=4, memorize=3, generator=gen)
        recalled = y[:, -3:]
        assert set(recalled.unique().tolist()) == {1, 2, 3, 4}  # Arjovsky et al.: symbols 1..A, uniform
        assert set(x[:, :-4].argmax(-1).unique().tolist()) == {0, 1, 2, 3, 4}


def test_success_rules_are_strict_inequalities_at_the_published_thresholds():
    from rnnkit.insight.memory import make_task

    adding = make_task("adding")
    assert adding.baseline == pytest.approx(1 / 6)  # Var(u1 + u2) for two U(0, 1) values
    assert adding.success(0.1 / 6 - 1e-6) and not adding.success(0.1 / 6) and not adding.success(0.02)
    copy = make_task("copy", symbols=5)
    assert copy.baseline == pytest.approx(1 / 5)
    assert copy.success(0.91) and not copy.success(0.9)


def test_recall_accuracy_counts_only_the_recalled_steps():
    from rnnkit.insight.memory import make_task, task_metric

    task = make_task("copy", symbols=3, memorize=2)
    targets = torch.tensor([[0, 0, 0, 0, 1, 2]])
    pred = torch.nn.functional.one_hot(torch.tensor([[0, 0, 0, 0, 2, 2]]), 4).float()
    assert task_metric(task, pred, targets) == pytest.approx(0.5)  # 1 of the 2 recalled steps


def test_split_budget_puts_the_larger_parts_first():
    from rnnkit.insight.memory import split_budget

    assert split_budget(7, 3) == [3, 2, 2]
    assert split_budget(8, 3) == [3, 3, 2]


def test_batches_follow_the_budget_parts_pass_by_pass():
    from rnnkit.insight.memory import _Batches, make_task

    data = _Batches(make_task("adding"), 6, 2, [3, 1, 2], seed=0)
    assert [sum(1 for _ in data) for _ in range(3)] == [3, 1, 2]


@pytest.mark.parametrize("task_name, curve, expected, mode",
                         [("adding", [0.5, 0.1, 0.3], 0.1, "min"), ("copy", [0.2, 0.7, 0.4], 0.7, "max")])
def test_a_run_keeps_its_best_dev_value_and_monitors_in_the_right_direction(monkeypatch, task_name, curve,
                                                                              expected, mode):
    import rnnkit.tasks.engine as engine
    from rnnkit.insight.memory import make_task, train_memory_task

    task = make_task(task_name, memorize=2)
    seen = {}

    def fake_fit(model, train, dev, *, options, **kwargs):
        seen["mode"], seen["monitor"] = options.mode, options.monitor
        return [{f"dev_{task.metric}": v} for v in curve]

    monkeypatch.setattr(engine, "fit", fake_fit)
    result = train_memory_task(task, "rnn", 8, budget_steps=3, evaluations=3, dev_size=4, batch_size=2, hidden_size=2)
    assert result.value == pytest.approx(expected)
    assert seen == {"mode": mode, "monitor": task.metric}


def _bench(rates: dict[int, list[bool]], values: dict[int, list[float]] | None = None):
    from rnnkit.insight.memory import MemoryBenchmark, MemoryResult, make_task

    task = make_task("adding")
    results = [MemoryResult("adding", "rnn", t, s, "mse", (values or {}).get(t, [0.1] * len(ok))[s], task.baseline,
                            o, 1, 1.0) for t, ok in rates.items() for s, o in enumerate(ok)]
    return MemoryBenchmark(task, results, {"cells": ["rnn"], "success_rate": 0.5})


def test_where_a_cell_stops_learning_by_hand():
    bench = _bench({10: [True, True], 20: [True, False], 40: [False, False], 80: [True, False],
                    160: [False, False]})
    rates = {r["length"]: r["success_rate"] for r in bench.summary()}
    assert rates == {10: 1.0, 20: 0.5, 40: 0.0, 80: 0.5, 160: 0.0}
    # a rate of exactly success_rate (0.5) counts as learned
    assert bench.limits() == [{"cell": "rnn", "longest_learned": 80, "first_failed": 40}]


def test_summary_best_is_the_lowest_mse():
    bench = _bench({10: [True, False]}, {10: [0.02, 0.3]})
    row = bench.summary()[0]
    assert row["best"] == pytest.approx(0.02) and row["mean"] == pytest.approx(0.16)


def test_json_safe_writes_infinities_as_strings():
    from rnnkit.insight.memory import json_safe

    assert json_safe({"a": [float("inf"), -math.inf, 1.5], "b": (math.nan,)}) == {"a": ["inf", "-inf", 1.5],
                                                                                  "b": ["nan"]}
    json.dumps(json_safe([math.inf]), allow_nan=False)


# -- compare: the recommendation rule by hand ------------------------------------------------
def _result(qualities: dict[str, list[float]], seconds: dict[str, float], params: dict[str, int] | None = None,
            higher: bool = True, tolerance: float = 0.005):
    from rnnkit.insight.compare import CellRun, CompareResult

    runs = [CellRun(c, s, f"{c}-seed{s}", q, seconds[c], (params or {}).get(c, 100), 1.0)
            for c, qs in qualities.items() for s, q in enumerate(qs)]
    return CompareResult("t", "m", higher, runs, list(qualities), "rss", tolerance)


def test_recommendation_follows_the_metric_direction():
    assert _result({"a": [0.9], "b": [0.5]}, {"a": 2.0, "b": 1.0}).recommendation()[0] == "a"
    assert _result({"a": [0.9], "b": [0.5]}, {"a": 2.0, "b": 1.0}, higher=False).recommendation()[0] == "b"


def test_recommendation_margin_is_the_best_cells_spread():
    # best a: mean 0.8, sample std 0.1414; b: 0.75 is within it and trains faster
    res = _result({"a": [0.9, 0.7], "b": [0.75, 0.75]}, {"a": 2.0, "b": 1.0})
    assert res.summary()[0]["std"] == pytest.approx(statistics.stdev([0.9, 0.7]))
    assert res.recommendation()[0] == "b"


def test_recommendation_prefers_the_fastest_then_the_smallest():
    res = _result({"a": [0.9], "b": [0.9]}, {"a": 1.0, "b": 2.0}, {"a": 100, "b": 10})
    assert res.recommendation()[0] == "a"
    res = _result({"a": [0.9], "b": [0.9]}, {"a": 1.0, "b": 1.0}, {"a": 100, "b": 10})
    assert res.recommendation()[0] == "b"


def test_a_cell_exactly_at_the_tolerance_counts_as_close():
    res = _result({"a": [0.900], "b": [0.895]}, {"a": 2.0, "b": 1.0})
    assert res.recommendation()[0] == "b"


def test_a_diverged_cell_is_never_recommended():
    res = _result({"a": [math.nan], "b": [0.5]}, {"a": 0.1, "b": 1.0})
    assert res.recommendation()[0] == "b"
    assert math.isnan(res.summary()[0]["std"])


def test_quality_key_uses_the_metric_asked_for():
    from rnnkit.insight.compare import quality_key

    module = SimpleNamespace(dev_metrics=lambda c: {"accuracy": "max", "loss": "min", "n": None},
                             quality_metric=lambda c: "accuracy")
    assert quality_key(module, "t", None, None) == ("accuracy", True)
    assert quality_key(module, "t", None, "loss") == ("loss", False)


def test_overwrite_keeps_folders_that_are_not_seed_runs(tmp_path):
    from rnnkit.insight.compare import prepare_out

    for name in ("myseed", "seed", "notes-seed"):
        root = tmp_path / name
        (root / name).mkdir(parents=True)
        with pytest.raises(ValueError, match="also holds"):
            prepare_out(root, overwrite=True)
        assert (root / name).is_dir()


def test_overwrite_never_follows_a_linked_seed_folder(tmp_path):
    from rnnkit.insight.compare import prepare_out

    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "data.txt").write_text("x")
    root = tmp_path / "out"
    root.mkdir()
    os.symlink(keep, root / "lstm-seed0")
    with pytest.raises(ValueError, match="also holds"):
        prepare_out(root, overwrite=True)
    assert (keep / "data.txt").read_text() == "x"


def test_peak_memory_is_in_mebibytes():
    from rnnkit.insight.compare import PeakMemory

    memory = PeakMemory("cpu")
    memory._start, memory.peak = 2**20, 4 * 2**20
    assert memory.megabytes == pytest.approx(3.0)


def test_compare_refuses_a_train_seed_override_before_training(tmp_path):
    from rnnkit.insight.compare import compare_cells
    from rnnkit.tasks.config import ConfigError

    with pytest.raises(ConfigError, match="train.seed"):
        compare_cells("forecasting", ["rnn"], str(tmp_path / "none.csv"), overrides=["train.seed=3"],
                      out=tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


# -- report: Markdown tables -----------------------------------------------------------------
def test_markdown_table_by_hand():
    from rnnkit.tasks.report import markdown_table

    assert markdown_table(["a|b", "c"], [[1.23456, "x"]]).splitlines() == [
        "| a\\|b | c |", "|---|---|", "| 1.2346 | x |"]


# -- run folders -------------------------------------------------------------------------------
def test_fingerprint_sees_a_rewrite_of_the_same_size(tmp_path):
    from rnnkit.tasks.run import data_fingerprint

    f = tmp_path / "d.csv"
    f.write_text("abc")
    before = data_fingerprint(str(f))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert data_fingerprint(str(f)) != before
    assert data_fingerprint(str(f)) == [[3, f.stat().st_mtime_ns]]


def test_folder_fingerprint_follows_linked_class_folders(tmp_path):
    from rnnkit.tasks.run import data_fingerprint

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(b"12345")
    data = tmp_path / "data"
    (data / "cats").mkdir(parents=True)
    (data / "cats" / "a.png").write_bytes(b"12")
    os.symlink(elsewhere, data / "dogs")
    latest = max((data / "cats" / "a.png").stat().st_mtime_ns, (elsewhere / "b.png").stat().st_mtime_ns)
    assert data_fingerprint(str(data)) == [["folder", 2, 7, latest]]


def test_a_transposed_view_is_not_taken_for_a_tied_weight():
    from rnnkit.tasks.run import unshared_tensors

    w = torch.arange(9.0).reshape(3, 3)
    tensors, aliases = unshared_tensors({"w": w, "wt": w.t(), "same": w})
    assert aliases == {"same": "w"}
    assert torch.equal(tensors["wt"], w.t().contiguous())


def _run_folder(tmp_path: Path, config: str = "train:\n  epochs: 1\n"):
    from rnnkit.tasks.run import RunDir

    run = RunDir.create(tmp_path, "t", "r")
    run.write_text("config.yaml", config)
    return run


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(3, 3)
        self.dec = torch.nn.Linear(3, 3)
        self.dec.weight = self.enc.weight


def test_tied_weights_round_trip_and_load_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    model = _Tied()
    run = _run_folder(tmp_path)
    run.save_model(model, "t", {})
    assert run.read_json("model.json")["tied_weights"] == {"dec.weight": "enc.weight"}
    fresh = _Tied()
    fresh.train()
    loaded = run.load_into(fresh)
    assert loaded.training is False
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_a_run_save_that_fails_writing_the_weights_keeps_the_previous_model_json(tmp_path, monkeypatch):
    import rnnkit.tasks.run as run_module

    run = _run_folder(tmp_path)
    run.save_model(torch.nn.Linear(2, 2), "t", {"size": 2})

    real = run_module.atomic_write_bytes

    def fail_on_weights(path, data):
        if Path(path).name == "model.safetensors":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(run_module, "atomic_write_bytes", fail_on_weights)
    with pytest.raises(OSError):
        run.save_model(torch.nn.Linear(3, 3), "t", {"size": 3})
    monkeypatch.undo()
    assert run.read_json("model.json")["hyperparameters"] == {"size": 2}
    assert run.load_state()["weight"].shape == (2, 2)


def test_run_file_checks(tmp_path):
    from rnnkit.tasks.run import RunDir, RunError

    run = _run_folder(tmp_path, "a: 1\n")
    run.write_json("model.json", {"task": "t"})
    (run.path / "model.safetensors").write_bytes(b"")
    with pytest.raises(RunError, match="config sections"):
        RunDir.open(run.path)
    run.write_text("config.yaml", "train:\n  epochs: 1\n")
    with pytest.raises(RunError, match="holds a 't' model"):
        RunDir.open_task(run.path, "other")
    run.write_text("list.json", "[1, 2]")
    with pytest.raises(RunError, match="not a JSON object"):
        run.read_json("list.json")
    with pytest.raises(RunError, match="already exists"):
        RunDir.create(tmp_path, "t", "r", exist_ok=False)


def test_resume_gives_back_paired_data_as_a_tuple(tmp_path):
    from rnnkit.tasks.engine import LAST_CHECKPOINT
    from rnnkit.tasks.run import RunDir

    images, labels = tmp_path / "images.idx", tmp_path / "labels.idx"
    images.write_bytes(b"1234")
    labels.write_bytes(b"12")
    run = _run_folder(tmp_path)
    run.record_inputs("t", (str(images), str(labels)), None)
    (run.path / LAST_CHECKPOINT).write_bytes(b"x")
    _, train, dev = RunDir.for_resume(run.path, "t")
    assert train == (str(images), str(labels)) and dev is None
