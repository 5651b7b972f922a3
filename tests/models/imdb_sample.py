"""A small, balanced, reproducible sample of the IMDB reviews, tokenized the simple way.

Reads ``aclImdb_v1_labeled.tar.xz`` with ``tarfile`` (the ``train/pos`` and ``train/neg``
folders), lowercases, splits on ``[a-z0-9']+``, keeps the most frequent words of the training
part (id 0 = padding, 1 = unknown) and pads/truncates like ``keras.utils.pad_sequences``
(``"pre"``: the end of each review is kept). Used by the IMDB end-to-end test and the benchmark.
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

WORD = re.compile(r"[a-z0-9']+")


def read_reviews(archive: Path, split: str = "train") -> tuple[list[str], list[int]]:
    """All reviews of ``split`` with labels (1 positive, 0 negative), in archive order."""
    texts: list[str] = []
    labels: list[int] = []
    with tarfile.open(archive, "r|xz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[1] != split or parts[2] not in ("pos", "neg"):
                continue
            f = tar.extractfile(member)
            assert f is not None
            texts.append(f.read().decode("utf-8", errors="replace").replace("<br />", " "))
            labels.append(int(parts[2] == "pos"))
    return texts, labels


def pad_pre(sequences: list[list[int]], maxlen: int) -> np.ndarray:
    """``keras.utils.pad_sequences(seqs, maxlen)``: zeros before, the last ``maxlen`` ids kept."""
    out = np.zeros((len(sequences), maxlen), dtype=np.int64)
    for i, s in enumerate(sequences):
        tail = s[-maxlen:]
        if tail:
            out[i, maxlen - len(tail):] = tail
    return out


def imdb_sample(archive: Path, *, n: int = 2000, val_fraction: float = 0.2, vocab_size: int = 10000,
                max_length: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_val, y_val)``: ``n`` balanced training reviews, split into train/validation.

    The vocabulary is built on the training part only.
    """
    texts, labels = read_reviews(archive)
    rng = np.random.default_rng(seed)
    y_all = np.array(labels)
    pick = np.concatenate([rng.choice(np.flatnonzero(y_all == c), n // 2, replace=False) for c in (0, 1)])
    rng.shuffle(pick)
    tokens = [WORD.findall(texts[i].lower()) for i in pick]
    n_val = int(n * val_fraction)
    counts = Counter(w for toks in tokens[n_val:] for w in toks)
    vocab = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(vocab_size - 2))}
    ids = pad_pre([[vocab.get(w, 1) for w in toks] for toks in tokens], max_length)
    y = y_all[pick]
    return ids[n_val:], y[n_val:], ids[:n_val], y[:n_val]
