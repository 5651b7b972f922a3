"""Attention modules: masking, normalisation and the scores against plain reference formulas."""

from __future__ import annotations

import pytest
import torch

from rnnkit.nn.attention import BahdanauAttention, LuongAttention, make_attention, masked_softmax

KINDS = ["bahdanau", "luong_dot", "luong_general"]


def _batch(side: str = "post") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([5, 3, 1])
    steps = torch.arange(5).unsqueeze(0)
    mask = steps < lengths.unsqueeze(1) if side == "post" else steps >= (5 - lengths).unsqueeze(1)
    return torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64), mask


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["post", "pre"])
@pytest.mark.parametrize("coverage", [False, True])
def test_weights_sum_to_one_on_real_positions_and_are_zero_on_padding(kind, side, coverage):
    attn = make_attention(kind, 8, 8, attention_size=6, coverage=coverage).double()
    if coverage:  # make the coverage term matter
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_()
    query, keys, mask = _batch(side)
    cov = torch.rand(3, 5, dtype=torch.float64) if coverage else None
    context, weights = attn(query, keys, mask, coverage=cov)
    assert weights.shape == (3, 5) and context.shape == (3, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=torch.float64))
    assert torch.all(weights[~mask] == 0)
    assert torch.all(weights[mask] > 0)
    # padded keys have no influence on anything
    noisy = keys.masked_fill(~mask.unsqueeze(-1), 1e3)
    context2, weights2 = attn(query, noisy, mask, coverage=cov)
    torch.testing.assert_close(weights2, weights)
    torch.testing.assert_close(context2, context)
    torch.testing.assert_close(context, torch.einsum("bs,bsk->bk", weights, keys))


def test_bahdanau_matches_the_formula_written_out():
    attn = BahdanauAttention(4, 6, 5, coverage=True).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    q, keys = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    cov = torch.rand(2, 3, dtype=torch.float64)
    _, weights = attn(q, keys, coverage=cov)
    wq, wk, bk = attn.query_proj.weight, attn.key_proj.weight, attn.key_proj.bias
    v, wc = attn.v.weight[0], attn.coverage_proj.weight[:, 0]
    for b in range(2):
        e = torch.stack([v @ torch.tanh(wq @ q[b] + wk @ keys[b, s] + bk + wc * cov[b, s]) for s in range(3)])
        torch.testing.assert_close(weights[b], torch.softmax(e, 0))


def test_luong_scores_match_the_formulas():
    q, keys = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    dot = LuongAttention(4, 4, "dot").double()
    _, w = dot(q, keys)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bk,bsk->bs", q, keys), -1))
    general = LuongAttention(4, 4, "general").double()
    _, w = general(q, keys)
    wa = general.key_proj.weight  # [Q, K]
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bq,qk,bsk->bs", q, wa, keys), -1))


def test_masked_softmax_equals_softmax_over_the_real_part_and_handles_empty_rows():
    scores = torch.randn(2, 4)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    w = masked_softmax(scores, mask)
    torch.testing.assert_close(w[0, :2], torch.softmax(scores[0, :2], 0))
    assert torch.all(w[1] == 0) and not torch.isnan(w).any()
    with pytest.raises(ValueError, match="bool"):
        masked_softmax(scores, mask.long())


def test_precomputed_keys_give_the_same_result_and_gradients_flow():
    attn = BahdanauAttention(8, 8)
    query, keys, mask = (t.float() if t.is_floating_point() else t for t in _batch())
    keys.requires_grad_(True)
    c1, w1 = attn(query, keys, mask)
    c2, w2 = attn(query, keys, mask, projected_keys=attn.project_keys(keys))
    torch.testing.assert_close(c1, c2)
    c1.sum().backward()
    assert keys.grad is not None and torch.all(keys.grad[~mask] == 0) and keys.grad[mask].abs().sum() > 0


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="query_size == key_size"):
        LuongAttention(4, 6, "dot")
    with pytest.raises(ValueError, match="score must be one of"):
        LuongAttention(4, 4, "cosine")
    with pytest.raises(ValueError, match="unknown attention"):
        make_attention("additive-ish", 4, 4)
    attn = BahdanauAttention(4, 6)
    with pytest.raises(ValueError, match=r"query of shape \[batch, 4\]"):
        attn(torch.randn(2, 5), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="keys of shape"):
        attn(torch.randn(2, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="mask must have shape"):
        attn(torch.randn(2, 4), torch.randn(2, 3, 6), torch.ones(2, 4, dtype=torch.bool))
