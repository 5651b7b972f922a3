"""Mutation testing, round 11: the encoder-decoder (``tasks.seq2seq``: the bridge, the attentional
decoder step, teacher forcing, the loss, greedy and beam decoding), ``Conv1D``, the normalization
layers, the image-to-sequence transforms, the audio feature math (mel scale and filterbank, DCT,
per-utterance normalisation, the log-mel spectrogram) and the row-as-time-step image classifier.

Each test here kills a plausible bug (the bridge fed the bottom encoder layer, the attention query
taken from the wrong decoder layer, a filterbank triangle with the wrong slope ...) that the rest
of the suite let through. The expected values come from independent references: the model's
equations written out here from the module docstrings (with the cells and linear maps as
building blocks), Keras 3 layers, torch.nn / torch.nn.functional with copied weights, NumPy and
SciPy, a brute-force search, or numbers worked out by hand; never from the code path under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.tasks.seq2seq import DecoderState, Seq2Seq


# -- seq2seq: a reference of the documented equations ---------------------------------------------
def _seq2seq(seed: int, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(8, 9, embedding_dim=6, hidden_size=5, dropout=0.0, **kw).double().eval()
    with torch.no_grad():  # larger weights: every term moves the outputs
        for p in model.parameters():
            p.mul_(2.0)
    return model


def _attend(model: Seq2Seq, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
            coverage: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bahdanau ``v^T tanh(W_q q + W_k h_s + b [+ w_c cov_s])`` or Luong ``q^T (W_a) h_s [+ w cov_s]``,
    softmax over the real positions, context ``sum_s a_s h_s``."""
    att = model.attention
    if model.attention_kind == "bahdanau":
        hidden = keys @ att.key_proj.weight.T + att.key_proj.bias + (query @ att.query_proj.weight.T)[:, None]
        if coverage is not None:
            hidden = hidden + coverage[..., None] * att.coverage_proj.weight[:, 0]
        scores = torch.tanh(hidden) @ att.v.weight[0]
    else:
        projected = keys if att.key_proj is None else keys @ att.key_proj.weight.T
        scores = (projected * query[:, None]).sum(-1)
        if coverage is not None:
            scores = scores + att.coverage_weight * coverage
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).masked_fill(~mask, 0.0)
    return (weights[..., None] * keys).sum(1), weights


def _reference_step(model: Seq2Seq, previous: torch.Tensor, hidden: list, feed: torch.Tensor,
                    coverage: torch.Tensor | None, keys: torch.Tensor, mask: torch.Tensor):
    """One decoder step from the module docstring: ``(log p(y_t) [B, V], hidden, h~_t, attention, coverage)``."""
    inputs = [model.target_embedding.weight[previous]]
    bahdanau = model.attention_kind == "bahdanau"
    if bahdanau:  # the query is s_{t-1}: the h of the top decoder layer
        context, weights = _attend(model, hidden[-1][0], keys, mask, coverage)
        inputs.append(context)
    if model.input_feeding:
        inputs.append(feed)
    x, new_hidden = torch.cat(inputs, -1), []
    for cell, state in zip(model.cells, hidden):
        out, s = cell(x, state)
        new_hidden.append(tuple(s))
        x = out
    if not bahdanau:  # the query is s_t
        context, weights = _attend(model, x, keys, mask, coverage)
    attentional = torch.tanh(torch.cat([x, context], -1) @ model.combine.weight.T)
    if model.output is None:
        logits = attentional @ model.target_embedding.weight.T + model.output_bias
    else:
        logits = attentional @ model.output.weight.T + model.output.bias
    logits[:, [model.pad_id, model.bos_id]] = float("-inf")
    new_coverage = None if coverage is None else coverage + weights
    return torch.log_softmax(logits, -1), new_hidden, attentional, weights, new_coverage


def _source() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([[4, 6, 5, 7, 3], [5, 7, 3, 0, 0], [6, 3, 0, 0, 0]])
    return src, torch.tensor([5, 3, 2])


def test_seq2seq_bridge_reads_the_top_encoder_layer_forward_then_backward_final_states() -> None:
    """Kills: the bridge fed ``h_n[0], h_n[1]`` (the bottom encoder layer) instead of the top layer's
    ``h_n[-2], h_n[-1]``; the two directions concatenated backward-first; the ``tanh`` of the bridge
    dropped; every decoder layer started from the first layer's slice. The reference reads the
    final states off the encoder outputs themselves (a GRU's state is its output): the forward
    direction at each sentence's last real step, the backward direction at step 0."""
    model = _seq2seq(1, cell="gru", num_layers=2, decoder_layers=2)
    src, lengths = _source()
    with torch.no_grad():
        memory, state = model.encode(src, lengths)
        h, batch = 5, src.shape[0]
        keys = memory.keys
        top = torch.cat([keys[torch.arange(batch), lengths - 1, :h], keys[:, 0, h:]], -1)
        bridge = model.bridge[0]
        expected = torch.tanh(top @ bridge.weight.T + bridge.bias).view(batch, 2, model.decoder_hidden_size)
        for layer in range(2):
            torch.testing.assert_close(state.hidden[layer][0], expected[:, layer], rtol=1e-12, atol=1e-12)
        assert torch.equal(memory.mask, torch.arange(5)[None] < lengths[:, None])
        assert torch.equal(state.feed, torch.zeros(batch, model.attentional_size, dtype=torch.float64))


@pytest.mark.parametrize("kw", [dict(attention="bahdanau", coverage=True, tie_embeddings=True),
                                dict(attention="luong_general", coverage=True, tie_embeddings=False),
                                dict(attention="luong_dot", coverage=False, tie_embeddings=True)])
def test_seq2seq_teacher_forcing_matches_the_documented_decoder_equations(kw: dict) -> None:
    """Kills: Bahdanau's query taken from the first decoder layer (``hidden[0]``) or from the LSTM's
    cell state ``c`` instead of the top layer's ``h``; Luong's query ``s_{t-1}`` instead of ``s_t``;
    ``W_c`` applied to ``[c_t; s_t]``; input feeding passing the old ``h~`` on; coverage replaced by
    the last step's attention instead of the running sum; the coverage penalty taking the
    maximum of the attention and the coverage instead of the minimum. The decoder (two LSTM
    layers) is run from the encoder's first state by the equations in the module docstring,
    written out here; the logits, attention and coverage penalty ``sum_s min(a_ts, cov_ts)`` of
    ``forward`` must match."""
    model = _seq2seq(2, cell="lstm", decoder_layers=2, **kw)
    src, lengths = _source()
    target_in = torch.tensor([[2, 4, 5, 6, 7], [2, 5, 5, 0, 0], [2, 8, 4, 6, 0]])
    with torch.no_grad():
        logits, attention, penalty = model(src, lengths, target_in)
        memory, state = model.encode(src, lengths)
        hidden, feed, coverage = list(state.hidden), state.feed, state.coverage
        for t in range(target_in.shape[1]):
            before = coverage
            log_p, hidden, feed, weights, coverage = _reference_step(model, target_in[:, t], hidden, feed, coverage,
                                                                     memory.keys, memory.mask)
            torch.testing.assert_close(torch.log_softmax(logits[:, t], -1), log_p, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(attention[:, t], weights, rtol=1e-9, atol=1e-12)
            if before is not None:
                assert penalty is not None
                torch.testing.assert_close(penalty[:, t], torch.minimum(weights, before).sum(-1), rtol=1e-9,
                                           atol=1e-12)


def test_seq2seq_step_follows_the_documented_equations_from_any_state() -> None:
    """Kills: the same wiring bugs as above when decoding with :meth:`Seq2Seq.step` from a state that
    is not the encoder's (random ``h``, ``c``, ``h~`` and coverage, as in the middle of a beam)."""
    model = _seq2seq(3, cell="lstm", decoder_layers=2, attention="bahdanau", coverage=True)
    src, lengths = _source()
    torch.manual_seed(5)
    with torch.no_grad():
        memory, _ = model.encode(src, lengths)
        size = model.decoder_hidden_size
        hidden = [tuple(torch.randn(3, size, dtype=torch.float64) for _ in range(2)) for _ in range(2)]
        feed = torch.randn(3, model.attentional_size, dtype=torch.float64)
        coverage = torch.rand(3, 5, dtype=torch.float64) * memory.mask
        previous = torch.tensor([4, 7, 3])
        log_p, new_state, weights = model.step(previous, DecoderState(tuple(hidden), feed, coverage), memory)
        ref_log_p, ref_hidden, ref_feed, ref_weights, ref_cov = _reference_step(model, previous, hidden, feed,
                                                                                coverage, memory.keys, memory.mask)
    torch.testing.assert_close(log_p, ref_log_p, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(new_state.feed, ref_feed, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(new_state.coverage, ref_cov, rtol=1e-9, atol=1e-12)
    for layer, ref_layer in zip(new_state.hidden, ref_hidden):
        for s, ref in zip(layer, ref_layer):
            torch.testing.assert_close(s, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_seq2seq_loss_is_torch_cross_entropy_over_the_valid_outputs_averaged_over_real_targets(eps: float) -> None:
    """Kills: the real positions taken as ``target != <pad>``, which counts a ``<bos>`` in a target
    (an output the decoder can never produce, log-probability ``-inf``) and makes the loss
    infinite; the documented rule leaves every impossible output out. The reference is
    ``torch.nn.functional.cross_entropy(label_smoothing=eps)`` on the logits of the valid columns
    only, with the targets renumbered, over the positions whose target is neither ``<pad>`` nor
    ``<bos>``; the gradients must be finite."""
    model = _seq2seq(4, attention="luong_general")
    src, lengths = _source()
    target_in = torch.tensor([[2, 4, 5, 6, 7], [2, 5, 5, 0, 0], [2, 8, 4, 6, 0]])
    target_out = torch.tensor([[4, 5, 6, 7, 3], [5, 5, 3, 0, 0], [8, 2, 6, 3, 0]])  # a stray <bos> in row 3
    loss = model.loss(src, lengths, target_in, target_out, label_smoothing=eps)
    with torch.no_grad():
        logits, _, _ = model(src, lengths, target_in)
        valid = [i for i in range(9) if i not in (model.pad_id, model.bos_id)]
        renumber = {v: i for i, v in enumerate(valid)}
        real = [(b, t) for b in range(3) for t in range(5) if int(target_out[b, t]) in renumber]
        rows = torch.stack([logits[b, t, valid] for b, t in real])
        targets = torch.tensor([renumber[int(target_out[b, t])] for b, t in real])
        expected = F.cross_entropy(rows, targets, label_smoothing=eps)
    assert len(real) == 11
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-9, atol=1e-12)
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


# -- images as sequences -------------------------------------------------------------------------------
def test_colour_images_to_sequences_keep_the_pixel_major_channel_order_and_both_layouts() -> None:
    """Kills: channels-first input moved to channels-last with ``H`` and ``W`` swapped
    (``permute(0, 3, 2, 1)``); a row's features laid out channel by channel instead of pixel by
    pixel (``R G B`` of pixel 0, then pixel 1 ...). The reference is NumPy: a row is
    ``image[t].reshape(W * C)``, a pixel sequence is ``image.reshape(H * W, C)`` (row-major scan),
    and a channels-first array is ``numpy.moveaxis(x, 1, -1)`` first."""
    from rnnkit.data.images import PixelPermutation, images_to_sequences

    last = np.arange(2 * 3 * 4 * 3, dtype=np.float64).reshape(2, 3, 4, 3)  # [N, H=3, W=4, C=3]
    first = np.ascontiguousarray(np.moveaxis(last, -1, 1))  # [N, C, H, W]
    rows = last.reshape(2, 3, 12)
    pixels = last.reshape(2, 12, 3)
    perm = PixelPermutation(12, seed=1)
    for images, channels_last in ((last, True), (first, False)):
        np.testing.assert_array_equal(images_to_sequences(images, "rows", channels_last=channels_last).numpy(),
                                      rows)
        np.testing.assert_array_equal(
            images_to_sequences(images, "pixels", channels_last=channels_last, scale=0.5).numpy(), pixels * 0.5)
        np.testing.assert_array_equal(
            images_to_sequences(images, "permuted", permutation=perm, channels_last=channels_last).numpy(),
            pixels[:, perm.order])


# -- the row-as-time-step image classifier ----------------------------------------------------------------
def test_image_preprocessor_standardizes_with_the_training_pixel_mean_and_standard_deviation() -> None:
    """Kills: the pixel variance used as the scale instead of the standard deviation; the mean
    subtracted after dividing by the scale (``x / std - mean`` for ``(x - mean) / std``). The
    reference is NumPy: uint8 images on ``[0, 1]`` (``/ 255``), the population mean and standard
    deviation over every training pixel, rows as time steps."""
    from rnnkit.tasks.image_classification import DataConfig, Preprocessor

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    images[0, 0, 0] = 255
    prep = Preprocessor.fit(images, np.arange(6) % 3, DataConfig(standardize=True))
    scaled = images.astype(np.float64) / 255.0
    mean, std = scaled.mean(), scaled.std()
    assert math.isclose(prep.mean, mean, rel_tol=1e-6) and math.isclose(prep.std, std, rel_tol=1e-6)
    test = rng.integers(0, 256, size=(2, 4, 5), dtype=np.uint8)
    np.testing.assert_allclose(prep.sequences(test).numpy(), (test / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_image_training_subsample_gives_each_class_its_rounded_share(seed: int) -> None:
    """Kills: the stratified sample's keys ``rank / class size`` instead of ``(rank + 0.5) / class size``,
    which gives the first image of every class the key 0, so a class holding a tenth of the images
    takes one of a 2-image sample (its share is 0.2 of an image). Hand-worked shares: classes of
    9 and 1 images, 2 drawn -> 1.8 and 0.2 -> 2 and 0; classes of 30, 10 and 10, 10 drawn -> 6, 2, 2."""
    from rnnkit.tasks.image_classification import _stratified_sample

    rng = np.random.default_rng(seed)
    for sizes, n, shares in (((9, 1), 2, [2, 0]), ((30, 10, 10), 10, [6, 2, 2])):
        labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
        picked = _stratified_sample(labels, n, seed)
        assert len(set(picked.tolist())) == n and list(picked) == sorted(picked)
        assert np.bincount(labels[picked], minlength=len(sizes)).tolist() == shares


def test_image_class_folder_names_that_are_numbers_keep_their_numeric_order() -> None:
    """Kills: class names sorted as text (``"10"`` before ``"2"``) instead of with ``natural_key``:
    a model trained on class folders ``0`` ... ``10`` (digits saved as pictures) would put class
    ``10`` at output 2. Hand-worked: folder ``i`` is output ``i``; names sort ``cat`` < ``dog``
    after the numbers."""
    from rnnkit.tasks.image_classification import DataConfig, Preprocessor

    names = np.array([str(i) for i in (10, 2, 0, 7, 1, 3, 9, 4, 8, 6, 5)] + ["dog", "cat"])
    images = np.zeros((len(names), 3, 3), dtype=np.uint8)
    prep = Preprocessor.fit(images, names, DataConfig())
    assert prep.classes == [str(i) for i in range(11)] + ["cat", "dog"]
    assert prep.encode_labels(np.array(["10", "2", "cat"]), "labels").tolist() == [10, 2, 11]


# -- Conv1D ------------------------------------------------------------------------------------------------
def test_conv1d_output_layer_softmax_is_applied_once_when_fused_into_the_loss() -> None:
    """Kills: ``Conv1D`` applying its activation even when the training engine asks the output layer
    for logits (``set_emit_logits(True)``, the softmax then applied inside the loss): the loss of
    ``evaluate`` would be the cross entropy of a softmax of probabilities. The reference is the
    cross entropy computed with NumPy from ``predict``'s probabilities, which in turn are
    ``softmax(torch.nn.functional.conv1d(...))`` with the layer's weights and Keras' causal padding."""
    from rnnkit.layers import Conv1D, Input
    from rnnkit.models import Sequential

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=(5, 6))]
    model = Sequential([Input((6, 3)), Conv1D(4, 3, padding="causal", activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    conv = model.layers[-1]
    with torch.no_grad():
        logits = F.conv1d(F.pad(torch.from_numpy(x).transpose(1, 2), (2, 0)), conv.weight, conv.bias).transpose(1, 2)
    probs = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(probs, torch.softmax(logits, -1).numpy(), rtol=1e-5, atol=1e-6)
    expected = float(np.mean(-(y * np.log(probs)).sum(-1)))
    loss = model.evaluate(x, y, verbose=0)
    loss = float(loss[0] if isinstance(loss, list | tuple) else loss)
    assert math.isclose(loss, expected, rel_tol=1e-5)


# -- normalization -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_normalization_of_half_precision_inputs_computes_the_statistics_in_float32(dtype: torch.dtype) -> None:
    """Kills: half-precision inputs normalized in their own precision (the module doc promises
    float32 statistics): near 1000 a float16 step is 0.5 (bfloat16: 4), so a mean rounded to it
    shifts every output by a sizeable part of a standard deviation (or more). The reference is NumPy in
    float64 on the same (rounded) inputs, compared within the output's own rounding."""
    from rnnkit.layers import BatchNormalization, LayerNormalization

    rng = np.random.default_rng(0)
    x = torch.from_numpy(1000.0 + rng.normal(size=(8, 5, 6))).to(dtype)
    xd = x.double().numpy()
    bn = BatchNormalization(epsilon=1e-3)
    got = bn(x, training=True)
    assert got.dtype == dtype
    mean, var = xd.mean((0, 1)), xd.var((0, 1))
    np.testing.assert_allclose(got.detach().double().numpy(), (xd - mean) / np.sqrt(var + 1e-3), atol=0.05)
    ln = LayerNormalization(axis=[1, 2], epsilon=1e-3)  # two axes: the general (non-fused) path
    got = ln(x)
    mean, var = xd.mean((1, 2), keepdims=True), xd.var((1, 2), keepdims=True)
    np.testing.assert_allclose(got.detach().double().numpy(), (xd - mean) / np.sqrt(var + 1e-3), atol=0.05)


# -- seq2seq decoding: the documented beam search, one hypothesis at a time -------------------------------
def _reference_greedy(model: Seq2Seq, src: torch.Tensor, length: int, limit: int) -> tuple[list[int], float]:
    memory, state = model.encode(src, torch.tensor([length]))
    previous, tokens, total = model.bos_id, [], 0.0
    for t in range(limit + 1):
        log_probs, state, _ = model.step(torch.tensor([previous]), state, memory)
        row = log_probs[0].double().clone()
        if t >= limit:
            row[[i for i in range(row.numel()) if i != model.eos_id]] = float("-inf")
        best = int(row.argmax())
        total += float(row[best])
        if best == model.eos_id:
            return tokens, total
        tokens.append(best)
        previous = best
    raise AssertionError("the length limit forces <eos>")


def _reference_beam(model: Seq2Seq, src: torch.Tensor, length: int, k: int, alpha: float, ratio: float,
                    offset: int) -> list[tuple[list[int], float, float]]:
    """The search :func:`beam_search` documents, with Python lists: ``(tokens, log_prob, score)``, best first."""
    def norm(log_prob: float, n: int) -> float:
        return log_prob / max(n, 1) ** alpha

    limit = max(1, math.floor(ratio * length + offset))
    memory, state = model.encode(src, torch.tensor([length]))
    live = [([], 0.0, state)]
    finished: list[tuple[list[int], float, float]] = []
    for t in range(limit + 1):
        candidates = []
        for tokens, log_prob, st in live:
            previous = tokens[-1] if tokens else model.bos_id
            log_probs, new_state, _ = model.step(torch.tensor([previous]), st, memory)
            for v, lp in enumerate(log_probs[0].double().tolist()):
                if lp > float("-inf") and (t < limit or v == model.eos_id):
                    candidates.append((log_prob + lp, tokens, v, new_state))
        candidates.sort(key=lambda c: -c[0])
        survivors = []
        for rank, (score, tokens, v, st) in enumerate(candidates[:2 * k]):
            if v == model.eos_id:
                if rank < k:
                    finished.append((tokens, score, norm(score, len(tokens) + 1)))
            elif len(survivors) < k:
                survivors.append(([*tokens, v], score, st))
        if not survivors:
            break
        if len(finished) >= k:
            kth = sorted((f[2] for f in finished), reverse=True)[k - 1]
            if norm(survivors[0][1], t + 1) <= kth:
                break
        live = survivors
    if k > 1:
        g_tokens, g_log_prob = _reference_greedy(model, src, length, limit)
        if all(f[0] != g_tokens for f in finished):
            finished.append((g_tokens, g_log_prob, norm(g_log_prob, len(g_tokens) + 1)))
    return sorted(finished, key=lambda f: -f[2])


@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed,scale,ratio,offset,kw", [
    (11, 0.4, 0.5, 2, dict(attention="bahdanau", cell="lstm", coverage=True)),
    (12, 1.0, 1.0, 3, dict(attention="bahdanau", cell="lstm", coverage=True)),
    (11, 0.4, 0.5, 2, dict(attention="luong_general", cell="gru", decoder_layers=2)),
    (13, 1.0, 1.0, 3, dict(attention="luong_general", cell="gru", decoder_layers=2))])
def test_beam_search_over_a_batch_equals_the_documented_search_written_out(seed: int, scale: float, ratio: float,
                                                                            offset: int, kw: dict, k: int,
                                                                            alpha: float) -> None:
    """Kills: only the ``K`` best extensions of a sentence ranked instead of ``2K`` (an ``<eos>`` among
    them then leaves fewer than ``K`` hypotheses alive); the early stop comparing the best live
    hypothesis with the best finished score instead of the ``K``-th best (the search ends before
    it has ``K`` that the live ones cannot beat). The reference runs the search documented in
    :func:`beam_search` (ranking, ``<eos>`` in the top ``K``, the early stop, the length limit, the
    greedy candidate) one hypothesis at a time with Python lists, each step's scores from
    :meth:`Seq2Seq.step`; greedy decoding is checked against a plain loop too. Peaked models
    (weights x 1.0) end hypotheses early and compete with long ones; flat ones (x 0.4) reach
    the length limit."""
    from rnnkit.tasks.seq2seq import beam_search, greedy_search

    model = _seq2seq(seed, **kw)
    with torch.no_grad():  # 0.4: flatter distributions, long competing hypotheses; 1.0: early <eos> too
        for p in model.parameters():
            p.mul_(scale)
    src, lengths = _source()
    with torch.no_grad():
        found = beam_search(model, src, lengths, beam_size=k, nbest=k, length_penalty=alpha,
                            max_length_ratio=ratio, max_length_offset=offset)
        greedy = greedy_search(model, src, lengths, max_length_ratio=ratio, max_length_offset=offset)
        for b, n in enumerate(lengths.tolist()):
            expected = _reference_beam(model, src[b:b + 1, :n], n, k, alpha, ratio, offset)[:k]
            assert [h.tokens for h in found[b]] == [e[0] for e in expected]
            for h, (_, log_prob, score) in zip(found[b], expected):
                assert math.isclose(h.log_prob, log_prob, rel_tol=1e-9) and math.isclose(h.score, score, rel_tol=1e-9)
                assert h.attention.shape == (len(h.tokens) + 1, n)
            g_tokens, g_log_prob = _reference_greedy(model, src[b:b + 1, :n], n, math.floor(ratio * n + offset))
            assert greedy[b].tokens == g_tokens and math.isclose(greedy[b].log_prob, g_log_prob, rel_tol=1e-9)
