"""The engines' per-step matmul (rnnkit.scan.step_matmul): oneDNN and torch give the same numbers.

The float64 engine tests in test_fast_engine.py always run on torch's GEMM (oneDNN has no float64
linear); here the engines run in float32 with each backend forced and are compared with the
reference scan, and StepMatmul itself with ``torch.addmm``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from rnnkit.cells import LayerNormLSTMCell, LSTMCell
from rnnkit.scan import engine_scan, recompute_gates, reference_scan, step_matmul
from rnnkit.scan.step_matmul import StepMatmul, step_matmul_backend

needs_onednn = pytest.mark.skipif(not step_matmul._ONEDNN, reason="this torch has no oneDNN linear on this CPU")
I, H, B, T = 7, 24, 5, 9


@needs_onednn
@pytest.mark.parametrize("backend", ["torch", "onednn"])
@pytest.mark.parametrize("bias, add", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_step_matmul_equals_addmm(backend: str, bias: bool, add: bool, batch: int) -> None:
    wide = torch.randn(96, 40)
    weight = wide[:, 3:35]  # a strided view, as the engines pass
    b = torch.randn(96) if bias else None
    x = torch.randn(batch, 32)
    extra = torch.randn(batch, 96) if add else None
    expected = x @ weight.t() + (b if b is not None else 0) + (extra if extra is not None else 0)
    with step_matmul_backend(backend):
        mm = StepMatmul(weight, b, batch, adds=add)
    assert mm.backend == backend
    out = torch.empty(batch, 96)
    got = mm(x, add=extra, out=out)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if backend == "torch":
        assert got is out  # torch writes into out; callers read the return value either way


def test_torch_is_used_where_onednn_cannot_run() -> None:
    with step_matmul_backend("onednn"):
        assert StepMatmul(torch.randn(8, 4, dtype=torch.float64), None, 2).backend == "torch"
        with torch.enable_grad():  # the engines call it with autograd off; a weight on the tape stays on torch
            assert StepMatmul(torch.randn(8, 4, requires_grad=True), None, 2).backend == "torch"


def test_bad_backend_names_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="auto, torch, onednn"), step_matmul_backend("mkl"):
        pass
    monkeypatch.setenv("RNNKIT_STEP_MATMUL", "fastest")
    with pytest.raises(ValueError, match="RNNKIT_STEP_MATMUL must be one of"):
        StepMatmul(torch.randn(8, 4), None, 2)
    monkeypatch.setenv("RNNKIT_STEP_MATMUL", "torch")
    assert StepMatmul(torch.randn(8, 4), None, 2).backend == "torch"


@needs_onednn
def test_auto_measures_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = step_matmul._measured_costs

    def counted(weight: torch.Tensor, bias: torch.Tensor | None, batch: int, adds: bool,
                rounds: int = 5) -> tuple[float, float, float]:
        calls.append((*weight.shape, batch))
        return real(weight, bias, batch, adds, rounds)

    monkeypatch.setattr(step_matmul, "_measured_costs", counted)
    step_matmul.forget_measurements()
    weight = torch.randn(64, 16)
    with step_matmul_backend("auto"):
        first = StepMatmul(weight, None, 4).backend
        assert StepMatmul(weight, None, 4).backend == first
        StepMatmul(weight, None, 8)
    assert calls == [(64, 16, 4), (64, 16, 8)]


@needs_onednn
def test_auto_packs_for_onednn_only_where_the_calls_pay_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing costs a fixed time, each oneDNN call saves some: a short sequence stays on torch."""
    step_matmul.forget_measurements()
    costs = (10e-6, 5e-6, 100e-6)  # torch 10 µs a call, oneDNN 5 µs, packing 100 µs: pays from 25 calls
    monkeypatch.setattr(step_matmul, "_measured_costs", lambda *a, **k: costs)
    weight = torch.randn(64, 16)
    with step_matmul_backend("auto"):
        assert StepMatmul(weight, None, 4, calls=1).backend == "torch"
        assert StepMatmul(weight, None, 4, calls=24).backend == "torch"
        assert StepMatmul(weight, None, 4, calls=26).backend == "onednn"
        assert StepMatmul(weight, None, 4).backend == "onednn"  # kept between calls: many
    step_matmul.forget_measurements()
    costs = (10e-6, 9.5e-6, 0.0)  # no clear win per call: torch, however many calls
    with step_matmul_backend("auto"):
        assert StepMatmul(weight, None, 4, calls=10_000).backend == "torch"
    step_matmul.forget_measurements()


@needs_onednn
def test_measuring_leaves_the_random_stream_alone() -> None:
    step_matmul.forget_measurements()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    with step_matmul_backend("auto"):
        StepMatmul(torch.ones(32, 8), torch.ones(32), 2, adds=True)  # measures
    torch.testing.assert_close(torch.rand(4), expected)


def _assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Within 1e-5 of the tensor's scale: float32 sums in another order (gradients summed over
    ``T * B`` rows reach values of 10-100, where single elements then differ by a few 1e-5)."""
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-5 * scale


def _run(scan: Callable[..., object], cell: LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
         **kw: object) -> list[torch.Tensor]:
    cell.zero_grad()
    xx = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    out, (h_n, c_n), _ = scan(cell, xx, (h0, c0), **kw)  # type: ignore[misc]
    (out.pow(2).sum() + h_n.sum() + c_n.pow(2).sum()).backward()
    assert xx.grad is not None and h0.grad is not None and c0.grad is not None
    return [out.detach(), h_n.detach(), c_n.detach(), xx.grad, h0.grad, c0.grad,
            *[p.grad for p in cell.parameters() if p.grad is not None]]


def _case(kind: type[LSTMCell], peephole: bool) -> tuple[LSTMCell, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    cell = kind(I, H, peephole=peephole)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return cell, torch.randn(B, T, I), (torch.randn(B, H), torch.randn(B, H))


@needs_onednn
@pytest.mark.parametrize("backend", ["torch", "onednn"])
@pytest.mark.parametrize("variant", ["plain", "mask", "recurrent_dropout", "zoneout_eval", "recompute"])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_engines_match_reference_in_float32_on_each_backend(variant_kwargs: Callable[..., dict[str, object]],
                                                            backend: str, variant: str, peephole: bool,
                                                            kind: type[LSTMCell]) -> None:
    cell, x, state = _case(kind, peephole)
    kw = variant_kwargs(variant, B, T, H, torch.float32)
    expected = _run(reference_scan, cell, x, state, **kw)
    with step_matmul_backend(backend), recompute_gates(variant == "recompute"):
        got = _run(engine_scan, cell, x, state, **kw)
        with torch.no_grad():  # the inference path
            out, (h_n, c_n), _ = engine_scan(cell, x, state, **kw)  # type: ignore[arg-type]
    for e, g in zip(expected, got):
        _assert_close(g, e)
    for e, g in zip(expected[:3], (out, h_n, c_n)):
        _assert_close(g, e)


@needs_onednn
@pytest.mark.parametrize("peephole", [False, True])
def test_engine_zoneout_training_on_onednn(same_zoneout_draws: Callable[[torch.Tensor], None], peephole: bool) -> None:
    same_zoneout_draws(torch.rand(T, 2, B, H))
    cell, x, state = _case(LSTMCell, peephole)
    kw = {"mask": torch.rand(B, T) > 0.3, "zoneout_rate": 0.3, "training": True}
    expected = _run(reference_scan, cell, x, state, **kw)
    with step_matmul_backend("onednn"):
        got = _run(engine_scan, cell, x, state, **kw)
    for e, g in zip(expected, got):
        _assert_close(g, e)


@needs_onednn
def test_streaming_inference_repacks_when_weights_or_batch_change() -> None:
    cell, x, state = _case(LSTMCell, True)
    with step_matmul_backend("onednn"), torch.no_grad():
        for change in (None, "in-place", "batch"):
            if change == "in-place":
                cell.weight_hh.mul_(1.5)  # what an optimizer step does
            xs, st = (x[:2], (state[0][:2], state[1][:2])) if change == "batch" else (x, state)
            expected = reference_scan(cell, xs, st)[0]
            h, c = st
            steps = []
            for t in range(T):  # one step per call, as a server does
                out, (h, c), _ = engine_scan(cell, xs[:, t:t + 1], (h, c))
                steps.append(out)
            torch.testing.assert_close(torch.cat(steps, 1), expected, rtol=1e-5, atol=1e-5)


# -- large products: weight and input gradients, projections -------------------------------------
def _operands() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    dz = torch.randn(90, 48, generator=g)
    xh = torch.randn(90, 20, generator=g)
    w_cat = torch.randn(48, 20, generator=g)
    return [("dZ^T [x, h]: a transposed view", dz.t(), xh),
            ("dZ W_x: a column slice of the weight", dz, w_cat[:, :7]),
            ("plain", torch.randn(30, 40, generator=g), torch.randn(40, 50, generator=g)),
            ("both transposed", torch.randn(40, 30, generator=g).t(), torch.randn(50, 40, generator=g).t())]


@needs_onednn
@pytest.mark.parametrize("form", step_matmul._LARGE_FORMS)
def test_each_form_of_a_large_product_equals_torch(form: str) -> None:
    for name, a, b in _operands():
        expected = a.double() @ b.double()
        got = step_matmul._run_large(form, a, b)
        assert got.shape == expected.shape and got.is_contiguous(), name
        _assert_close(got.double(), expected)


@needs_onednn
def test_large_matmul_measures_once_per_class_of_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    step_matmul.forget_measurements()
    runs: list[str] = []
    real = step_matmul._run_large
    monkeypatch.setattr(step_matmul, "_run_large", lambda form, a, b: runs.append(form) or real(form, a, b))
    monkeypatch.setattr(step_matmul, "LARGE_MIN_FLOPS", 1e5)
    a, b = torch.randn(300, 64).t(), torch.randn(300, 96)  # 3.7 MFLOP: measured
    with step_matmul_backend("auto"):
        first = step_matmul.large_matmul(a, b)
        assert set(runs) == set(step_matmul._LARGE_FORMS) and len(runs) >= 9  # warm-up and two timed rounds
        runs.clear()
        second = step_matmul.large_matmul(torch.randn(280, 64).t(), torch.randn(280, 96))  # same class (256)
        assert len(runs) == 1  # the remembered form only
        runs.clear()
        step_matmul.large_matmul(torch.randn(4, 5), torch.randn(5, 6))  # under LARGE_MIN_FLOPS: torch, unmeasured
        assert runs == []
    _assert_close(first, a @ b)
    assert second.shape == (64, 96)
    with step_matmul_backend("torch"):
        runs.clear()
        step_matmul.large_matmul(a, b)
        assert runs == []
    x64 = torch.randn(300, 64, dtype=torch.float64)
    with step_matmul_backend("onednn"):  # float64: oneDNN has no such linear
        runs.clear()
        step_matmul.large_matmul(x64.t(), x64)
        assert runs == []


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_onednn_matches_f_linear_with_gradients(bias: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 11, 9, generator=g, requires_grad=True)
    weight = torch.randn(14, 9, generator=g, requires_grad=True)
    b = torch.randn(14, generator=g, requires_grad=True) if bias else None
    grad_out = torch.randn(6, 11, 14, generator=g)
    results = []
    for backend in ("torch", "onednn"):
        with step_matmul_backend(backend):
            y = step_matmul.linear(x, weight, b)
        grads = torch.autograd.grad(y, [t for t in (x, weight, b) if t is not None], grad_out)
        results.append([y, *grads])
    for e, got in zip(*results, strict=True):
        _assert_close(got, e)
    with step_matmul_backend("onednn"):  # create_graph: the backward's products stay differentiable
        y = step_matmul.linear(x, weight, b)
        (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.sum(), weight)
    y = torch.nn.functional.linear(x, weight, b)
    (ex,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    (ew,) = torch.autograd.grad(ex.sum(), weight)
    _assert_close(gw, ew)


@needs_onednn
@pytest.mark.parametrize("cell, implementation", [("gru", "engine"), ("layernorm_lstm", "engine"),
                                                  ("mingru", "sequential"), ("minlstm", "parallel")])
def test_other_engines_match_reference_in_float32_on_onednn(cell: str, implementation: str) -> None:
    """The GRU and layer-norm engines' input projections and weight gradients, and minGRU/minLSTM's
    projection, on oneDNN: outputs and every gradient equal the reference scan's."""
    import rnnkit.nn as rnn

    torch.manual_seed(0)
    kw = {"zoneout": 0.0} if cell == "gru" else {}
    layer = rnn.Recurrent(cell, I, H, batch_first=True, implementation=implementation, **kw)
    reference = rnn.Recurrent(cell, I, H, batch_first=True, implementation="reference", **kw)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I)
    mask = torch.rand(B, T) > 0.2  # gaps: the GRU engine takes them where torch's kernel cannot
    results = []
    for module, backend in ((reference, "torch"), (layer, "onednn")):
        xx = x.clone().requires_grad_()
        with step_matmul_backend(backend):
            out, _ = module(xx, mask=mask)
            out.pow(2).sum().backward()
        results.append([out.detach(), xx.grad, *(p.grad for p in module.parameters())])
    for e, got in zip(*results, strict=True):
        _assert_close(got, e)
