"""Cells against torch.nn cells and against hand-written equations."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import CELLS, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RNNCell, make_cell

B, I, H = 3, 4, 5


def _copy(dst, src):
    dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_matches_torch(nonlinearity):
    theirs = torch.nn.RNNCell(I, H, nonlinearity=nonlinearity).double()
    ours = RNNCell(I, H, nonlinearity=nonlinearity).double()
    _copy(ours, theirs)
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    out, (h1,) = ours(x, (h,))
    torch.testing.assert_close(out, theirs(x, h), atol=1e-12, rtol=0)
    torch.testing.assert_close(h1, out)


def test_lstm_cell_matches_torch_and_equations():
    theirs = torch.nn.LSTMCell(I, H).double()
    ours = LSTMCell(I, H).double()
    _copy(ours, theirs)
    x = torch.randn(B, I, dtype=torch.float64)
    h, c = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    out, (h1, c1), gates = ours(x, (h, c), return_gates=True)
    h2, c2 = theirs(x, (h, c))
    torch.testing.assert_close(h1, h2, atol=1e-12, rtol=0)
    torch.testing.assert_close(c1, c2, atol=1e-12, rtol=0)
    # the equations, written out independently
    z = x @ ours.weight_ih.T + ours.bias_ih + h @ ours.weight_hh.T + ours.bias_hh
    i, f, g, o = z[:, :H].sigmoid(), z[:, H:2 * H].sigmoid(), z[:, 2 * H:3 * H].tanh(), z[:, 3 * H:].sigmoid()
    torch.testing.assert_close(gates["forget"], f)
    torch.testing.assert_close(c1, f * c + i * g)
    torch.testing.assert_close(h1, o * torch.tanh(f * c + i * g))


def test_lstm_projection_and_peepholes():
    ours = LSTMCell(I, H, proj_size=2, peephole=True).double()
    assert ours.state_sizes == (2, H)
    x, h, c = torch.randn(B, I).double(), torch.randn(B, 2).double(), torch.randn(B, H).double()
    out, (h1, c1) = ours(x, (h, c))
    p = ours.weight_peephole
    z = x @ ours.weight_ih.T + ours.bias_ih + h @ ours.weight_hh.T + ours.bias_hh
    i = (z[:, :H] + p[0] * c).sigmoid()
    f = (z[:, H:2 * H] + p[1] * c).sigmoid()
    c_new = f * c + i * z[:, 2 * H:3 * H].tanh()
    o = (z[:, 3 * H:] + p[2] * c_new).sigmoid()
    torch.testing.assert_close(c1, c_new)
    torch.testing.assert_close(h1, (o * c_new.tanh()) @ ours.weight_hr.T)
    assert out.shape == (B, 2)


def test_forget_bias_initialisation():
    cell = LSTMCell(I, H, forget_bias=1.0)
    total = cell.bias_ih + cell.bias_hh
    torch.testing.assert_close(total[H:2 * H], torch.ones(H))


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_cell_conventions(reset_after):
    ours = GRUCell(I, H, reset_after=reset_after).double()
    x, h = torch.randn(B, I).double(), torch.randn(B, H).double()
    out, _ = ours(x, (h,))
    w_ir, w_iz, w_in = ours.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = ours.weight_hh.chunk(3)
    b_ir, b_iz, b_in = ours.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = ours.bias_hh.chunk(3)
    r = (x @ w_ir.T + b_ir + h @ w_hr.T + b_hr).sigmoid()
    z = (x @ w_iz.T + b_iz + h @ w_hz.T + b_hz).sigmoid()
    if reset_after:
        n = (x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn)).tanh()
        theirs = torch.nn.GRUCell(I, H).double()
        _copy(theirs, ours)
        torch.testing.assert_close(out, theirs(x, h), atol=1e-12, rtol=0)
    else:
        n = (x @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn).tanh()
    torch.testing.assert_close(out, (1 - z) * n + z * h)


def test_layer_norm_cells_normalise():
    cell = LayerNormLSTMCell(I, H).double()
    x, h, c = torch.randn(B, I).double() * 100, torch.randn(B, H).double(), torch.randn(B, H).double()
    proj = cell.project_input(x) - cell.bias_ih
    torch.testing.assert_close(proj.mean(-1), torch.zeros(B, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(cell.ln_ih.weight, torch.ones(4 * H, dtype=torch.float64))
    out, (h1, c1) = cell(x, (h, c))
    assert torch.isfinite(out).all()
    gru = LayerNormGRUCell(I, H)
    out, _ = gru(torch.randn(B, I))
    assert out.shape == (B, H)


def test_registry_and_errors():
    assert {"rnn", "lstm", "gru", "layernorm_lstm", "layernorm_gru", "peephole_lstm"} <= set(CELLS)
    assert isinstance(make_cell("layernorm-lstm", I, H), LayerNormLSTMCell)
    with pytest.raises(ValueError, match="unknown cell 'lsmt'.*choose one of"):
        make_cell("lsmt", I, H)
    with pytest.raises(ValueError, match=r"expects input of shape \[batch, 4\]"):
        LSTMCell(I, H)(torch.randn(B, I + 1))
    with pytest.raises(ValueError, match="proj_size"):
        LSTMCell(I, H, proj_size=H)
