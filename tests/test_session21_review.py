"""Fresh-eyes review of session 21's changes: defects found, each against an independent reference."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytest
import torch

from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.translation import DataConfig, Preprocessor


# -- translation: the swapped-sides check on a pair of different scripts ----------------------------
def _english_russian(n: int = 400) -> tuple[list[str], list[str]]:
    rng = random.Random(0)
    english = ["the", "a", "man", "woman", "dog", "cat", "runs", "walks", "in", "on", "park", "street", "with", "red",
               "blue", "small", "big", "house", "and", "is"]
    russian = ["мужчина", "женщина", "собака", "кошка", "бежит", "идёт", "в", "на", "парке", "улице", "с", "красный",
               "синий", "маленький", "большой", "дом", "и", "это"]
    sources = [" ".join(rng.choice(english) for _ in range(rng.randint(3, 9))) for _ in range(n)]
    targets = [" ".join(rng.choice(russian) for _ in range(rng.randint(3, 9))) for _ in range(n)]
    return sources, targets


def test_unigram_vocabulary_of_another_script_does_not_make_a_legitimate_pair_look_swapped() -> None:
    """English -> Russian with ``data.tokenizer=unigram``: the English vocabulary cannot spell a
    Russian word, which a Unigram model fuses into one ``<unk>`` piece, so counted as pieces the
    Russian text looked cheapest under the English vocabulary (and the English under the Russian
    one) and the legitimate dev pair was refused as swapped. Reference: a vocabulary that lacks a
    text's characters costs at least one piece per character (what BPE gives, one ``<unk>`` each)."""
    sources, targets = _english_russian()
    prep = Preprocessor.fit(sources, targets, DataConfig(tokenizer="unigram", vocab_size=200))
    dev_src, dev_tgt = sources[:100], targets[:100]
    prep.check_sides(dev_src, dev_tgt, "dev", "fix")  # raised ConfigError: "look swapped"
    # each Russian word under the English vocabulary costs at least its characters (plus the word boundary)
    chars_per_word = sum(len(w) for t in dev_tgt for w in t.split()) / sum(len(t.split()) for t in dev_tgt)
    assert prep.subwords_per_word(dev_tgt, "source") >= chars_per_word


def test_bpe_subwords_per_word_is_unchanged_by_the_unknown_rule() -> None:
    """With BPE each unknown character is its own ``<unk>``: the count is the number of pieces, and a
    swapped pair is still refused."""
    sources, targets = _english_russian(200)
    prep = Preprocessor.fit(sources, targets, DataConfig(tokenizer="bpe", vocab_size=200))
    tok = prep.target.tokenizer
    words = sum(len(t.split()) for t in sources)
    pieces = sum(len(tok.tokenize(t)) for t in sources)
    assert prep.subwords_per_word(sources, "target") == pytest.approx(pieces / words)
    assert np.isfinite(prep.subwords_per_word([], "source"))
    prep.check_sides(sources[:50], targets[:50], "dev", "fix")
    with pytest.raises(ConfigError, match="look swapped"):  # the check still finds a swapped pair
        prep.check_sides(targets[:50], sources[:50], "dev", "fix")


# -- gradient accumulation under a GradScaler (Lightning's 16-mixed) ---------------------------------
def _scaled_calls(spec: Any, grads: list[list[float]], init_scale: float = 4.0) -> torch.nn.Parameter:
    """Lightning's ``MixedPrecision.optimizer_step`` order (and the engine's truncated-BPTT step), by
    hand: backward of the scaled loss, ``unscale_``, ``on_before_optimizer_step`` (``before_step``),
    ``configure_gradient_clipping`` (``clip``), ``scaler.step``, ``scaler.update``. A fused torch
    step, unscaled before, is still run by ``scaler.step`` (with ``found_inf`` set)."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = spec.build([p])
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    for g in grads:
        opt.zero_grad()
        scaler.scale((p * torch.tensor(g)).sum()).backward()
        scaler.unscale_(opt)
        spec.before_step()
        spec.clip([p])
        scaler.step(opt)
        scaler.update()
    return p


@pytest.mark.parametrize("fused", [False, True])
def test_an_overflowing_accumulating_call_that_the_grad_scaler_skips_adds_nothing(fused: bool) -> None:
    """``gradient_accumulation_steps=2`` under a GradScaler: the first call's gradients overflow
    (GradScaler skips its step and halves the scale, as at the start of most float16 runs), the
    second is finite. The overflow went into the gradient accumulator all the same and the update
    of the second call wrote -inf into the weights. Reference (plain arithmetic; GradScaler's
    contract that a skipped step changes nothing): ``w = 1 - lr * g2 / 2``."""
    from rnnkit.training import optimizers as O

    spec = O.SGD(learning_rate=0.1, gradient_accumulation_steps=2)
    if not fused:
        spec._torch_class = lambda: _UnfusedSGD  # type: ignore[method-assign]
    p = _scaled_calls(spec, [[float("inf"), 1.0, 1.0], [1.0, 2.0, 3.0]])
    np.testing.assert_allclose(p.detach().numpy(), 1 - 0.1 * np.array([1.0, 2.0, 3.0]) / 2, rtol=1e-6)
    assert int(spec.iterations) == 1 and spec.calls == 2


class _UnfusedSGD(torch.optim.SGD):
    """torch's SGD that refuses ``fused`` (the default step, as under Lightning's unscale_)."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        kwargs.pop("fused", None)
        super().__init__(params, **kwargs)


def _mixed_fit(optimizer: Any, plugin: Any, y_first: float | None = None) -> list[np.ndarray]:
    from rnnkit.layers import Dense, Input
    from rnnkit.models import Sequential, set_random_seed

    set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    if y_first is not None:
        y[:8] = y_first
    model = Sequential([Input(shape=(3,)), Dense(4, activation="tanh"), Dense(1)])
    model.compile(optimizer, "mse")
    kwargs = {"plugins": [plugin]} if plugin is not None else None
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, trainer_kwargs=kwargs)
    return model.get_weights()


def _float16_mixed(init_scale: float) -> Any:
    """Lightning's ``16-mixed`` on the CPU (a string ``16-mixed`` turns into ``bf16-mixed`` there):
    float16 autocast and a GradScaler, as on a GPU."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))


def test_model_fit_16_mixed_with_accumulation_survives_an_overflowing_batch() -> None:
    """``Model.fit`` under Lightning's 16-mixed with ``gradient_accumulation_steps=2``, the first
    batch (an accumulating call) overflowing float16: the weights came out NaN/inf."""
    from rnnkit.training import RMSprop

    weights = _mixed_fit(RMSprop(0.01, gradient_accumulation_steps=2), _float16_mixed(2.0 ** 10), y_first=1e6)
    assert all(np.isfinite(w).all() for w in weights)


@pytest.mark.parametrize("kwargs", [{"clipnorm": 1.0}, {"gradient_accumulation_steps": 2}])
def test_model_fit_16_mixed_with_a_fused_optimizer_clips_and_accumulates_unscaled_gradients(kwargs: dict) -> None:
    """SGD (a fused torch step on CPU and CUDA) under 16-mixed: Lightning does not unscale a fused
    optimizer's gradients before the hooks (the step unscales them), so ``clipnorm`` clipped the
    gradients times the loss scale (weights 0.12 away from the float32 fit's, where RMSprop's
    unfused step is 3e-5 away) and an accumulating call left GradScaler no gradients to check
    ("No inf checks were recorded prior to update"). Reference: the same fit in float32."""
    from rnnkit.training import SGD

    reference = _mixed_fit(SGD(0.1, **kwargs), None)
    mixed = _mixed_fit(SGD(0.1, **kwargs), _float16_mixed(2.0 ** 10))
    for a, b in zip(mixed, reference):
        np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_build_without_the_fused_step_keeps_the_state_and_steps_as_torch_does(name: str) -> None:
    """``Optimizer.build(params, fused=False)`` after a fused build (the engine's fix for 16-mixed):
    the default step, the moments kept. Reference: torch's own unfused optimizer given the same
    gradients from the start."""
    from rnnkit.training import optimizers as O

    torch.manual_seed(0)
    w0 = torch.randn(5)
    grads = [torch.randn(5) for _ in range(4)]
    p = torch.nn.Parameter(w0.clone())
    spec = O.SGD(0.1, momentum=0.9) if name == "SGD" else O.Adam(0.01, epsilon=1e-7)
    opt = spec.build([p])
    if not opt.defaults.get("fused"):
        pytest.skip("this torch has no fused CPU step")
    for i, g in enumerate(grads):
        if i == 2:
            opt = spec.build([p], fused=False)
            assert not opt.defaults.get("fused") and spec.torch_optimizer is opt
            assert spec.build([p], fused=False) is opt  # kept from then on
        p.grad = g.clone()
        spec.before_step()
        opt.step()
    q = torch.nn.Parameter(w0.clone())
    ref = O.SGD(0.1, momentum=0.9) if name == "SGD" else O.Adam(0.01, epsilon=1e-7)
    ref._torch_class = lambda: _UnfusedSGD if name == "SGD" else _UnfusedAdam  # type: ignore[method-assign]
    ref_opt = ref.build([q])
    for g in grads:
        q.grad = g.clone()
        ref.before_step()
        ref_opt.step()
    np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-6, atol=1e-7)


class _UnfusedAdam(torch.optim.Adam):
    def __init__(self, params: Any, **kwargs: Any) -> None:
        kwargs.pop("fused", None)
        super().__init__(params, **kwargs)


# -- optimizer variables of a functional model in Keras' weight order -------------------------------
def test_optimizer_variables_follow_the_keras_weight_order_of_a_functional_model() -> None:
    """The keras.io encoder-decoder (the decoder's Embedding registered first, Keras lists the
    encoder's first): ``get_weights`` came in Keras' order since e3851ef, but the optimizer's slots
    stayed in torch's registration order, against the documented "Keras's count and order".
    Reference: Keras 3's ``optimizer.variables`` after the same ``train_on_batch`` (values compared,
    in torch layout, on copied weights)."""
    from rnnkit import layers as RL
    from rnnkit import models as RM
    from rnnkit import training as RT

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("the Keras comparison needs KERAS_BACKEND=torch")

    def build(layers: Any, model: Any, inputs: Any) -> Any:
        encoder_input = inputs(shape=(None,))
        _, h, c = layers.LSTM(8, return_state=True)(layers.Embedding(30, 8)(encoder_input))
        decoder_input = inputs(shape=(None,))
        decoded = layers.LSTM(8)(layers.Embedding(40, 6)(decoder_input), initial_state=[h, c])
        return model([encoder_input, decoder_input], layers.Dense(5)(decoded))

    theirs, ours = build(keras.layers, keras.Model, keras.Input), build(RL, RM.Model, RL.Input)
    ours.set_weights(theirs.get_weights())
    rng = np.random.default_rng(0)
    x = [rng.integers(0, 30, (4, 5)), rng.integers(0, 40, (4, 6))]
    y = rng.random((4, 5)).astype("float32")
    theirs.compile(keras.optimizers.Adam(0.01), "mse")
    ours.compile(RT.Adam(0.01), "mse")
    theirs.train_on_batch(x, y)
    ours.train_on_batch(x, y)
    k_vars, r_vars = theirs.optimizer.variables[2:], ours.optimizer.variables[2:]
    assert len(k_vars) == len(r_vars)
    for k, r in zip(k_vars, r_vars):
        value, mine = np.asarray(k.numpy()), r.numpy()
        if value.ndim == 2 and value.shape != mine.shape:  # a kernel: Keras [in, out], torch [out, in]
            value = value.T
        np.testing.assert_allclose(mine, value, rtol=1e-4, atol=1e-6, err_msg=k.path)
