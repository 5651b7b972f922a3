"""Tests for rnnkit.data.corpus (memmap corpora, batchify, BPTT windows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.data import (
    BPTTIterator,
    CharTokenizer,
    DataError,
    batchify,
    build_vocab_from_file,
    load_token_memmap,
    tokenize_to_memmap,
)

TEXT = " the cat sat on the mat \n the dog sat \n\n a cat ran \n"


def test_word_corpus_to_memmap(tmp_path: Path) -> None:
    src = tmp_path / "train.txt"
    src.write_text(TEXT, encoding="utf-8")
    vocab = build_vocab_from_file(src, str.split, bos_token=None)
    assert vocab.counts["the"] == 3 and "<eos>" in vocab
    ids = tokenize_to_memmap(src, tmp_path / "train.ids", str.split, vocab, chunk_tokens=3)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    expected: list[int] = []
    for line in TEXT.splitlines():
        expected += vocab.encode(line.split(), add_eos=True)
    assert ids.tolist() == expected
    info = json.loads((tmp_path / "train.ids.json").read_text())
    assert info["num_tokens"] == len(expected) and info["num_lines"] == 4 and info["num_unknown"] == 0
    again = load_token_memmap(tmp_path / "train.ids")
    assert again.tolist() == expected


def test_unknown_tokens_and_dtype(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    src.write_text(TEXT, encoding="utf-8")
    vocab = build_vocab_from_file(src, str.split, min_freq=2)
    ids = tokenize_to_memmap(src, tmp_path / "o.ids", str.split, vocab, dtype="int32")
    info = json.loads((tmp_path / "o.ids.json").read_text())
    assert ids.dtype == np.int32 and info["num_unknown"] == int((ids == vocab.unk_id).sum()) > 0
    with pytest.raises(DataError, match="cannot hold ids"):
        tokenize_to_memmap(src, tmp_path / "x.ids", str.split, vocab, dtype="float32")


def test_char_corpus_keeps_newlines(tmp_path: Path) -> None:
    src = tmp_path / "input.txt"
    src.write_text("ab\nba\n", encoding="utf-8")
    tok = CharTokenizer()
    vocab = build_vocab_from_file(src, tok.tokenize, line_ending="keep", bos_token=None, eos_token=None)
    ids = tokenize_to_memmap(src, tmp_path / "c.ids", tok.tokenize, vocab, line_ending="keep")
    assert "".join(vocab.decode(ids.tolist())) == "ab\nba\n"
    with pytest.raises(DataError, match="no eos token"):
        tokenize_to_memmap(src, tmp_path / "d.ids", tok.tokenize, vocab, line_ending="eos")
    with pytest.raises(DataError, match="line_ending"):
        build_vocab_from_file(src, tok.tokenize, line_ending="lf")


def test_memmap_errors(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    src.write_text(TEXT, encoding="utf-8")
    vocab = build_vocab_from_file(src, str.split)
    out = tmp_path / "t.ids"
    tokenize_to_memmap(src, out, str.split, vocab)
    with open(out, "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataError, match="sidecar expects"):
        load_token_memmap(out)
    (tmp_path / "t.ids.json").unlink()
    with pytest.raises(DataError, match="missing sidecar"):
        load_token_memmap(out)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no tokens"):
        tokenize_to_memmap(empty, tmp_path / "e.ids", str.split, vocab, line_ending="drop")


def test_batchify_layout_and_views() -> None:
    ids = np.arange(23)
    streams = batchify(ids, 4)
    assert isinstance(streams, np.ndarray) and streams.shape == (4, 5)
    assert streams[1].tolist() == [5, 6, 7, 8, 9]  # contiguous streams
    assert np.shares_memory(streams, ids)
    t = batchify(torch.arange(10), 2)
    assert isinstance(t, torch.Tensor) and t.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert batchify(list(range(6)), 3).shape == (3, 2)
    with pytest.raises(DataError, match="cannot make"):
        batchify(np.arange(5), 4)
    with pytest.raises(DataError, match="num_streams"):
        batchify(np.arange(5), 0)


def test_bptt_windows_cover_everything(tmp_path: Path) -> None:
    ids = np.arange(41)
    streams = batchify(ids, 4)  # [4, 10]
    it = BPTTIterator(streams, bptt=4)
    windows = list(it)
    assert len(it) == len(windows) == 3  # 9 predictable steps: 4 + 4 + 1
    assert [w.inputs.shape[1] for w in windows] == [4, 4, 1]
    for w in windows:
        assert w.inputs.dtype == torch.int64
        torch.testing.assert_close(w.targets, w.inputs + 1)  # next token
        assert w.mask.all() and w.lengths.tolist() == [w.inputs.shape[1]] * 4
    joined = torch.cat([w.inputs for w in windows], dim=1)
    assert torch.equal(joined, torch.as_tensor(streams[:, :-1]))
    assert windows[1].extras["start"] == 4
    # from a memmap
    path = tmp_path / "ids.bin"
    np.arange(41, dtype=np.uint16).tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    first = BPTTIterator(batchify(mm, 4), 4).window(0)
    torch.testing.assert_close(first.inputs, windows[0].inputs)
    with pytest.raises(IndexError):
        it.window(3)
    with pytest.raises(DataError, match="2-D"):
        BPTTIterator(ids, 4)
    with pytest.raises(DataError, match="bptt"):
        BPTTIterator(streams, 0)
