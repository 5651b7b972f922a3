"""Mutation review of the core math: each test here kills a plausible bug (a sign, a swapped
gate, an off-by-one, a wrong reduction) that the rest of the suite let through, and checks the
code against an independent reference: a brute-force enumeration, a plain Python loop written
from the equations, torch.nn with copied weights, or a hand-computed number."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rnnkit.nn.crf import CRF


# -- CRF ---------------------------------------------------------------------------------------
def _brute_log_likelihood(crf: CRF, emissions: torch.Tensor, tags: list[int]) -> float:
    """log p(tags) by enumerating every path of the same length, from the docstring's s(y)."""
    start, trans, end = crf.start.tolist(), crf.transitions.tolist(), crf.end.tolist()
    e = emissions.tolist()
    k = crf.num_tags

    def score(path: tuple[int, ...] | list[int]) -> float:
        s = start[path[0]] + end[path[-1]] + sum(e[t][y] for t, y in enumerate(path))
        return s + sum(trans[a][b] for a, b in zip(path[:-1], path[1:]))

    log_z = math.log(sum(math.exp(score(p)) for p in itertools.product(range(k), repeat=len(tags))))
    return score(tags) - log_z


def test_crf_loss_is_the_mean_nll_over_non_empty_sequences_only() -> None:
    """Kills: forward dividing by the batch size (empty sequences counted in the mean)."""
    torch.manual_seed(0)
    k, lengths = 3, [3, 0, 2, 0]
    crf = CRF(k).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(len(lengths), 3, k, dtype=torch.float64)
    tags = torch.randint(0, k, (len(lengths), 3))
    mask = torch.arange(3).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    nll = [-_brute_log_likelihood(crf, emissions[b, :n], tags[b, :n].tolist()) for b, n in enumerate(lengths) if n]
    expected = sum(nll) / len(nll)
    assert float(crf(emissions, tags, mask).detach()) == pytest.approx(expected, rel=1e-10)


# -- CTC lexicon ---------------------------------------------------------------------------------
def test_word_unit_lexicon_lets_a_longer_listed_word_continue_a_complete_one() -> None:
    """Kills: Lexicon.step returning to the root after any complete word (a listed word that
    extends it, [1, 2, 3] after [1, 2], then becomes unreachable)."""
    from rnnkit.nn.ctc import Lexicon, ctc_prefix_beam_search

    probs = torch.full((3, 4), 0.02, dtype=torch.float64)
    for t in range(3):
        probs[t, t + 1] = 0.94  # frame t says token t + 1; blank (0) is unlikely everywhere
    lexicon = Lexicon([[1, 2], [1, 2, 3]], separator=None)
    assert lexicon.step(lexicon.step(lexicon.step(lexicon.root, 1), 2), 3) is not None
    best, log_p = ctc_prefix_beam_search(probs.log(), beam_size=8, lexicon=lexicon, token_threshold=None)[0]
    assert best == [1, 2, 3]
    assert log_p == pytest.approx(3 * math.log(0.94))  # the only alignment of 1 2 3 in three frames


def test_word_unit_lexicon_accepts_a_word_that_prefixes_another_followed_by_a_new_word() -> None:
    from rnnkit.nn.ctc import Lexicon

    lexicon = Lexicon([[1], [1, 2], [3]], separator=None)
    state = lexicon.step(lexicon.root, 1)
    assert state is not None and lexicon.is_complete(state)
    state = lexicon.step(state, 3)  # "1" is a complete listed word, "3" another one
    assert state is not None and lexicon.is_complete(state)


def test_error_counts_count_reference_characters_after_whitespace_normalisation() -> None:
    """Kills: the reference character count taken on the raw text (its doubled and edge spaces
    inflate the denominator of the CER). Hand-counted: "hello world" has 11 characters."""
    from rnnkit.nn.ctc import error_counts

    assert error_counts("  hello   world ", "hello world") == (0, 2, 0, 11)
    assert error_counts(" a  b", "a c") == (1, 2, 1, 3)


# -- forecasting metrics -------------------------------------------------------------------------
def test_mase_scale_falls_back_to_the_naive_scale_when_history_is_exactly_one_period() -> None:
    """Kills: ``period if len > period`` turned into ``>=`` (a history of exactly ``m`` steps then has
    no seasonal difference and the scale became NaN instead of the documented naive m = 1 scale)."""
    from rnnkit.metrics.forecasting import mase_scale

    assert float(mase_scale([1.0, 2.0, 4.0, 7.0], period=4)) == pytest.approx(2.0)  # mean(1, 2, 3)
    assert float(mase_scale([1.0, 2.0, 4.0, 7.0, 11.0], period=2)) == pytest.approx(5.0)  # mean(3, 5, 7)
    assert math.isnan(float(mase_scale([3.0], period=1)))  # one step: no difference at all


def test_interval_coverage_counts_values_on_either_bound_as_covered() -> None:
    """Kills: a strict upper bound in ``coverage`` (a closed interval [lower, upper] by definition)."""
    from rnnkit.metrics.forecasting import coverage

    y = np.array([0.0, 1.0, 2.0, 3.0])
    assert coverage(y, np.full(4, 1.0), np.full(4, 2.0)) == pytest.approx(0.5)  # 1 and 2 are inside
    assert coverage(y, y, y) == pytest.approx(1.0)  # a degenerate interval at the value covers it


# -- cells, initialisation and zoneout -----------------------------------------------------------
def test_cells_initialise_every_parameter_uniformly_within_one_over_sqrt_hidden() -> None:
    """Kills: the init bound 1/H instead of torch.nn's 1/sqrt(H) (torch.nn.LSTM's reset_parameters)."""
    from rnnkit.cells import GRUCell, LSTMCell, MinGRUCell, RNNCell

    torch.manual_seed(0)
    hidden = 64
    bound = 1.0 / math.sqrt(hidden)
    ref = torch.nn.LSTM(10, hidden)
    ref_max = max(float(p.detach().abs().max()) for p in ref.parameters())
    for cell in (LSTMCell(10, hidden), GRUCell(10, hidden), RNNCell(10, hidden), MinGRUCell(10, hidden)):
        values = torch.cat([p.detach().flatten() for p in cell.parameters()])
        assert float(values.abs().max()) <= bound
        assert float(values.abs().max()) > 0.95 * bound, type(cell).__name__  # thousands of draws reach the edge
        assert float(values.abs().max()) == pytest.approx(ref_max, rel=0.05)


def test_zoneout_in_training_keeps_the_previous_value_with_probability_rate() -> None:
    """Kills: the Bernoulli comparison inverted (units kept with probability 1 - rate)."""
    from rnnkit.scan import zoneout

    torch.manual_seed(0)
    new, old = (torch.ones(200, 500, dtype=torch.float64),), (torch.zeros(200, 500, dtype=torch.float64),)
    for rate in (0.2, 0.8):
        (mixed,) = zoneout(new, old, rate, training=True)
        kept_old = float((mixed == 0).double().mean())
        assert kept_old == pytest.approx(rate, abs=0.01)
    (expected,) = zoneout(new, old, 0.8, training=False)
    assert torch.allclose(expected, torch.full_like(expected, 0.2))  # rate * old + (1 - rate) * new


def test_gru_reset_before_applies_the_recurrent_dropout_mask_to_every_recurrent_matmul() -> None:
    """Kills: the r and z pre-activations of the reset-before GRU reading the unmasked h_{t-1}.
    Reference: Keras' GRU with recurrent dropout, written out (the mask multiplies h_{t-1} before each
    recurrent matmul; the update's z h_{t-1} term uses h_{t-1} itself)."""
    from rnnkit.cells import GRUCell
    from rnnkit.scan import reference_scan

    torch.manual_seed(0)
    b, t, i, h = 3, 5, 4, 6
    cell = GRUCell(i, h, reset_after=False).double()
    x = torch.randn(b, t, i, dtype=torch.float64)
    h0 = torch.randn(b, h, dtype=torch.float64)
    rec_mask = (torch.rand(b, h) > 0.4).double() / 0.6
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    wr, wz, wn = w_hh.chunk(3)
    br, bz, bn = b_hh.chunk(3)
    state, outs = h0, []
    for step in range(t):
        xr, xz, xn = (x[:, step] @ w_ih.t() + b_ih).chunk(3, -1)
        hm = state * rec_mask
        r = torch.sigmoid(xr + hm @ wr.t() + br)
        z = torch.sigmoid(xz + hm @ wz.t() + bz)
        n = torch.tanh(xn + (r * hm) @ wn.t() + bn)
        state = (1 - z) * n + z * state
        outs.append(state)
    with torch.no_grad():
        out, (h_n,), _ = reference_scan(cell, x, (h0,), recurrent_mask=rec_mask)
    torch.testing.assert_close(out, torch.stack(outs, 1))
    torch.testing.assert_close(h_n, state)


# -- linear scans: values and gradients against a plain loop --------------------------------------
def _loop_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, reverse: bool) -> torch.Tensor:
    steps = a.shape[1]
    out: list[torch.Tensor] = [h0] * steps
    h = h0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        h = a[:, t] * h + b[:, t]
        out[t] = h
    return torch.stack(out, 1)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["sequential", "log"])
def test_linear_scans_match_a_plain_loop_in_values_and_gradients(kind: str, reverse: bool) -> None:
    """Kills: the reversed sequential backward reading a_t instead of a_{t-1}, the log scan's
    dL/dh_0 taken at the first step when reversed, dL/d log a_t without its factor a_t, and the
    state carried into a block from the wrong block (T = 150 spans three 64-step blocks)."""
    from rnnkit.scan import linear_scan_log, linear_scan_sequential

    torch.manual_seed(1)
    bsz, steps, hid = 2, 150, 3
    a = (0.05 + 0.9 * torch.rand(bsz, steps, hid, dtype=torch.float64)).requires_grad_()
    b = torch.randn(bsz, steps, hid, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(bsz, hid, dtype=torch.float64).requires_grad_()
    weight = torch.randn(bsz, steps, hid, dtype=torch.float64)
    expected = _loop_scan(a, b, h0, reverse)
    grads_ref = torch.autograd.grad((expected * weight).sum(), (a, b, h0))
    if kind == "sequential":
        got = linear_scan_sequential(a, b, h0, reverse=reverse)
    else:
        got = linear_scan_log(a.log(), b.detach().abs().log(), h0, b_sign=b.detach().sign(), reverse=reverse, b=b)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad((got * weight).sum(), (a, b, h0))
    for name, g, r in zip(["a", "b", "h0"], grads, grads_ref):
        torch.testing.assert_close(g, r, msg=lambda m, name=name: f"dL/d{name}: {m}")


def _layer_norm(v: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    out = (v - mean) / torch.sqrt(var + eps) * gain
    return out if bias is None else out + bias


def test_layernorm_gru_uses_its_own_gain_for_each_norm() -> None:
    """Kills: LN_hh computed with LN_ih's gain (identical at initialisation, both ones, so only
    trained or random gains tell). Reference: the class docstring's equations in a loop."""
    from rnnkit.cells import LayerNormGRUCell
    from rnnkit.scan import reference_scan

    torch.manual_seed(0)
    b, t, i, h = 2, 4, 3, 5
    cell = LayerNormGRUCell(i, h).double()
    with torch.no_grad():
        cell.ln_ih.weight.uniform_(0.5, 1.5)
        cell.ln_hh.weight.uniform_(-1.5, -0.5)
    x = torch.randn(b, t, i, dtype=torch.float64)
    h0 = torch.randn(b, h, dtype=torch.float64)
    p = {k: v.detach() for k, v in cell.named_parameters()}
    state, outs = h0, []
    for step in range(t):
        xr, xz, xn = (_layer_norm(x[:, step] @ p["weight_ih"].t(), p["ln_ih.weight"], None, 1e-5)
                      + p["bias_ih"]).chunk(3, -1)
        hr, hz, hn = (_layer_norm(state @ p["weight_hh"].t(), p["ln_hh.weight"], None, 1e-5) + p["bias_hh"]).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        state = (1 - z) * n + z * state
        outs.append(state)
    with torch.no_grad():
        out, (h_n,), _ = reference_scan(cell, x, (h0,))
    torch.testing.assert_close(out, torch.stack(outs, 1))
    torch.testing.assert_close(h_n, state)


def test_layernorm_lstm_cell_matches_ba_et_al_with_random_gains() -> None:
    """The LayerNormLSTMCell step against Ba et al. (2016) eq. 20-22 written out, with every norm's
    gain (and the cell norm's bias) random so that no norm can stand in for another."""
    from rnnkit.cells import LayerNormLSTMCell

    torch.manual_seed(0)
    b, i, h = 3, 4, 5
    cell = LayerNormLSTMCell(i, h).double()
    with torch.no_grad():
        for ln in (cell.ln_ih, cell.ln_hh, cell.ln_cell):
            ln.weight.uniform_(-1.5, 1.5)
        cell.ln_cell.bias.uniform_(-0.5, 0.5)
    x = torch.randn(b, i, dtype=torch.float64)
    h0, c0 = torch.randn(b, h, dtype=torch.float64), torch.randn(b, h, dtype=torch.float64)
    p = {k: v.detach() for k, v in cell.named_parameters()}
    zz = (_layer_norm(x @ p["weight_ih"].t(), p["ln_ih.weight"], None, 1e-5) + p["bias_ih"]
          + _layer_norm(h0 @ p["weight_hh"].t(), p["ln_hh.weight"], None, 1e-5) + p["bias_hh"])
    zi, zf, zg, zo = zz.chunk(4, -1)
    c1 = torch.sigmoid(zf) * c0 + torch.sigmoid(zi) * torch.tanh(zg)
    h1 = torch.sigmoid(zo) * torch.tanh(_layer_norm(c1, p["ln_cell.weight"], p["ln_cell.bias"], 1e-5))
    with torch.no_grad():
        out, (h_new, c_new) = cell(x, (h0, c0))
    torch.testing.assert_close(out, h1)
    torch.testing.assert_close(c_new, c1)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_rnn_applies_the_recurrent_dropout_mask(nonlinearity: str) -> None:
    """Kills: RNNCell.recur ignoring ``recurrent_mask`` (variational recurrent dropout silently off).
    Reference: h_t = f(W_ih x_t + b_ih + W_hh (m * h_{t-1}) + b_hh) in a loop."""
    from rnnkit.cells import RNNCell
    from rnnkit.scan import reference_scan

    torch.manual_seed(0)
    b, t, i, h = 3, 4, 2, 5
    cell = RNNCell(i, h, nonlinearity=nonlinearity).double()
    x = torch.randn(b, t, i, dtype=torch.float64)
    h0 = torch.randn(b, h, dtype=torch.float64)
    rec_mask = (torch.rand(b, h) > 0.5).double() * 2.0
    f = torch.tanh if nonlinearity == "tanh" else torch.relu
    w_ih, w_hh, b_ih, b_hh = (p.detach() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    state, outs = h0, []
    for step in range(t):
        state = f(x[:, step] @ w_ih.t() + b_ih + (state * rec_mask) @ w_hh.t() + b_hh)
        outs.append(state)
    with torch.no_grad():
        out, (h_n,), _ = reference_scan(cell, x, (h0,), recurrent_mask=rec_mask)
    torch.testing.assert_close(out, torch.stack(outs, 1))
    torch.testing.assert_close(h_n, state)
