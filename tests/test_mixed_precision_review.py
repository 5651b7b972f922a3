"""Review of mixed precision (CPU ``torch.autocast`` in bfloat16, ``precision="bf16-mixed"``).

Defects found: rnnkit's drop-ins refused what torch.nn takes under autocast (a bfloat16 input from a
Linear or another recurrent layer, a bfloat16 initial state from an encoder), so a stacked or
encoder-decoder model could not train with ``precision="bf16-mixed"``; the reference scan returned
an Elman RNN's (or a projected LSTM's) outputs in bfloat16 without a mask and its state in float32
with one; the engines' hand-written backward, called inside the autocast region (as Lightning's
manual optimization does), ran its matmuls in bfloat16 against the float32 forward.

Tolerances: bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.002); the projections
and recurrent products of 12-20 steps, each rounded, stay within 0.02 of the float32 values here
(0.002-0.008 measured), so values are compared to the float32 reference at 0.03.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import rnnkit.nn as rnn

B, T, I, H = 3, 12, 5, 8
LENGTHS = torch.tensor([12, 7, 3])
BF16 = 0.03


def _flat(h: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return h if isinstance(h, tuple) else (h,)


def _pair(cls: type, tcls: type, **kw: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = tcls(I, H, batch_first=True, **kw)
    layer = cls(I, H, batch_first=True, **kw)
    layer.load_state_dict(ref.state_dict())
    return layer, ref


@pytest.mark.parametrize("cls, tcls, kw", [
    (rnn.LSTM, nn.LSTM, {}), (rnn.LSTM, nn.LSTM, {"implementation": "engine"}),
    (rnn.LSTM, nn.LSTM, {"implementation": "reference", "num_layers": 2, "bidirectional": True}),
    (rnn.GRU, nn.GRU, {}), (rnn.GRU, nn.GRU, {"implementation": "engine"}),
    (rnn.RNN, nn.RNN, {}), (rnn.RNN, nn.RNN, {"implementation": "reference", "bidirectional": True}),
])
def test_bfloat16_inputs_and_states_under_autocast_are_accepted_as_torch_nn_accepts_them(
        cls: type, tcls: type, kw: dict) -> None:
    """A Linear's bfloat16 output fed to an LSTM, and an encoder's bfloat16 state fed to a decoder, under
    autocast: torch.nn runs them; rnnkit raised 'input dtype torch.bfloat16 does not match the layer's
    parameters'. Values against torch.nn's float32 run; parameters keep float32 gradients."""
    impl = kw.get("implementation")
    layer, ref = _pair(cls, tcls, **{k: v for k, v in kw.items() if k != "implementation"})
    layer.implementation = impl or "auto"
    n = (2 if kw.get("num_layers") else 1) * (2 if kw.get("bidirectional") else 1)
    torch.manual_seed(1)
    x = torch.randn(B, T, I)
    hx = tuple(torch.randn(n, B, H) for _ in range(2 if cls is rnn.LSTM else 1))
    for lengths in (None, LENGTHS):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            xb = x.bfloat16()
            hb = tuple(h.bfloat16() for h in hx)
            out, h_n = layer(xb, hb if len(hb) > 1 else hb[0], lengths=lengths)
        # the inputs were rounded to bfloat16 before the call: the float32 reference reads the same values
        xr, hr = x.bfloat16().float(), tuple(h.bfloat16().float() for h in hx)
        h_r = hr if len(hr) > 1 else hr[0]
        want, want_h = ref(xr, h_r) if lengths is None else _packed(ref, xr, h_r, lengths)
        torch.testing.assert_close(out.float(), want, atol=BF16, rtol=0)
        for got, w in zip(_flat(h_n), _flat(want_h)):
            torch.testing.assert_close(got.float(), w, atol=BF16, rtol=0)
        layer.zero_grad()
        (out.float().sum() + sum(h.float().sum() for h in _flat(h_n))).backward()
        assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
                   for p in layer.parameters())


def _packed(ref: nn.Module, x: Tensor, h0: object, lengths: Tensor) -> tuple[Tensor, object]:
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, h_n = ref(packed, h0)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], h_n


@pytest.mark.parametrize("cls, tcls, kw", [
    (rnn.RNN, nn.RNN, {}), (rnn.RNN, nn.RNN, {"nonlinearity": "relu", "bidirectional": True}),
    (rnn.LSTM, nn.LSTM, {"proj_size": 4}),
])
def test_reference_scan_under_autocast_returns_one_dtype_with_and_without_a_mask(
        cls: type, tcls: type, kw: dict) -> None:
    """An Elman RNN's step ends in tanh(matmul), a projected LSTM's h in a matmul: the reference scan gave
    bfloat16 outputs and state without a mask, float32 state with one (torch.where promoted it back). It
    now carries and returns the layer's dtype on every call, as the engines and the linear scans do."""
    layer, ref = _pair(cls, tcls, **kw)
    layer.implementation = "reference"
    x = torch.randn(B, T, I)
    dtypes = set()
    for lengths in (None, LENGTHS):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, h_n = layer(x, lengths=lengths)
        dtypes.add((out.dtype, *(h.dtype for h in _flat(h_n))))
        want, want_h = ref(x) if lengths is None else _packed(ref, x, None, lengths)
        torch.testing.assert_close(out.float(), want, atol=BF16, rtol=0)
        for got, w in zip(_flat(h_n), _flat(want_h)):
            torch.testing.assert_close(got.float(), w, atol=BF16, rtol=0)
    assert dtypes == {(torch.float32,) * (1 + len(_flat(h_n)))}


@pytest.mark.parametrize("kw", [{}, {"proj_size": 4}, {"bidirectional": True}])
def test_engine_backward_inside_autocast_runs_in_the_forwards_dtype(kw: dict) -> None:
    """Under autocast the LSTM engine computes in float32; a ``loss.backward()`` inside the autocast
    region (Lightning's manual optimization under ``precision="bf16-mixed"``) ran its backward's matmuls
    in bfloat16: gradients 0.4% off torch.nn's float32 ones. They now match to float32 rounding."""
    layer, ref = _pair(rnn.LSTM, nn.LSTM, **kw)
    layer.implementation = "engine"
    x = torch.randn(B, T, I)
    xr = x.clone().requires_grad_()
    out, (h, c) = ref(xr)
    (out.sum() + h.sum() + c.pow(2).sum()).backward()
    want = [xr.grad, *[p.grad for p in ref.parameters()]]
    xx = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = layer(xx)
        assert out.dtype == torch.float32
        (out.sum() + h.sum() + c.pow(2).sum()).backward()
    for got, w in zip([xx.grad, *[p.grad for p in layer.parameters()]], want):
        torch.testing.assert_close(got, w, atol=1e-5 * float(w.abs().max()) + 1e-7, rtol=0)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_log_space_parallel_scan_keeps_float32_precision_under_autocast_at_t1024(cell: str) -> None:
    """The log-space scan (cumsum, logcumsumexp) runs in float32 under bfloat16 autocast: over T=1024 steps
    it matches a float64 plain loop over the same (bfloat16) projection to 1e-4 (3e-6 measured); only the
    projection is rounded, so against the float32 run it is within the bfloat16 tolerance."""
    torch.manual_seed(0)
    layer = rnn.Recurrent(cell, 8, 16, implementation="parallel")
    x, h0 = torch.randn(2, 1024, 8) * 3, torch.randn(1, 2, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = layer(x, h0)
        x_proj = layer.cell(0).project_input(x)
    assert out.dtype == h_n.dtype == torch.float32
    a, b, _ = layer.cell(0).scan_terms(x_proj.double())
    h, states = h0[0].double(), []
    for t in range(x.shape[1]):  # h_t = a_t h_{t-1} + b_t
        h = a[:, t] * h + b[:, t]
        states.append(h)
    want = torch.stack(states, 1)
    assert float((out.double() - want).abs().max() / want.abs().max()) < 1e-4
    with torch.no_grad():
        full, _ = layer(x, h0)
    assert float((out - full).abs().max() / full.abs().max()) < BF16


def test_bf16_mixed_fit_of_a_stacked_lstm_and_a_dense_fed_gru() -> None:
    """``precision="bf16-mixed"`` failed on any model where a recurrent layer reads a bfloat16 tensor (a
    second LSTM, a Dense before a GRU). Now it trains (the loss falls), predicts and evaluates float32 and
    keeps float32 weights."""
    pytest.importorskip("lightning")
    from rnnkit.layers import GRU, LSTM, Dense, Embedding
    from rnnkit.models import Sequential

    rng = np.random.default_rng(0)
    x = rng.integers(1, 30, size=(64, 10))
    y = (x[:, 0] > 15).astype("int64")
    for layers in ([Embedding(30, 8), LSTM(16, return_sequences=True), LSTM(16), Dense(2, activation="softmax")],
                   [Embedding(30, 8), Dense(8), GRU(16), Dense(2, activation="softmax")]):
        torch.manual_seed(0)
        model = Sequential(layers)
        model.compile("adam", "sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, precision="bf16-mixed", accelerator="cpu",
                            shuffle=False)
        losses = history.history["loss"]
        assert losses[-1] < losses[0]
        assert model.predict(x[:4], verbose=0).dtype == np.float32
        assert all(w.dtype == np.float32 for w in model.get_weights())
        assert isinstance(model.evaluate(x, y, verbose=0), float)
