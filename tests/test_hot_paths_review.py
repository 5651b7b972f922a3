"""Vectorised hot paths give the results of the plain loops they replaced (kept here as references)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rnnkit.data import DifferenceTransform
from rnnkit.nn.ctc import edit_distance, error_counts


# -- edit_distance: rapidfuzz (or the fallback) against the row-by-row dynamic programme ----------
def _reference_edit_distance(ref, hyp) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def test_edit_distance_equals_the_dynamic_programme_on_strings():
    rng = random.Random(0)
    for _ in range(3000):
        alphabet = rng.choice(["ab", "abc d", "abcdefghij "])
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert edit_distance(a, b) == _reference_edit_distance(a, b), (a, b)


def test_edit_distance_equals_the_dynamic_programme_on_long_word_and_id_lists():
    rng = random.Random(1)
    words = ["the", "a", "cat", "sat", "on", "mat", "", "The", 1, 2, 10]
    for _ in range(200):  # lengths past 64: several machine words per bit vector
        a = [rng.choice(words) for _ in range(rng.randint(0, 150))]
        b = [rng.choice(words) for _ in range(rng.randint(0, 150))]
        assert edit_distance(a, b) == _reference_edit_distance(a, b)
    text = "the quick brown fox jumps over the lazy dog " * 6
    noisy = "".join(c if rng.random() > 0.2 else rng.choice("xyz ") for c in text)
    assert edit_distance(text, noisy) == _reference_edit_distance(text, noisy)
    assert error_counts(text, noisy)[2] == _reference_edit_distance(" ".join(text.split()), " ".join(noisy.split()))


def test_edit_distance_of_other_items_keeps_equality_semantics():
    """Items that are not str/int (floats, tuples, unhashable lists) go through the plain programme."""
    nan = float("nan")
    cases = [([nan, 1.0], [nan, 1.0]), ([[1], [2]], [[1], [3], [2]]), ([(1, 2), 1.0], [(1, 2), 1]),
             ([True, 0], [1, False])]
    for a, b in cases:
        assert edit_distance(a, b) == _reference_edit_distance(a, b)
    assert edit_distance([], [1, 2]) == 2 and edit_distance("abc", "") == 3 and edit_distance("", "") == 0


def test_edit_distance_without_rapidfuzz_uses_the_dynamic_programme(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "rapidfuzz.distance", None)  # import fails, as without the audio extra
    rng = random.Random(2)
    for _ in range(200):
        a = [rng.choice(["a", "b", 1, 2]) for _ in range(rng.randint(0, 20))]
        b = [rng.choice(["a", "b", 1, 2]) for _ in range(rng.randint(0, 20))]
        assert edit_distance(a, b) == _reference_edit_distance(a, b)


# -- DifferenceTransform.inverse_transform: one cumsum against the per-step loop -----------------
def _reference_inverse(diff: DifferenceTransform, data, history) -> np.ndarray:
    d = np.asarray(data, dtype=np.float64)
    h = np.asarray(history, dtype=np.float64)
    levels = [h]
    for _ in range(diff.order - 1):
        prev = levels[-1]
        levels.append(prev[diff.lag:] - prev[: -diff.lag])
    x = d
    for level in reversed(levels):
        out = np.empty((x.shape[0] + diff.lag, *x.shape[1:]), dtype=np.float64)
        out[: diff.lag] = level[-diff.lag:]
        for t in range(x.shape[0]):
            out[t + diff.lag] = x[t] + out[t]
        x = out[diff.lag:]
    return x


@pytest.mark.parametrize("lag,order", [(1, 1), (1, 2), (3, 1), (7, 2), (12, 3)])
@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_difference_inverse_equals_the_step_loop_bit_for_bit(lag, order, shape):
    rng = np.random.default_rng(lag * 10 + order)
    diff = DifferenceTransform(lag, order)
    for steps in (0, 1, lag - 1, lag, 5 * lag + 2, 500):
        if steps < 0:
            continue
        data = rng.normal(size=(steps, *shape)) * 10 ** rng.uniform(-3, 3, size=(steps, *shape))
        history = rng.normal(size=(diff.history_length, *shape)) * 100
        got = diff.inverse_transform(data, history)
        assert got.shape == (steps, *shape)
        np.testing.assert_array_equal(got, _reference_inverse(diff, data, history))
    # float32 tensors come back as float32 tensors, from the same float64 sums
    data32 = torch.randn(40, *shape)
    hist32 = torch.randn(diff.history_length, *shape)
    got_t = diff.inverse_transform(data32, hist32)
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.float32
    want = torch.as_tensor(_reference_inverse(diff, data32.double().numpy(), hist32.double().numpy()),
                           dtype=torch.float32)
    assert torch.equal(got_t, want)


def test_difference_round_trip_still_recovers_the_series():
    rng = np.random.default_rng(0)
    series = rng.normal(size=(300, 2)).cumsum(0)
    diff = DifferenceTransform(lag=4, order=2)
    d = diff.transform(series)
    np.testing.assert_allclose(diff.inverse_transform(d, series[: diff.history_length]),
                               series[diff.history_length:], rtol=0, atol=1e-9)


def test_edit_distance_still_takes_arrays_and_tensors():
    a, b = np.array([1, 2, 3, 4]), np.array([1, 3, 4, 5])
    assert edit_distance(a, b) == _reference_edit_distance(a, b) == 2
    assert edit_distance(torch.tensor([1, 2]), torch.tensor([2])) == _reference_edit_distance(
        torch.tensor([1, 2]), torch.tensor([2]))
