"""Mutation review, round 2: losses, optimizers, metrics, Keras layers, data preparation and
gradient insight. Each test kills a plausible bug (a sign, a wrong default, a dropped mask, a
swapped order, a clip) that the rest of the suite let through, and checks the code against an
independent reference: Keras 3 (torch backend), torch.nn / torch.optim, or a formula written out
in the test."""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import numpy as np
import pytest
import torch

needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")


def keras_module() -> Any:
    """``keras`` on the torch backend (the test skips on another backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        pytest.skip("the Keras comparison needs KERAS_BACKEND=torch")
    return keras


# -- losses ------------------------------------------------------------------------------------
@needs_keras
def test_sparse_crossentropy_elementwise_is_zero_at_ignored_positions_like_keras() -> None:
    """Kills: ``elementwise`` leaving the loss against class 0 at ``ignore_class`` positions
    (Keras' per-element loss, ``reduction=None``, is 0 there)."""
    keras = keras_module()
    from rnnkit.training.losses import SparseCategoricalCrossentropy

    y = np.array([[0, 2, 1], [1, 0, 2]])
    p = np.random.RandomState(0).rand(2, 3, 4).astype("float32")
    want = np.asarray(keras.losses.SparseCategoricalCrossentropy(ignore_class=0, reduction=None)(y, p).cpu())
    got = SparseCategoricalCrossentropy(ignore_class=0).elementwise(torch.tensor(y), torch.tensor(p)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[0, 0] == 0.0 and got[1, 1] == 0.0


@needs_keras
def test_binary_crossentropy_clips_certain_wrong_and_right_predictions_like_keras() -> None:
    """Kills: clipping ``y_pred`` to ``[eps, 1]`` instead of ``[eps, 1 - eps]`` (a prediction of
    exactly 1 gives NaN or inf instead of Keras' finite loss)."""
    keras = keras_module()
    from rnnkit.training.losses import BinaryCrossentropy

    yt = np.array([[0.0, 1.0, 1.0, 0.0]], dtype="float32")
    yp = np.array([[1.0, 1.0, 0.0, 0.0]], dtype="float32")
    want = float(keras.losses.BinaryCrossentropy()(yt, yp))
    got = float(BinaryCrossentropy()(torch.tensor(yt), torch.tensor(yp)))
    assert math.isfinite(got)
    assert got == pytest.approx(want, rel=1e-5)


# -- metrics -----------------------------------------------------------------------------------
@needs_keras
@pytest.mark.parametrize("name, keras_name, sparse", [
    ("top_k_categorical_accuracy", "TopKCategoricalAccuracy", False),
    ("sparse_top_k_categorical_accuracy", "SparseTopKCategoricalAccuracy", True),
])
def test_top_k_accuracy_defaults_to_k_5_like_keras(name: str, keras_name: str, sparse: bool) -> None:
    """Kills: a wrong default ``k`` for the (sparse) top-k accuracy (Keras: 5)."""
    keras = keras_module()
    from rnnkit.metrics import Metric

    rng = np.random.RandomState(1)
    probs = rng.dirichlet(np.ones(8), size=64).astype("float32")
    ids = rng.randint(0, 8, size=64)
    labels = ids if sparse else np.eye(8, dtype="float32")[ids]
    ref = getattr(keras.metrics, keras_name)()
    ref.update_state(labels, probs)
    bound = Metric(name).bind(8, "multiclass")
    bound.update(torch.tensor(probs), torch.tensor(labels))
    assert bound.compute() == pytest.approx(float(ref.result()), abs=1e-6)
    ranks = (probs > probs[np.arange(64), ids][:, None]).sum(1)  # classes ranked above the true one
    assert bound.compute() == pytest.approx(float((ranks < 5).mean()), abs=1e-6)


def _roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney form of the ROC AUC: P(score of a positive > score of a negative), ties 1/2."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def test_multiclass_auc_is_the_unweighted_mean_of_one_vs_rest_aucs() -> None:
    """Kills: a support-weighted (instead of macro) average of the one-vs-rest AUCs, which the
    docstring promises; with imbalanced classes the two differ."""
    from rnnkit.metrics import Metric

    rng = np.random.RandomState(3)
    ids = np.array([0] * 40 + [1] * 15 + [2] * 5)
    logits = rng.randn(60, 3) + 0.8 * np.eye(3)[ids]
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("float32")
    per_class = [_roc_auc(probs[:, c], ids == c) for c in range(3)]
    weighted = float(np.average(per_class, weights=np.bincount(ids)))
    macro = float(np.mean(per_class))
    assert abs(macro - weighted) > 1e-3
    bound = Metric("auc").bind(3, "multiclass")
    bound.update(torch.tensor(probs), torch.tensor(ids))
    assert bound.compute() == pytest.approx(macro, abs=1e-5)


# -- layers ------------------------------------------------------------------------------------
def test_dropout_with_noise_shape_scales_the_kept_values_by_one_over_keep() -> None:
    """Kills: ``Dropout(noise_shape=...)`` zeroing values without scaling the rest by
    ``1 / (1 - rate)`` (inverted dropout, as Keras and ``torch.nn.Dropout``)."""
    from rnnkit.layers.core import Dropout

    layer = Dropout(0.75, noise_shape=(None, 1, 6))
    layer.train()
    torch.manual_seed(0)
    x = torch.full((8, 5, 6), 3.0)
    y = layer(x)
    assert set(y.unique().tolist()) <= {0.0, 12.0} and (y == 12.0).any()
    assert bool((y == y[:, :1]).all())  # one mask per sample and feature, shared over time


def test_masking_and_embedding_combine_their_mask_with_the_incoming_one() -> None:
    """Kills: ``Masking`` / ``Embedding(mask_zero=True)`` dropping the incoming mask (for example
    the one ``fit`` makes for ragged lists) instead of AND-ing it with their own, as documented."""
    from rnnkit.layers.core import Embedding, Masking

    incoming = torch.tensor([[True, True, True, False], [True, False, True, True]])
    x = torch.tensor([[[1.0], [0.0], [2.0], [3.0]], [[0.0], [4.0], [5.0], [6.0]]])
    want = [[True, False, True, False], [False, False, True, True]]
    assert Masking(0.0).compute_mask(x, incoming).tolist() == want
    ids = torch.tensor([[1, 0, 2, 3], [0, 4, 5, 6]])
    assert Embedding(8, 2, mask_zero=True).compute_mask(ids, incoming).tolist() == want


@needs_keras
def test_batch_normalization_default_momentum_updates_moving_statistics_like_keras() -> None:
    """Kills: a wrong default ``momentum`` (Keras: 0.99) of ``BatchNormalization``."""
    keras = keras_module()
    from rnnkit.layers.normalization import BatchNormalization

    x = np.random.RandomState(0).randn(16, 3).astype("float32") * 2 + 1
    ref = keras.layers.BatchNormalization()
    ref.build((None, 3))
    ref(x, training=True)
    layer = BatchNormalization()
    layer.train()
    layer(torch.tensor(x))
    mean, var = layer.get_weights()[2:]
    np.testing.assert_allclose(mean, np.asarray(ref.moving_mean.value.cpu()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(var, np.asarray(ref.moving_variance.value.cpu()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean, 0.01 * x.mean(0), rtol=1e-5)  # 0.99 * 0 + 0.01 * batch mean


def test_global_max_pooling_with_a_mask_takes_the_max_of_negative_real_steps() -> None:
    """Kills: padded steps filled with 0 (not -inf) before the max, which wins over an all-negative
    sequence."""
    from rnnkit.layers.pooling import GlobalMaxPooling1D

    x = torch.tensor([[[-3.0, -1.0], [-2.0, -5.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    out = GlobalMaxPooling1D()(x, mask=mask)
    assert out.tolist() == [[-2.0, -1.0]]


# -- data --------------------------------------------------------------------------------------
def test_word_tokenizer_applies_nfkc_by_default() -> None:
    """Kills: a ``WordTokenizer`` whose default ``normalization`` is not NFKC (documented default):
    full-width letters and ligatures would stay distinct tokens from their plain forms."""
    import unicodedata

    from rnnkit.data.tokenizers import WordTokenizer

    text = "Ｈｅｌｌｏ ﬁne ２０２４"
    assert WordTokenizer().tokenize(text) == unicodedata.normalize("NFKC", text).lower().split()
    assert WordTokenizer().tokenize(text) == ["hello", "fine", "2024"]


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_power_spectrogram_honours_power_on_a_hand_computed_tone(power: float) -> None:
    """Kills: ``power`` ignored (always the power spectrum). A cosine on FFT bin k under the
    periodic Hann window of N samples has |X[k]| = N / 4 and |X[k +- 1]| = N / 8."""
    from rnnkit.data.audio import LogMelSpectrogram

    n = torch.arange(256, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * 8 * n / 64).float()
    spec = LogMelSpectrogram(sample_rate=1000, n_fft=64, win_length=64, hop_length=64, n_mels=4, power=power,
                             center=False).power_spectrogram(wave)
    torch.testing.assert_close(spec[:, 8], torch.full((4,), 16.0**power), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(spec[:, 7], torch.full((4,), 8.0**power), rtol=1e-4, atol=1e-3)


# -- gradient insight --------------------------------------------------------------------------
def test_saturation_of_a_tanh_rnn_preactivation_is_judged_after_the_tanh() -> None:
    """Kills: thresholding the raw pre-activation ``|a| > high`` instead of ``|tanh(a)| > high``:
    tanh(1.5) = 0.905 and tanh(1.2) = 0.834 are not saturated, tanh(2) = 0.964 and tanh(3) are."""
    from rnnkit.insight.gradients import saturation_fractions

    gates = {"pre_activation": torch.tensor([[[1.5, 2.0, -1.2, -3.0]]])}
    want = float(np.mean(np.abs(np.tanh([1.5, 2.0, -1.2, -3.0])) > 0.95))
    assert want == 0.5
    assert saturation_fractions(gates, nonlinearity="tanh") == {"pre_activation": want}


@needs_keras
def test_binary_accuracy_uses_the_given_threshold_like_keras() -> None:
    """Kills: ``Metric(..., threshold=t)`` ignored by the binary accuracy (always 0.5)."""
    keras = keras_module()
    from rnnkit.metrics import Metric

    probs = np.array([[0.6], [0.8], [0.3], [0.75], [0.65]], dtype="float32")
    labels = np.array([[0.0], [1.0], [0.0], [1.0], [0.0]], dtype="float32")
    ref = keras.metrics.BinaryAccuracy(threshold=0.7)
    ref.update_state(labels, probs)
    bound = Metric("binary_accuracy", threshold=0.7).bind(1, "binary")
    bound.update(torch.tensor(probs), torch.tensor(labels))
    assert bound.compute() == pytest.approx(float(ref.result()), abs=1e-6)
    assert bound.compute() == pytest.approx(1.0)  # 0.5 would give 0.6


@needs_keras
def test_accuracy_of_a_multi_label_sigmoid_output_under_binary_crossentropy_is_elementwise() -> None:
    """Kills: the task of ``'accuracy'`` inferred from the output width alone, ignoring the loss: a
    3-unit sigmoid output trained with binary cross-entropy is scored per element with threshold
    0.5 (Keras' ``binary_accuracy``), not by argmax."""
    keras = keras_module()
    from rnnkit.metrics import Metric

    rng = np.random.RandomState(5)
    probs = rng.rand(20, 3).astype("float32")
    labels = (rng.rand(20, 3) > 0.5).astype("float32")
    ref = keras.metrics.BinaryAccuracy()
    ref.update_state(labels, probs)
    bound = Metric("accuracy").bind(3, "binary")
    bound.update(torch.tensor(probs), torch.tensor(labels))
    assert bound.compute() == pytest.approx(float(ref.result()), abs=1e-6)
    assert bound.compute() == pytest.approx(float(((probs > 0.5) == (labels > 0.5)).mean()), abs=1e-6)
