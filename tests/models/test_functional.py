"""Functional models: several inputs and outputs, shared layers, nesting, encoder-decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.layers import (
    GRU,
    LSTM,
    Concatenate,
    Dense,
    Embedding,
    GlobalAveragePooling1D,
    Input,
    TimeDistributed,
)
from rnnkit.models import Model, Sequential, load_model, model_from_json


def seq2seq(vocab: int = 12, units: int = 16) -> Model:
    enc_in = Input(shape=(None,), dtype="int64", name="source")
    _, h, c = LSTM(units, return_state=True, name="encoder")(Embedding(vocab, 8, mask_zero=True)(enc_in))
    dec_in = Input(shape=(None,), dtype="int64", name="target_in")
    dec = LSTM(units, return_sequences=True, name="decoder")(Embedding(vocab, 8, mask_zero=True)(dec_in),
                                                              initial_state=[h, c])
    return Model([enc_in, dec_in], TimeDistributed(Dense(vocab, activation="softmax"))(dec), name="seq2seq")


def test_symbolic_shapes() -> None:
    x = Input(shape=(None, 4))
    assert x.shape == (None, None, 4)
    y = LSTM(6, return_sequences=True)(x)
    assert y.shape == (None, None, 6)
    z = Dense(3)(GlobalAveragePooling1D()(y))
    assert z.shape == (None, 3)
    assert Input(shape=(7,), dtype="int64").dtype == torch.int64
    with pytest.raises(TypeError, match="no value while the model is being wired"):
        bool(z)


def test_multi_input_multi_output_dicts() -> None:
    text = Input(shape=(None,), dtype="int64", name="text")
    extra = Input(shape=(2,), name="extra")
    enc = GRU(8)(Embedding(20, 4, mask_zero=True)(text))
    joined = Concatenate()([enc, extra])
    model = Model({"text": text, "extra": extra},
                  {"label": Dense(3, activation="softmax")(joined), "score": Dense(1)(joined)})
    assert model.input_names == ["text", "extra"] and model.output_names == ["label", "score"]
    rng = np.random.default_rng(0)
    ids, feats = rng.integers(0, 20, (40, 6)), rng.normal(size=(40, 2)).astype("float32")
    out = model.predict({"text": ids, "extra": feats}, batch_size=16, verbose=0)
    assert set(out) == {"label", "score"} and out["label"].shape == (40, 3) and out["score"].shape == (40, 1)
    model.compile("adam", loss={"label": "sparse_categorical_crossentropy", "score": "mse"},
                  loss_weights={"label": 1.0, "score": 0.5}, metrics={"label": ["accuracy"]})
    history = model.fit({"text": ids, "extra": feats}, {"label": ids[:, 0] % 3, "score": feats[:, :1]},
                        epochs=2, batch_size=16, verbose=0, validation_split=0.25)
    assert {"loss", "label_loss", "score_loss", "label_accuracy", "val_label_accuracy"} <= set(history.history)
    logs = model.evaluate([ids, feats], [ids[:, 0] % 3, feats[:, :1]], verbose=0, return_dict=True)
    total = logs["label_loss"] + 0.5 * logs["score_loss"]
    assert logs["loss"] == pytest.approx(total, rel=1e-5)


def test_shared_layer_and_nested_sequential(tmp_path: object) -> None:
    shared = LSTM(5, name="shared")
    a, b = Input(shape=(None, 3), name="a"), Input(shape=(None, 3), name="b")
    head = Sequential([Dense(4, activation="relu"), Dense(1, activation="sigmoid")], name="head")
    out = head(Concatenate()([shared(a), shared(b)]))
    model = Model([a, b], out)
    assert sum(1 for layer in model.layers if layer is shared) == 1
    xa, xb = torch.randn(3, 4, 3), torch.randn(3, 6, 3)
    y = model([xa, xb])
    assert y.shape == (3, 1)
    path = f"{tmp_path}/siamese"
    model.save(path)
    again = load_model(path)
    torch.testing.assert_close(again([xa, xb]), y)
    clone = model_from_json(model.to_json())
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]


def test_encoder_decoder_passes_the_source_through_its_state() -> None:
    from rnnkit.training import Adam

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    src = rng.integers(2, 12, (256, 5))
    tgt_in = np.ones((256, 4), dtype=np.int64)  # the decoder sees only start tokens...
    tgt_out = np.repeat(src[:, :1], 4, axis=1)  # ...so it must read the first source token from the encoder state
    model = seq2seq()
    model.compile(Adam(learning_rate=0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit([src, tgt_in], tgt_out, epochs=12, batch_size=32, verbose=0, seed=0)
    assert max(history.history["accuracy"][-3:]) > 0.9  # at lr 0.02 the last epochs oscillate (0.85-0.97)
    pred = model.predict([src[:4], tgt_in[:4]], verbose=0)
    assert pred.shape == (4, 4, 12)


def test_masks_flow_through_the_graph() -> None:
    ids = Input(shape=(None,), dtype="int64")
    seq = LSTM(4, return_sequences=True)(Embedding(10, 3, mask_zero=True)(ids))
    assert seq.has_mask
    pooled = GlobalAveragePooling1D()(seq)
    assert not pooled.has_mask
    model = Model(ids, pooled)
    a = torch.tensor([[3, 4, 0, 0]])
    b = torch.tensor([[3, 4]])
    torch.testing.assert_close(model(a), model(b))  # padding does not change the pooled vector


def test_graph_errors() -> None:
    a, b = Input(shape=(3,)), Input(shape=(3,))
    out = Concatenate()([a, b])
    with pytest.raises(ValueError, match="not in inputs="):
        Model(a, out)
    with pytest.raises(TypeError, match="symbolic tensors"):
        Model(a, torch.zeros(1))
    with pytest.raises(ValueError, match="both inputs= and outputs="):
        Model(inputs=a)
    model = Model([a, b], out)
    with pytest.raises(ValueError, match=r"the model has 2 inputs"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="return_state=True.*functional API"):
        Sequential([Input(shape=(4, 3)), LSTM(2, return_state=True)])


def test_training_flag_and_subclassed_model() -> None:
    class Tiny(Model):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = GRU(4)
            self.out = Dense(2, activation="softmax")

        def call(self, inputs: torch.Tensor, mask: object = None, **kwargs: object) -> torch.Tensor:
            return self.out(self.rnn(inputs, mask=mask))

    model = Tiny()
    x = np.random.default_rng(0).normal(size=(32, 5, 3)).astype("float32")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["acc"])
    history = model.fit(x, (x[:, 0, 0] > 0).astype(int), epochs=2, batch_size=8, verbose=0)
    assert len(history.history["acc"]) == 2
    assert model.predict(x, verbose=0).shape == (32, 2)
    with pytest.raises(ValueError, match="subclassed model"):
        model.save("unused-path")


def test_sequential_editing_and_lookup() -> None:
    model = Sequential([Input(shape=(5, 3), name="frames"), LSTM(4, name="rnn"), Dense(2, name="head")])
    assert model.built and model.input_names == ["frames"] and model.output_names == ["head"]
    assert model.get_layer("rnn").output_shape == (None, 4)
    assert model.get_layer(index=-1).name == "head"
    popped = model.pop()
    assert popped.name == "head" and model.output_names == ["rnn"]
    model.add(Dense(3, name="head3"))
    assert model(torch.randn(2, 5, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        model.get_layer("nope")
    lazy = Sequential([GRU(2)])
    lazy.build((None, 7, 3))
    assert lazy.get_layer(index=0).output_shape == (None, 2)


def test_stateful_training_carries_state_between_batches() -> None:
    model = Sequential([Input(shape=(4, 2)), LSTM(3, stateful=True), Dense(1)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(8, 4, 2)).astype("float32")
    model.fit(x, np.zeros((8, 1)), batch_size=4, epochs=1, verbose=0, shuffle=False)
    rnn = model.get_layer(index=0).rnn
    assert rnn is not None and rnn.state is not None  # carried into the next batch, as in Keras
    model.reset_states()
    assert rnn.state is None
