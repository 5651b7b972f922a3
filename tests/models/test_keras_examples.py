"""Classic keras.io recurrent examples, ported by changing only their imports, at tiny sizes.

lstm_seq2seq (character translation with a separate inference encoder/decoder),
lstm_text_generation (sampling with temperature from a LambdaCallback), addition_rnn
(RepeatVector), timeseries weather forecasting (timeseries_dataset_from_array, ModelCheckpoint,
EarlyStopping), bidirectional_lstm_imdb (stacked Bidirectional, pad_sequences) and the masking
and stateful-RNN guides. Where Keras is installed, outputs are compared with it on copied weights.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# the imports a Keras script changes: keras.layers / keras.models / keras.optimizers / keras.callbacks / keras.utils
from rnnkit import layers
from rnnkit.data import pad_sequences, timeseries_dataset_from_array
from rnnkit.layers import (
    GRU,
    LSTM,
    Bidirectional,
    Dense,
    Embedding,
    Input,
    Masking,
    RepeatVector,
    TimeDistributed,
)
from rnnkit.models import Model, Sequential, load_model
from rnnkit.training import Adam, EarlyStopping, LambdaCallback, ModelCheckpoint, RMSprop

from .keras_reference import keras_module, needs_keras

# -- (1) lstm_seq2seq ---------------------------------------------------------------------------
PAIRS = [("go.", "va !"), ("hi.", "salut !"), ("run!", "cours !"), ("wow!", "ça alors !"), ("fire!", "au feu !"),
         ("help!", "à l'aide !"), ("stop!", "arrête-toi !"), ("wait!", "attends !")]


def seq2seq_data() -> dict[str, Any]:
    input_texts, target_texts = [], []
    input_characters, target_characters = {" "}, {" "}
    for input_text, target_text in PAIRS * 3:
        target_text = "\t" + target_text + "\n"
        input_texts.append(input_text)
        target_texts.append(target_text)
        input_characters.update(input_text)
        target_characters.update(target_text)
    input_chars, target_chars = sorted(input_characters), sorted(target_characters)
    input_token_index = {char: i for i, char in enumerate(input_chars)}
    target_token_index = {char: i for i, char in enumerate(target_chars)}
    max_encoder_seq_length = max(len(t) for t in input_texts)
    max_decoder_seq_length = max(len(t) for t in target_texts)
    n = len(input_texts)
    encoder_input_data = np.zeros((n, max_encoder_seq_length, len(input_chars)), dtype="float32")
    decoder_input_data = np.zeros((n, max_decoder_seq_length, len(target_chars)), dtype="float32")
    decoder_target_data = np.zeros((n, max_decoder_seq_length, len(target_chars)), dtype="float32")
    for i, (input_text, target_text) in enumerate(zip(input_texts, target_texts)):
        for t, char in enumerate(input_text):
            encoder_input_data[i, t, input_token_index[char]] = 1.0
        encoder_input_data[i, t + 1:, input_token_index[" "]] = 1.0
        for t, char in enumerate(target_text):
            decoder_input_data[i, t, target_token_index[char]] = 1.0
            if t > 0:
                decoder_target_data[i, t - 1, target_token_index[char]] = 1.0
        decoder_input_data[i, t + 1:, target_token_index[" "]] = 1.0
        decoder_target_data[i, t:, target_token_index[" "]] = 1.0
    return dict(enc=encoder_input_data, dec=decoder_input_data, target=decoder_target_data,
                target_token_index=target_token_index, max_decoder_seq_length=max_decoder_seq_length)


def seq2seq_training_model(num_encoder_tokens: int, num_decoder_tokens: int, latent_dim: int) -> Model:
    encoder_inputs = Input(shape=(None, num_encoder_tokens))
    encoder = LSTM(latent_dim, return_state=True)
    encoder_outputs, state_h, state_c = encoder(encoder_inputs)
    encoder_states = [state_h, state_c]
    decoder_inputs = Input(shape=(None, num_decoder_tokens))
    decoder_lstm = LSTM(latent_dim, return_sequences=True, return_state=True)
    decoder_outputs, _, _ = decoder_lstm(decoder_inputs, initial_state=encoder_states)
    decoder_dense = Dense(num_decoder_tokens, activation="softmax")
    decoder_outputs = decoder_dense(decoder_outputs)
    return Model([encoder_inputs, decoder_inputs], decoder_outputs)


def test_lstm_seq2seq(tmp_path: Path) -> None:
    d = seq2seq_data()
    num_decoder_tokens, latent_dim = d["dec"].shape[-1], 16
    model = seq2seq_training_model(d["enc"].shape[-1], num_decoder_tokens, latent_dim)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit([d["enc"], d["dec"]], d["target"], batch_size=8, epochs=4, validation_split=0.2,
                        verbose=0, seed=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(str(tmp_path / "s2s_model.keras"))

    # the example's inference models, rebuilt from the loaded model's layers
    model = load_model(str(tmp_path / "s2s_model.keras"))
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "InputLayer", "LSTM", "LSTM", "Dense"]
    encoder_inputs = model.input[0]
    encoder_outputs, state_h_enc, state_c_enc = model.layers[2].output
    encoder_states = [state_h_enc, state_c_enc]
    encoder_model = Model(encoder_inputs, encoder_states)
    decoder_inputs = model.input[1]
    decoder_state_input_h = Input(shape=(latent_dim,))
    decoder_state_input_c = Input(shape=(latent_dim,))
    decoder_states_inputs = [decoder_state_input_h, decoder_state_input_c]
    decoder_lstm = model.layers[3]
    decoder_outputs, state_h_dec, state_c_dec = decoder_lstm(decoder_inputs, initial_state=decoder_states_inputs)
    decoder_states = [state_h_dec, state_c_dec]
    decoder_dense = model.layers[4]
    decoder_outputs = decoder_dense(decoder_outputs)
    decoder_model = Model([decoder_inputs] + decoder_states_inputs, [decoder_outputs] + decoder_states)
    assert decoder_lstm.input[0] is model.input[1]  # the first call's inputs: sequence then states
    assert len(decoder_lstm.input) == 3

    reverse_target_char_index = {i: char for char, i in d["target_token_index"].items()}

    def decode_sequence(input_seq: np.ndarray) -> tuple[str, list[np.ndarray]]:
        states_value = encoder_model.predict(input_seq, verbose=0)
        target_seq = np.zeros((1, 1, num_decoder_tokens))
        target_seq[0, 0, d["target_token_index"]["\t"]] = 1.0
        stop_condition, decoded_sentence, steps = False, "", []
        while not stop_condition:
            output_tokens, h, c = decoder_model.predict([target_seq] + states_value, verbose=0)
            steps.append(output_tokens[0, -1])
            sampled_token_index = np.argmax(output_tokens[0, -1, :])
            sampled_char = reverse_target_char_index[sampled_token_index]
            decoded_sentence += sampled_char
            if sampled_char == "\n" or len(decoded_sentence) > d["max_decoder_seq_length"]:
                stop_condition = True
            target_seq = np.zeros((1, 1, num_decoder_tokens))
            target_seq[0, 0, sampled_token_index] = 1.0
            states_value = [h, c]
        return decoded_sentence, steps

    states = encoder_model.predict(d["enc"][:4], verbose=0)
    assert isinstance(states, list) and [s.shape for s in states] == [(4, latent_dim)] * 2
    sentence, steps = decode_sequence(d["enc"][:1])
    assert 1 <= len(sentence) <= d["max_decoder_seq_length"] + 1
    # step-by-step decoding reproduces the training model fed the decoded characters (teacher forcing)
    fed = np.zeros((1, len(steps), num_decoder_tokens), dtype="float32")
    fed[0, 0, d["target_token_index"]["\t"]] = 1.0
    for t, probs in enumerate(steps[:-1]):
        fed[0, t + 1, int(np.argmax(probs))] = 1.0
    full = model.predict([d["enc"][:1], fed], verbose=0)
    np.testing.assert_allclose(np.stack(steps), full[0], atol=1e-5)


@needs_keras
def test_lstm_seq2seq_matches_keras() -> None:
    keras = keras_module()
    d = seq2seq_data()
    n_in, n_out, latent = d["enc"].shape[-1], d["dec"].shape[-1], 8
    model = seq2seq_training_model(n_in, n_out, latent)
    ei = keras.Input(shape=(None, n_in))
    _, h, c = keras.layers.LSTM(latent, return_state=True)(ei)
    di = keras.Input(shape=(None, n_out))
    out, _, _ = keras.layers.LSTM(latent, return_sequences=True, return_state=True)(di, initial_state=[h, c])
    kmodel = keras.Model([ei, di], keras.layers.Dense(n_out, activation="softmax")(out))
    model.set_weights(kmodel.get_weights())
    x = [d["enc"][:5], d["dec"][:5]]
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), atol=1e-5)
    assert [layer.name.split("_")[0] for layer in model.layers] == \
        [layer.name.split("_")[0] for layer in kmodel.layers]  # same layer order: model.layers[2] is the encoder


# -- (2) lstm_text_generation ---------------------------------------------------------------------
def text_generation_data(maxlen: int = 8, step: int = 3) -> dict[str, Any]:
    text = ("the quick brown fox jumps over the lazy dog. " * 6).lower()
    chars = sorted(set(text))
    char_indices = {c: i for i, c in enumerate(chars)}
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i: i + maxlen])
        next_chars.append(text[i + maxlen])
    x = np.zeros((len(sentences), maxlen, len(chars)), dtype=bool)  # bool inputs and labels, as the example
    y = np.zeros((len(sentences), len(chars)), dtype=bool)
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1
    return dict(text=text, chars=chars, char_indices=char_indices, x=x, y=y, maxlen=maxlen)


def sample(preds: np.ndarray, temperature: float = 1.0) -> int:
    preds = np.asarray(preds).astype("float64")
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    probas = np.random.multinomial(1, preds, 1)
    return int(np.argmax(probas))


def generate(model: Sequential, d: dict[str, Any], diversity: float, length: int = 10) -> str:
    maxlen, chars, char_indices = d["maxlen"], d["chars"], d["char_indices"]
    start_index = random.randint(0, len(d["text"]) - maxlen - 1)
    sentence = d["text"][start_index: start_index + maxlen]
    generated = ""
    for _ in range(length):
        x_pred = np.zeros((1, maxlen, len(chars)))
        for t, char in enumerate(sentence):
            x_pred[0, t, char_indices[char]] = 1.0
        preds = model.predict(x_pred, verbose=0)[0]
        next_char = chars[sample(preds, diversity)]
        sentence = sentence[1:] + next_char
        generated += next_char
    return generated


def test_lstm_text_generation() -> None:
    d = text_generation_data()
    model = Sequential()
    model.add(LSTM(32, input_shape=(d["maxlen"], len(d["chars"]))))
    model.add(Dense(len(d["chars"]), activation="softmax"))
    optimizer = RMSprop(learning_rate=0.01)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer)
    seen: list[tuple[int, dict[str, float]]] = []
    print_callback = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, dict(logs))))
    history = model.fit(d["x"], d["y"], batch_size=16, epochs=3, callbacks=[print_callback], verbose=0, seed=0)
    assert [e for e, _ in seen] == [0, 1, 2] and all("loss" in logs for _, logs in seen)
    assert history.history["loss"][-1] < history.history["loss"][0]
    probs = model.predict(d["x"][:4].astype("float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    for diversity in (0.2, 1.0):
        text = generate(model, d, diversity)
        assert len(text) == 10 and set(text) <= set(d["chars"])


def test_text_generation_predict_inside_on_epoch_end() -> None:
    d = text_generation_data()
    model = Sequential([Input(shape=(d["maxlen"], len(d["chars"]))), LSTM(16),
                        Dense(len(d["chars"]), activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=RMSprop(learning_rate=0.01))
    sums: list[float] = []

    def on_epoch_end(epoch: int, _: Any) -> None:
        # the example samples text here, while fit runs
        sums.append(float(model.predict(d["x"][:2], verbose=0)[0].sum()))
        generate(model, d, 0.5, length=3)

    model.fit(d["x"], d["y"], batch_size=16, epochs=2, callbacks=[LambdaCallback(on_epoch_end=on_epoch_end)],
              verbose=0)
    assert len(sums) == 2 and all(abs(v - 1.0) < 1e-5 for v in sums)  # probabilities, not the loss's logits
    assert abs(float(model.predict(d["x"][:2], verbose=0)[0].sum()) - 1.0) < 1e-5  # and after fit


# -- (3) addition_rnn ----------------------------------------------------------------------------
class CharacterTable:
    def __init__(self, chars: str) -> None:
        self.chars = sorted(set(chars))
        self.char_indices = {c: i for i, c in enumerate(self.chars)}
        self.indices_char = dict(enumerate(self.chars))

    def encode(self, C: str, num_rows: int) -> np.ndarray:
        x = np.zeros((num_rows, len(self.chars)))
        for i, c in enumerate(C):
            x[i, self.char_indices[c]] = 1
        return x

    def decode(self, x: np.ndarray, calc_argmax: bool = True) -> str:
        if calc_argmax:
            x = x.argmax(axis=-1)
        return "".join(self.indices_char[int(i)] for i in x)


def addition_data(digits: int = 2, size: int = 600) -> tuple[np.ndarray, np.ndarray, CharacterTable]:
    maxlen = digits + 1 + digits
    ctable = CharacterTable("0123456789+ ")
    rng = np.random.default_rng(0)
    questions, expected = [], []
    for _ in range(size):
        a, b = (int(rng.integers(0, 10 ** digits)) for _ in range(2))
        query = f"{a}+{b}"
        query = (query + " " * (maxlen - len(query)))[::-1]  # REVERSE = True
        ans = str(a + b)
        questions.append(query)
        expected.append(ans + " " * (digits + 1 - len(ans)))
    x = np.zeros((size, maxlen, len(ctable.chars)), dtype=bool)
    y = np.zeros((size, digits + 1, len(ctable.chars)), dtype=bool)
    for i, sentence in enumerate(questions):
        x[i] = ctable.encode(sentence, maxlen)
    for i, sentence in enumerate(expected):
        y[i] = ctable.encode(sentence, digits + 1)
    return x, y, ctable


@pytest.mark.parametrize("style", ["keras3", "keras2"])
def test_addition_rnn(style: str) -> None:
    x, y, ctable = addition_data()
    digits, n_chars = y.shape[1] - 1, len(ctable.chars)
    split_at = len(x) - len(x) // 10
    (x_train, x_val), (y_train, y_val) = (x[:split_at], x[split_at:]), (y[:split_at], y[split_at:])
    model = Sequential()
    if style == "keras3":
        model.add(layers.Input((x.shape[1], n_chars)))
        model.add(layers.LSTM(32))
    else:
        model.add(LSTM(32, input_shape=(x.shape[1], n_chars)))
    model.add(RepeatVector(digits + 1))
    model.add(LSTM(32, return_sequences=True))
    if style == "keras3":
        model.add(layers.Dense(n_chars, activation="softmax"))
    else:
        model.add(TimeDistributed(Dense(n_chars, activation="softmax")))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    assert model.output_shape == (None, digits + 1, n_chars)
    losses = []
    for _ in range(2):
        h = model.fit(x_train, y_train, batch_size=32, epochs=1, validation_data=(x_val, y_val), verbose=0)
        losses.append(h.history["loss"][0])
        assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert losses[1] < losses[0]
    ind = np.random.randint(0, len(x_val))
    rowx, rowy = x_val[np.array([ind])], y_val[np.array([ind])]
    preds = np.argmax(model.predict(rowx, verbose=0), axis=-1)
    assert preds.shape == (1, digits + 1)
    guess = ctable.decode(preds[0], calc_argmax=False)
    assert len(guess) == len(ctable.decode(rowy[0])) == digits + 1


@needs_keras
def test_addition_rnn_matches_keras() -> None:
    keras = keras_module()
    x, y, ctable = addition_data(size=8)
    n_chars, out_len = len(ctable.chars), y.shape[1]
    model = Sequential([Input((x.shape[1], n_chars)), LSTM(8), RepeatVector(out_len),
                        LSTM(8, return_sequences=True), TimeDistributed(Dense(n_chars, activation="softmax"))])
    kmodel = keras.Sequential([keras.Input((x.shape[1], n_chars)), keras.layers.LSTM(8),
                               keras.layers.RepeatVector(out_len), keras.layers.LSTM(8, return_sequences=True),
                               keras.layers.TimeDistributed(keras.layers.Dense(n_chars, activation="softmax"))])
    model.set_weights(kmodel.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x.astype("float32"), verbose=0),
                               atol=1e-5)


# -- (4) timeseries weather forecasting -------------------------------------------------------------
def test_timeseries_dataset_from_array_windows() -> None:
    steps = np.arange(100)
    inputs = steps[:-10]
    targets = steps[10:]
    # Keras' docstring example 2: predict the next step from the 10 before it
    dataset = timeseries_dataset_from_array(inputs, targets, sequence_length=10)
    for batch in dataset:
        x, y = batch
        assert np.array_equal(x[0].numpy(), steps[:10]) and int(y[0]) == 10
        break
    assert sum(len(b[0]) for b in dataset) == 81 and len(dataset) == 1  # batch_size=128 by default
    ds = timeseries_dataset_from_array(steps.astype("float64"), steps, sequence_length=5, sampling_rate=3,
                                       sequence_stride=4, batch_size=7, start_index=6, end_index=60)
    xs = torch.cat([b[0] for b in ds]).numpy()
    ys = torch.cat([b[1] for b in ds]).numpy()
    starts = np.arange(0, 54 - 4 * 3, 4)
    np.testing.assert_array_equal(xs, 6 + starts[:, None] + 3 * np.arange(5)[None])
    np.testing.assert_array_equal(ys, 6 + starts)
    assert xs.dtype == np.float64 and ds.take(1)[0][0].shape == (7, 5)
    only_x = timeseries_dataset_from_array(steps, None, sequence_length=4, batch_size=None)
    assert only_x[3].tolist() == [3, 4, 5, 6] and len(only_x) == 97
    shuffled = timeseries_dataset_from_array(steps, steps, sequence_length=4, batch_size=10, shuffle=True, seed=1)
    got = torch.cat([b[1] for b in shuffled]).numpy()
    assert sorted(got.tolist()) == list(range(97)) and got.tolist() != list(range(97))
    with pytest.raises(ValueError, match="same number of time steps"):
        timeseries_dataset_from_array(steps, steps[:50], sequence_length=4)
    with pytest.raises(ValueError, match="sampling_rate"):
        timeseries_dataset_from_array(steps, None, sequence_length=4, sampling_rate=0)
    with pytest.raises(ValueError, match="no window"):
        timeseries_dataset_from_array(steps[:5], None, sequence_length=10)


def test_timeseries_weather_forecasting(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    t = np.arange(900)
    df = pd.DataFrame({f"f{i}": np.sin(2 * np.pi * t / (40 + 10 * i)) + 0.05 * rng.standard_normal(len(t))
                       for i in range(4)})
    split_fraction, step, past, future, batch_size, epochs = 0.7, 2, 24, 4, 64, 8
    train_split = int(split_fraction * int(df.shape[0]))

    def normalize(data: np.ndarray, train_split: int) -> np.ndarray:
        data_mean = data[:train_split].mean(axis=0)
        data_std = data[:train_split].std(axis=0)
        return (data - data_mean) / data_std

    features = pd.DataFrame(normalize(df.values, train_split))
    train_data, val_data = features.loc[0: train_split - 1], features.loc[train_split:]
    start, end = past + future, past + future + train_split
    x_train = train_data[[i for i in range(4)]].values
    y_train = features.iloc[start:end][[1]]  # a DataFrame, as in the example
    sequence_length = int(past / step)
    dataset_train = timeseries_dataset_from_array(x_train, y_train, sequence_length=sequence_length,
                                                  sampling_rate=step, batch_size=batch_size)
    x_end = len(val_data) - past - future
    label_start = train_split + past + future
    x_val = val_data.iloc[:x_end][[i for i in range(4)]].values
    y_val = features.iloc[label_start:][[1]]
    dataset_val = timeseries_dataset_from_array(x_val, y_val, sequence_length=sequence_length,
                                                sampling_rate=step, batch_size=batch_size)
    for batch in dataset_train.take(1):
        inputs, targets = batch
    assert inputs.numpy().shape == (batch_size, sequence_length, 4) and targets.numpy().shape == (batch_size, 1)

    inputs = Input(shape=(inputs.shape[1], inputs.shape[2]))
    lstm_out = LSTM(16)(inputs)
    outputs = Dense(1)(lstm_out)
    model = Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse")
    path_checkpoint = str(tmp_path / "model_checkpoint.weights.h5")
    es_callback = EarlyStopping(monitor="val_loss", min_delta=0, patience=2)
    modelckpt_callback = ModelCheckpoint(monitor="val_loss", filepath=path_checkpoint, verbose=0,
                                         save_weights_only=True, save_best_only=True)
    history = model.fit(dataset_train, epochs=epochs, validation_data=dataset_val,
                        callbacks=[es_callback, modelckpt_callback], verbose=0)
    loss, val_loss = history.history["loss"], history.history["val_loss"]
    assert 1 <= len(loss) <= epochs and len(val_loss) == len(loss)
    assert min(val_loss) < val_loss[0] and loss[-1] < loss[0]
    for x, y in dataset_val.take(2):
        pred = model.predict(x, verbose=0)
        assert x[0][:, 1].numpy().shape == (sequence_length,) and y[0].numpy().shape == (1,)
        assert pred[0].shape == (1,)
    model.load_weights(path_checkpoint)  # the best epoch's weights
    assert model.evaluate(dataset_val, verbose=0) == pytest.approx(min(val_loss), rel=1e-4)


# -- (5) bidirectional_lstm_imdb -------------------------------------------------------------------
def fake_imdb(n: int, rng: np.random.Generator) -> tuple[list[list[int]], np.ndarray]:
    ys = rng.integers(0, 2, n)
    xs = [list(rng.integers(2 + 90 * y, 92 + 90 * y, rng.integers(5, 30))) for y in ys]
    return xs, ys


def test_bidirectional_lstm_imdb() -> None:
    max_features, maxlen = 200, 20
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_val, y_val) = fake_imdb(160, rng), fake_imdb(40, rng)
    x_train = pad_sequences(x_train, maxlen=maxlen)
    x_val = pad_sequences(x_val, maxlen=maxlen)
    assert x_train.shape == (160, maxlen) and x_train.dtype == np.int32
    inputs = Input(shape=(None,), dtype="int32")
    x = layers.Embedding(max_features, 16)(inputs)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(8))(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    model = Model(inputs, outputs)
    assert model.output_shape == (None, 1) and model.layers[2].output.shape == (None, None, 16)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=4, validation_data=(x_val, y_val), verbose=0,
                        seed=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.7


@needs_keras
def test_bidirectional_stack_matches_keras() -> None:
    keras = keras_module()
    x = pad_sequences([[3, 8, 2], [5, 1, 9, 9, 4], [7]], maxlen=6)
    model = Sequential([Input(shape=(None,), dtype="int32"), Embedding(20, 6, mask_zero=True),
                        Bidirectional(LSTM(5, return_sequences=True)), Bidirectional(GRU(4)), Dense(3)])
    kmodel = keras.Sequential([keras.Input(shape=(None,), dtype="int32"),
                               keras.layers.Embedding(20, 6, mask_zero=True),
                               keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True)),
                               keras.layers.Bidirectional(keras.layers.GRU(4)), keras.layers.Dense(3)])
    model.set_weights(kmodel.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), atol=1e-5)


# -- (6) masking and stateful RNNs (the Keras guides) ----------------------------------------------
def test_masking_guide() -> None:
    raw_inputs = [[711, 632, 71], [73, 8, 3215, 55, 927], [83, 91, 1, 645, 1253, 927]]
    padded_inputs = pad_sequences(raw_inputs, padding="post")
    expected = torch.tensor([[True] * 3 + [False] * 3, [True] * 5 + [False], [True] * 6])
    embedding = layers.Embedding(input_dim=5000, output_dim=16, mask_zero=True)
    masked_output = embedding(padded_inputs)
    assert torch.equal(masked_output._keras_mask, expected)
    assert torch.equal(embedding.compute_mask(padded_inputs), expected)
    masking_layer = layers.Masking()
    unmasked_embedding = np.tile(np.expand_dims(padded_inputs, axis=-1), [1, 1, 10]).astype("float32")
    masked_embedding = masking_layer(unmasked_embedding)
    assert torch.equal(masked_embedding._keras_mask, expected)

    # the mask rides on the tensor: an LSTM called eagerly on it skips the padding, as with mask=
    lstm = LSTM(4)
    np.testing.assert_allclose(lstm(masked_output).detach(), lstm(masked_output, mask=expected).detach())
    np.testing.assert_allclose(lstm(masked_output[1:2, :5]).detach(), lstm(masked_output).detach()[1:2], atol=1e-6)

    # a custom layer whose call() takes no mask argument (the guide's MyLayer)
    class MyLayer(layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.embedding = layers.Embedding(input_dim=5000, output_dim=16, mask_zero=True)
            self.lstm = layers.LSTM(32)

        def call(self, inputs: Any) -> Any:
            x = self.embedding(inputs)
            mask = self.embedding.compute_mask(inputs)
            output = self.lstm(x, mask=mask)
            return output

    layer = MyLayer()
    x = (np.random.random((32, 10)) * 100).astype("int32")
    assert tuple(layer(x).shape) == (32, 32)

    seq = Sequential([layers.Embedding(input_dim=5000, output_dim=16, mask_zero=True), layers.LSTM(32)])
    assert seq.predict(padded_inputs, verbose=0).shape == (3, 32)
    masked = Sequential([Masking(mask_value=0.0, input_shape=(6, 10)), LSTM(8)])
    out = masked.predict(unmasked_embedding, verbose=0)
    np.testing.assert_allclose(out[:1], masked.predict(unmasked_embedding[:1, :3], verbose=0), atol=1e-6)


@needs_keras
def test_masking_lstm_matches_keras() -> None:
    keras = keras_module()
    x = np.random.default_rng(3).standard_normal((4, 7, 3)).astype("float32")
    x[0, 4:] = 0.0
    x[2, 1:] = 0.0
    model = Sequential([Input(shape=(7, 3)), Masking(), LSTM(5, return_sequences=True), LSTM(4), Dense(2)])
    kmodel = keras.Sequential([keras.Input(shape=(7, 3)), keras.layers.Masking(),
                               keras.layers.LSTM(5, return_sequences=True), keras.layers.LSTM(4),
                               keras.layers.Dense(2)])
    model.set_weights(kmodel.get_weights())
    np.testing.assert_allclose(model.predict(x, verbose=0), kmodel.predict(x, verbose=0), atol=1e-5)


def test_stateful_gru_guide() -> None:
    rng = np.random.default_rng(0)
    paragraph1, paragraph2, paragraph3 = (rng.random((20, 10, 50)).astype(np.float32) for _ in range(3))
    gru_layer = GRU(16, stateful=True)
    assert gru_layer.states is None
    gru_layer(paragraph1)
    output = gru_layer(paragraph2)
    whole = GRU(16)
    whole(paragraph1)
    whole.set_weights(gru_layer.get_weights())
    np.testing.assert_allclose(output.detach(), whole(np.concatenate([paragraph1, paragraph2], 1)).detach(),
                               atol=1e-5)
    existing_state = gru_layer.states
    assert len(existing_state) == 1 and tuple(existing_state[0].shape) == (20, 16)
    np.testing.assert_allclose(existing_state[0], output.detach(), atol=1e-6)
    # reusing the state in a new layer (the guide's "RNN state reuse")
    new_layer = GRU(16)
    new_layer(paragraph3[:1])
    new_layer.set_weights(gru_layer.get_weights())
    new_output = new_layer(paragraph3, initial_state=existing_state)
    np.testing.assert_allclose(new_output.detach(), gru_layer(paragraph3).detach(), atol=1e-5)
    gru_layer.reset_states()
    assert float(gru_layer.states[0].abs().sum()) == 0.0 and tuple(gru_layer.states[0].shape) == (20, 16)
    np.testing.assert_allclose(gru_layer(paragraph1).detach(), whole(paragraph1).detach(), atol=1e-6)
    lstm_layer = LSTM(8, stateful=True)
    lstm_layer(paragraph1)
    assert [tuple(s.shape) for s in lstm_layer.states] == [(20, 8), (20, 8)]
    assert LSTM(8).states is None


def test_stateful_gru_model_fit_and_reset() -> None:
    batch_size = 4
    xs = np.sin(np.arange(40) / 3.0).astype("float32")[:, None, None]
    ys = np.roll(xs, -1, 0)[:, 0]
    model = Sequential([Input(batch_shape=(batch_size, 1, 1)), GRU(8, stateful=True), Dense(1)])
    model.compile(loss="mse", optimizer="adam")
    losses = []
    for _ in range(3):
        h = model.fit(xs, ys, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
        losses.append(h.history["loss"][0])
        model.reset_states()
    assert losses[-1] < losses[0]
    first = model.predict(xs, batch_size=batch_size, verbose=0)
    again = model.predict(xs, batch_size=batch_size, verbose=0)  # the state carried on from the first pass
    model.reset_states()
    fresh = model.predict(xs, batch_size=batch_size, verbose=0)
    assert first.shape == (40, 1)
    np.testing.assert_allclose(fresh, first, atol=1e-6)
    assert not np.allclose(again, first)


@needs_keras
def test_stateful_gru_matches_keras() -> None:
    keras = keras_module()
    x = np.random.default_rng(1).standard_normal((3, 5, 2)).astype("float32")
    layer = GRU(4, stateful=True)
    klayer = keras.layers.GRU(4, stateful=True)
    klayer(x)
    klayer.reset_states()
    layer(x)
    layer.reset_states()
    layer.set_weights(klayer.get_weights())
    for chunk in (x[:, :2], x[:, 2:]):
        np.testing.assert_allclose(layer(chunk).detach(), klayer(chunk).detach().cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(layer.states[0], klayer.states[0].value.detach().cpu().numpy(), atol=1e-5)
    layer.reset_states()
    klayer.reset_states()
    np.testing.assert_allclose(layer(x).detach(), klayer(x).detach().cpu().numpy(), atol=1e-5)


def test_keras2_predict_classes_and_predict_proba_name_their_replacement():
    from rnnkit.layers import Dense, Input
    from rnnkit.models import Sequential

    model = Sequential([Input(shape=(3,)), Dense(2, activation="softmax")])
    with pytest.raises(AttributeError, match=r"predict_classes was removed .* np\.argmax\(model\.predict\(x\)"):
        model.predict_classes(np.zeros((1, 3)))
    with pytest.raises(AttributeError, match=r"predict_proba was removed .* use model\.predict\(x\)"):
        model.predict_proba(np.zeros((1, 3)))
