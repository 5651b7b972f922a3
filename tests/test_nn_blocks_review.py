"""Review of the building blocks in ``rnnkit.nn`` other than the recurrent layers, each checked
against a reference that does not use the implementation: brute-force enumeration (CRF paths, CTC
alignments), plain Python loops (attention, pooling, Bidirectional, Hierarchical), float64
gradcheck, and invariance to whatever sits in padded positions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rnnkit.nn import GRU, LSTM, AttentionPooling, Bidirectional, Hierarchical, masked_max, masked_mean
from rnnkit.nn.attention import make_attention
from rnnkit.nn.crf import CRF, FORBIDDEN, allowed_transitions
from rnnkit.nn.ctc import Lexicon, collapse_alignment, ctc_greedy_decode, ctc_prefix_beam_search


def _lse(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


# -- CRF ---------------------------------------------------------------------------------------
def _crf(k: int, seed: int = 0, constraints=None) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(k, constraints).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """s(y) written out, with FORBIDDEN for the moves the constraints disallow."""
    def pick(ok: torch.Tensor, value: torch.Tensor) -> float:
        return value.item() if bool(ok) else FORBIDDEN
    s = pick(crf.start_ok[path[0]], crf.start[path[0]]) + pick(crf.end_ok[path[-1]], crf.end[path[-1]])
    s += sum(float(emissions[t, k]) for t, k in enumerate(path))
    s += sum(pick(crf.transitions_ok[a, b], crf.transitions[a, b]) for a, b in zip(path, path[1:]))
    return s


def test_crf_ragged_batch_with_bioes_constraints_matches_enumeration_of_all_paths():
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    crf = _crf(5, seed=3, constraints=allowed_transitions(tags, "BIOES"))
    lengths = [4, 1, 3, 2]
    emissions = torch.randn(4, 4, 5, dtype=torch.float64)
    mask = _mask(lengths, 4)
    log_z = crf.log_partition(emissions, mask)
    paths, best = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        scores = {p: _path_score(crf, emissions[b], p) for p in itertools.product(range(5), repeat=n)}
        expected = -math.inf
        for s in scores.values():
            expected = _lse(expected, s)
        assert log_z[b].item() == pytest.approx(expected, abs=1e-9)
        top = max(scores.values())
        assert float(best[b]) == pytest.approx(top, abs=1e-9)
        assert scores[tuple(paths[b])] == pytest.approx(top, abs=1e-9)
        assert top > FORBIDDEN / 2  # an allowed path exists for every length here and wins
        gold = torch.tensor([list(paths[b]) + [0] * (4 - n)])
        ll = crf.log_likelihood(emissions[b:b + 1], gold, mask[b:b + 1])
        assert ll.item() == pytest.approx(top - expected, abs=1e-9)


def test_crf_padding_content_and_padded_tag_ids_change_no_output_or_gradient():
    crf = _crf(3, seed=1)
    emissions = torch.randn(3, 5, 3, dtype=torch.float64)
    mask = _mask([5, 2, 0], 5)
    tags = torch.randint(0, 3, (3, 5))

    def run(e: torch.Tensor, t: torch.Tensor):
        e = e.clone().requires_grad_()
        crf.zero_grad()
        ll = crf.log_likelihood(e, t, mask)
        (ll * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
        grads = [p.grad.clone() for p in crf.parameters()]
        return ll.detach(), e.grad, grads, crf.log_partition(e, mask).detach(), crf.marginals(e, mask), crf.decode(e, mask)

    clean = run(emissions, tags)
    for garbage in (1e6, float("inf"), float("nan")):
        dirty_e = emissions.clone()
        dirty_e[~mask] = garbage
        dirty_t = tags.masked_fill(~mask, -100)  # e.g. an ignore_index used as padding
        dirty = run(dirty_e, dirty_t)
        torch.testing.assert_close(dirty[0], clean[0], rtol=0, atol=0)
        torch.testing.assert_close(dirty[1][mask], clean[1][mask], rtol=0, atol=0)
        assert torch.isfinite(dirty[1]).all()
        for g_dirty, g_clean in zip(dirty[2], clean[2]):
            torch.testing.assert_close(g_dirty, g_clean, rtol=0, atol=0)
        torch.testing.assert_close(dirty[3], clean[3], rtol=0, atol=0)
        torch.testing.assert_close(dirty[4], clean[4], rtol=0, atol=0)
        assert dirty[5][0] == clean[5][0]


def test_crf_empty_sequences_score_zero_everywhere():
    crf = _crf(3)
    emissions = torch.randn(2, 3, 3, dtype=torch.float64)
    mask = _mask([3, 0], 3)
    tags = torch.zeros(2, 3, dtype=torch.long)
    assert crf.log_partition(emissions, mask)[1].item() == 0.0
    assert crf.log_likelihood(emissions, tags, mask)[1].item() == 0.0
    paths, best = crf.decode(emissions, mask)
    assert paths[1] == [] and float(best[1]) == 0.0
    assert float(crf.marginals(emissions, mask)[1].abs().sum()) == 0.0


def test_crf_gradcheck_float64_over_emissions_and_parameters():
    crf = _crf(3, seed=5, constraints=allowed_transitions(["O", "B-A", "I-A"], "IOB2"))
    emissions = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    mask = _mask([4, 2], 4)
    tags = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]])
    assert torch.autograd.gradcheck(lambda e: crf.log_likelihood(e, tags, mask), (emissions,))
    # parameters: compare autograd with central differences through the module's own parameters
    crf.zero_grad()
    crf.log_likelihood(emissions.detach(), tags, mask).sum().backward()
    for param in (crf.start, crf.transitions, crf.end):
        for i in range(param.numel()):
            base = param.detach().clone()
            with torch.no_grad():
                param.view(-1)[i] += 1e-6
                up = float(crf.log_likelihood(emissions.detach(), tags, mask).sum())
                param.view(-1)[i] -= 2e-6
                down = float(crf.log_likelihood(emissions.detach(), tags, mask).sum())
                param.copy_(base)
            assert param.grad.view(-1)[i].item() == pytest.approx((up - down) / 2e-6, abs=1e-6)


def test_crf_viterbi_ties_go_to_the_lowest_tag_id():
    crf = CRF(3).double()
    paths, best = crf.decode(torch.zeros(2, 4, 3, dtype=torch.float64), _mask([4, 2], 4))
    assert paths == [[0, 0, 0, 0], [0, 0]] and best.tolist() == [0.0, 0.0]


def test_crf_constraints_that_allow_no_path_are_a_one_line_error():
    k = 3
    no_transitions = (torch.tensor([True, False, False]), torch.zeros(k, k, dtype=torch.bool),
                      torch.tensor([False, True, True]))
    no_start = (torch.zeros(k, dtype=torch.bool), torch.ones(k, k, dtype=torch.bool), torch.ones(k, dtype=torch.bool))
    for constraints in (no_transitions, no_start):
        with pytest.raises(ValueError, match="allow no tag path") as err:
            CRF(k, constraints)
        assert "\n" not in str(err.value)
    # a path exists (start 0 -> 1 -> 2 end) even though no length-1 path does: accepted
    reach = torch.zeros(k, k, dtype=torch.bool)
    reach[0, 1] = reach[1, 2] = True
    CRF(k, (torch.tensor([True, False, False]), reach, torch.tensor([False, False, True])))


def test_crf_long_sequences_stay_finite_and_normalised():
    torch.manual_seed(0)
    crf = CRF(4, allowed_transitions(["O", "B-A", "I-A", "B-B"], "IOB2"))
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(2, 2000, 4) * 5
    mask = _mask([2000, 1500], 2000)
    paths, best = crf.decode(emissions, mask)
    gold = torch.zeros(2, 2000, dtype=torch.long)
    for b, p in enumerate(paths):
        gold[b, : len(p)] = torch.tensor(p)
    ll = crf.log_likelihood(emissions, gold, mask)
    assert torch.isfinite(ll).all() and (ll <= 1e-3).all()
    marg = crf.marginals(emissions, mask)
    torch.testing.assert_close(marg.sum(-1)[mask], torch.ones(3500), atol=1e-3, rtol=0)
    exact = crf.double().marginals(emissions.double(), mask)  # was 4e-2 off when normalised by one global log Z
    torch.testing.assert_close(marg.double(), exact, atol=2e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_crf_in_half_precision_matches_float32(dtype):
    crf = _crf(3, seed=2).float()
    emissions = torch.randn(3, 50, 3) * 3
    mask = _mask([50, 30, 1], 50)
    tags = torch.randint(0, 3, (3, 50))
    low = CRF(3).to(dtype)
    low.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in crf.state_dict().items()})
    ref_crf = CRF(3)
    ref_crf.load_state_dict({k: v.to(dtype).float() if v.is_floating_point() else v
                             for k, v in crf.state_dict().items()})  # same rounded parameters, float32 maths
    e_low = emissions.to(dtype)
    ll = low.log_likelihood(e_low, tags, mask)
    assert ll.dtype == dtype
    ref = ref_crf.log_likelihood(e_low.float(), tags, mask)
    torch.testing.assert_close(ll.float(), ref, rtol=1e-2, atol=0.5)
    marg = low.marginals(e_low, mask)
    torch.testing.assert_close(marg.float(), ref_crf.marginals(e_low.float(), mask), atol=1e-2, rtol=0)
    assert low.decode(e_low, mask)[0] == ref_crf.decode(e_low.float(), mask)[0]


# -- attention ---------------------------------------------------------------------------------
def _loop_attention(attn, query, keys, lengths, coverage):
    """Scores one query and one source position at a time, then an explicit softmax."""
    contexts, weights = [], []
    for b, n in enumerate(lengths):
        scores = []
        for s in range(n):
            h = keys[b, s]
            if hasattr(attn, "v"):  # Bahdanau
                hidden = attn.query_proj.weight @ query[b] + attn.key_proj.weight @ h + attn.key_proj.bias
                if coverage is not None:
                    hidden = hidden + attn.coverage_proj.weight[:, 0] * coverage[b, s]
                scores.append((attn.v.weight[0] @ torch.tanh(hidden)).item())
            else:
                projected = h if attn.key_proj is None else attn.key_proj.weight @ h
                e = (query[b] @ projected).item()
                if coverage is not None:
                    e += attn.coverage_weight[0].item() * float(coverage[b, s])
                scores.append(e)
        top = max(scores, default=0.0)
        exps = [math.exp(x - top) for x in scores]
        w = [x / sum(exps) for x in exps] + [0.0] * (keys.shape[1] - n)
        weights.append(w)
        contexts.append(sum((w[s] * keys[b, s] for s in range(n)), torch.zeros(keys.shape[2], dtype=keys.dtype)))
    return torch.stack(contexts), torch.tensor(weights, dtype=keys.dtype)


@pytest.mark.parametrize("kind", ["bahdanau", "luong_general", "luong_dot"])
@pytest.mark.parametrize("coverage", [False, True])
def test_attention_matches_a_loop_and_ignores_padding_content(kind, coverage):
    torch.manual_seed(0)
    q_size, k_size, lengths = (6 if kind == "luong_dot" else 4), 6, [5, 2, 1, 0]
    attn = make_attention(kind, q_size, k_size, coverage=coverage).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    query = torch.randn(4, q_size, dtype=torch.float64)
    keys = torch.randn(4, 5, k_size, dtype=torch.float64)
    cov = torch.rand(4, 5, dtype=torch.float64) if coverage else None
    mask = _mask(lengths, 5)
    context, weights = attn(query, keys, mask, coverage=cov)
    ref_context, ref_weights = _loop_attention(attn, query, keys, lengths, cov)
    torch.testing.assert_close(weights, ref_weights, atol=1e-12, rtol=0)
    torch.testing.assert_close(context, ref_context, atol=1e-12, rtol=0)

    def grads(k: torch.Tensor):
        q, k = query.clone().requires_grad_(), k.clone().requires_grad_()
        c, w = attn(q, k, mask, coverage=cov)
        (c.sum() + (w * torch.arange(5)).sum()).backward()
        return c.detach(), w.detach(), q.grad, k.grad

    dirty = keys.clone()
    dirty[~mask] = 1e6 * torch.randn_like(dirty[~mask])
    a, b = grads(keys), grads(dirty)
    for x, y in zip(a[:3], b[:3]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(a[3][mask], b[3][mask], rtol=0, atol=0)
    assert torch.isfinite(a[3]).all()
    # each row alone gives what it gave in the batch
    for b_ in range(3):
        n = lengths[b_]
        c1, w1 = attn(query[b_:b_ + 1], keys[b_:b_ + 1, :n], mask[b_:b_ + 1, :n],
                      coverage=None if cov is None else cov[b_:b_ + 1, :n])
        torch.testing.assert_close(c1[0], context[b_], atol=1e-12, rtol=0)
        torch.testing.assert_close(w1[0], weights[b_, :n], atol=1e-12, rtol=0)
    q, k = query.clone().requires_grad_(), keys.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda q, k: attn(q, k, mask, coverage=cov), (q, k))


def test_attention_over_a_long_source_is_finite():
    attn = make_attention("luong_dot", 8, 8)
    context, weights = attn(torch.randn(2, 8) * 10, torch.randn(2, 2000, 8) * 10, _mask([2000, 7], 2000))
    assert torch.isfinite(context).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


# -- pooling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [0, 1, 6])
def test_masked_pooling_matches_loops_over_real_steps_whatever_the_padding_holds(steps):
    torch.manual_seed(steps)
    lengths = [steps, min(steps, 1), 0]
    x = torch.randn(3, steps, 4, dtype=torch.float64)
    mask = _mask(lengths, steps)
    dirty = x.clone()
    dirty[~mask] = float("inf")
    dirty[~mask & (torch.arange(steps) % 2 == 0)] = float("nan")
    pool = AttentionPooling(4).double()
    for fn in (masked_mean, masked_max, lambda o, m: pool(o, m)[0]):
        x1, x2 = x.clone().requires_grad_(), dirty.clone().requires_grad_()
        out, out_dirty = fn(x1, mask), fn(x2, mask)
        for b, n in enumerate(lengths):
            real = x[b, :n]
            if n == 0:
                expected = torch.zeros(4, dtype=torch.float64)
            elif fn is masked_mean:
                expected = sum(real[t] for t in range(n)) / n
            elif fn is masked_max:
                expected = torch.tensor([max(float(real[t, f]) for t in range(n)) for f in range(4)], dtype=torch.float64)
            else:
                u = [(pool.score.weight[0] @ torch.tanh(pool.project.weight @ real[t] + pool.project.bias)).item()
                     for t in range(n)]
                e = [math.exp(v - max(u)) for v in u]
                expected = sum(e[t] / sum(e) * real[t] for t in range(n))
            torch.testing.assert_close(out[b], expected, atol=1e-12, rtol=0)
        if fn is not masked_mean and fn is not masked_max:
            continue  # AttentionPooling's context multiplies every step (0 * inf = NaN): finite garbage only
        torch.testing.assert_close(out_dirty, out, rtol=0, atol=0)
        (out * torch.arange(1, 5)).sum().backward()
        (out_dirty * torch.arange(1, 5)).sum().backward()
        torch.testing.assert_close(x2.grad, x1.grad, rtol=0, atol=0)
        assert fn(x, None).shape == (3, 4) and not fn(x, None).isnan().any()


def test_masked_mean_in_float16_does_not_overflow_on_long_sequences():
    x = torch.full((2, 2000, 3), 60.0, dtype=torch.float16)
    out = masked_mean(x, _mask([2000, 1000], 2000))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, torch.full((2, 3), 60.0, dtype=torch.float16))


def test_attention_pooling_rejects_sizes_below_one():
    with pytest.raises(ValueError, match="attention_size must be >= 1"):
        AttentionPooling(4, -2)
    with pytest.raises(ValueError, match="features must be >= 1"):
        AttentionPooling(0)


# -- CTC ---------------------------------------------------------------------------------------
def _ctc_brute(lp: torch.Tensor, blank: int) -> dict[tuple[int, ...], float]:
    steps, vocab = lp.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=steps):
        label = tuple(collapse_alignment(path, blank))
        totals[label] = _lse(totals.get(label, -math.inf), sum(float(lp[t, k]) for t, k in enumerate(path)))
    return totals


@pytest.mark.parametrize("seed", range(6))
def test_ctc_beam_matches_enumeration_and_torch_ctc_loss_for_any_blank_id(seed):
    torch.manual_seed(seed)
    steps, vocab = 1 + seed % 5, 2 + seed % 3
    blank = seed % vocab
    lp = torch.log_softmax(torch.randn(steps, vocab, dtype=torch.float64) * 2, -1)
    exact = _ctc_brute(lp, blank)
    for label, value in exact.items():
        if label:
            nll = F.ctc_loss(lp[:, None], torch.tensor([label]), torch.tensor([steps]), torch.tensor([len(label)]),
                             blank=blank, reduction="sum")
            assert -float(nll) == pytest.approx(value, abs=1e-9)
    beams = {tuple(k): v for k, v in ctc_prefix_beam_search(lp, beam_size=10**6, blank=blank, token_threshold=None)}
    assert set(beams) == set(exact)
    for label, value in exact.items():
        assert beams[label] == pytest.approx(value, abs=1e-9)
    (best, score), *_ = ctc_prefix_beam_search(lp, beam_size=64, blank=blank, token_threshold=None)
    assert score == pytest.approx(max(exact.values()), abs=1e-9)
    assert ctc_greedy_decode(lp, blank=blank)[0] == collapse_alignment(lp.argmax(-1).tolist(), blank)


def test_ctc_lexicon_beam_matches_enumeration_of_the_allowed_labellings():
    words = {(1, 1), (2,), (1, 2)}
    lex = Lexicon([list(w) for w in words], separator=3)

    def allowed(label: tuple[int, ...]) -> bool:  # every separator closes a listed word
        word: list[int] = []
        for token in label:
            if token == 3:
                if tuple(word) not in words:
                    return False
                word = []
            else:
                word.append(token)
        return not word or tuple(word) in words

    torch.manual_seed(1)
    for _ in range(5):
        lp = torch.log_softmax(torch.randn(5, 4, dtype=torch.float64) * 2, -1)
        expected: dict[tuple[int, ...], float] = {}
        for label, value in _ctc_brute(lp, 0).items():
            if allowed(label):
                key = label[:-1] if label and label[-1] == 3 else label
                expected[key] = _lse(expected.get(key, -math.inf), value)
        got = {tuple(k): v for k, v in ctc_prefix_beam_search(lp, beam_size=10**6, lexicon=lex, token_threshold=None)}
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9)


def test_ctc_edge_inputs():
    assert ctc_prefix_beam_search(torch.zeros(0, 4)) == [([], 0.0)]
    assert ctc_greedy_decode(torch.zeros(2, 0, 4)) == [[], []]
    lp = torch.log_softmax(torch.randn(2000, 6), -1)
    (best, score), *_ = ctc_prefix_beam_search(lp, beam_size=4)
    assert math.isfinite(score) and best
    nan = torch.log_softmax(torch.randn(5, 4), -1)
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN") as err:
        ctc_prefix_beam_search(nan)
    assert "\n" not in str(err.value)
    assert ctc_prefix_beam_search(torch.log_softmax(torch.randn(5, 4), -1).half())  # reduced precision is read


# -- wrappers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("merge", ["concat", "sum", None])
def test_bidirectional_matches_each_sequence_run_alone_and_ignores_padding(merge):
    torch.manual_seed(0)
    bi = Bidirectional(LSTM(3, 4, batch_first=True), merge=merge).double()
    lengths = [6, 3, 1]
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    mask = _mask(lengths, 6)
    out, _ = bi(x, lengths=torch.tensor(lengths))
    for b, n in enumerate(lengths):
        fwd, _ = bi.forward_layer(x[b:b + 1, :n])
        bwd, _ = bi.backward_layer(x[b:b + 1, :n].flip(1))
        bwd = bwd.flip(1)
        if merge is None:
            torch.testing.assert_close(out[0][b, :n], fwd[0])
            torch.testing.assert_close(out[1][b, :n], bwd[0])
        else:
            torch.testing.assert_close(out[b, :n], torch.cat([fwd, bwd], -1)[0] if merge == "concat" else (fwd + bwd)[0])

    def run(inp: torch.Tensor):
        inp = inp.clone().requires_grad_()
        o, (sf, sb) = bi(inp, mask=mask)
        o = torch.cat(o, -1) if merge is None else o
        (o[mask].sum() + sf[0].sum() + sb[0].sum()).backward()
        return o[mask].detach(), inp.grad[mask]

    dirty = x.clone()
    dirty[~mask] = 1e3 * torch.randn_like(dirty[~mask])
    for a, b in zip(run(x), run(dirty)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("pool", ["last", "mean", "max", "attention"])
def test_hierarchical_matches_a_loop_over_segments(pool):
    torch.manual_seed(1)
    inner, outer = LSTM(3, 4, batch_first=True), GRU(4, 5, batch_first=True)
    pool_arg = AttentionPooling(4) if pool == "attention" else pool
    model = Hierarchical(inner, outer, pool=pool_arg).double()
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    unit_lengths = torch.tensor([[4, 2, 0], [1, 0, 0]])
    outputs, _, vectors = model(x, unit_lengths)
    for b in range(2):
        rows = []
        for s in range(3):
            n = int(unit_lengths[b, s])
            if n == 0:
                rows.append(torch.zeros(4, dtype=torch.float64))
                continue
            o, (h, _) = inner(x[b:b + 1, s, :n])
            if pool == "last":
                rows.append(h[-1, 0])
            elif pool == "mean":
                rows.append(o[0].mean(0))
            elif pool == "max":
                rows.append(o[0].amax(0))
            else:
                rows.append(pool_arg(o)[0][0])
        expected = torch.stack(rows)
        torch.testing.assert_close(vectors[b], expected)
        real = int((unit_lengths[b] > 0).sum())
        ref, _ = outer(expected[None, :real])
        torch.testing.assert_close(outputs[b, :real], ref[0])
    dirty = x.clone()
    for b in range(2):
        for s in range(3):
            dirty[b, s, int(unit_lengths[b, s]):] = 1e3
    outputs2, _, vectors2 = model(dirty, unit_lengths)
    torch.testing.assert_close(vectors2, vectors)
    torch.testing.assert_close(outputs2[unit_lengths > 0], outputs[unit_lengths > 0])
