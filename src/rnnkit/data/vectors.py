"""Pretrained word vectors in the common text format (GloVe, word2vec ``.txt``).

One word per line followed by its numbers, separated by spaces; an optional first line
``<count> <dim>`` (word2vec) is skipped. Plain or ``.gz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import DataError
from .io import check_file, iter_lines


def load_word_vectors(
    path: str | Path, words: Sequence[str], dim: int, *, lowercase_fallback: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors for ``words`` from a text-format vector file.

    Args:
        path: the vector file.
        words: vocabulary, in id order.
        dim: expected vector size (a line of another size is an error naming file and line).
        lowercase_fallback: look up ``word.lower()`` when ``word`` itself is missing.

    Returns:
        ``(vectors [len(words), dim], found [len(words)] bool)``; rows not found are zero.
    """
    p = check_file(path)
    index: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        index.setdefault(w, []).append(i)
        if lowercase_fallback and w.lower() != w:
            index.setdefault(w.lower(), [])
    vectors = torch.zeros(len(words), dim)
    found = torch.zeros(len(words), dtype=torch.bool)
    exact = torch.zeros(len(words), dtype=torch.bool)
    lower_ids: dict[str, list[int]] = {}
    if lowercase_fallback:
        for i, w in enumerate(words):
            lower_ids.setdefault(w.lower(), []).append(i)
    for number, line in iter_lines(p):
        parts = line.rstrip().split(" ")
        if number == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
            continue  # word2vec header
        if len(parts) < 2:
            continue
        word, values = parts[0], parts[1:]
        if len(values) != dim:
            raise DataError(
                f"vector of size {len(values)}, expected {dim}",
                path=p,
                line=number,
                hint="set the embedding size to the file's vector size",
            )
        if word not in index and word not in lower_ids:
            continue
        try:
            vec = torch.tensor([float(v) for v in values])
        except ValueError:
            raise DataError(
                "a vector value is not a number",
                path=p,
                line=number,
                hint="use a text-format vector file (word followed by numbers)",
            ) from None
        for i in index.get(word, []):
            vectors[i], found[i], exact[i] = vec, True, True
        for i in lower_ids.get(word, []):
            if not exact[i]:
                vectors[i], found[i] = vec, True
    return vectors, found
