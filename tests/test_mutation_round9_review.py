"""Mutation testing, round 9: the CPU scan engines with hand-written backward passes (the LSTM,
layer-norm LSTM and GRU engines, the linear scans, the fused path's masks and segments).

Each test here kills a plausible bug (an update weight of ``h`` used for ``c``, a layer norm's
epsilon mixed up in the recomputed backward ...) that the rest of the suite let through. The
expected values come from independent references: a plain Python loop written here from the
cell equations (differentiated by torch.autograd), torch.nn with copied weights, or
torch.autograd.gradcheck in float64, never from the code path under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnkit.cells import LayerNormLSTMCell, LSTMCell


def _randomise(cell: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    with torch.no_grad():  # layer-norm gains and biases start at 1 and 0: make every parameter matter
        for p in cell.parameters():
            p.add_(scale * torch.randn_like(p))
    return cell


def _lstm_step(cell: LSTMCell, x_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
               rec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the cell's documented equations, written out (``h~``, ``c~`` before any zoneout)."""
    hm = h if rec is None else h * rec
    layer_norm = isinstance(cell, LayerNormLSTMCell)
    zx = F.linear(x_t, cell.weight_ih)
    zh = F.linear(hm, cell.weight_hh)
    if layer_norm:
        zx = F.layer_norm(zx, zx.shape[-1:], cell.ln_ih.weight, None, cell.ln_ih.eps)
        zh = F.layer_norm(zh, zh.shape[-1:], cell.ln_hh.weight, None, cell.ln_hh.eps)
    z = zx + zh
    if cell.bias_ih is not None:
        z = z + cell.bias_ih + cell.bias_hh
    zi, zf, zg, zo = z.chunk(4, -1)
    p = cell.weight_peephole
    if p is not None:
        zi, zf = zi + p[0] * c, zf + p[1] * c
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    if p is not None:
        zo = zo + p[2] * c_new
    c_out = F.layer_norm(c_new, c_new.shape[-1:], cell.ln_cell.weight, cell.ln_cell.bias, cell.ln_cell.eps) \
        if layer_norm else c_new
    h_new = torch.sigmoid(zo) * torch.tanh(c_out)
    if cell.weight_hr is not None:
        h_new = h_new @ cell.weight_hr.t()
    return h_new, c_new


# -- LSTM engine, inference path: zoneout's update weights of h and c --------------------------------
def test_lstm_engine_inference_with_zoneout_in_training_mode_updates_h_and_c_with_their_own_masks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kills: the no-grad loop (``_lstm_inference``) lerping ``h`` with ``c``'s keep-mask and ``c`` with
    ``h``'s. Only zoneout in training mode under ``torch.no_grad()`` (e.g. a stochastic rollout)
    gives the two states different masks; the engine's draws are replaced by known ones here, and
    the reference is a plain loop: ``s_t = s_{t-1} + u_t (s~_t - s_{t-1})`` for each state."""
    import rnnkit.scan.engine as engine_module
    from rnnkit.scan import engine_scan

    torch.manual_seed(0)
    b, t, i, h = 3, 9, 4, 5
    cell = LSTMCell(i, h, peephole=True).double()
    x = torch.randn(b, t, i, dtype=torch.float64)
    h0, c0 = torch.randn(b, h, dtype=torch.float64), torch.randn(b, h, dtype=torch.float64)
    u_h = (torch.rand(t, b, h) > 0.5).double()  # time-major, as the engine keeps them
    u_c = (torch.rand(t, b, h) > 0.5).double()
    assert not torch.equal(u_h, u_c)
    monkeypatch.setattr(engine_module, "_update_weights", lambda *a, **k: (u_h, u_c, None))
    with torch.no_grad():
        out, (h_n, c_n), _ = engine_scan(cell, x, (h0, c0), zoneout_rate=0.5, training=True)
        hh, cc, outs = h0, c0, []
        for step in range(t):
            h_new, c_new = _lstm_step(cell, x[:, step], hh, cc)
            hh = hh + u_h[step] * (h_new - hh)
            cc = cc + u_c[step] * (c_new - cc)
            outs.append(hh)
    torch.testing.assert_close(out, torch.stack(outs, 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n, hh, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_n, cc, rtol=0, atol=1e-12)


# -- layer-norm LSTM engine: the norms' own epsilons in the recomputed backward ------------------------
@pytest.mark.parametrize("recompute", [False, True])
def test_layernorm_engine_gradients_use_each_norms_own_epsilon(recompute: bool) -> None:
    """Kills: the recomputed backward (``recompute_gates``) rebuilding ``LN_c`` with ``LN_hh``'s epsilon.
    The cell's constructor gives all three norms one ``eps``, but each is a plain ``nn.LayerNorm``
    whose ``eps`` can be set; with large, different epsilons the forward's and the rebuilt gates
    differ visibly. Reference: autograd through a plain loop of ``F.layer_norm`` calls."""
    from rnnkit.scan import engine_scan, recompute_gates

    torch.manual_seed(1)
    b, t, i, h = 3, 6, 4, 5
    cell = _randomise(LayerNormLSTMCell(i, h, peephole=True).double())
    cell.ln_ih.eps, cell.ln_hh.eps, cell.ln_cell.eps = 0.05, 0.3, 2.0
    x = torch.randn(b, t, i, dtype=torch.float64)
    h0, c0 = torch.randn(b, h, dtype=torch.float64), torch.randn(b, h, dtype=torch.float64)
    weights = torch.randn(b, t, h, dtype=torch.float64)

    def loss_and_grads(run: object) -> list[torch.Tensor]:
        xx, hh0, cc0 = (v.clone().requires_grad_() for v in (x, h0, c0))
        out, (h_n, c_n) = run(xx, hh0, cc0)  # type: ignore[operator]
        loss = (out * weights).sum() + h_n.pow(2).sum() + (c_n * c_n.flip(-1)).sum()
        params = list(cell.parameters())
        return [out.detach(), *torch.autograd.grad(loss, [xx, hh0, cc0, *params])]

    def engine(xx: torch.Tensor, hh0: torch.Tensor, cc0: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        with recompute_gates(recompute):
            out, state, _ = engine_scan(cell, xx, (hh0, cc0))
        return out, state

    def loop(xx: torch.Tensor, hh0: torch.Tensor, cc0: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        hh, cc, outs = hh0, cc0, []
        for step in range(t):
            hh, cc = _lstm_step(cell, xx[:, step], hh, cc)
            outs.append(hh)
        return torch.stack(outs, 1), (hh, cc)

    for got, want in zip(loss_and_grads(engine), loss_and_grads(loop)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


# -- sequential linear scan: a differentiable recurrent mask -------------------------------------------
def test_sequential_scan_differentiates_through_the_recurrent_mask() -> None:
    """Kills: the recurrent mask entering ``a_t`` detached (``dL/d mask`` lost). Reference: autograd
    through a plain loop of minGRU's equations, ``h_t = (1 - z_t) (m * h_{t-1}) + z_t h~_t`` with
    ``z_t = sigmoid(k_z)`` and the candidate ``k_h`` (the "linear" activation)."""
    from rnnkit.cells import MinGRUCell
    from rnnkit.scan import sequential_scan

    torch.manual_seed(2)
    b, t, i, h = 2, 7, 3, 4
    cell = MinGRUCell(i, h, candidate_activation="linear").double()
    x = torch.randn(b, t, i, dtype=torch.float64)
    h0 = torch.randn(b, h, dtype=torch.float64)
    weights = torch.randn(b, t, h, dtype=torch.float64)
    mask_values = 0.5 + torch.rand(b, h, dtype=torch.float64)

    rec = mask_values.clone().requires_grad_()
    out, (h_n,), _ = sequential_scan(cell, x, (h0,), recurrent_mask=rec)
    got = torch.autograd.grad((out * weights).sum() + h_n.sum(), rec)[0]

    rec_ref = mask_values.clone().requires_grad_()
    k_z, k_h = F.linear(x, cell.weight_ih, cell.bias_ih).chunk(2, -1)
    state, outs = h0, []
    for step in range(t):
        z = torch.sigmoid(k_z[:, step])
        state = (1 - z) * (rec_ref * state) + z * k_h[:, step]
        outs.append(state)
    want = torch.autograd.grad((torch.stack(outs, 1) * weights).sum() + state.sum(), rec_ref)[0]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# -- fused path on CPU: a batch of empty sequences whose padding holds NaN ------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_fused_segments_with_every_sequence_empty_keep_nan_padding_out(kind: str) -> None:
    """Kills: the all-empty batch's one placeholder step reading the padding as ``x * 0`` (NaN * 0 is
    NaN) instead of through ``where``. By the scan's definition an empty sequence outputs zeros and
    keeps its initial state, whatever its padding holds; the gradient reaching the input is zero."""
    import rnnkit.nn as rnn

    torch.manual_seed(3)
    layer = getattr(rnn, kind)(3, 4, batch_first=True, implementation="fused").double()
    x = torch.full((2, 5, 3), float("nan"), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64)
    state = (h0, torch.randn(1, 2, 4, dtype=torch.float64)) if kind == "LSTM" else h0
    out, final = layer(x, state, lengths=torch.tensor([0, 0]))
    assert torch.equal(out, torch.zeros(2, 5, 4, dtype=torch.float64))
    for got, want in zip(final if kind == "LSTM" else (final,), state if kind == "LSTM" else (state,)):
        assert torch.equal(got, want)
    (grad,) = torch.autograd.grad(out.sum() + sum(s.sum() for s in (final if kind == "LSTM" else (final,))), x)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_fused_segments_in_training_apply_no_dropout_after_the_last_layer() -> None:
    """Kills: the CPU segments path applying the inter-layer dropout after the last layer too.
    ``dropout`` acts between layers only (torch.nn.LSTM's definition): a one-layer LSTM with
    ``dropout=0.5`` in training mode must equal torch.nn.LSTM with copied weights run on each
    sequence up to its length, zeros after it."""
    import warnings

    import rnnkit.nn as rnn

    torch.manual_seed(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropout ... non-zero dropout expects num_layers greater than 1"
        layer = rnn.LSTM(3, 4, dropout=0.5, batch_first=True, implementation="fused").double().train()
    ref = torch.nn.LSTM(3, 4, batch_first=True).double()
    ref.load_state_dict(layer.state_dict())
    lengths = [6, 3, 4]
    x = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    out, (h_n, c_n) = layer(x, lengths=torch.tensor(lengths))
    for row, n in enumerate(lengths):
        want, (h_ref, c_ref) = ref(x[row:row + 1, :n].detach())
        torch.testing.assert_close(out[row, :n], want[0], rtol=0, atol=1e-12)
        assert torch.equal(out[row, n:], torch.zeros_like(out[row, n:]))
        torch.testing.assert_close(h_n[:, row], h_ref[:, 0], rtol=0, atol=1e-12)
        torch.testing.assert_close(c_n[:, row], c_ref[:, 0], rtol=0, atol=1e-12)


# -- masks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [2.0, 0.5, -1.0])
def test_check_mask_accepts_only_booleans_or_zeros_and_ones(bad: float) -> None:
    """Kills: the 0/1 check weakened to ``mask >= 0`` (a mask of 2s or 0.5s silently read as True).
    The documented contract: a ``[B, T]`` mask is bool, or numbers that are all 0 or 1."""
    from rnnkit.scan.masks import check_mask

    ok = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.equal(check_mask(ok, 2, 3, None), ok.bool())
    bad_mask = ok.clone()
    bad_mask[0, 1] = bad
    with pytest.raises(ValueError, match="0 and 1"):
        check_mask(bad_mask, 2, 3, None)


def test_check_lengths_refuses_boolean_lengths() -> None:
    """Kills: the dtype check letting ``bool`` through (``[True, False]`` read as lengths 1 and 0,
    most likely a mask passed where lengths go). Contract: lengths are integers."""
    from rnnkit.scan.masks import check_lengths

    assert check_lengths(torch.tensor([3, 0]), 2, 3, None).tolist() == [3, 0]
    with pytest.raises(ValueError, match="integers"):
        check_lengths(torch.tensor([True, False]), 2, 3, None)
    with pytest.raises(ValueError, match="integers"):
        check_lengths(torch.tensor([2.0, 1.0]), 2, 3, None)


# -- a recurrent mask that asks for a gradient -------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "layernorm_lstm", "gru"])
def test_engines_refuse_a_recurrent_mask_that_requires_grad_and_reference_gives_its_gradient(kind: str) -> None:
    """The engines take recurrent_mask as a constant dropout mask and gave it no gradient (None) where
    the reference scan gives the true one; a mask that requires grad is now refused, one detached runs."""
    from rnnkit.cells import GRUCell
    from rnnkit.scan import engine_scan, reference_scan
    from rnnkit.scan.engine_gru import gru_engine_scan

    torch.manual_seed(0)
    cell = {"lstm": LSTMCell(3, 4), "layernorm_lstm": LayerNormLSTMCell(3, 4), "gru": GRUCell(3, 4)}[kind].double()
    scan = gru_engine_scan if kind == "gru" else engine_scan
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    state = tuple(torch.randn(2, 4, dtype=torch.float64) for _ in range(1 if kind == "gru" else 2))
    mask = torch.full((2, 4), 1.25, dtype=torch.float64, requires_grad=True)
    out, _, _ = reference_scan(cell, x, state, recurrent_mask=mask)
    (grad,) = torch.autograd.grad(out.sum(), mask)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="recurrent_mask.detach"):
        scan(cell, x, state, recurrent_mask=mask)
    fast, _, _ = scan(cell, x, state, recurrent_mask=mask.detach())
    torch.testing.assert_close(fast, out.detach())
    with torch.no_grad():  # no gradient asked for: runs
        scan(cell, x, state, recurrent_mask=mask)
