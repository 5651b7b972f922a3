"""Mutation testing, round 6: the torch-style recurrent layers and blocks (``rnnkit.nn``) and the
Keras-style recurrent layers and wrappers (``rnnkit.layers``).

Each test here was written because a plausible wrong rule (a dispatch condition sending a call to
the wrong kernel, an explicit state ignored, a dropout applied at the wrong time, a rate bound, a
packed-sequence order, a state order) left the rest of the suite passing. Expected values come
from independent references: ``torch.nn.RNN/LSTM/GRU`` with copied weights, plain Python loops
over time, Keras 3 layers with copied weights, or the documented contract, never from the code
path under test.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import rnnkit.nn as rn
from rnnkit.nn.attention import BahdanauAttention, LuongAttention, make_attention, masked_softmax

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections")


def _copy(theirs: nn.Module, ours: nn.Module) -> nn.Module:
    ours.load_state_dict(theirs.state_dict())
    return ours


def keras_module() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("the Keras comparison needs KERAS_BACKEND=torch")
    return keras


# -- rates, dropout and dispatch -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["input_dropout", "recurrent_dropout", "zoneout"])
def test_a_rate_of_one_is_refused(name: str) -> None:
    """The rates live in [0, 1): a rate of 1 would drop (or keep) everything and divide by zero."""
    with pytest.raises(ValueError, match=name):
        rn.LSTM(3, 4, **{name: 1.0})
    rn.LSTM(3, 4, **{name: 0.999})  # just below is fine


def test_recurrent_dropout_alone_is_applied_in_training() -> None:
    """recurrent_dropout without input_dropout must leave the fused kernel (it has none): the first
    step matches torch.nn.LSTM (h_0 = 0 drops nothing), later steps differ; in eval all match."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 16, batch_first=True)
    ours = _copy(ref, rn.LSTM(3, 16, batch_first=True, recurrent_dropout=0.5))
    x = torch.randn(4, 6, 3)
    want, _ = ref(x)
    ours.train()
    got, _ = ours(x)
    torch.testing.assert_close(got[:, 0], want[:, 0], atol=1e-5, rtol=1e-5)
    assert (got[:, 1:] - want[:, 1:]).abs().max() > 1e-2
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], want.detach(), atol=1e-5, rtol=1e-5)


def test_cpu_autocast_projected_lstm_stays_on_torchs_kernel_dtype() -> None:
    """Under CPU autocast a projected LSTM (batch > 1, T >= 16) must compute in the autocast dtype
    as torch.nn.LSTM does, not in the weights' dtype on the engine."""
    torch.manual_seed(1)
    ref = nn.LSTM(3, 8, proj_size=4, batch_first=True)
    ours = _copy(ref, rn.LSTM(3, 8, proj_size=4, batch_first=True))
    x = torch.randn(3, 20, 3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, (wh, wc) = ref(x)
        got, (gh, gc) = ours(x)
    assert (got.dtype, gh.dtype, gc.dtype) == (want.dtype, wh.dtype, wc.dtype) == (torch.bfloat16,) * 2 + (torch.float32,)
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


# -- stateful mode ---------------------------------------------------------------------------------
def test_explicit_hx_wins_over_the_carried_state() -> None:
    """``stateful=True`` uses the carried state only when no ``hx`` is given."""
    torch.manual_seed(2)
    ref = nn.LSTM(3, 5, batch_first=True)
    ours = _copy(ref, rn.LSTM(3, 5, batch_first=True, stateful=True))
    x1, x2 = torch.randn(2, 4, 3), torch.randn(2, 3, 3)
    h0, c0 = torch.randn(1, 2, 5), torch.randn(1, 2, 5)
    with torch.no_grad():
        ours(x1)  # carries a state
        got, (h, c) = ours(x2, (h0, c0))
        want, (wh, wc) = ref(x2, (h0, c0))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close((h, c), (wh, wc))
    torch.testing.assert_close(ours.state, (wh, wc))  # and that result is carried on


@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU])
def test_carried_state_is_cut_from_the_graph(cls: type) -> None:
    """Truncated BPTT: each chunk's backward stops at the carried state (a second backward through the
    first chunk's freed graph would raise), and the state has no grad_fn."""
    torch.manual_seed(3)
    ours = cls(3, 4, batch_first=True, stateful=True)
    for _ in range(2):
        out, _ = ours(torch.randn(2, 5, 3))
        out.sum().backward()
        parts = ours.state if isinstance(ours.state, tuple) else (ours.state,)
        assert all(p.grad_fn is None and not p.requires_grad for p in parts)


# -- lengths and masks -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls,ref_cls", [(rn.GRU, nn.GRU), (rn.LSTM, nn.LSTM)])
def test_lengths_one_short_of_the_input_are_a_real_mask(cls: type, ref_cls: type) -> None:
    """All lengths T - 1: the final state is that of step T - 2 (torch.nn on the truncated input)."""
    torch.manual_seed(4)
    ref = ref_cls(3, 4, batch_first=True)
    ours = _copy(ref, cls(3, 4, batch_first=True))
    x = torch.randn(3, 5, 3)
    with torch.no_grad():
        got, h = ours(x, lengths=torch.tensor([4, 4, 4]))
        want, wh = ref(x[:, :4])
    torch.testing.assert_close(got[:, :4], want)
    assert bool((got[:, 4] == 0).all())
    torch.testing.assert_close(h, wh)


# -- variational dropout, against a plain loop -----------------------------------------------------
def _identity_relu_rnn(size: int, **kw: Any) -> rn.RNN:
    """h_t = relu(W_ih x_t + W_hh h_{t-1}) with the chosen weights set to identity or zero."""
    layer = rn.RNN(size, size, nonlinearity="relu", bias=False, batch_first=True, **kw)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.eye(size))
        layer.weight_hh_l0.zero_()
    return layer


def test_input_dropout_is_one_scaled_mask_per_sequence() -> None:
    """Gal and Ghahramani: one mask per sequence and feature, kept with probability 1 - rate and
    scaled by 1 / (1 - rate). With W_ih = I and W_hh = 0, h_t = relu(mask * x / keep): a plain
    formula for every step."""
    torch.manual_seed(5)
    rate, size = 0.25, 50
    layer = _identity_relu_rnn(size, input_dropout=rate).train()
    x = torch.rand(200, 1, size).add(0.5).expand(200, 4, size).contiguous()  # positive, constant in time
    out, _ = layer(x)
    kept = out[:, 0] != 0
    for t in range(4):  # the same mask at every step
        assert torch.equal(out[:, t] != 0, kept)
        torch.testing.assert_close(out[:, t], torch.where(kept, x[:, t] / (1 - rate), torch.zeros(())))
    assert abs(kept.float().mean().item() - (1 - rate)) < 0.02
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], x)  # off at inference


def test_recurrent_dropout_is_one_scaled_mask_on_the_previous_state() -> None:
    """W_ih = 0, W_hh = I: h_t = relu(m * h_{t-1} / keep), so h_t = m * h_0 / keep**t with one mask m."""
    torch.manual_seed(6)
    rate, size = 0.25, 50
    layer = _identity_relu_rnn(size, recurrent_dropout=rate).train()
    with torch.no_grad():
        layer.weight_ih_l0.zero_()
        layer.weight_hh_l0.copy_(torch.eye(size))
    h0 = torch.rand(1, 200, size).add(0.5)
    out, _ = layer(torch.zeros(200, 3, size), h0)
    kept = out[:, 0] != 0
    keep = 1 - rate
    for t in range(3):
        torch.testing.assert_close(out[:, t], torch.where(kept, h0[0] / keep ** (t + 1), torch.zeros(())))
    assert abs(kept.float().mean().item() - keep) < 0.02


@pytest.mark.parametrize("kw", [{"dropout": 0.5}, {"input_dropout": 0.5}])
def test_dropouts_are_off_in_eval_on_the_reference_scan(kw: dict[str, float]) -> None:
    torch.manual_seed(7)
    ref = nn.LSTM(3, 4, num_layers=2, dropout=kw.get("dropout", 0.0), batch_first=True).eval()
    ours = _copy(ref, rn.LSTM(3, 4, num_layers=2, batch_first=True, implementation="reference", **kw)).eval()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_no_dropout_after_the_last_layer_in_training() -> None:
    """torch.nn applies ``dropout`` between layers only: one layer in training is exact."""
    torch.manual_seed(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nn.LSTM(3, 16, dropout=0.5, batch_first=True)
        ours = _copy(ref, rn.LSTM(3, 16, dropout=0.5, batch_first=True, implementation="reference"))
    x = torch.randn(4, 6, 3)
    torch.testing.assert_close(ours.train()(x), ref.train()(x))


# -- packed sequences ------------------------------------------------------------------------------
def _packed(x: torch.Tensor, lengths: list[int]) -> nn.utils.rnn.PackedSequence:
    return nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)


@pytest.mark.parametrize("implementation", ["auto", "reference"])
def test_packed_output_in_the_inputs_order(implementation: str) -> None:
    """Lengths whose sorting permutation is not its own inverse: out.data lines up with torch.nn's."""
    torch.manual_seed(9)
    ref = nn.LSTM(3, 4, batch_first=True)
    ours = _copy(ref, rn.LSTM(3, 4, batch_first=True, implementation=implementation))
    x = torch.randn(4, 5, 3)
    packed = _packed(x, [2, 5, 3, 4])
    with torch.no_grad():
        got, (h, c) = ours(packed)
        want, (wh, wc) = ref(packed)
    assert torch.equal(got.batch_sizes, want.batch_sizes)
    torch.testing.assert_close(got.data, want.data)
    torch.testing.assert_close((h, c), (wh, wc))


def test_stateful_packed_calls_carry_the_state() -> None:
    torch.manual_seed(10)
    ref = nn.GRU(3, 4, batch_first=True)
    ours = _copy(ref, rn.GRU(3, 4, batch_first=True, stateful=True))
    x1, x2 = torch.randn(3, 4, 3), torch.randn(3, 5, 3)
    with torch.no_grad():
        ours(_packed(x1, [4, 2, 3]))
        got, h = ours(_packed(x2, [5, 3, 1]))
        _, wh1 = ref(_packed(x1, [4, 2, 3]))
        want, wh = ref(_packed(x2, [5, 3, 1]), wh1)
    torch.testing.assert_close(got.data, want.data)
    torch.testing.assert_close(h, wh)
    torch.testing.assert_close(ours.state, wh)


# -- reset_state -----------------------------------------------------------------------------------
def _stateful_with_state(batch: int = 3) -> rn.GRU:
    layer = rn.GRU(2, 3, batch_first=True, stateful=True)
    with torch.no_grad():
        layer(torch.randn(batch, 2, 2))
    return layer


def test_reset_state_takes_negative_indices_as_python_does() -> None:
    layer = _stateful_with_state()
    before = layer.state.clone()
    layer.reset_state([-1])
    expected = before.clone()
    expected[:, [-1]] = 0  # Python / torch indexing: -1 is the last sample
    assert torch.equal(layer.state, expected)


@pytest.mark.parametrize("samples", [[3], [-4]])
def test_reset_state_index_out_of_range_is_a_value_error(samples: list[int]) -> None:
    layer = _stateful_with_state()
    with pytest.raises(ValueError, match="sample indices"):
        layer.reset_state(samples)


def test_reset_state_clears_a_nan_state() -> None:
    layer = _stateful_with_state()
    layer.state[:, 1] = float("nan")
    layer.reset_state(torch.tensor([False, True, False]))
    assert torch.equal(layer.state[:, 1], torch.zeros(1, 3))
    assert bool(torch.isfinite(layer.state).all())


def test_stateful_set_after_construction_still_refuses_bidirectional() -> None:
    layer = rn.GRU(2, 3, batch_first=True, bidirectional=True)
    layer.stateful = True
    with pytest.raises(ValueError, match="bidirectional"):
        layer(torch.randn(1, 2, 2))


# -- rnnkit.nn.Bidirectional, Stack, Hierarchical against torch.nn ---------------------------------
def _load_direction(theirs: nn.LSTM, ours: nn.Module, suffix: str, layer: int = 0) -> None:
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours, f"{name}_l0").copy_(getattr(theirs, f"{name}_l{layer}{suffix}"))


def _torch_bidirectional(x: torch.Tensor, lengths: list[int], hx: Any = None) -> tuple[Any, Any, nn.LSTM]:
    ref = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, state = ref(packed, hx)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state, ref


@pytest.mark.parametrize("merge", ["concat", "ave"])
def test_bidirectional_wrapper_equals_torch_bidirectional(merge: str) -> None:
    """Right padding, initial states for both directions: torch.nn.LSTM(bidirectional=True) on the
    packed batch, its l0 / l0_reverse weights copied into the forward / backward layers."""
    torch.manual_seed(11)
    x = torch.randn(3, 5, 3)
    lengths = [5, 2, 4]
    h0, c0 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    with torch.no_grad():
        want, (wh, wc), ref = _torch_bidirectional(x, lengths, (h0, c0))
        bi = rn.Bidirectional(rn.LSTM(3, 4, batch_first=True), merge=merge)
        _load_direction(ref, bi.forward_layer, "")
        _load_direction(ref, bi.backward_layer, "_reverse")
        got, (sf, sb) = bi(x, ((h0[:1], c0[:1]), (h0[1:], c0[1:])), lengths=torch.tensor(lengths))
    expected = want if merge == "concat" else (want[..., :4] + want[..., 4:]) / 2
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close((sf[0][0], sf[1][0], sb[0][0], sb[1][0]), (wh[0], wc[0], wh[1], wc[1]))


def test_bidirectional_default_backward_layer_is_reinitialised() -> None:
    torch.manual_seed(12)
    bi = rn.Bidirectional(rn.LSTM(3, 4, batch_first=True))
    for (name, a), b in zip(bi.forward_layer.named_parameters(), bi.backward_layer.parameters()):
        assert not torch.equal(a, b), name


def test_stack_equals_a_two_layer_torch_lstm_with_states_per_layer() -> None:
    """Stack([LSTM(3, 4), LSTM(4, 4)], dropout) equals torch.nn.LSTM(num_layers=2): states go to
    their own layer, and the dropout is only between layers (layer 0's state is exact in training)."""
    torch.manual_seed(13)
    ref = nn.LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.5)
    stack = rn.Stack([rn.LSTM(3, 4, batch_first=True), rn.LSTM(4, 4, batch_first=True)], dropout=0.5)
    for k in range(2):
        _load_direction(ref, stack.layers[k], "", layer=k)
    x = torch.randn(2, 5, 3)
    h0, c0 = torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    with torch.no_grad():
        stack.eval(), ref.eval()
        got, finals = stack(x, [(h0[:1], c0[:1]), (h0[1:], c0[1:])])
        want, (wh, wc) = ref(x, (h0, c0))
        torch.testing.assert_close(got, want)
        for k in range(2):
            torch.testing.assert_close((finals[k][0][0], finals[k][1][0]), (wh[k], wc[k]))
        stack.train()
        _, finals = stack(x, [(h0[:1], c0[:1]), (h0[1:], c0[1:])])
        torch.testing.assert_close((finals[0][0][0], finals[0][1][0]), (wh[0], wc[0]))


def _segments_reference(ref: nn.Module, x: torch.Tensor, unit_lengths: torch.Tensor) -> torch.Tensor:
    """Each non-empty segment run alone through torch.nn; the top layer's h_n (both directions)."""
    batch, segments = unit_lengths.shape
    vectors = torch.zeros(batch, segments, ref.hidden_size * (2 if ref.bidirectional else 1))
    for b in range(batch):
        for s in range(segments):
            n = int(unit_lengths[b, s])
            if n:
                _, (h, _) = ref(x[b, s, :n].unsqueeze(0))
                top = h[-2:] if ref.bidirectional else h[-1:]
                vectors[b, s] = torch.cat(list(top[:, 0]), -1)
    return vectors


@pytest.mark.parametrize("bidirectional", [False, True])
def test_hierarchical_last_pooling_and_outer_mask(bidirectional: bool) -> None:
    torch.manual_seed(14)
    inner_ref = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=bidirectional)
    inner = _copy(inner_ref, rn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=bidirectional))
    width = 8 if bidirectional else 4
    outer_ref = nn.GRU(width, 5, batch_first=True)
    outer = _copy(outer_ref, rn.GRU(width, 5, batch_first=True))
    x = torch.randn(2, 3, 4, 3)
    unit_lengths = torch.tensor([[4, 2, 0], [1, 3, 2]])
    with torch.no_grad():
        outputs, state, vectors = rn.Hierarchical(inner, outer, pool="last")(x, unit_lengths)
        want_vectors = _segments_reference(inner_ref, x, unit_lengths)
        torch.testing.assert_close(vectors, want_vectors)
        _, h_first = outer_ref(want_vectors[:1, :2])  # the padded third segment of sequence 0 is skipped
        _, h_second = outer_ref(want_vectors[1:])
        torch.testing.assert_close(state[:, 0], h_first[:, 0])
        torch.testing.assert_close(state[:, 1], h_second[:, 0])
        # explicit segment lengths: the same outer mask
        _, state2, _ = rn.Hierarchical(inner, outer, pool="last")(x, unit_lengths, torch.tensor([2, 3]))
        torch.testing.assert_close(state2, state)


def test_hierarchical_with_a_bidirectional_wrapper_pools_both_directions() -> None:
    torch.manual_seed(15)
    ref = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    bi = rn.Bidirectional(rn.LSTM(3, 4, batch_first=True))
    _load_direction(ref, bi.forward_layer, "")
    _load_direction(ref, bi.backward_layer, "_reverse")
    x = torch.randn(1, 2, 4, 3)
    unit_lengths = torch.tensor([[4, 3]])
    with torch.no_grad():
        _, _, vectors = rn.Hierarchical(bi, rn.GRU(8, 2, batch_first=True), pool="last")(x, unit_lengths)
        torch.testing.assert_close(vectors, _segments_reference(ref, x, unit_lengths))


class _ConstantPool(nn.Module):
    def forward(self, outputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return outputs.new_ones(outputs.shape[0], 2)


def test_hierarchical_empty_segments_give_zero_vectors_whatever_the_pool() -> None:
    inner, outer = rn.GRU(3, 2, batch_first=True), rn.GRU(2, 2, batch_first=True)
    _, _, vectors = rn.Hierarchical(inner, outer, pool=_ConstantPool())(torch.randn(1, 3, 2, 3),
                                                                         torch.tensor([[2, 0, 1]]))
    assert vectors.tolist() == [[[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]]


# -- pooling against NumPy --------------------------------------------------------------------------
def _padded_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(16)
    outputs = torch.as_tensor(rng.normal(size=(3, 4, 2)) - 5.0, dtype=torch.float32)  # all negative
    mask = torch.tensor([[True, True, False, False], [False, True, True, True], [False] * 4])
    outputs[~mask] = float("nan")  # padding is never read
    return outputs, mask


def test_masked_mean_and_max_read_only_real_steps() -> None:
    outputs, mask = _padded_outputs()
    o, m = outputs.numpy(), mask.numpy()
    want_mean = np.stack([o[b, m[b]].mean(0) if m[b].any() else np.zeros(2) for b in range(3)])
    want_max = np.stack([o[b, m[b]].max(0) if m[b].any() else np.zeros(2) for b in range(3)])
    np.testing.assert_allclose(rn.masked_mean(outputs, mask).numpy(), want_mean, rtol=1e-6)
    np.testing.assert_allclose(rn.masked_max(outputs, mask).numpy(), want_max, rtol=1e-6)


def test_masked_mean_of_half_accumulates_in_float32() -> None:
    outputs = torch.full((1, 2000, 1), 100.0, dtype=torch.float16)  # the float16 sum overflows
    got = rn.masked_mean(outputs, torch.ones(1, 2000, dtype=torch.bool))
    assert got.dtype == torch.float16 and got.item() == 100.0


def test_attention_pooling_softmax_over_real_steps_only() -> None:
    torch.manual_seed(17)
    outputs, mask = _padded_outputs()
    outputs = torch.nan_to_num(outputs, nan=50.0)  # large padding values would win without the mask
    pool = rn.AttentionPooling(2, 3)
    with torch.no_grad():
        pooled, weights = pool(outputs, mask)
        w, b, v = pool.project.weight.numpy(), pool.project.bias.numpy(), pool.score.weight.numpy()[0]
    o, m = outputs.numpy(), mask.numpy()
    for row in range(3):
        real = o[row, m[row]]
        if not len(real):
            assert weights[row].tolist() == [0.0] * 4 and pooled[row].tolist() == [0.0, 0.0]
            continue
        e = np.tanh(real @ w.T + b) @ v
        a = np.exp(e - e.max())
        a /= a.sum()
        np.testing.assert_allclose(weights[row, m[row]].numpy(), a, rtol=1e-5)
        assert bool((weights[row, ~mask[row]] == 0).all())
        np.testing.assert_allclose(pooled[row].numpy(), a @ real, rtol=1e-5)


# -- attention against hand-written formulas --------------------------------------------------------
def test_masked_softmax_gives_padding_exactly_zero_even_for_very_negative_scores() -> None:
    scores = torch.tensor([[-1e5, -1e5 + 1.0, 0.0]])
    got = masked_softmax(scores, torch.tensor([[True, True, False]]))
    e = np.exp(1.0)
    np.testing.assert_allclose(got.numpy(), [[1 / (1 + e), e / (1 + e), 0.0]], rtol=1e-6)


@pytest.mark.parametrize("with_coverage", [False, True])
def test_bahdanau_score_formula(with_coverage: bool) -> None:
    """e_s = v^T tanh(W_q q + W_k h_s + b [+ w_c cov_s]); no coverage given means zeros."""
    torch.manual_seed(18)
    attn = BahdanauAttention(3, 4, 5, coverage=True)
    q, keys = torch.randn(2, 3), torch.randn(2, 6, 4)
    cov = torch.rand(2, 6) if with_coverage else None
    with torch.no_grad():
        _, weights = attn(q, keys, coverage=cov)
        hidden = keys @ attn.key_proj.weight.T + attn.key_proj.bias + (q @ attn.query_proj.weight.T)[:, None]
        if cov is not None:
            hidden = hidden + cov[..., None] * attn.coverage_proj.weight[:, 0]
        e = torch.tanh(hidden) @ attn.v.weight[0]
    torch.testing.assert_close(weights, torch.softmax(e, -1))


def test_luong_coverage_and_dot_score_formula() -> None:
    torch.manual_seed(19)
    q, keys, cov = torch.randn(2, 4), torch.randn(2, 6, 4), torch.rand(2, 6)
    general = LuongAttention(4, 4, "general", coverage=True)
    with torch.no_grad():
        general.coverage_weight.fill_(0.7)
        _, weights = general(q, keys, coverage=cov)
        e = torch.einsum("bsk,qk,bq->bs", keys, general.key_proj.weight, q) + 0.7 * cov
    torch.testing.assert_close(weights, torch.softmax(e, -1))
    dot = make_attention("luong_dot", 4, 4)
    context, weights = dot(q, keys)
    a = torch.softmax(torch.einsum("bsk,bk->bs", keys, q), -1)
    torch.testing.assert_close(weights, a)
    torch.testing.assert_close(context, torch.einsum("bs,bsk->bk", a, keys))


# -- recurrent_layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [("layernorm_lstm", rn.LSTM), ("Peephole-LSTM", rn.LSTM),
                                           ("layernorm_gru", rn.GRU), ("GRU_reset_before", rn.GRU)])
def test_recurrent_layer_picks_the_torch_compatible_class(name: str, expected: type) -> None:
    layer = rn.recurrent_layer(name, 3, 4)
    assert type(layer) is expected and layer.batch_first


def test_recurrent_layer_rnn_relu_equals_torch() -> None:
    torch.manual_seed(20)
    ref = nn.RNN(3, 4, nonlinearity="relu", batch_first=True)
    ours = _copy(ref, rn.recurrent_layer("rnn_relu", 3, 4))
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


# -- Keras-style layers against Keras 3 -------------------------------------------------------------
def _keras_pair(make: Any, x: np.ndarray, mask: np.ndarray | None = None, **call: Any) -> tuple[list, list]:
    """make(module) in Keras and rnnkit, Keras' (perturbed) weights copied into rnnkit; outputs as lists."""
    import rnnkit.layers as L

    keras = keras_module()
    k_layer, r_layer = make(keras.layers), make(L)
    k_layer(x), r_layer(torch.as_tensor(x))
    rng = np.random.default_rng(21)
    weights = [(np.asarray(w) + rng.normal(scale=0.3, size=np.shape(w))).astype("float32") for w in k_layer.get_weights()]
    k_layer.set_weights(weights)
    r_layer.set_weights(weights)
    k_kw = dict(call, **({} if mask is None else {"mask": mask}))
    k_out = k_layer(x, **k_kw)
    r_call = {k: ([torch.as_tensor(s) for s in v] if k == "initial_state" else v) for k, v in call.items()}
    with torch.no_grad():
        r_out = r_layer(torch.as_tensor(x), **r_call, **({} if mask is None else {"mask": torch.as_tensor(mask)}))
    as_list = lambda o: list(o) if isinstance(o, list | tuple) else [o]  # noqa: E731
    k_np = [np.asarray(keras.ops.convert_to_numpy(o)) for o in as_list(k_out)]
    r_np = [o.detach().numpy() for o in as_list(r_out)]
    assert len(k_np) == len(r_np)
    return k_np, r_np


def _x_and_mask(seed: int = 22) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False  # right padding
    return x, mask


KERAS_ACTIVATION_CASES = [
    lambda m: m.LSTM(4, activation="relu", return_state=True),
    lambda m: m.LSTM(4, recurrent_activation="hard_sigmoid", return_state=True),
    lambda m: m.GRU(4, activation="relu", return_state=True),
    lambda m: m.GRU(4, activation="relu", reset_after=False, return_state=True),
    lambda m: m.GRU(4, reset_after=False, return_state=True),
    lambda m: m.SimpleRNN(4, activation="sigmoid", return_state=True),
]


@pytest.mark.parametrize("case", range(len(KERAS_ACTIVATION_CASES)))
def test_keras_layers_with_non_default_activations_match_keras(case: int) -> None:
    x, mask = _x_and_mask()
    k_out, r_out = _keras_pair(KERAS_ACTIVATION_CASES[case], x, mask)
    for a, b in zip(r_out, k_out):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_keras_last_output_is_the_last_real_step() -> None:
    x, mask = _x_and_mask(23)
    k_out, r_out = _keras_pair(lambda m: m.GRU(4), x, mask)
    np.testing.assert_allclose(r_out[0], k_out[0], atol=1e-5)


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_keras_lstm_initial_bias(unit_forget_bias: bool) -> None:
    import rnnkit.layers as L

    keras = keras_module()
    x = np.zeros((1, 2, 3), "float32")
    k, r = keras.layers.LSTM(4, unit_forget_bias=unit_forget_bias), L.LSTM(4, unit_forget_bias=unit_forget_bias)
    k(x), r(torch.as_tensor(x))
    np.testing.assert_array_equal(r.get_weights()[2], k.get_weights()[2])


def test_keras_gru_reset_after_trains_both_bias_rows() -> None:
    """Keras' GRU(reset_after=True) bias is [2, 3H], both rows trainable: both get their gradient."""
    import rnnkit.layers as L

    keras = keras_module()
    x = np.random.default_rng(24).normal(size=(2, 3, 2)).astype("float32")
    k, r = keras.layers.GRU(3), L.GRU(3)
    k(x), r(torch.as_tensor(x))
    r.set_weights(k.get_weights())
    bias = k.weights[2].value
    bias.grad = None
    k(x).sum().backward()
    r(torch.as_tensor(x)).sum().backward()
    rnn: Any = r.rnn
    assert rnn.bias_hh_l0.requires_grad and rnn.bias_hh_l0.grad is not None
    to_torch_order = lambda g: g.detach().numpy().reshape(3, 3)[[1, 0, 2]].ravel()  # noqa: E731  Keras z,r,h -> r,z,n
    np.testing.assert_allclose(rnn.bias_hh_l0.grad.numpy(), to_torch_order(bias.grad[1]), atol=1e-5)
    np.testing.assert_allclose(rnn.bias_ih_l0.grad.numpy(), to_torch_order(bias.grad[0]), atol=1e-5)


@pytest.mark.parametrize("merge_mode", ["concat", "ave", None])
def test_keras_bidirectional_states_and_merge_match_keras(merge_mode: str | None) -> None:
    """Initial states (forward then backward), returned states in that order, the merge, and
    set_weights' halves (forward first), all as Keras 3 does."""
    x, mask = _x_and_mask(25)
    rng = np.random.default_rng(26)
    states = [rng.normal(size=(3, 4)).astype("float32") for _ in range(4)]

    def make(m: Any) -> Any:
        return m.Bidirectional(m.LSTM(4, return_sequences=True, return_state=True), merge_mode=merge_mode)

    k_out, r_out = _keras_pair(make, x, mask, initial_state=states)
    real = mask[..., None]
    n_out = 1 if merge_mode is not None else 2
    for a, b in zip(r_out[:n_out], k_out[:n_out]):
        np.testing.assert_allclose(a * real, b * real, atol=1e-5)
    for a, b in zip(r_out[n_out:], k_out[n_out:]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_time_distributed_keeps_batch_and_time_apart() -> None:
    x = np.random.default_rng(27).normal(size=(2, 3, 4)).astype("float32")
    k_out, r_out = _keras_pair(lambda m: m.TimeDistributed(m.Dense(5)), x)
    np.testing.assert_allclose(r_out[0], k_out[0], atol=1e-5)


def test_keras_use_cudnn_and_dropout_map_to_the_documented_nn_arguments() -> None:
    """Module docstring: use_cudnn False -> implementation="reference"; dropout -> input_dropout."""
    import rnnkit.layers as L

    layer = L.LSTM(4, use_cudnn=False, dropout=0.25, recurrent_dropout=0.125)
    layer(torch.zeros(1, 2, 3))
    rnn: Any = layer.rnn
    assert (rnn.implementation, rnn.input_dropout, rnn.recurrent_dropout) == ("reference", 0.25, 0.125)
    assert layer.implementation_in_use == "reference"
