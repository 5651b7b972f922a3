"""The hand-written-backward LSTM engine (rnnkit.scan.engine) against the reference scan."""

from __future__ import annotations

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.cells import LSTMCell
from rnnkit.scan import engine_scan, reference_scan

I, H, B, T = 3, 5, 4, 6


def _run(scan: object, cell: LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
         **kw: object) -> list[torch.Tensor]:
    cell.zero_grad()
    xx = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    out, (h_n, c_n), _ = scan(cell, xx, (h0, c0), **kw)  # type: ignore[operator]
    (out.pow(2).sum() + (h_n * torch.linspace(-1, 1, H, dtype=x.dtype)).sum() + c_n.pow(2).sum()).backward()
    assert xx.grad is not None and h0.grad is not None and c0.grad is not None
    return [out.detach(), h_n.detach(), c_n.detach(), xx.grad, h0.grad, c0.grad,
            *[p.grad for p in cell.parameters() if p.grad is not None]]


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "left", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_engine_matches_reference_float64(peephole: bool, reverse: bool, mask_kind: str,
                                          recurrent_dropout: bool, bias: bool) -> None:
    cell = LSTMCell(I, H, bias, peephole=peephole).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    lengths = torch.tensor([T, 3, 1, 0])
    ar = torch.arange(T)
    mask = {"none": None, "right": ar < lengths[:, None], "left": ar >= (T - lengths)[:, None],
            "holes": torch.rand(B, T) > 0.4}[mask_kind]
    rec = (torch.rand(B, H) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": mask, "reverse": reverse, "recurrent_mask": rec}
    expected = _run(reference_scan, cell, x, state, **kw)
    got = _run(engine_scan, cell, x, state, **kw)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_engine_float32_close() -> None:
    cell = LSTMCell(I, H, peephole=True)
    x, state = torch.randn(B, T, I), (torch.randn(B, H), torch.randn(B, H))
    for e, g in zip(_run(reference_scan, cell, x, state), _run(engine_scan, cell, x, state)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_engine_gradcheck(reverse: bool) -> None:
    cell = LSTMCell(2, 3, peephole=True).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    rec = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]], dtype=torch.float64)

    def f(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h_n, c_n), _ = engine_scan(cell, x, (h0, c0), mask=mask, reverse=reverse, recurrent_mask=rec)
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *cell.parameters()))


def test_layer_opt_in_matches_reference() -> None:
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "cell": "peephole_lstm"}
    ref = rnn.LSTM(I, H, implementation="reference", **kw).double()
    eng = rnn.LSTM(I, H, implementation="engine", **kw).double()
    eng.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = torch.tensor([T, 4, 2, 1])
    results = []
    for layer in (ref, eng):
        out, (h, c) = layer(x, lengths=lengths)
        (out.sum() + h.pow(2).sum() + c.sum()).backward()
        results.append([out.detach(), h.detach(), c.detach(), *[p.grad for p in layer.parameters()]])
    for e, g in zip(*results):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_auto_never_picks_the_engine() -> None:
    layer = rnn.LSTM(I, H, batch_first=True, cell="peephole_lstm")
    assert layer.implementation == "auto"
    out, _ = layer(torch.randn(B, T, I))
    assert out.grad_fn is not None and "LSTMEngine" not in type(out.grad_fn).__name__


@pytest.mark.parametrize("kw, match", [
    ({"cell": "layernorm_lstm"}, "supports LSTMCell"),
    ({"zoneout": 0.1}, "zoneout"),
    ({"proj_size": 2}, "proj_size"),
])
def test_engine_fails_loudly(kw: dict[str, object], match: str) -> None:
    layer = rnn.LSTM(I, H, batch_first=True, implementation="engine", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        layer(torch.randn(B, T, I))


def test_engine_rejects_gate_recording_and_gru() -> None:
    with pytest.raises(ValueError, match="gate activations"):
        rnn.LSTM(I, H, batch_first=True, implementation="engine")(torch.randn(B, T, I), return_gates=True)
    with pytest.raises(ValueError, match="supports LSTMCell"):
        rnn.GRU(I, H, batch_first=True, implementation="engine")(torch.randn(B, T, I))
