"""Masks, padding sides, reversal, streaming, wrappers and error messages of the layers."""

from __future__ import annotations

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.cells import RecurrentCell
from rnnkit.scan import lengths_to_mask, padding_side, reverse_padded

B, T, I, H = 4, 7, 3, 5
LENGTHS = torch.tensor([7, 4, 1, 0])
CELL_NAMES = ["rnn", "lstm", "gru", "layernorm_lstm", "layernorm_gru", "peephole_lstm", "gru_reset_before"]


def _layer(cell, **kw):
    kw.setdefault("bidirectional", True)
    return rnn.Recurrent(cell, I, H, num_layers=2, **kw).double()


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_padded_batch_equals_each_sequence_alone(cell):
    layer = _layer(cell)
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, state = layer(x, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        if n == 0:
            assert out[b].abs().max() == 0
            for s in _flat(state):
                assert s[:, b].abs().max() == 0  # zero-length: state = initial (zeros)
            continue
        alone, alone_state = layer(x[b:b + 1, :n])
        torch.testing.assert_close(out[b:b + 1, :n], alone, atol=1e-12, rtol=0)
        assert not out[b, n:].any()
        for s, s_alone in zip(_flat(state), _flat(alone_state)):
            torch.testing.assert_close(s[:, b:b + 1], s_alone, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_left_padding_equals_right_padding(cell):
    layer = _layer(cell)
    x = torch.randn(B, T, I, dtype=torch.float64)
    right = lengths_to_mask(LENGTHS, T)
    left = lengths_to_mask(LENGTHS, T, padding_side="left")
    assert padding_side(left) == "left"
    # move each sequence's real steps to the end
    x_left = torch.zeros_like(x)
    for b, n in enumerate(LENGTHS.tolist()):
        if n:
            x_left[b, T - n:] = x[b, :n]
    out_r, st_r = layer(x, mask=right)
    out_l, st_l = layer(x_left, mask=left)
    for b, n in enumerate(LENGTHS.tolist()):
        if n:
            torch.testing.assert_close(out_l[b, T - n:], out_r[b, :n], atol=1e-12, rtol=0)
    for a, c in zip(_flat(st_r), _flat(st_l)):
        torch.testing.assert_close(a, c, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU, rnn.RNN])
@pytest.mark.parametrize("side", ["right", "left"])
def test_fused_equals_reference_with_masks(cls, side):
    fused = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, implementation="fused").double()
    ref = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, implementation="reference").double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64)
    h0 = torch.randn(4, B, H, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if cls is rnn.LSTM else h0
    mask = lengths_to_mask(LENGTHS, T, padding_side=side)
    out_f, st_f = fused(x, hx, mask=mask)
    out_r, st_r = ref(x, hx, mask=mask)
    torch.testing.assert_close(out_f, out_r, atol=1e-10, rtol=0)
    for a, b in zip(_flat(st_f), _flat(st_r)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # zero-length sequence keeps its initial state
    for a, init in zip(_flat(st_f), _flat(hx)):
        torch.testing.assert_close(a[:, 3], init[:, 3])


def test_mask_with_gaps_skips_steps_and_fused_says_why():
    layer = rnn.LSTM(I, H, batch_first=True).double()
    x = torch.randn(1, 5, I, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, False, True]])
    out, _ = layer(x, mask=mask)  # auto falls back to the reference scan
    compact, _ = layer(x[:, [0, 2, 4]])
    torch.testing.assert_close(out[:, [0, 2, 4]], compact)
    layer.implementation = "fused"
    with pytest.raises(ValueError, match="mask has gaps"):
        layer(x, mask=mask)


def test_reverse_padded_is_an_involution_within_real_steps():
    x = torch.arange(2 * 5).view(2, 5, 1).float()
    mask = torch.tensor([[True, True, True, False, False], [False, False, True, True, True]])
    r = reverse_padded(x, mask)
    assert r[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert r[1, :, 0].tolist() == [5, 6, 9, 8, 7]
    torch.testing.assert_close(reverse_padded(r, mask), x)


@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU, rnn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_step_equals_forward(cls, batch_first):
    layer = cls(I, H, num_layers=2, batch_first=batch_first).double().eval()
    x = torch.randn(B, T, I, dtype=torch.float64)
    seq = x if batch_first else x.transpose(0, 1)
    out, state = layer(seq)
    h = None
    steps = []
    for t in range(T):
        o, h = layer.step(x[:, t], h)
        steps.append(o)
    torch.testing.assert_close(torch.stack(steps, 1), out if batch_first else out.transpose(0, 1))
    for a, b in zip(_flat(h), _flat(state)):
        torch.testing.assert_close(a, b)


def test_stateful_carries_and_resets_per_sample():
    layer = rnn.GRU(I, H, batch_first=True, stateful=True).double()
    x = torch.randn(2, 6, I, dtype=torch.float64)
    full, _ = layer(x)
    layer.reset_state()
    a, _ = layer(x[:, :3])
    b, _ = layer(x[:, 3:])
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    layer.reset_state([0])
    assert layer.state[:, 0].abs().max() == 0 and layer.state[:, 1].abs().max() > 0
    with pytest.raises(ValueError, match="reset_state"):
        layer(torch.randn(3, 2, I, dtype=torch.float64))


def test_return_gates_and_dropouts_use_reference():
    layer = rnn.LSTM(I, H, batch_first=True, bidirectional=True).double()
    out, state, gates = layer(torch.randn(B, T, I, dtype=torch.float64), lengths=LENGTHS, return_gates=True)
    assert set(gates) == {"l0", "l0_reverse"}
    assert gates["l0"]["forget"].shape == (B, T, H)
    assert gates["l0"]["forget"][1, 4:].abs().max() == 0  # padded steps
    reg = rnn.LSTM(I, H, batch_first=True, recurrent_dropout=0.3, zoneout=0.1, input_dropout=0.2)
    assert "zoneout" in reg.fused_unavailable_reason()
    dropout_only = rnn.LSTM(I, H, batch_first=True, recurrent_dropout=0.3, input_dropout=0.2)
    assert "dropout" in dropout_only.fused_unavailable_reason()
    assert dropout_only.eval().fused_unavailable_reason() is None  # off at inference: the fused kernel serves
    reg.train()
    y1, _ = reg(torch.randn(2, 3, I))
    reg.eval()
    x = torch.randn(2, 3, I)
    torch.testing.assert_close(reg(x)[0], reg(x)[0])  # deterministic at inference
    assert y1.shape == (2, 3, H)


def test_layernorm_cell_in_lstm_layer_keeps_torch_names():
    layer = rnn.LSTM(I, H, num_layers=2, cell="layernorm_lstm")
    names = set(layer.state_dict())
    assert {"weight_ih_l0", "weight_hh_l1", "ln_ih_weight_l0", "ln_cell_bias_l1"} <= names
    with pytest.raises(ValueError, match="has no fused torch.nn kernel"):
        rnn.LSTM(I, H, cell="layernorm_lstm", implementation="fused")(torch.randn(T, B, I))
    with pytest.raises(ValueError, match="carries states of sizes"):
        rnn.LSTM(I, H, cell="gru")


def test_custom_cell_in_a_few_lines():
    class MinimalGatedCell(RecurrentCell):
        """h_t = (1 - z) * h_{t-1} + z * tanh(W x_t), z = sigmoid(U x_t) (no hidden-state matmul)."""

        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__()
            self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
            self.weight_ih = torch.nn.Parameter(torch.randn(2 * hidden_size, input_size) * 0.3)

        def project_input(self, x):
            return x @ self.weight_ih.T

        def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
            (h,) = state
            a, z = x_proj.chunk(2, -1)
            z = torch.sigmoid(z)
            h = (1 - z) * h + z * torch.tanh(a)
            return h, (h,), ({"update": z} if return_gates else None)

    layer = rnn.Recurrent(MinimalGatedCell, I, H, num_layers=2, bidirectional=True)
    out, h = layer(torch.randn(B, T, I), lengths=LENGTHS)
    assert out.shape == (B, T, 2 * H) and h.shape == (4, B, H)
    assert "weight_ih_l1_reverse" in layer.state_dict()


def test_bidirectional_wrapper_matches_builtin_bidirectional():
    builtin = rnn.LSTM(I, H, batch_first=True, bidirectional=True).double()
    fwd = rnn.LSTM(I, H, batch_first=True).double()
    wrapper = rnn.Bidirectional(fwd)
    sd = builtin.state_dict()
    wrapper.forward_layer.load_state_dict({k: v for k, v in sd.items() if "reverse" not in k})
    wrapper.backward_layer.load_state_dict({k.replace("_reverse", ""): v for k, v in sd.items() if "reverse" in k})
    x = torch.randn(B, T, I, dtype=torch.float64)
    out_a, (h_a, _) = builtin(x, lengths=LENGTHS)
    out_b, ((h_f, _), (h_b, _)) = wrapper(x, lengths=LENGTHS)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(h_a, torch.cat([h_f, h_b]))
    for merge in ("sum", "mul", "ave"):
        out, _ = rnn.Bidirectional(rnn.GRU(I, H, batch_first=True), merge=merge)(torch.randn(B, T, I))
        assert out.shape == (B, T, H)
    with pytest.raises(ValueError, match="merge must be"):
        rnn.Bidirectional(fwd, merge="max")


def test_stack_of_different_layers_and_hierarchical():
    stack = rnn.Stack([rnn.LSTM(I, 8, batch_first=True), rnn.Recurrent("layernorm_gru", 8, 6)], dropout=0.1)
    out, states = stack(torch.randn(B, T, I), lengths=LENGTHS)
    assert out.shape == (B, T, 6) and len(states) == 2
    assert out[3].abs().max() == 0
    inner = rnn.GRU(I, H, batch_first=True)
    outer = rnn.LSTM(H, 6, batch_first=True)
    model = rnn.Hierarchical(inner, outer).double()
    docs = torch.randn(2, 3, 4, I, dtype=torch.float64)
    unit_lengths = torch.tensor([[4, 2, 0], [1, 0, 0]])
    outputs, state, vectors = model(docs, unit_lengths)
    assert outputs.shape == (2, 3, 6) and vectors.shape == (2, 3, H)
    assert vectors[0, 2].abs().max() == 0
    # sentence 0 of doc 0 encoded alone equals its vector
    _, h = inner(docs[0:1, 0, :4])
    torch.testing.assert_close(vectors[0, 0], h[-1, 0])
    # doc 1 has one sentence: the outer state equals running the outer RNN on that vector alone
    _, (h1, _) = outer(vectors[1:2, :1])
    torch.testing.assert_close(state[0][:, 1:2], h1)


@pytest.mark.parametrize("bad,message", [
    (lambda m: m(torch.randn(2, 3, 4, I)), "rank 4"),
    (lambda m: m(torch.randn(2, 3, I + 1)), "expects 3 input features"),
    (lambda m: m(torch.randn(2, 3, I), lengths=torch.tensor([4, 1])), "<= the sequence length 3"),
    (lambda m: m(torch.randn(2, 3, I), lengths=torch.tensor([-1, 1])), ">= 0"),
    (lambda m: m(torch.randn(2, 3, I), lengths=torch.tensor([1, 1, 1])), r"shape \[2\]"),
    (lambda m: m(torch.randn(2, 3, I), mask=torch.ones(2, 4, dtype=torch.bool)), "mask must have shape"),
    (lambda m: m(torch.randn(2, 3, I).double()), "dtype torch.float64 does not match"),
    (lambda m: m(torch.randn(2, 3, I), torch.zeros(1, 3, H)), r"hx\[0\] must have shape"),
    (lambda m: m(torch.randn(0, 3, I)), "empty batch"),
])
def test_bad_inputs_give_one_line_errors(bad, message):
    layer = rnn.GRU(I, H, batch_first=True)
    with pytest.raises(ValueError, match=message) as info:
        bad(layer)
    assert "\n" not in str(info.value)


def test_bad_construction():
    with pytest.raises(ValueError, match="implementation must be one of"):
        rnn.LSTM(I, H, implementation="cudnn")
    with pytest.raises(ValueError, match="zoneout must be in"):
        rnn.LSTM(I, H, zoneout=1.5)
    with pytest.raises(ValueError, match="unknown cell"):
        rnn.Recurrent("transformer", I, H)
    with pytest.raises(ValueError, match="bidirectional layer needs the whole"):
        rnn.LSTM(I, H, bidirectional=True).step(torch.randn(2, I))


def test_gradcheck_reference_scan_with_mask():
    layer = rnn.Recurrent("layernorm_lstm", 2, 3, bidirectional=True).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    assert torch.autograd.gradcheck(lambda inp: layer(inp, lengths=lengths)[0], (x,))


@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU])
@pytest.mark.parametrize("lengths", [[0, 0, 0, 0], [7, 7, 7, 7], [3, 3, 0, 1], [1, 2, 3, 4]])
def test_fused_segments_edge_cases_match_reference(cls, lengths):
    """The CPU fast path (one fused call per stretch of equal activity) on ties, empties and full rows."""
    fused = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, implementation="fused").double()
    ref = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, implementation="reference").double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor(lengths)
    out_f, st_f = fused(x, lengths=lengths)
    out_r, st_r = ref(x, lengths=lengths)
    torch.testing.assert_close(out_f, out_r, atol=1e-10, rtol=0)
    for a, b in zip(_flat(st_f), _flat(st_r)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    with torch.no_grad():  # inference takes the packed path on CPU
        out_p, st_p = fused(x, lengths=lengths)
    torch.testing.assert_close(out_p, out_r, atol=1e-10, rtol=0)
    for a, b in zip(_flat(st_p), _flat(st_r)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    if lengths.sum() > 0:
        g_f, = torch.autograd.grad(out_f.sum() + sum(s.sum() for s in _flat(st_f)), x)
        g_r, = torch.autograd.grad(out_r.sum() + sum(s.sum() for s in _flat(st_r)), x)
        torch.testing.assert_close(g_f, g_r, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("cls", "args", "kw"), [
    pytest.param(rnn.LSTM, (3, 4), {}, id="lstm-fused"),
    pytest.param(rnn.LSTM, (3, 4), {"cell": "peephole_lstm"}, id="peephole-engine"),
    pytest.param(rnn.LSTM, (3, 4), {"implementation": "reference"}, id="lstm-reference"),
    pytest.param(rnn.LSTM, (3, 4), {"cell": "layernorm_lstm", "bidirectional": True, "num_layers": 2},
                 id="layernorm-bidirectional-2-layers"),
    pytest.param(rnn.GRU, (3, 4), {"zoneout": 0.1}, id="gru-zoneout-engine"),
    pytest.param(rnn.Recurrent, ("mingru", 3, 4), {}, id="mingru-sequential"),
    pytest.param(rnn.Recurrent, ("minlstm", 3, 4), {"implementation": "parallel"}, id="minlstm-parallel"),
])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_nan_in_padding_never_reaches_outputs_states_or_gradients(cls, args, kw, grad: bool) -> None:
    """Padding is not data: whatever it holds (NaN from a feature pipeline), the results are those of zeros there."""
    torch.manual_seed(0)
    layer = cls(*args, batch_first=True, **kw).eval()
    clean = torch.randn(2, 5, 3)
    dirty = clean.clone()
    dirty[0, 3:] = float("nan")
    lengths = torch.tensor([3, 5])
    results = []
    for x in (clean, dirty):
        x = x.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out, h = layer(x, lengths=lengths)
            if grad:
                out.sum().backward()
        results.append((out.detach(), h, x.grad))
    (out_c, h_c, g_c), (out_d, h_d, g_d) = results
    torch.testing.assert_close(out_d, out_c)
    for a, b in zip(_flat(h_d), _flat(h_c), strict=True):
        torch.testing.assert_close(a.detach(), b.detach())
    assert bool((out_d[0, 3:] == 0).all())
    if grad:
        torch.testing.assert_close(g_d, g_c)
        assert bool((g_d[0, 3:] == 0).all())


@pytest.mark.parametrize("implementation", ["auto", "fused", "reference"])
@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU, rnn.RNN])
def test_empty_sequences_return_empty_outputs_and_the_initial_state_on_every_path(cls, implementation: str) -> None:
    """torch.nn's fused kernels raise on T=0; rnnkit's layers agree with their other paths instead."""
    layer = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, implementation=implementation)
    initial = torch.randn(4, 2, 4)
    hx = (initial, initial + 1) if cls is rnn.LSTM else initial
    out, h = layer(torch.randn(2, 0, 3), hx)
    assert out.shape == (2, 0, 8)
    for got, given in zip(_flat(h), _flat(hx), strict=True):
        torch.testing.assert_close(got, given)


@pytest.mark.parametrize(("cls", "args", "kw"), [
    pytest.param(rnn.LSTM, (3, 4), {"cell": "peephole_lstm"}, id="lstm-engine"),
    pytest.param(rnn.LSTM, (3, 4), {"cell": "layernorm_lstm"}, id="layernorm-engine"),
    pytest.param(rnn.GRU, (3, 4), {"zoneout": 0.1}, id="gru-engine"),
    pytest.param(rnn.Recurrent, ("mingru", 3, 4), {}, id="mingru-sequential"),
])
def test_double_backward_through_a_hand_written_backward_fails_loudly(cls, args, kw) -> None:
    """A gradient penalty's incoming gradients need no grad, so once_differentiable alone stayed silent (and wrong)."""
    layer = cls(*args, batch_first=True, **kw).double()
    x = torch.randn(2, 8, 3, dtype=torch.float64, requires_grad=True)  # long enough for the engines
    with pytest.raises(RuntimeError, match="implementation='reference'"):
        torch.autograd.grad(layer(x)[0].pow(2).sum(), x, create_graph=True)


def test_double_backward_on_the_reference_scan_is_exact() -> None:
    torch.manual_seed(0)
    layer = rnn.LSTM(2, 3, cell="peephole_lstm", batch_first=True, implementation="reference").double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x)[0], (x,))


@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU, rnn.RNN])
def test_cpu_autocast_gives_one_dtype_with_and_without_lengths_and_gradients(cls) -> None:
    """torch's packed CPU kernels ignore autocast; masked inference must not come back in another dtype."""
    layer = cls(3, 4, batch_first=True)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([3, 5])
    dtypes = set()
    with torch.autocast("cpu"):
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                for lens in (None, lengths):
                    out, h = layer(x, lengths=lens)
                    dtypes.add((out.dtype, _flat(h)[0].dtype))
    assert len(dtypes) == 1, dtypes


@pytest.mark.parametrize("cell, implementation, kw", [
    ("lstm", "engine", {}), ("peephole_lstm", "auto", {}), ("lstm", "auto", {"zoneout": 0.1}),
    ("layernorm_lstm", "auto", {}), ("gru", "engine", {}), ("gru", "auto", {"zoneout": 0.1}),
    ("mingru", "sequential", {}), ("minlstm", "parallel", {}),
])
def test_outputs_of_the_fast_paths_can_be_edited_in_place(cell: str, implementation: str, kw: dict) -> None:
    """``out += residual`` after a layer: the engines returned a view of their state buffer (autograd
    refused the edit) and the linear scans a tensor their backward reads; now every path allows it, as
    torch.nn's layers and the reference scan do, with the reference's gradients."""
    import copy

    import rnnkit.nn as rnn

    torch.manual_seed(0)
    fast = rnn.Recurrent(cell, 4, 6, batch_first=True, implementation=implementation, **kw).double()
    reference = copy.deepcopy(fast)
    reference.implementation = "reference"
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    grads = []
    for module in (reference, fast):
        torch.manual_seed(1)  # the same zoneout draws in both
        xx = x.clone().requires_grad_()
        out, state = module(xx)
        out += 1.0
        out.mul_(2.0)
        first = state[0] if isinstance(state, tuple) else state
        first.add_(1.0)
        (out.pow(2).sum() + first.pow(2).sum()).backward()
        grads.append(xx.grad)
    if not kw.get("zoneout"):  # zoneout's draws differ between the reference scan and the engines
        torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-10)
