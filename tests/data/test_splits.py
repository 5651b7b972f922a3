"""Held-out dev sets keep an item and its duplicates on one side (checked by brute force and on the tasks)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data.splits import take_whole_groups
from rnnkit.data.text import TextExample
from rnnkit.tasks.text_classification import _split_dev as split_texts
from rnnkit.tasks.translation import _split_dev as split_pairs

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_without_duplicates_it_takes_the_first_of_the_order():
    order = random.Random(0).sample(range(20), 20)
    keys = [f"item {i}" for i in range(20)]
    for count, keep in [(5, 1), (0, 1), (19, 1), (25, 3), (20, 0)]:
        assert take_whole_groups(order, keys, count, keep) == set(order[:min(count, 20 - keep)])


@pytest.mark.parametrize("seed", range(30))
def test_duplicates_never_straddle_and_the_size_is_the_brute_force_one(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    keys = [rng.randint(0, max(1, n // 3)) for _ in range(n)]
    order = rng.sample(range(n), n)
    count, keep = rng.randint(0, n), rng.randint(0, 3)
    held = take_whole_groups(order, keys, count, keep)
    rest = set(range(n)) - held
    assert len(rest) >= min(keep, n)
    # brute force: walk the order, take a group whole if it fits, stop once count (or the room) is reached
    expected: set[int] = set()
    limit = min(count, n - keep)
    for i in order:
        group = {j for j in range(n) if keys[j] == keys[i]}
        if not group & expected and len(expected) + len(group) <= limit:
            expected |= group
    fallback = not expected and limit > 0
    if fallback:  # no group fits: item by item
        expected = set(order[:limit])
    assert held == expected
    assert len(held) <= max(limit, 0)
    if not fallback:
        assert not {keys[i] for i in held} & {keys[i] for i in rest}  # no key on both sides


def test_a_corpus_of_copies_is_still_split_item_by_item():
    assert take_whole_groups([3, 0, 2, 1, 4], ["same"] * 5, 2, keep=1) == {3, 0}
    assert take_whole_groups([1, 0], ["same"] * 2, 1, keep=1) == {1}
    assert take_whole_groups([0], ["same"], 1, keep=1) == set()


def test_text_classification_dev_holds_no_training_text():
    rng = random.Random(1)
    texts = [f"review {rng.randint(0, 60)}" for _ in range(300)]  # many repeated texts
    examples = [TextExample(t, "pos" if int(t.split()[1]) % 2 else "neg", f"f:{i}") for i, t in enumerate(texts)]
    train, dev = split_texts(examples, 0.2, seed=5)
    assert not {e.text for e in train} & {e.text for e in dev}
    assert len(train) + len(dev) == 300 and 45 <= len(dev) <= 60
    assert {e.label for e in train} == {"pos", "neg"}


def test_translation_dev_holds_no_training_source():
    sources = [f"satz {i % 25}" for i in range(100)]
    corpus = type("Corpus", (), {"sources": sources, "targets": [f"sentence {i}" for i in range(100)],
                                 "__len__": lambda self: 100})()
    (train_src, _), (dev_src, dev_tgt) = split_pairs(corpus, 0.1, seed=2)
    assert not set(train_src) & set(dev_src)
    assert len(dev_src) == 8  # 10 asked for, whole groups of 4: two groups (a third would pass 10)
    assert all(corpus.targets[int(t.split()[1])] == t for t in dev_tgt)


@pytest.mark.data
def test_conll_duplicate_sentences_stay_on_one_side():
    from rnnkit.data.conll import read_conll

    path = DATA / "conll2003" / "train.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared datasets are not on this machine)")
    sentences = [s for s in read_conll(path, 0, 3) if len(s)]
    keys = [s.tokens for s in sentences]
    assert sum(v for v in Counter(keys).values() if v > 1) > 1000  # e.g. 'EASTERN DIVISION' 16 times
    order = random.Random(0).sample(range(len(sentences)), len(sentences))
    held = take_whole_groups(order, keys, len(sentences) // 10, keep=0)
    assert not {keys[i] for i in held} & {keys[i] for i in range(len(sentences)) if i not in held}
    assert len(sentences) // 10 - 20 < len(held) <= len(sentences) // 10


def test_a_text_under_two_labels_stays_on_one_side():
    """Conflicting copies (the same text labelled pos and neg) follow each other to dev."""
    texts = [f"review {i % 31}" for i in range(124)]
    examples = [TextExample(t, "pos" if i % 2 else "neg", f"f:{i}") for i, t in enumerate(texts)]  # 31 texts, each under both labels
    for seed in range(5):
        train, dev = split_texts(examples, 0.2, seed=seed)
        assert not {e.text for e in train} & {e.text for e in dev}
        assert {e.label for e in train} == {"pos", "neg"} and dev


def test_class_quotas_follow_largest_remainders_and_keep_a_training_example() -> None:
    from rnnkit.data.splits import class_quotas

    # shares 3.6, 1.2, 0.2 of 5: floors 3, 1, 0; the largest remainder (0.6) takes the spare one
    assert class_quotas([18, 6, 1], 5, [0, 1, 2]) == [4, 1, 0]
    # equal remainders: the tie order decides
    assert class_quotas([5, 5], 1, [1, 0]) == [0, 1] and class_quotas([5, 5], 1, [0, 1]) == [1, 0]
    # a class of one never gives its example: the spare goes to the next remainder
    assert class_quotas([1, 9], 2, [0, 1]) == [0, 2]
    # small classes that cannot give: the large one gives more than one extra
    assert class_quotas([1, 1, 1, 1, 1, 5], 5, list(range(6))) == [0, 0, 0, 0, 0, 4]
    # remainders equal on paper (2/3 each) are equal: the tie order decides, not the floats' last bits
    assert class_quotas([2, 5, 23], 10, [0, 1, 2]) == [1, 2, 7]
    assert class_quotas([4, 25, 1], 10, [0, 1, 2]) == [2, 8, 0]  # floats gave the 25 its second extra
    # every class down to its last example: fewer than asked
    assert class_quotas([2, 1], 3, [0, 1]) == [1, 0]
    rng = np.random.default_rng(0)
    for _ in range(200):  # against the definition: the sum, the caps, within one of each share
        sizes = rng.integers(1, 30, rng.integers(1, 6)).tolist()
        total = int(rng.integers(1, sum(sizes) + 1))
        quotas = class_quotas(sizes, total, list(range(len(sizes))))
        assert sum(quotas) == min(total, sum(s - 1 for s in sizes))
        assert all(0 <= q <= s - 1 for q, s in zip(quotas, sizes))
        if sum(quotas) == total and all(s * total / sum(sizes) < s - 1 for s in sizes):
            assert all(abs(q - s * total / sum(sizes)) < 1 for q, s in zip(quotas, sizes))
