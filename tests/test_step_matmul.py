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
