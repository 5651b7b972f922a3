"""Bad inputs to the recurrent core's public API: each gives a one-line error that names the problem
(or, where the old behaviour was silently wrong, the right numbers)."""

from __future__ import annotations

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.cells import GRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell, MinLSTMCell, RNNCell, make_cell
from rnnkit.nn.attention import BahdanauAttention, LuongAttention
from rnnkit.nn.crf import CRF
from rnnkit.nn.ctc import CTCPrefixBeamSearch, ctc_greedy_decode

I, H = 4, 6


# -- cells ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LSTMCell, LayerNormLSTMCell, GRUCell, RNNCell, MinGRUCell, MinLSTMCell])
@pytest.mark.parametrize("input_size,hidden_size,what", [
    (I, 0, "hidden_size"), (I, -1, "hidden_size"), (I, 6.0, "hidden_size"), (0, H, "input_size"),
])
def test_cells_reject_non_positive_sizes(cls, input_size, hidden_size, what):
    with pytest.raises(ValueError, match=f"{what} must be a positive integer"):
        cls(input_size, hidden_size)


def test_recurrent_rejects_zero_sizes():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        rnn.Recurrent("gru", I, 0)
    with pytest.raises(ValueError, match="input_size must be a positive integer, got 0"):
        rnn.Recurrent("mingru", 0, H)


def test_cell_sizes_accept_integer_like_values():
    import numpy as np
    assert GRUCell(np.int64(I), np.int64(H)).hidden_size == H


@pytest.mark.parametrize("state,message", [
    ((torch.zeros(2, H),), r"carries 2 state tensor\(s\)"),
    (torch.zeros(2, H), r"carries 2 state tensor\(s\)"),
    ((torch.zeros(2, 5), torch.zeros(2, H)), r"state\[0\] must have shape \[batch, 6\] = \[2, 6\], got \[2, 5\]"),
    ((torch.zeros(3, H), torch.zeros(3, H)), r"state\[0\] must have shape .* got \[3, 6\]"),
    ((torch.zeros(2, H).double(), torch.zeros(2, H)), r"state\[0\] is torch.float64"),
])
def test_lstm_cell_validates_state(state, message):
    with pytest.raises(ValueError, match=message):
        LSTMCell(I, H)(torch.randn(2, I), state)


def test_gru_cell_rejects_a_layer_shaped_state_instead_of_broadcasting():
    # a [1, B, H] state used to broadcast silently into a [1, B, H] "output"
    with pytest.raises(ValueError, match=r"state\[0\] must have shape \[batch, 6\] = \[2, 6\], got \[1, 2, 6\]"):
        GRUCell(I, H)(torch.randn(2, I), torch.zeros(1, 2, H))
    with pytest.raises(ValueError, match=r"carries 1 state tensor"):
        GRUCell(I, H)(torch.randn(2, I), (torch.zeros(2, H), torch.zeros(2, H)))


def test_cell_input_dtype_and_sequence_hint():
    with pytest.raises(ValueError, match="input is torch.float64 .* parameters are torch.float32"):
        LSTMCell(I, H)(torch.randn(2, I, dtype=torch.float64))
    with pytest.raises(ValueError, match="use rnnkit.nn.Recurrent for sequences"):
        LSTMCell(I, H)(torch.randn(2, 5, I))


def test_cell_forward_with_valid_state_is_unchanged():
    cell = LSTMCell(I, H)
    x = torch.randn(2, I)
    state = (torch.randn(2, H), torch.randn(2, H))
    out, new = cell(x, list(state))
    ref, _, _ = cell.recur(cell.project_input(x), state)
    torch.testing.assert_close(out, ref)


def test_forget_bias_needs_biases():
    with pytest.raises(ValueError, match="forget_bias=1.0 needs bias=True"):
        LSTMCell(I, H, bias=False, forget_bias=1.0)
    with pytest.raises(ValueError, match="needs bias=True"):
        rnn.LSTM(I, H, bias=False, cell_options={"forget_bias": 1.0})


def test_make_cell_rejects_an_instance():
    with pytest.raises(TypeError, match=r"got the instance GRUCell\(\.\.\.\); pass the class"):
        make_cell(GRUCell(I, H), I, H)


# -- layers --------------------------------------------------------------------------------------
def test_integer_input_names_floating_point():
    layer = rnn.LSTM(I, H, batch_first=True)
    with pytest.raises(ValueError, match="expects a floating-point input, got dtype torch.int64") as err:
        layer(torch.ones(2, 5, I, dtype=torch.long))
    assert "layer.to(torch.int64)" not in str(err.value)
    with pytest.raises(ValueError, match=r"embed token ids first") as err:  # [batch, time] ids: not a size error
        layer(torch.randint(0, 5, (2, 5)))
    assert "input features" not in str(err.value)
    with pytest.raises(ValueError, match=r"layout \[time, features\], unbatched"):
        layer(torch.randn(5, I + 1))


def test_hx_entries_must_be_tensors():
    layer = rnn.LSTM(I, H, batch_first=True)
    with pytest.raises(TypeError, match=r"hx\[0\] must be a tensor of shape \[1, 2, 6\], got list"):
        layer(torch.randn(2, 5, I), ([0.0], [0.0]))


def test_lstm_hx_single_tensor_names_the_pair():
    with pytest.raises(ValueError, match=r"pass \(h_0, c_0\) as a tuple"):
        rnn.LSTM(I, H, batch_first=True)(torch.randn(2, 5, I), torch.zeros(1, 2, H))


@pytest.mark.parametrize("implementation", ["auto", "reference"])
def test_stateful_state_follows_a_dtype_change(implementation):
    layer = rnn.GRU(I, H, batch_first=True, stateful=True, implementation=implementation)
    x = torch.randn(2, 5, I, dtype=torch.float64)
    layer(x[:, :2].float())
    layer.double()
    out, h = layer(x[:, 2:])  # used to fail deep in torch: "mat1 and mat2 must have the same dtype"
    assert out.dtype == torch.float64 and h.dtype == torch.float64
    fresh = rnn.GRU(I, H, batch_first=True, implementation=implementation).double()
    fresh.load_state_dict(layer.state_dict())
    _, h0 = fresh(x[:, :2].float().double())
    torch.testing.assert_close(out, fresh(x[:, 2:], h0)[0])


def test_reset_state_validates_samples():
    layer = rnn.GRU(I, H, batch_first=True, stateful=True)
    layer(torch.randn(2, 5, I))
    with pytest.raises(ValueError, match=r"sample indices must be in \[0, 2\)"):
        layer.reset_state([2])
    with pytest.raises(ValueError, match=r"bool mask must have shape \[2\]"):
        layer.reset_state(torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="expects sample indices"):
        layer.reset_state([0.5])
    layer.reset_state(torch.tensor([False, True]))
    assert layer.state[:, 1].abs().max() == 0 and layer.state[:, 0].abs().max() > 0


@pytest.mark.parametrize("make,key", [
    (lambda: rnn.GRU(I, H, cell_options={"bias": False}), "bias"),
    (lambda: rnn.LSTM(I, H, proj_size=3, cell_options={"proj_size": 2}), "proj_size"),
    (lambda: rnn.Recurrent("gru", I, H, cell_options={"hidden_size": 3}), "hidden_size"),
])
def test_cell_options_that_clash_with_layer_arguments(make, key):
    with pytest.raises(ValueError, match=rf"cell_options \['{key}'\] are set by the layer's own arguments"):
        make()


def test_recurrent_layer_factory_rejects_batch_first():
    with pytest.raises(ValueError, match="always builds batch-first layers"):
        rnn.recurrent_layer("gru", I, H, batch_first=False)


# -- wrappers ------------------------------------------------------------------------------------
def test_bidirectional_rejects_unbatched_input():
    # a [T, I] input used to be "reversed" along its features and give wrong numbers silently
    wrapper = rnn.Bidirectional(rnn.GRU(I, H, batch_first=True))
    with pytest.raises(ValueError, match=r"expects batch-first input \[batch, time, features\], got shape \[5, 4\]"):
        wrapper(torch.randn(5, I))


def test_bidirectional_hx_must_be_a_pair():
    wrapper = rnn.Bidirectional(rnn.GRU(I, H, batch_first=True))
    with pytest.raises(ValueError, match=r"expects hx=\(state_forward, state_backward\)"):
        wrapper(torch.randn(2, 5, I), torch.zeros(1, 2, H))
    out, (h_f, h_b) = wrapper(torch.randn(2, 5, I), (torch.zeros(1, 2, H), None))
    assert out.shape == (2, 5, 2 * H)


@pytest.mark.parametrize("build", [
    lambda: rnn.Stack([rnn.GRU(I, H)]),
    lambda: rnn.Hierarchical(rnn.GRU(I, H), rnn.GRU(H, H, batch_first=True)),
    lambda: rnn.Hierarchical(rnn.GRU(I, H, batch_first=True), rnn.GRU(H, H)),
    lambda: rnn.Bidirectional(rnn.GRU(I, H, batch_first=True), backward_layer=rnn.GRU(I, H)),
])
def test_wrappers_reject_time_first_layers(build):
    with pytest.raises(ValueError, match="needs batch_first=True layers"):
        build()


def test_stack_states_and_unbatched_lengths():
    stack = rnn.Stack([rnn.GRU(I, H, batch_first=True)])
    with pytest.raises(ValueError, match="states must be a list with one entry per layer"):
        stack(torch.randn(2, 5, I), torch.zeros(1, 2, H))
    with pytest.raises(ValueError, match="Stack with lengths= or mask= expects batch-first input"):
        stack(torch.randn(5, I), lengths=torch.tensor([3]))


def _docs():
    torch.manual_seed(0)
    return torch.randn(2, 3, 5, I, dtype=torch.float64), torch.tensor([[5, 2, 0], [1, 0, 0]])


def test_hierarchical_last_pooling_keeps_both_directions():
    inner = rnn.GRU(I, H, batch_first=True, bidirectional=True, num_layers=2).double()
    model = rnn.Hierarchical(inner, rnn.GRU(2 * H, H, batch_first=True).double())
    docs, units = _docs()
    _, _, vectors = model(docs, units)  # used to keep only the reverse direction ([..., H]) and fail
    _, h = inner(docs[0:1, 0, :5])
    torch.testing.assert_close(vectors[0, 0], torch.cat([h[-2, 0], h[-1, 0]]))


@pytest.mark.parametrize("layer", ["gru", "lstm"])
def test_hierarchical_last_pooling_of_a_bidirectional_wrapper(layer):
    base = (rnn.GRU if layer == "gru" else rnn.LSTM)(I, H, batch_first=True).double()
    inner = rnn.Bidirectional(base)
    model = rnn.Hierarchical(inner, rnn.GRU(2 * H, H, batch_first=True).double())
    docs, units = _docs()
    _, _, vectors = model(docs, units)  # GRU: forward state only; LSTM: h and c of the forward direction
    _, (s_f, s_b) = inner(docs[0:1, 1, :2])
    h_f = s_f[0] if isinstance(s_f, tuple) else s_f
    h_b = s_b[0] if isinstance(s_b, tuple) else s_b
    torch.testing.assert_close(vectors[0, 1], torch.cat([h_f[-1, 0], h_b[-1, 0]]))


def test_hierarchical_accepts_list_unit_lengths():
    model = rnn.Hierarchical(rnn.GRU(I, H, batch_first=True), rnn.GRU(H, H, batch_first=True)).double()
    docs, units = _docs()
    torch.testing.assert_close(model(docs, units.tolist())[2], model(docs, units)[2])


# -- pooling and attention -----------------------------------------------------------------------
def test_pooling_validates_masks_and_features():
    out = torch.randn(2, 5, I)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        rnn.masked_max(out, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"mask must have shape \[batch, time\] = \[2, 5\], got \[2, 4\]"):
        rnn.AttentionPooling(I)(out, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        rnn.AttentionPooling(I)(out, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"expects outputs of shape \[batch, time, 3\], got \[2, 5, 4\]"):
        rnn.AttentionPooling(3)(out)


def test_attention_validates_coverage_projected_keys_and_dtype():
    query, keys = torch.randn(2, 3), torch.randn(2, 5, I)
    with pytest.raises(ValueError, match=r"coverage must have shape \[2, 5\]"):
        BahdanauAttention(3, I, coverage=True)(query, keys, coverage=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"projected_keys must be project_keys\(keys\), of shape \[2, 5, 7\]"):
        BahdanauAttention(3, I, 7)(query, keys, projected_keys=torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"of shape \[2, 5, 3\]"):
        LuongAttention(3, I)(query, keys, projected_keys=keys)
    with pytest.raises(ValueError, match="query is torch.float64 .* parameters are torch.float32"):
        BahdanauAttention(3, I)(query.double(), keys.double())
    with pytest.raises(ValueError, match="attention_size must be >= 1"):
        BahdanauAttention(3, I, 0)
    attn = BahdanauAttention(3, I, 7)
    torch.testing.assert_close(attn(query, keys, projected_keys=attn.project_keys(keys))[0], attn(query, keys)[0])


# -- CRF -----------------------------------------------------------------------------------------
def _crf_inputs():
    torch.manual_seed(0)
    return torch.randn(2, 4, 3), torch.randint(0, 3, (2, 4)), torch.ones(2, 4, dtype=torch.bool)


@pytest.mark.parametrize("call,message", [
    (lambda c, e, t, m: c(torch.randn(2, 4, 5), t, m), r"emissions of shape \[batch, time, 3\], got \[2, 4, 5\]"),
    (lambda c, e, t, m: c.decode(e[0], m[0]), r"emissions of shape \[batch, time, 3\], got \[4, 3\]"),
    (lambda c, e, t, m: c(e, t, m.float()), "mask must be a bool tensor"),
    (lambda c, e, t, m: c(e, t, m[:, :3]), r"mask must be a bool tensor of shape \[2, 4\]"),
    (lambda c, e, t, m: c(e, t.float(), m), "tags must be an integer tensor"),
    (lambda c, e, t, m: c(e, t + 3, m), r"tags must be in \[0, 3\)"),
    (lambda c, e, t, m: c(e, t, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]).bool()), "must be right-padded"),
    (lambda c, e, t, m: c.log_partition(e, torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]).bool()), "right-padded"),
    (lambda c, e, t, m: c(e[:, :0], t[:, :0], m[:, :0]), "no time steps"),
])
def test_crf_validates_inputs(call, message):
    emissions, tags, mask = _crf_inputs()
    with pytest.raises(ValueError, match=message):
        call(CRF(3), emissions, tags, mask)


def test_crf_constructor_validates():
    with pytest.raises(ValueError, match="num_tags must be a positive integer"):
        CRF(0)
    ok = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"start must be a bool tensor of shape \[3\]"):
        CRF(3, (ok[:2], torch.ones(3, 3, dtype=torch.bool), ok))


def test_crf_padding_tags_outside_the_mask_are_not_checked():
    crf = CRF(3)
    emissions, tags, _ = _crf_inputs()
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    padded = tags.clone()
    padded[0, 2:] = 0
    value = crf(emissions, padded, mask)
    assert torch.isfinite(value)


# -- CTC -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"lengths": torch.tensor([3])}, r"one entry per row \(2\), got 1"),
    ({"lengths": torch.tensor([-1, 2])}, r"lengths must be in \[0, 5\]"),
    ({"lengths": torch.tensor([7, 2])}, r"lengths must be in \[0, 5\]"),
    ({"blank": 9}, r"blank must be a token id in \[0, 4\)"),
])
def test_ctc_greedy_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ctc_greedy_decode(torch.randn(2, 5, 4), **kwargs)


def test_ctc_beam_validates_blank():
    with pytest.raises(ValueError, match=r"blank must be a token id in \[0, 4\)"):
        CTCPrefixBeamSearch(blank=9).advance(torch.randn(5, 4).log_softmax(-1))


# -- path selection ------------------------------------------------------------------------------
class _LeakyRNNCell(RNNCell):
    """An RNNCell subclass with different math: h = (f(...) + h_{t-1}) / 2."""

    def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
        out, _, gates = super().recur(x_proj, state, recurrent_mask=recurrent_mask, return_gates=return_gates)
        h = 0.5 * out + 0.5 * state[0]
        return h, (h,), gates


def test_rnn_cell_subclass_is_not_sent_to_torch_fused_kernel():
    # used to run torch.nn.RNN's kernel, i.e. RNNCell's math, ignoring the subclass's recur
    torch.manual_seed(0)
    x = torch.randn(2, 5, I)
    auto = rnn.RNN(I, H, batch_first=True, cell=_LeakyRNNCell)
    ref = rnn.RNN(I, H, batch_first=True, cell=_LeakyRNNCell, implementation="reference")
    ref.load_state_dict(auto.state_dict())
    assert auto.fused_unavailable_reason() is not None
    torch.testing.assert_close(auto(x)[0], ref(x)[0])
    assert RNNCell(I, H).fused_mode() == "RNN_TANH"


def test_recurrent_num_layers_must_be_an_integer():
    with pytest.raises(ValueError, match=r"num_layers must be an integer >= 1, got 2.0"):
        rnn.Recurrent("gru", I, H, num_layers=2.0)
    with pytest.raises(ValueError, match=r"num_layers must be an integer >= 1, got 0"):
        rnn.Recurrent("gru", I, H, num_layers=0)
