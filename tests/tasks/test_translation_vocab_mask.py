"""Translation: ``<pad>`` and ``<bos>`` are never outputs, in training (label smoothing included) and decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnkit.tasks.seq2seq import Seq2Seq, beam_search, greedy_search

PAD, UNK, BOS, EOS = 0, 1, 2, 3
V = 9  # 4 specials + 5 words; valid outputs: every id but <pad> and <bos>, so V - 2 = 7
VALID = [i for i in range(V) if i not in (PAD, BOS)]


def _model(tie: bool = True, seed: int = 0, favour_specials: bool = False, **kw) -> Seq2Seq:
    """A tiny random model in double precision; ``favour_specials`` gives ``<pad>`` and ``<bos>`` by far the
    largest raw scores, so that only the mask keeps them out of the output."""
    torch.manual_seed(seed)
    model = Seq2Seq(7, V, embedding_dim=6, hidden_size=5, dropout=0.0, tie_embeddings=tie, **kw).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
        if favour_specials:
            bias = model.output_bias if model.output is None else model.output.bias
            bias[PAD] = bias[BOS] = 100.0
    return model


def _batch() -> tuple[torch.Tensor, ...]:
    """Three sentences; targets ``y <eos>`` padded with ``<pad>``, decoder inputs ``<bos> y`` padded."""
    torch.manual_seed(1)
    lengths = torch.tensor([4, 2, 3])
    src = torch.randint(4, 7, (3, 4))
    src[1, 2:] = PAD
    src[2, 3:] = PAD
    ys = [[4, 5, 6, 7], [8, 1], [5, 5, 4]]  # <unk> (1) is a valid target
    t = max(len(y) for y in ys) + 1
    target_in = torch.full((3, t), PAD)
    target_out = torch.full((3, t), PAD)
    for b, y in enumerate(ys):
        target_in[b, : len(y) + 1] = torch.tensor([BOS, *y])
        target_out[b, : len(y) + 1] = torch.tensor([*y, EOS])
    return src, lengths, target_in, target_out


# -- (a) the output distribution -----------------------------------------------------------------
@pytest.mark.parametrize("tie", [True, False])
def test_pad_and_bos_get_exactly_zero_probability(tie):
    model = _model(tie, favour_specials=True)
    src, lengths, target_in, _ = _batch()
    logits, _, _ = model(src, lengths, target_in)
    probs = torch.softmax(logits, -1)
    assert torch.all(probs[..., PAD] == 0) and torch.all(probs[..., BOS] == 0)
    assert torch.all(probs[..., VALID] > 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1], dtype=torch.float64))
    # the decoder step used by greedy and beam search reads the same masked scores
    memory, state = model.encode(src, lengths)
    log_probs, _, _ = model.step(torch.full((3,), BOS), state, memory)
    assert torch.all(log_probs[:, [PAD, BOS]] == float("-inf"))
    torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, 0], -1))
    assert model.invalid_output_ids == (PAD, BOS)


# -- (b) label smoothing over the V - 2 valid outputs -----------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("tie", [True, False])
def test_label_smoothed_loss_matches_a_hand_computation_over_the_valid_outputs(eps, tie):
    """Per real target position with target y, and p the softmax over the V' = V - 2 valid outputs:
    ``loss_t = -(1 - eps) log p(y) - (eps / V') sum_{c valid} log p(c)``; the loss is the mean over the
    real (non-padded) positions. ``<pad>`` and ``<bos>`` get neither probability nor smoothing mass."""
    model = _model(tie)
    src, lengths, target_in, target_out = _batch()
    loss = model.loss(src, lengths, target_in, target_out, label_smoothing=eps)
    with torch.no_grad():
        logits, _, _ = model(src, lengths, target_in)
    total, count, valid = 0.0, 0, len(VALID)
    assert valid == V - 2
    for b in range(3):
        for t in range(target_out.shape[1]):
            y = int(target_out[b, t])
            if y == PAD:
                continue
            scores = [float(logits[b, t, c]) for c in VALID]  # the raw scores of the valid outputs
            log_z = math.log(sum(math.exp(s) for s in scores))
            log_p = {c: s - log_z for c, s in zip(VALID, scores)}
            total += -(1 - eps) * log_p[y] - eps / valid * sum(log_p.values())
            count += 1
    assert count == 4 + 1 + 2 + 1 + 3 + 1
    assert loss.item() == pytest.approx(total / count, rel=1e-12, abs=1e-12)
    # the same as PyTorch's label smoothing applied to the valid columns only
    columns = logits[..., VALID]
    remap = torch.full((V,), -100, dtype=torch.long)
    remap[VALID] = torch.arange(valid)
    expected = F.cross_entropy(columns.reshape(-1, valid), remap[target_out].reshape(-1), ignore_index=-100,
                               label_smoothing=eps)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("tie", [True, False])
def test_training_never_moves_the_scores_of_pad_and_bos(tie):
    """No gradient reaches the output scores of ``<pad>``/``<bos>``, label smoothing included."""
    model = _model(tie)
    src, lengths, target_in, target_out = _batch()
    model.loss(src, lengths, target_in, target_out, label_smoothing=0.1).backward()
    bias = model.output_bias if model.output is None else model.output.bias
    assert bias.grad is not None and torch.all(bias.grad[[PAD, BOS]] == 0) and torch.all(bias.grad[VALID] != 0)
    if model.output is not None:
        assert torch.all(model.output.weight.grad[[PAD, BOS]] == 0)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -- (c) padded target positions are ignored --------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_padded_target_positions_do_not_change_the_loss(eps):
    model = _model(coverage=True)
    src, lengths, target_in, target_out = _batch()
    loss = model.loss(src, lengths, target_in, target_out, label_smoothing=eps, coverage_weight=0.5)
    # more padding columns: the same loss
    extra_in = torch.cat([target_in, torch.full((3, 3), PAD)], 1)
    extra_out = torch.cat([target_out, torch.full((3, 3), PAD)], 1)
    torch.testing.assert_close(model.loss(src, lengths, extra_in, extra_out, label_smoothing=eps,
                                          coverage_weight=0.5), loss, rtol=1e-12, atol=1e-12)
    # each sentence alone, unpadded, weighted by its number of target tokens: the same loss
    sizes = (target_out != PAD).sum(1)
    alone = sum(int(n) * model.loss(src[b:b + 1], lengths[b:b + 1], target_in[b:b + 1, :n], target_out[b:b + 1, :n],
                                    label_smoothing=eps, coverage_weight=0.5)
                for b, n in enumerate(sizes.tolist()))
    torch.testing.assert_close(alone / sizes.sum(), loss, rtol=1e-12, atol=1e-12)
    # what the model would predict at padded positions is irrelevant: a different decoder input there
    noisy_in = target_in.clone()
    noisy_in[target_out == PAD] = 5
    torch.testing.assert_close(model.loss(src, lengths, noisy_in, target_out, label_smoothing=eps,
                                          coverage_weight=0.5), loss, rtol=1e-12, atol=1e-12)


# -- (d) decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_and_beam_never_emit_pad_or_bos_and_beam_one_is_greedy(tie, seed):
    model = _model(tie, seed=seed, favour_specials=True)
    src, lengths, _, _ = _batch()
    greedy = greedy_search(model, src, lengths, max_length_ratio=1.0, max_length_offset=4)
    one = beam_search(model, src, lengths, beam_size=1, max_length_ratio=1.0, max_length_offset=4)
    wide = beam_search(model, src, lengths, beam_size=4, nbest=4, max_length_ratio=1.0, max_length_offset=4)
    for b in range(3):
        assert one[b][0].tokens == greedy[b].tokens
        assert one[b][0].log_prob == pytest.approx(greedy[b].log_prob, rel=1e-12)
        for hyp in [greedy[b], *one[b], *wide[b]]:
            assert PAD not in hyp.tokens and BOS not in hyp.tokens and EOS not in hyp.tokens
            assert math.isfinite(hyp.log_prob)
    assert any(h.tokens for h in greedy)  # something was produced


@pytest.mark.parametrize("tie", [True, False])
def test_decoding_under_inference_mode_first_does_not_break_training(tie):
    # the pad/bos index is cached on first use; made under torch.inference_mode() it was an inference
    # tensor, which index_fill_ cannot save for backward, so training after such a decode raised
    model = _model(tie)
    src, lengths, target_in, target_out = _batch()
    with torch.inference_mode():
        greedy_search(model, src, lengths)
    model.train()
    loss = model.loss(src, lengths, target_in, target_out, label_smoothing=0.1)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
