"""rnnkit.nn layers against torch.nn with copied weights: outputs, final states and gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rnn

KINDS = {
    "rnn_tanh": (rnn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnn.LSTM, torch.nn.LSTM, {}),
    "lstm_proj": (rnn.LSTM, torch.nn.LSTM, {"proj_size": 3}),
    "gru": (rnn.GRU, torch.nn.GRU, {}),
}
I, H, B, T = 4, 5, 3, 6


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _run(module, x, hx, lengths, batch_first):
    if lengths is None:
        return module(x, hx)
    if isinstance(module, (rnn.RNN, rnn.LSTM, rnn.GRU)):
        return module(x, hx, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, h = module(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, h


def _make(kind, layers, bidirectional, batch_first, dtype, implementation):
    ours_cls, theirs_cls, kw = KINDS[kind]
    args = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, **kw)
    theirs = theirs_cls(I, H, **args).to(dtype)
    ours = ours_cls(I, H, implementation=implementation, **args).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _inputs(ours, layers, bidirectional, batch_first, dtype, initial, with_lengths):
    x = torch.randn(B, T, I, dtype=dtype)
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    hx = None
    if initial:
        n = layers * (2 if bidirectional else 1)
        sizes = ours._state_sizes()
        parts = tuple(torch.randn(n, B, s, dtype=dtype) for s in sizes)
        hx = parts if len(parts) > 1 else parts[0]
    lengths = torch.tensor([T, 4, 1]) if with_lengths else None
    return x, hx, lengths


CASES = list(itertools.product(KINDS, [1, 2, 3], [False, True], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("implementation", ["reference", "fused"])
@pytest.mark.parametrize("kind,layers,bidirectional,batch_first,initial,with_lengths", CASES)
def test_matches_torch_nn_float64(kind, layers, bidirectional, batch_first, initial, with_lengths, implementation):
    dtype = torch.float64
    ours, theirs = _make(kind, layers, bidirectional, batch_first, dtype, implementation)
    x, hx, lengths = _inputs(ours, layers, bidirectional, batch_first, dtype, initial, with_lengths)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, h_a = _run(ours, x1, hx, lengths, batch_first)
    out_b, h_b = _run(theirs, x2, hx, lengths, batch_first)
    torch.testing.assert_close(out_a, out_b, atol=1e-10, rtol=0)
    for a, b in zip(_flat(h_a), _flat(h_b)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    weights = torch.randn_like(out_a)
    loss_a = (out_a * weights).sum() + sum(h.sum() for h in _flat(h_a))
    loss_b = (out_b * weights).sum() + sum(h.sum() for h in _flat(h_b))
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-10, rtol=0)
    grads_b = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[name].grad, atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_torch_nn_float32(kind, bidirectional):
    ours, theirs = _make(kind, 2, bidirectional, True, torch.float32, "reference")
    x, hx, lengths = _inputs(ours, 2, bidirectional, True, torch.float32, True, True)
    out_a, h_a = _run(ours, x, hx, lengths, True)
    out_b, h_b = _run(theirs, x, hx, lengths, True)
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=0)
    for a, b in zip(_flat(h_a), _flat(h_b)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trips_both_ways(kind):
    ours_cls, theirs_cls, kw = KINDS[kind]
    ours = ours_cls(I, H, num_layers=2, bidirectional=True, **kw)
    theirs = theirs_cls(I, H, num_layers=2, bidirectional=True, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    theirs.load_state_dict(ours.state_dict())
    ours2 = ours_cls(I, H, num_layers=2, bidirectional=True, **kw)
    ours2.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, I)
    torch.testing.assert_close(ours2(x)[0], theirs(x)[0])
    assert isinstance(ours, theirs_cls)


def test_unbatched_input_like_torch():
    ours, theirs = _make("lstm", 2, True, False, torch.float64, "reference")
    x = torch.randn(T, I, dtype=torch.float64)
    out_a, (h_a, c_a) = ours(x)
    out_b, (h_b, c_b) = theirs(x)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(h_a, h_b)
    assert h_a.shape == (4, H)


def test_packed_sequence_input_both_paths():
    for implementation in ("fused", "reference"):
        ours, theirs = _make("gru", 2, True, True, torch.float64, implementation)
        x = torch.randn(B, T, I, dtype=torch.float64)
        packed = pack_padded_sequence(x, torch.tensor([T, 2, 5]), batch_first=True, enforce_sorted=False)
        out_a, h_a = ours(packed)
        out_b, h_b = theirs(packed)
        pa, _ = pad_packed_sequence(out_a, batch_first=True)
        pb, _ = pad_packed_sequence(out_b, batch_first=True)
        torch.testing.assert_close(pa, pb)
        torch.testing.assert_close(h_a, h_b)


def test_device_moves_keep_cells_bound():
    layer = rnn.LSTM(I, H, batch_first=True, implementation="reference")
    layer.double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, _ = layer(x)
    assert out.dtype == torch.float64
    assert layer.cell().weight_ih is layer.weight_ih_l0
