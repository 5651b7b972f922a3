"""Language-model corpora: streaming tokenization to a memory-mapped id file, parallel
streams and BPTT windows.

* :func:`build_vocab_from_file` counts tokens line by line (the file is never loaded whole);
* :func:`tokenize_to_memmap` writes the ids of a text file to a flat binary file plus a
  small JSON sidecar, and returns a :class:`numpy.memmap` over it;
* :func:`batchify` lays a 1-D id sequence out as ``[num_streams, T]`` contiguous streams;
* :class:`BPTTIterator` yields ``(inputs, targets)`` windows of ``bptt`` steps over those
  streams (targets are inputs shifted by one), as :class:`~rnnkit.data.batch.Batch` objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batch import Batch
from .errors import DataError
from .io import PathLike_, check_file, iter_lines
from .vocab import Vocabulary

__all__ = [
    "build_vocab_from_file",
    "tokenize_to_memmap",
    "load_token_memmap",
    "TokenFileInfo",
    "batchify",
    "BPTTIterator",
    "LINE_ENDINGS",
]

logger = logging.getLogger("rnnkit.data")

LINE_ENDINGS = ("eos", "keep", "drop")


def _check_line_ending(line_ending: str) -> None:
    if line_ending not in LINE_ENDINGS:
        raise DataError(
            f"line_ending must be one of {LINE_ENDINGS}, got {line_ending!r}",
            hint="'eos' for word LMs, 'keep' for char LMs",
        )


def _lines(path: Path, line_ending: str, encoding: str, errors: str) -> Iterator[tuple[int, str]]:
    yield from iter_lines(path, encoding=encoding, errors=errors, keepends=line_ending == "keep")


def build_vocab_from_file(
    path: PathLike_,
    tokenize: Callable[[str], Sequence[str]],
    *,
    line_ending: str = "eos",
    encoding: str = "utf-8",
    errors: str = "strict",
    **vocab_options: Any,
) -> Vocabulary:
    """Count the tokens of a text file, streaming line by line, and build a vocabulary.

    Args:
        path: Text file (plain or ``.gz``).
        tokenize: Function from a line to tokens (e.g. ``WordTokenizer(...).tokenize`` or
            ``str.split``).
        line_ending: ``'eos'`` (word LMs: an ``<eos>`` after each line), ``'keep'`` (pass the
            newline to the tokenizer: char LMs) or ``'drop'``.
        encoding: Text encoding.
        errors: Decoding error policy.
        **vocab_options: Passed to :meth:`Vocabulary.from_counts` (``min_freq``,
            ``max_size``, special tokens).

    Returns:
        The vocabulary.
    """
    from collections import Counter

    _check_line_ending(line_ending)
    p = check_file(path)
    counts: Counter[str] = Counter()
    for _, line in _lines(p, line_ending, encoding, errors):
        counts.update(tokenize(line))
    return Vocabulary.from_counts(counts, **vocab_options)


@dataclass(frozen=True)
class TokenFileInfo:
    """Sidecar metadata of a token id file.

    Attributes:
        path: The binary id file.
        dtype: NumPy dtype name of the ids.
        num_tokens: Number of ids.
        num_lines: Lines read from the source.
        source: The source text file.
        vocab_size: Size of the vocabulary used.
        num_unknown: Tokens mapped to ``<unk>``.
    """

    path: str
    dtype: str
    num_tokens: int
    num_lines: int
    source: str
    vocab_size: int
    num_unknown: int


def tokenize_to_memmap(
    path: PathLike_,
    output_path: PathLike_,
    tokenize: Callable[[str], Sequence[str]],
    vocab: Vocabulary,
    *,
    line_ending: str = "eos",
    dtype: str | None = None,
    encoding: str = "utf-8",
    errors: str = "strict",
    chunk_tokens: int = 1 << 20,
) -> np.memmap:
    """Tokenize a text file line by line into a flat binary file of ids and memory-map it.

    Writes ``output_path`` (raw ids) and ``output_path + '.json'`` (a :class:`TokenFileInfo`
    sidecar). Memory use is bounded by ``chunk_tokens``, whatever the file size.

    Args:
        path: Text file (plain or ``.gz``).
        output_path: Where to write the ids.
        tokenize: Function from a line to tokens.
        vocab: Vocabulary mapping tokens to ids.
        line_ending: ``'eos'``, ``'keep'`` or ``'drop'`` (see :func:`build_vocab_from_file`).
        dtype: Id dtype; default ``uint16`` when the vocabulary fits, else ``int32``.
        encoding: Text encoding.
        errors: Decoding error policy.
        chunk_tokens: Ids buffered before each write.

    Returns:
        A read-only ``np.memmap`` of the ids.
    """
    _check_line_ending(line_ending)
    p = check_file(path)
    if line_ending == "eos" and vocab.eos_id is None:
        raise DataError(
            "line_ending='eos' but the vocabulary has no eos token",
            path=p,
            hint="build it with eos_token='<eos>' or use line_ending='drop'",
        )
    if dtype is None:
        dtype = "uint16" if len(vocab) <= np.iinfo(np.uint16).max + 1 else "int32"
    np_dtype = np.dtype(dtype)
    if np_dtype.kind not in "iu" or (len(vocab) - 1) > np.iinfo(np_dtype).max:
        raise DataError(
            f"dtype {dtype} cannot hold ids up to {len(vocab) - 1}", hint="use dtype='int32' or 'int64'"
        )
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    unk = vocab.unk_id
    eos = vocab.eos_id
    buffer: list[int] = []
    total = 0
    num_lines = 0
    num_unknown = 0
    with open(out, "wb") as f:
        for _, line in _lines(p, line_ending, encoding, errors):
            num_lines += 1
            ids = vocab.encode(tokenize(line))
            if unk is not None:
                num_unknown += ids.count(unk)
            buffer.extend(ids)
            if line_ending == "eos":
                buffer.append(eos)  # type: ignore[arg-type]
            if len(buffer) >= chunk_tokens:
                f.write(np.asarray(buffer, dtype=np_dtype).tobytes())
                total += len(buffer)
                buffer.clear()
        if buffer:
            f.write(np.asarray(buffer, dtype=np_dtype).tobytes())
            total += len(buffer)
    if total == 0:
        raise DataError("no tokens in file", path=p, hint="check the file is not empty")
    info = TokenFileInfo(str(out), np_dtype.name, total, num_lines, str(p), len(vocab), num_unknown)
    Path(str(out) + ".json").write_text(json.dumps(info.__dict__, indent=1) + "\n", encoding="utf-8")
    if num_unknown:
        logger.info("%s: %d of %d tokens mapped to %s", p, num_unknown, total, vocab.unk_token)
    return load_token_memmap(out)


def load_token_memmap(path: PathLike_) -> np.memmap:
    """Memory-map an id file written by :func:`tokenize_to_memmap`.

    Args:
        path: The id file (its ``.json`` sidecar must be next to it).

    Returns:
        A read-only 1-D ``np.memmap``.
    """
    p = check_file(path)
    sidecar = Path(str(p) + ".json")
    if not sidecar.is_file():
        raise DataError(
            "missing sidecar file " + sidecar.name, path=p, hint="re-create it with tokenize_to_memmap"
        )
    info = json.loads(sidecar.read_text(encoding="utf-8"))
    expected = info["num_tokens"] * np.dtype(info["dtype"]).itemsize
    if p.stat().st_size != expected:
        raise DataError(
            f"file has {p.stat().st_size} bytes, sidecar expects {expected}",
            path=p,
            hint="the file is truncated or was rewritten: re-create it with tokenize_to_memmap",
        )
    return np.memmap(p, dtype=info["dtype"], mode="r", shape=(info["num_tokens"],))


def batchify(ids: Any, num_streams: int) -> np.ndarray | torch.Tensor:
    """Lay a 1-D id sequence out as ``num_streams`` contiguous parallel streams.

    Stream ``i`` holds ids ``[i*T, (i+1)*T)``; the last ``len % num_streams`` ids are dropped
    (logged). For NumPy input (including a memmap) the result is a view: nothing is loaded.

    Args:
        ids: 1-D NumPy array, memmap, tensor or list.
        num_streams: Number of streams (the LM batch size).

    Returns:
        ``[num_streams, T]`` array (NumPy in, NumPy out) or tensor.
    """
    if num_streams < 1:
        raise DataError(f"num_streams must be >= 1, got {num_streams}", hint="pass the batch size")
    if isinstance(ids, list):
        ids = np.asarray(ids)
    n = int(ids.shape[0]) if hasattr(ids, "shape") else len(ids)
    steps = n // num_streams
    if steps < 2:
        raise DataError(
            f"{n} tokens cannot make {num_streams} streams of at least 2 steps",
            hint="use fewer streams or more data",
        )
    dropped = n - steps * num_streams
    if dropped:
        logger.info(
            "batchify: dropped the last %d of %d tokens to make %d streams of %d",
            dropped,
            n,
            num_streams,
            steps,
        )
    return ids[: steps * num_streams].reshape(num_streams, steps)


class BPTTIterator:
    """Iterate over truncated-backpropagation windows of parallel streams.

    Each item is a :class:`~rnnkit.data.batch.Batch` with ``inputs`` ``[S, L]`` and
    ``targets`` ``[S, L]`` (the next token of each input), int64, ``L = bptt`` except for
    the last window. Only the current window is copied out of a memmap.

    Args:
        streams: ``[num_streams, T]`` array/tensor (see :func:`batchify`).
        bptt: Window length.
    """

    def __init__(self, streams: Any, bptt: int) -> None:
        if bptt < 1:
            raise DataError(f"bptt must be >= 1, got {bptt}", hint="pass a positive window length")
        if getattr(streams, "ndim", 0) != 2:
            raise DataError(
                "streams must be 2-D [num_streams, T]", hint="call batchify(ids, num_streams) first"
            )
        self.streams = streams
        self.bptt = bptt

    def __len__(self) -> int:
        steps = int(self.streams.shape[1]) - 1
        return (steps + self.bptt - 1) // self.bptt

    def window(self, index: int) -> Batch:
        """Return window ``index``.

        Args:
            index: 0-based window index.

        Returns:
            The batch.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        start = index * self.bptt
        length = min(self.bptt, int(self.streams.shape[1]) - 1 - start)
        chunk = self.streams[:, start : start + length + 1]
        if isinstance(chunk, torch.Tensor):
            block = chunk.to(torch.long)
        else:
            block = torch.from_numpy(np.asarray(chunk, dtype=np.int64))
        inputs = block[:, :-1].contiguous()
        targets = block[:, 1:].contiguous()
        s = inputs.shape[0]
        lengths = torch.full((s,), length, dtype=torch.long)
        mask = torch.ones((s, length), dtype=torch.bool)
        return Batch(inputs, targets, lengths, mask, "post", {"start": start})

    def __iter__(self) -> Iterator[Batch]:
        for i in range(len(self)):
            yield self.window(i)
