"""Keras-style layers: shapes, masks, Keras semantics, configs."""

from __future__ import annotations

import re

import pytest
import torch

import rnnkit.layers as L
from rnnkit.layers import (
    GRU,
    LSTM,
    Activation,
    AttentionPooling,
    Bidirectional,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    Masking,
    RepeatVector,
    SimpleRNN,
    TimeDistributed,
    deserialize_layer,
    serialize_layer,
)
from rnnkit.layers.activations import hard_sigmoid


def padded(lengths: list[int], steps: int, features: int = 3, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(len(lengths), steps, features)
    mask = torch.zeros(len(lengths), steps, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if side == "right":
            mask[i, :n] = True
        else:
            mask[i, steps - n:] = True
    return x * mask.unsqueeze(-1), mask


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_recurrent_shapes_and_state(cls: type) -> None:
    x = torch.randn(4, 7, 3)
    assert cls(5)(x).shape == (4, 5)
    assert cls(5, return_sequences=True)(x).shape == (4, 7, 5)
    out = cls(5, return_sequences=True, return_state=True)(x)
    assert isinstance(out, list) and len(out) == (3 if cls is LSTM else 2)
    torch.testing.assert_close(out[0][:, -1], out[1])  # last output is the final h


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
@pytest.mark.parametrize("side", ["right", "left"])
def test_masked_last_output_equals_unpadded(cls: type, side: str) -> None:
    layer = cls(4)
    x, mask = padded([5, 2, 3], 6, side=side)
    out = layer(x, mask=mask)
    for i in range(3):
        real = x[i:i + 1][:, mask[i]]
        torch.testing.assert_close(out[i], layer(real)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_go_backwards_reads_reversed_input(cls: type) -> None:
    fwd = cls(4, return_sequences=True)
    x = torch.randn(2, 5, 3)
    fwd(x)
    back = cls.from_config({**fwd.get_config(), "go_backwards": True, "name": "b"})
    back(x)
    back.set_weights(fwd.get_weights())
    torch.testing.assert_close(back(x), fwd(x.flip(1)))


def test_initial_state_and_errors() -> None:
    layer = LSTM(4, return_state=True)
    x = torch.randn(2, 3, 3)
    _, h, c = layer(x)
    out2, _, _ = layer(x, initial_state=[h, c])
    assert not torch.allclose(out2, h)
    with pytest.raises(ValueError, match=r"initial_state as a list of 2 tensor\(s\)"):
        layer(x, initial_state=[h])
    with pytest.raises(ValueError, match=r"must have shape \[2, 4\]"):
        layer(x, initial_state=[h[:, :3], c])
    with pytest.raises(ValueError, match=r"expects input \[batch, time, features\]"):
        LSTM(3)(torch.randn(2, 3))


def test_keras_initialisation() -> None:
    layer = LSTM(6)
    layer(torch.randn(1, 2, 3))
    rnn = layer.rnn
    assert rnn is not None
    torch.testing.assert_close(rnn.bias_ih_l0[6:12], torch.ones(6))  # unit_forget_bias
    assert float(rnn.bias_ih_l0[:6].detach().abs().sum()) == 0.0 and float(rnn.bias_hh_l0.detach().abs().sum()) == 0.0
    w = rnn.weight_hh_l0  # orthogonal [4H, H]: W^T W = I
    torch.testing.assert_close(w.T @ w, torch.eye(6), atol=1e-5, rtol=0)
    limit = (6 / (3 + 24)) ** 0.5  # glorot on the Keras [I, 4H] kernel
    assert float(rnn.weight_ih_l0.detach().abs().max()) <= limit


def test_lstm_custom_activation_matches_a_plain_loop() -> None:
    layer = LSTM(3, activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True)
    x = torch.randn(2, 4, 2)
    out = layer(x)
    assert layer.implementation_in_use == "reference"
    kernel, recurrent, bias = (torch.from_numpy(w) for w in layer.get_weights())
    h = c = torch.zeros(2, 3)
    for t in range(4):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = z.chunk(4, -1)
        c = hard_sigmoid(f) * c + hard_sigmoid(i) * torch.relu(g)
        h = hard_sigmoid(o) * torch.relu(c)
        torch.testing.assert_close(out[:, t], h, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="implementation='fused' cannot run"):
        LSTM(3, activation="relu", use_cudnn=True)(x)


def test_use_cudnn_paths_agree() -> None:
    auto = GRU(4, return_sequences=True)
    x, mask = padded([4, 2], 4)
    auto(x)
    assert auto.implementation_in_use == "fused"
    ref = GRU.from_config({**auto.get_config(), "use_cudnn": False, "name": "ref"})
    ref(x)
    ref.set_weights(auto.get_weights())
    assert ref.implementation_in_use == "reference"
    torch.testing.assert_close(auto(x, mask=mask), ref(x, mask=mask), atol=1e-5, rtol=1e-5)


def test_simple_rnn_relu_stays_fused_and_other_activations_do_not() -> None:
    x = torch.randn(1, 3, 2)
    relu = SimpleRNN(3, activation="relu")
    relu(x)
    assert relu.implementation_in_use == "fused"
    elu = SimpleRNN(3, activation="elu", return_sequences=True)
    out = elu(x)
    assert elu.implementation_in_use == "reference"
    k, r, b = (torch.from_numpy(w) for w in elu.get_weights())
    h = torch.zeros(1, 3)
    for t in range(3):
        h = torch.nn.functional.elu(x[:, t] @ k + h @ r + b)
    torch.testing.assert_close(out[:, -1], h, atol=1e-5, rtol=1e-5)


def test_gru_reset_before_formula() -> None:
    layer = GRU(3, reset_after=False)
    x = torch.randn(2, 4, 2)
    out = layer(x)
    kernel, recurrent, bias = (torch.from_numpy(w) for w in layer.get_weights())
    assert bias.shape == (9,)
    h = torch.zeros(2, 3)
    for t in range(4):
        xz, xr, xh = (x[:, t] @ kernel + bias).chunk(3, -1)  # Keras order z, r, h
        uz, ur, uh = recurrent.chunk(3, -1)
        z, r = torch.sigmoid(xz + h @ uz), torch.sigmoid(xr + h @ ur)
        h = z * h + (1 - z) * torch.tanh(xh + (r * h) @ uh)
    torch.testing.assert_close(out, h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_matches_two_directions(merge: str | None) -> None:
    layer = Bidirectional(LSTM(3, return_sequences=True), merge_mode=merge)
    x, mask = padded([5, 3], 5)
    out = layer(x, mask=mask)
    fwd, bwd = layer.forward_layer, layer.backward_layer
    for i, n in enumerate([5, 3]):
        real = x[i:i + 1, :n]
        f = fwd(real)[0]
        b = bwd.rnn(real.flip(1))[0][0].flip(0)  # type: ignore[index,union-attr]
        expected = {"concat": torch.cat([f, b], -1), "sum": f + b, "mul": f * b, "ave": (f + b) / 2, None: None}[merge]
        if merge is None:
            torch.testing.assert_close(out[0][i, :n], f, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out[1][i, :n], b, atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(out[i, :n], expected, atol=1e-5, rtol=1e-5)
            assert float(out[i, n:].detach().abs().sum()) == 0.0


def test_bidirectional_return_state_and_mask() -> None:
    layer = Bidirectional(GRU(3, return_state=True))
    x, mask = padded([4, 2], 4)
    out, h_f, h_b = layer(x, mask=mask)
    torch.testing.assert_close(out, torch.cat([h_f, h_b], -1))
    assert layer.compute_mask(x, mask) == [None, None, None]
    seq = Bidirectional(GRU(3, return_sequences=True))
    assert torch.equal(seq.compute_mask(x, mask), mask)


def test_time_distributed_and_dense_on_sequences() -> None:
    dense = Dense(4, activation="relu")
    td = TimeDistributed(dense)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(td(x), dense(x))
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(td.compute_mask(x, mask), mask)
    assert td.output_activation() == "relu"


def test_embedding_mask_zero_and_errors() -> None:
    emb = Embedding(10, 4, mask_zero=True)
    ids = torch.tensor([[3, 1, 0], [0, 0, 2]])
    assert torch.equal(emb.compute_mask(ids), ids != 0)
    assert emb(ids).shape == (2, 3, 4)
    assert torch.equal(emb(ids.float()), emb(ids))  # Keras casts float ids
    with pytest.raises(ValueError, match=r"input_dim=10 .* ids in \[0, 12\]"):
        emb(torch.tensor([[12, 0]]))
    assert float(Embedding(1000, 8).weight.detach().abs().max()) <= 0.05  # Keras 'uniform' initializer


def test_masking_layer() -> None:
    x = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]])
    layer = Masking(0.0)
    assert layer.compute_mask(x).tolist() == [[True, False, True]]
    torch.testing.assert_close(layer(x), x)


def test_pooling_is_mask_aware() -> None:
    x, mask = padded([3, 1, 0], 4)
    x = x + (~mask).unsqueeze(-1) * 100.0  # garbage on padding must not leak
    avg = GlobalAveragePooling1D()(x, mask=mask)
    torch.testing.assert_close(avg[0], x[0, :3].mean(0))
    torch.testing.assert_close(avg[2], torch.zeros(3))
    mx = GlobalMaxPooling1D()(x, mask=mask)
    torch.testing.assert_close(mx[1], x[1, 0])
    torch.testing.assert_close(mx[2], torch.zeros(3))
    assert GlobalAveragePooling1D(keepdims=True)(x).shape == (3, 1, 3)


def test_attention_pooling() -> None:
    layer = AttentionPooling(units=5, return_attention=True)
    x, mask = padded([4, 2, 0], 4)
    pooled, weights = layer(x, mask=mask)
    torch.testing.assert_close(weights.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert float(weights[1, 2:].detach().abs().sum()) == 0.0
    torch.testing.assert_close(pooled[1], (weights[1, :2, None] * x[1, :2]).sum(0))
    torch.testing.assert_close(pooled[2], torch.zeros(3))
    assert layer.last_attention is not None and layer.last_attention.shape == (3, 4)
    pooled.sum().backward()  # gradients stay finite with all-padding rows
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    # without a mask it is a softmax over all steps
    plain = AttentionPooling()(x[:1])
    assert plain.shape == (1, 3)


def test_merge_layers_and_misc() -> None:
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 2)
    ma, mb = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool(), torch.tensor([[1, 0, 0], [1, 1, 0]]).bool()
    cat = Concatenate()
    assert cat([a, b]).shape == (2, 3, 6)
    assert cat.compute_mask([a, b], [ma, mb]).tolist() == (ma | mb).tolist()  # Keras 3's OR
    assert L.Add()([a, a]).shape == (2, 3, 4)
    torch.testing.assert_close(L.Average()([a, 3 * a]), 2 * a)
    assert RepeatVector(4)(torch.randn(2, 3)).shape == (2, 4, 3)
    assert L.Flatten()(a).shape == (2, 12)
    torch.testing.assert_close(Activation("softmax")(a).sum(-1), torch.ones(2, 3))


def test_dropout_noise_shape_shares_mask_over_time() -> None:
    layer = Dropout(0.5, noise_shape=(None, 1, 4))
    layer.train()
    out = layer(torch.ones(3, 6, 4))
    assert torch.equal(out, out[:, :1].expand_as(out))
    layer.eval()
    assert torch.equal(layer(torch.ones(2, 2, 4)), torch.ones(2, 2, 4))
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        Dropout(1.5)


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown activation 'sigmoidd'; choose one of .*sigmoid"):
        Dense(3, activation="sigmoidd")
    with pytest.raises(ValueError, match="unknown initializer 'glorot'; choose one of .*glorot_uniform"):
        Dense(3, kernel_initializer="glorot")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        Dense(3, unit=4)
    with pytest.raises(ValueError, match="kernel_regularizer is not supported"):
        LSTM(3, kernel_regularizer="l2")


LAYER_CASES = [
    (lambda: Dense(4, activation="tanh", use_bias=False), (2, 3)),
    (lambda: Embedding(9, 4, mask_zero=True, input_length=5), None),
    (lambda: LSTM(3, return_sequences=True, dropout=0.1, go_backwards=True), (2, 4, 3)),
    (lambda: GRU(3, reset_after=False, activation="relu"), (2, 4, 3)),
    (lambda: SimpleRNN(3, return_state=True, stateful=True), (2, 4, 3)),
    (lambda: Bidirectional(LSTM(3, return_sequences=True), merge_mode="sum"), (2, 4, 3)),
    (lambda: TimeDistributed(Dense(2, activation="softmax")), (2, 4, 3)),
    (lambda: AttentionPooling(units=6), (2, 4, 3)),
    (lambda: GlobalMaxPooling1D(), (2, 4, 3)),
    (lambda: Masking(-1.0), (2, 4, 3)),
    (lambda: Dropout(0.3, noise_shape=(None, 1, 3)), (2, 4, 3)),
    (lambda: Concatenate(axis=1), None),
]


@pytest.mark.parametrize("factory,shape", LAYER_CASES)
def test_config_round_trip(factory: object, shape: tuple[int, ...] | None) -> None:
    layer = factory()  # type: ignore[operator]
    clone = deserialize_layer(serialize_layer(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    if shape is None:
        return
    x = torch.randn(*shape)
    layer.eval()
    clone.eval()
    ya = layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    for m in (layer, clone):
        if hasattr(m, "reset_states"):
            m.reset_states()
    ya, yb = layer(x), clone(x)
    for a, b in zip(ya if isinstance(ya, list) else [ya], yb if isinstance(yb, list) else [yb]):
        torch.testing.assert_close(a, b)


def test_stateful_layer_carries_state() -> None:
    layer = LSTM(3, stateful=True)
    x = torch.randn(2, 4, 2)
    first = layer(x)
    second = layer(x)
    assert not torch.allclose(first, second)
    layer.reset_states()
    torch.testing.assert_close(layer(x), first)


def test_trainable_false_freezes() -> None:
    layer = Dense(3, trainable=False)
    layer(torch.randn(1, 2))
    assert all(not p.requires_grad for p in layer.parameters())
    layer.trainable = True
    assert all(p.requires_grad for p in layer.parameters())


def test_wrappers_are_named_as_keras_names_them() -> None:
    # model.get_layer("time_distributed") / ("bidirectional") in a Keras script must find them
    from rnnkit.layers import Bidirectional, TimeDistributed

    names = [Bidirectional(LSTM(3)).name, Bidirectional(LSTM(3)).name, TimeDistributed(Dense(2)).name,
             TimeDistributed(Dense(2)).name]
    assert re.fullmatch(r"bidirectional(_\d+)?", names[0]) and re.fullmatch(r"bidirectional_\d+", names[1])
    assert re.fullmatch(r"time_distributed(_\d+)?", names[2]) and re.fullmatch(r"time_distributed_\d+", names[3])
    assert len(set(names)) == 4
