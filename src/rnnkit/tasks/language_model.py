"""Language modelling and text generation with recurrent networks.

Training is truncated backpropagation through time over a continuous token stream (Zaremba
et al. 2014; Merity et al. 2018, "Regularizing and Optimizing LSTM Language Models"): the corpus
is laid out as ``batch_size`` parallel streams, each window of ``bptt`` steps starts from the
previous window's final state (detached), window lengths can vary randomly (AWD-LSTM, sec. 4.1),
and the state is carried through dev and test streams too. Regularisers: tied input and output
embeddings, embedding dropout (whole words), locked dropout between layers, DropConnect on the
recurrent weights, gradient clipping; averaged SGD as an optimizer option.

Generation runs the step API: the prompt primes the state once, then one step per new token.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import CELLS
from ..nn import recurrent_layer
from ..scan.step_matmul import linear
from .config import (
    LR_DECAY_HELP,
    LR_DECAY_PATIENCE_HELP,
    MAX_MINUTES_HELP,
    PRECISION_HELP,
    ConfigError,
    PrecisionName,
    check_at_least_one,
    check_batch,
    check_cell,
    check_early_stopping_and_clipping,
    check_lr_decay,
    check_max_minutes,
    check_precision,
    check_rates,
    option,
    seconds_budget,
    section,
)
from .run import RunDir, RunError

NAME = "language-model"
CONFIG_KEYS: dict[str, str] = {}  # no reader argument of this task is a config key
DESCRIPTION = "Character-, word- or subword-level language models (TBPTT) and text generation"
UNK_NOTE_SHARE = 0.05  # a larger share of <unk> among the dev tokens is noted next to the perplexity
Hidden = Any


@dataclass
class DataConfig:
    level: Literal["word", "char", "subword"] = option("word", "token unit")
    lowercase: bool = option(False, "lowercase the text")
    min_freq: int = option(1, "minimum count for the vocabulary (word/char)")
    vocab_size: int = option(50000, "maximum vocabulary size (subword: the trained size)")
    line_ending: Literal["auto", "eos", "keep", "drop"] = option(
        "auto", "line breaks: eos adds <eos>, keep passes the newline on as a token (char models only), drop ignores "
        "them; auto: keep for char models, eos otherwise")
    dev_fraction: float = option(0.05, "tail of the training file held out as dev when --dev is not given")


@dataclass
class ModelConfig:
    cell: str = option("lstm", f"recurrent cell: {', '.join(sorted(CELLS))}")
    embedding_dim: int = option(200, "token embedding size")
    hidden_size: int = option(200, "hidden units per layer")
    num_layers: int = option(2, "stacked layers")
    tie_weights: bool = option(True, "share the input embedding with the output layer (Press and Wolf 2017)")
    dropout: float = option(0.2, "locked dropout on embeddings, between layers and on the output")
    embedding_dropout: float = option(0.0, "drop whole words from the embedding matrix (Gal and Ghahramani 2016)")
    weight_drop: float = option(0.0, "DropConnect on the recurrent weights W_hh (Wan et al. 2013)")
    softmax: Literal["full", "adaptive"] = option(
        "full", "output layer: full softmax, or adaptive softmax (Grave et al. 2017: frequent tokens in a small head, "
        "rare ones in tail clusters with smaller projections; pays off for large vocabularies; needs tie_weights=false)")
    adaptive_cutoffs: list[int] = option([], "adaptive softmax cluster boundaries as vocabulary ranks, increasing "
                                             "(empty: about 20% and 50% of the vocabulary)")


@dataclass
class TrainConfig:
    epochs: int = option(10, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(20, "parallel streams")
    bptt: int = option(35, "window length for truncated backpropagation")
    variable_bptt: bool = option(False, "random window lengths around bptt (AWD-LSTM)")
    learning_rate: float = option(1e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop", "asgd"] = option(
        "adam", "optimizer (asgd: plain SGD whose weights are averaged once dev stops improving)")
    lr_decay: float | None = option(None, LR_DECAY_HELP)
    lr_decay_patience: int = option(1, LR_DECAY_PATIENCE_HELP)
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(0.25, "gradient norm clipping (null: none)")
    patience: int | None = option(2, "early-stopping patience on dev perplexity (null: never)")
    seed: int = option(0, "random seed")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "corpus and tokens")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "optimisation")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        check_cell(self.model.cell)
        check_at_least_one(("model.embedding_dim", self.model.embedding_dim), ("model.hidden_size", self.model.hidden_size),
                           ("model.num_layers", self.model.num_layers), ("train.bptt", self.train.bptt),
                           ("train.batch_size", self.train.batch_size), ("train.epochs", self.train.epochs))
        check_rates(("model.dropout", self.model.dropout), ("model.embedding_dropout", self.model.embedding_dropout),
                          ("model.weight_drop", self.model.weight_drop))
        check_lr_decay(self.train.lr_decay, self.train.lr_decay_patience)
        if not self.train.learning_rate > 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.train.learning_rate}")
        check_early_stopping_and_clipping(self.train.patience, self.train.clip_norm, self.train.weight_decay)
        if self.data.min_freq < 1:
            raise ConfigError(f"data.min_freq: must be >= 1, got {self.data.min_freq}; fix: --set data.min_freq=1 "
                              "keeps every token")
        if self.data.vocab_size < 3:
            raise ConfigError(f"data.vocab_size: must be >= 3 (<unk>, <eos> and at least one token of the corpus), "
                              f"got {self.data.vocab_size}; fix: --set data.vocab_size=10000")
        if not 0 < self.data.dev_fraction < 1:
            raise ConfigError(f"data.dev_fraction: must be between 0 and 1 (exclusive), got {self.data.dev_fraction}; "
                              "fix: --set data.dev_fraction=0.05, or give a dev file with --dev")
        if self.data.line_ending == "keep" and self.data.level != "char":
            # word tokens never hold a newline (it vanished), subword ones read it as <unk>
            raise ConfigError(f"data.line_ending=keep passes the newline character on as a token, which only "
                              f"character models have (a {self.data.level} model would lose its line breaks); "
                              "fix: --set data.line_ending=eos (an <eos> token per line) or drop")
        if self.model.softmax == "adaptive" and self.model.tie_weights:
            raise ConfigError("model.softmax=adaptive cannot share the embedding with the output layer; "
                              "add --set model.tie_weights=false")
        if self.model.adaptive_cutoffs and self.model.softmax != "adaptive":
            raise ConfigError("model.adaptive_cutoffs is set but model.softmax is full; "
                              "add --set model.softmax=adaptive or drop the cutoffs")


def default_cutoffs(vocab_size: int) -> list[int]:
    """Adaptive softmax cutoffs at about 20% and 50% of a frequency-sorted vocabulary."""
    return sorted({c for c in (round(vocab_size * 0.2), round(vocab_size * 0.5)) if 0 < c < vocab_size - 1})


def check_cutoffs(cutoffs: Sequence[int], vocab_size: int) -> list[int]:
    """Validated adaptive softmax cutoffs (increasing ranks strictly inside the vocabulary)."""
    cuts = list(cutoffs) or default_cutoffs(vocab_size)
    if not cuts:
        raise ConfigError(f"a vocabulary of {vocab_size} tokens is too small to split for an adaptive softmax; "
                          "use --set model.softmax=full")
    if any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)) or cuts[0] <= 0 or cuts[-1] >= vocab_size - 1:
        raise ConfigError(f"model.adaptive_cutoffs: {cuts} must increase strictly and lie between 1 and "
                          f"{vocab_size - 2} (the vocabulary has {vocab_size} tokens); e.g. "
                          f"{','.join(map(str, default_cutoffs(vocab_size)))}")
    return cuts


# -- model -------------------------------------------------------------------------------------
def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """One dropout mask per stream, shared by every time step (``x`` is ``[B, T, F]``)."""
    if not training or p == 0:
        return x
    return x * torch.bernoulli(x.new_full((x.shape[0], 1, x.shape[2]), 1 - p)) / (1 - p)


def detach_state(state: Hidden) -> Hidden:
    if state is None:
        return None
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    return state.detach()


class RNNLanguageModel(nn.Module):
    """Embedding -> stacked recurrent layers (locked dropout between) -> softmax over the vocabulary.

    ``forward(ids [B, T], state)`` returns ``(scores [B, T, V], state)``: logits for the full softmax,
    log-probabilities for the adaptive one (either way ``softmax(scores)`` is the next-token
    distribution). ``nll(ids, targets, state)`` is the summed negative log-likelihood, computed by the
    adaptive softmax without the full ``[B, T, V]`` scores. ``step(ids [B], state)`` advances one token.
    """

    def __init__(self, vocab_size: int, *, embedding_dim: int = 200, hidden_size: int = 200, num_layers: int = 2,
                 cell: str = "lstm", tie_weights: bool = True, dropout: float = 0.2, embedding_dropout: float = 0.0,
                 weight_drop: float = 0.0, softmax: str = "full", adaptive_cutoffs: Sequence[int] = ()) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.layers = nn.ModuleList(
            recurrent_layer(cell, embedding_dim if k == 0 else hidden_size, hidden_size) for k in range(num_layers))
        self.project = nn.Linear(hidden_size, embedding_dim) if tie_weights and hidden_size != embedding_dim else None
        features = embedding_dim if tie_weights else hidden_size
        self.decoder: nn.Linear | None = None
        self.adaptive: nn.AdaptiveLogSoftmaxWithLoss | None = None
        if softmax == "adaptive":
            if tie_weights:
                raise ValueError("the adaptive softmax cannot be tied to the embedding; pass tie_weights=False")
            cutoffs = check_cutoffs(adaptive_cutoffs, vocab_size)
            # tail projections shrink by div_value per cluster; keep the smallest at least one unit wide
            div = min(4.0, features ** (1 / len(cutoffs)))
            if int(features // (div ** len(cutoffs))) < 1:
                div = 1.0
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(features, vocab_size, cutoffs, div_value=div)
        elif softmax == "full":
            self.decoder = nn.Linear(features, vocab_size)
            if tie_weights:
                self.decoder.weight = self.embedding.weight
            nn.init.zeros_(self.decoder.bias)
        else:
            raise ValueError(f"softmax must be 'full' or 'adaptive', got {softmax!r}")
        self.dropout, self.embedding_dropout, self.weight_drop = dropout, embedding_dropout, weight_drop
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def _embed(self, ids: Tensor) -> Tensor:
        weight = self.embedding.weight
        if self.training and self.embedding_dropout:
            keep = 1 - self.embedding_dropout
            weight = weight * torch.bernoulli(weight.new_full((weight.shape[0], 1), keep)) / keep
        return F.embedding(ids, weight)

    def _run_layer(self, layer: nn.Module, x: Tensor, state: Hidden) -> tuple[Tensor, Hidden]:
        if not (self.training and self.weight_drop):
            return layer(x, state)
        dropped = {name: F.dropout(p, self.weight_drop, training=True)
                   for name, p in layer.named_parameters() if name.startswith("weight_hh")}
        return torch.func.functional_call(layer, dropped, (x, state), strict=False)

    def features(self, ids: Tensor, state: list[Hidden] | None = None) -> tuple[Tensor, list[Hidden]]:
        """The output layer's input ``[B, T, D]`` and the new state of every layer."""
        x = locked_dropout(self._embed(ids), self.dropout, self.training)  # [B, T, E]
        states = state if state is not None else [None] * len(self.layers)
        new_states = []
        for k, layer in enumerate(self.layers):
            x, s = self._run_layer(layer, x, states[k])
            new_states.append(s)
            x = locked_dropout(x, self.dropout, self.training)  # [B, T, H]
        if self.project is not None:
            x = self.project(x)
        return x, new_states

    def scores(self, x: Tensor) -> Tensor:
        """Next-token scores ``[..., V]`` from features ``[..., D]`` (logits, or log-probabilities)."""
        if self.adaptive is not None:
            return self.adaptive.log_prob(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        assert self.decoder is not None
        return linear(x, self.decoder.weight, self.decoder.bias)

    def forward(self, ids: Tensor, state: list[Hidden] | None = None) -> tuple[Tensor, list[Hidden]]:
        x, new_states = self.features(ids, state)
        return self.scores(x), new_states  # [B, T, V]

    def nll(self, ids: Tensor, targets: Tensor, state: list[Hidden] | None = None) -> tuple[Tensor, list[Hidden]]:
        """Summed negative log-likelihood (nats) of ``targets [B, T]`` after ``ids [B, T]``, and the new state."""
        x, new_states = self.features(ids, state)
        flat = x.reshape(-1, x.shape[-1])
        if self.adaptive is not None:
            return -self.adaptive(flat, targets.reshape(-1)).output.sum(), new_states
        assert self.decoder is not None
        # the output layer's products (most of a step's work at V=10k) on the faster GEMM (rnnkit.scan.step_matmul)
        logits = linear(flat, self.decoder.weight, self.decoder.bias)
        return F.cross_entropy(logits, targets.reshape(-1), reduction="sum"), new_states

    def step(self, ids: Tensor, state: list[Hidden] | None) -> tuple[Tensor, list[Hidden]]:
        """One generation step: ``ids`` ``[B]`` -> logits ``[B, V]``; every layer advances with ``step``."""
        x = self._embed(ids)
        states = state if state is not None else [None] * len(self.layers)
        new_states = []
        for k, layer in enumerate(self.layers):
            x, s = layer.step(x, states[k])  # type: ignore[operator]
            new_states.append(s)
        if self.project is not None:
            x = self.project(x)
        return self.scores(x), new_states


# -- sampling ----------------------------------------------------------------------------------
def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits (ties at the k-th value kept), the rest to ``-inf``."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``
    (tokens tied with the least likely one kept are kept too, as in :func:`top_k_filter`)."""
    if p >= 1.0:
        return logits
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability mass strictly above each token
    keep_sorted = before < p  # a token is kept while the mass above it is still short of p
    # the least likely kept logit: every token at or above it stays (equal logits are kept or dropped together,
    # not by the order sort happened to put them in)
    lowest = sorted_logits.masked_fill(~keep_sorted, float("inf")).amin(-1, keepdim=True)
    return logits.masked_fill(logits < lowest, float("-inf"))


# -- data --------------------------------------------------------------------------------------
def make_tokenizer(cfg: DataConfig, corpus: Path | None = None) -> Any:
    from ..data.tokenizers import CharTokenizer, SubwordTokenizer, WordTokenizer

    if cfg.level == "char":
        return CharTokenizer(lowercase=cfg.lowercase)
    if cfg.level == "word":
        return WordTokenizer(pattern=None, lowercase=cfg.lowercase, normalization=None)
    assert corpus is not None
    from ..data.io import iter_lines

    return SubwordTokenizer.train((line for _, line in iter_lines(corpus)), vocab_size=cfg.vocab_size,
                                  lowercase=cfg.lowercase)


class Preprocessor:
    def __init__(self, tokenizer: Any, vocab: Any, cfg: DataConfig) -> None:
        self.tokenizer, self.vocab, self.cfg = tokenizer, vocab, cfg
        self.line_ending = cfg.line_ending if cfg.line_ending != "auto" else ("keep" if cfg.level == "char" else "eos")

    @classmethod
    def fit(cls, path: Path, cfg: DataConfig) -> Preprocessor:
        from ..data.corpus import build_vocab_from_file

        tokenizer = make_tokenizer(cfg, path)
        line_ending = cfg.line_ending if cfg.line_ending != "auto" else ("keep" if cfg.level == "char" else "eos")
        vocab = build_vocab_from_file(path, tokenizer.tokenize, line_ending=line_ending, min_freq=cfg.min_freq,
                                      max_size=cfg.vocab_size, pad_token=None, bos_token=None)
        return cls(tokenizer, vocab, cfg)

    def ids_of_file(self, path: Path, out: Path) -> np.ndarray:
        from ..data.corpus import tokenize_to_memmap

        ids = tokenize_to_memmap(path, out, self.tokenizer.tokenize, self.vocab, line_ending=self.line_ending)
        if len(ids) < 2:
            raise ConfigError(f"{path}: the text holds {len(ids)} token(s); a language model needs at least 2 "
                              "(one to read, one to predict); fix: give a longer text")
        return ids

    def encode_prompt(self, text: str) -> tuple[list[int], list[str]]:
        """Ids of a prompt and the tokens that are not in the vocabulary (mapped to <unk>). Line breaks
        are read as in the training file: ``<eos>`` (line_ending eos), the newline token (keep) or nothing (drop)."""
        lines = [text] if self.line_ending == "keep" else [line.rstrip("\r") for line in text.split("\n")]
        ids: list[int] = []
        unknown: set[str] = set()
        for k, line in enumerate(lines):
            if k and self.line_ending == "eos":
                ids.append(self.vocab.eos_id)
            tokens = self.tokenizer.tokenize(line)
            unknown.update(t for t in tokens if t not in self.vocab)
            ids += [self.vocab.token_to_id(t) for t in tokens]
        return ids, sorted(unknown)

    def save(self, run: RunDir) -> None:
        self.tokenizer.save(run.file("tokenizer.json"))
        self.vocab.save(run.file("vocab.json"))
        run.write_json("preprocessing.json", {"data": asdict(self.cfg)})

    @classmethod
    def load(cls, run: RunDir) -> Preprocessor:
        from ..data.serialization import load_transform
        from ..data.vocab import Vocabulary

        meta = run.read_json("preprocessing.json")
        try:
            cfg = DataConfig(**meta["data"])
            if cfg.level not in ("word", "char", "subword") or cfg.line_ending not in ("auto", "eos", "keep", "drop"):
                raise ValueError(f"data.level={cfg.level!r}, data.line_ending={cfg.line_ending!r}")
        except (KeyError, TypeError, ValueError) as err:
            detail = f"no {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
            raise RunError(f"{run.file('preprocessing.json')} is corrupt or from another rnnkit version ({detail}); "
                           "train again") from None
        try:
            tokenizer = load_transform(run.file("tokenizer.json"))
            vocab = Vocabulary.load(run.file("vocab.json"))
        except Exception as err:
            raise RunError(f"run folder {run.path}: tokenizer or vocabulary missing or corrupt ({err}); train again") from None
        return cls(tokenizer, vocab, cfg)


def text_file(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it is a file; else a one-line error naming the problem and the fix."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise FileNotFoundError(f"data file {what}: {p}; fix: give the path of a text file (relative paths start "
                                f"at {Path.cwd()})")
    return p


def split_dev_tail(path: Path, fraction: float, head: Path, tail: Path) -> int:
    """Copy ``path`` to ``head`` (training part) and ``tail`` (its last ``fraction``, the dev stream),
    so that the vocabulary and a subword model are fitted on the training part only.

    Whole lines are held out (at least one); a file of a single line is cut inside it, at the first
    space at or after the cut point (or the last one before it; any character if there is none).

    Returns:
        The number of lines held out (0 when a single line was cut).
    """
    from ..data.errors import DataError
    from ..data.io import iter_lines

    lines = sum(1 for _ in iter_lines(path, keepends=True))  # decoding errors name the file and line here
    if lines == 0:
        raise DataError("no tokens in file", path=str(path), hint="check the file is not empty")
    if lines == 1:
        text = next(iter(iter_lines(path, keepends=True)))[1]
        cut = int(len(text.rstrip("\r\n")) * (1 - fraction))
        at = text.find(" ", cut)
        at = at if at > 0 else text.rfind(" ", 0, cut)
        at = at if at > 0 else cut
        head.write_text(text[:at], encoding="utf-8")
        tail.write_text(text[at:], encoding="utf-8")
        return 0
    held = min(lines - 1, max(1, round(lines * fraction)))
    with head.open("w", encoding="utf-8") as h, tail.open("w", encoding="utf-8") as t:
        for number, text in iter_lines(path, keepends=True):
            (h if number <= lines - held else t).write(text)
    return held


class StreamWindows(torch.utils.data.IterableDataset):
    """TBPTT windows over ``[S, T]`` streams in order; with ``variable`` the lengths vary per epoch
    (AWD-LSTM: ``bptt``, or ``bptt / 2`` one time in twenty, plus normal noise of standard deviation
    5; at least 5 steps, or ``bptt`` when that is shorter)."""

    def __init__(self, streams: np.ndarray, bptt: int, *, variable: bool = False, seed: int = 0) -> None:
        self.streams, self.bptt, self.variable, self.seed, self.epoch = streams, bptt, variable, seed, 0

    def bounds(self) -> list[tuple[int, int]]:
        total = self.streams.shape[1] - 1
        rng = random.Random(self.seed + self.epoch)
        out, start = [], 0
        while start < total:
            length = self.bptt
            if self.variable:
                base = self.bptt if rng.random() < 0.95 else self.bptt / 2
                length = max(min(5, self.bptt), int(rng.gauss(base, 5)))
            length = min(length, total - start)
            out.append((start, length))
            start += length
        return out

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, int]]:
        for start, length in self.bounds():
            block = torch.from_numpy(np.asarray(self.streams[:, start:start + length + 1], dtype=np.int64))
            yield block[:, :-1], block[:, 1:], start
        self.epoch += 1


def _loader(streams: np.ndarray, bptt: int, variable: bool, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(StreamWindows(streams, bptt, variable=variable, seed=seed), batch_size=None,
                                       generator=torch.Generator().manual_seed(seed))  # off the global random state


def stream_nll(model: RNNLanguageModel, ids: np.ndarray, *, batch_size: int = 1, bptt: int = 70) -> tuple[float, int]:
    """Total negative log-likelihood (nats) and token count of a stream, state carried throughout.

    With ``batch_size`` 1 every token after the first is a target, and the result does not depend on
    ``bptt`` (the state flows from window to window). With ``batch_size`` S > 1 the ids are cut into S
    contiguous streams (:func:`rnnkit.data.corpus.batchify`): each starts from a fresh state, its first
    token is not scored, and the last ``len(ids) % S`` ids are dropped, so the count is lower and the
    figure usually a little higher than at batch size 1."""
    from ..data.corpus import batchify

    streams = batchify(np.asarray(ids), batch_size)
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for inputs, targets, _ in StreamWindows(streams, bptt):  # type: ignore[arg-type]
            nll, state = model.nll(inputs, targets, state)
            total += float(nll)
            count += targets.numel()
    return total, count


def lm_metrics(nll: float, count: int, level: str, chars: int | None = None) -> dict[str, float]:
    """Cross-entropy per token, perplexity, and bits per character for character models.

    With no token scored (``count`` 0) every figure is undefined and reads NaN (not the perfect
    perplexity 1 that ``0 / max(count, 1)`` would give)."""
    ce = nll / count if count > 0 else math.nan
    # exp overflows a float past 709.78 nats: a model that far gone reads inf (it was capped at e^50 before)
    out = {"cross_entropy": ce, "perplexity": math.inf if ce >= 709.0 else math.exp(ce), "tokens": int(count)}
    if level == "char":
        out["bits_per_character"] = ce / math.log(2)
    return out


# -- trained model -----------------------------------------------------------------------------
class TrainedLanguageModel:
    """A language model with its tokenizer: score text files, generate text."""

    def __init__(self, model: RNNLanguageModel, prep: Preprocessor, bptt: int = 35) -> None:
        self.model, self.prep, self.bptt = model.eval(), prep, bptt

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedLanguageModel:
        import yaml

        run, meta = RunDir.open_task(run_dir, NAME)
        prep = Preprocessor.load(run)
        model = run.build_model(meta, lambda hyper: RNNLanguageModel(**hyper))  # budget: model.safetensors' size
        # vocab.json and model.json must describe one model: an id past the embedding would crash scoring
        if len(prep.vocab) != model.embedding.num_embeddings:
            raise RunError(f"run folder {run.path}: vocab.json holds {len(prep.vocab)} tokens but the model in "
                           f"model.json has {model.embedding.num_embeddings}; the run folder was mixed up or edited, "
                           "train again")
        train = (yaml.safe_load(run.file("config.yaml").read_text(encoding="utf-8")) or {}).get("train", {})
        bptt = train.get("bptt", TrainConfig().bptt) if isinstance(train, dict) else None
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise RunError(f"{run.file('config.yaml')}: train.bptt must be a whole number >= 1, got {bptt!r}; "
                           "restore the file or train again")
        return cls(run.load_into(model), prep, bptt)  # type: ignore[arg-type]

    def diagnostic_batch(self, path: str | Path, size: int = 32) -> tuple[nn.Module, Any, Callable[[nn.Module, Any], Tensor]]:
        """``(model, (inputs, targets), loss_fn)`` for :func:`rnnkit.insight.gradient_diagnostics`: the
        first window of ``train.bptt`` tokens of ``size`` parallel streams of ``path`` (as in training);
        the loss is the mean negative log-likelihood of every next token."""
        import tempfile

        from ..data.corpus import batchify

        p = text_file(path)
        with tempfile.TemporaryDirectory() as tmp:
            ids = np.array(self.prep.ids_of_file(p, Path(tmp) / "ids.bin"), dtype=np.int64)
        streams = min(size, max(1, (len(ids) - 1) // 2))
        grid = np.asarray(batchify(ids, streams))
        length = min(self.bptt, grid.shape[1] - 1)
        if length < 1:
            raise ValueError(f"{path}: too few tokens for a window of 2")
        block = torch.from_numpy(np.ascontiguousarray(grid[:, : length + 1]))

        def loss_fn(m: nn.Module, b: Any) -> Tensor:
            inputs, targets = b
            nll, _ = m.nll(inputs, targets)  # type: ignore[operator]
            return nll / targets.numel()

        return self.model, (block[:, :-1], block[:, 1:]), loss_fn

    def evaluate(self, path: str | Path, overrides: Sequence[str] = (), batch_size: int = 1) -> dict[str, Any]:
        """Perplexity (and bits per character) of a text file: exp of the mean negative log-likelihood of
        every token after the first (``tokens`` counts them), the state carried through the whole file.
        ``batch_size`` > 1 is faster but scores slightly fewer tokens (see :func:`stream_nll`). Tokens
        outside the vocabulary are scored as ``<unk>``; ``notes`` says how many there were, if any."""
        import tempfile

        if overrides:
            raise ConfigError(f"evaluate --set {overrides[0]}: a language-model run reads text as at training "
                              "(tokenization, lowercasing and line endings are fixed); drop --set")
        p = text_file(path)
        if not has_text(p):  # as training refuses such a dev file
            raise ConfigError(f"{p}: the text is empty or only blank lines, so its perplexity would only say how well a line "
                              "break follows a line break; fix: give a file with text")
        with tempfile.TemporaryDirectory() as tmp:
            ids = self.prep.ids_of_file(p, Path(tmp) / "ids.bin")
            nll, count = stream_nll(self.model, ids, batch_size=batch_size)
            unknown = int((np.asarray(ids) == self.prep.vocab.unk_id).sum())
        metrics: dict[str, Any] = lm_metrics(nll, count, self.prep.cfg.level)
        if unknown:
            metrics["notes"] = [f"{unknown:,} of the {len(ids):,} tokens of {p.name} were read as <unk> (outside the "
                                "vocabulary, or <unk> in the text); perplexities compare only between models with "
                                "the same vocabulary"]
        return metrics

    def generate(self, prompt: str = "", *, length: int = 200, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, greedy: bool = False, seed: int | None = None, stop: str | None = None,
                 on_token: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Sample a continuation of ``prompt`` one token at a time with carried state.

        ``<unk>`` is never sampled (it stands for many words, not one), nor is ``<eos>`` in a model
        whose text has no ``<eos>`` (``line_ending`` keep or drop). An empty prompt starts from a
        line break: ``<eos>`` (word and subword models) or the newline character (character models).

        Args:
            prompt: text that primes the state, read as a line of the training file (unknown tokens become
                <unk> and are reported; a line break is read as in the file, see ``data.line_ending``).
            length: maximum new tokens (>= 0).
            temperature: softmax temperature (> 0 and finite; for the most likely token every time use ``greedy``).
            top_k: keep the k most likely tokens (0: all; more than the vocabulary: all; ties with the k-th kept).
            top_p: nucleus sampling threshold in (0, 1] (1: off): the smallest set of most likely tokens whose
                probability, after ``temperature`` and ``top_k``, reaches ``top_p`` (ties with its least likely
                token kept).
            greedy: always take the most likely token (``temperature``, ``top_k``, ``top_p`` do not matter).
            seed: fixes the sampling for reproducible output (a 64-bit integer).
            stop: stop after this token (a token of the vocabulary; "": never stop). Default: ``<eos>``
                for word and subword models, none for character models.
            on_token: called with each new token's text (streaming output).

        Returns:
            ``prompt``, ``text`` (the new tokens as text, :func:`render_tokens`: characters
            concatenated, words space-separated, subwords detokenized, ``<eos>`` a line break),
            ``tokens`` (the stop token included) and ``unknown_prompt_tokens``.
        """
        if not 0 < temperature < math.inf:
            raise ValueError(f"temperature must be > 0 and finite, got {temperature}; fix: for the most likely token "
                             "at every step use greedy decoding (--greedy) instead of temperature 0")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}; fix: 1 turns nucleus sampling off")
        if length < 0:
            raise ValueError(f"length must be >= 0 new tokens, got {length}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}; fix: 0 keeps every token")
        if seed is not None and not -(2 ** 63) <= seed < 2 ** 64:
            raise ValueError(f"seed must fit in 64 bits (e.g. 0 to {2 ** 64 - 1}), got {seed}")
        vocab, level = self.prep.vocab, self.prep.cfg.level
        banned = self._never_sampled()
        stop_id = self._stop_id(stop)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        ids, unknown = self.prep.encode_prompt(prompt)
        unigram = None
        if not ids:
            start = "\n" if self.prep.line_ending == "keep" and "\n" in vocab else None
            if start is None and self.prep.line_ending == "drop":
                # no token ever marked where a text starts (<eos> never trained): draw the first token by
                # its training frequency, p(x_1) as the corpus gives it, then go on from a fresh state
                unigram = self._unigram_scores()
            if unigram is None:
                ids = [vocab.token_to_id(start) if start is not None else vocab.eos_id if vocab.eos_id is not None
                       else 0]
        out_tokens: list[str] = []
        with torch.no_grad():
            # prime the state with the whole prompt once; only the last position needs scores (a long
            # prompt would otherwise hold [T, V] of them)
            state: list[Any] | None = None
            if unigram is None:
                x, state = self.model.features(torch.tensor([ids]), None)
                last = self.model.scores(x[0, -1])
            else:
                last = unigram
            for _ in range(length):
                scores = last.clone()
                scores[banned] = float("-inf")
                if greedy:
                    token = int(scores.argmax())
                else:
                    # shifted so the best token is 0, in float64: a tiny temperature gives 0 and -inf, not nan
                    scores = (scores - scores.max()).double() / temperature
                    scores = top_p_filter(top_k_filter(scores, top_k), top_p)
                    token = int(torch.multinomial(scores.softmax(-1), 1, generator=generator))
                text = vocab.id_to_token(token)
                out_tokens.append(text)
                if on_token is not None:
                    on_token(text)
                if token == stop_id:
                    break
                step_logits, state = self.model.step(torch.tensor([token]), state)
                last = step_logits[0]
        text = render_tokens(out_tokens, level, vocab.specials)
        return {"prompt": prompt, "text": text, "tokens": out_tokens, "unknown_prompt_tokens": unknown}

    def _unigram_scores(self) -> Tensor | None:
        """Log training frequencies of the vocabulary's tokens (``-inf`` for those never counted);
        ``None`` when the vocabulary kept no counts."""
        vocab = self.prep.vocab
        if not vocab.counts:
            return None
        counts = torch.tensor([float(vocab.counts.get(t, 0)) for t in vocab], dtype=torch.float64)
        return counts.log().float() if bool((counts > 0).any()) else None

    def _never_sampled(self) -> list[int]:
        """Ids generation never samples: ``<unk>``, padding and ``<bos>``, and ``<eos>`` in a model whose text
        has none (``line_ending`` keep or drop); none in a vocabulary of special tokens only."""
        vocab = self.prep.vocab
        banned = [i for i in (vocab.unk_id, vocab.pad_id, vocab.bos_id) if i is not None]
        if vocab.eos_id is not None and self.prep.line_ending != "eos":
            banned.append(vocab.eos_id)
        return [] if len(banned) >= len(vocab) else banned  # special tokens only: nothing else to sample

    def _stop_id(self, stop: str | None) -> int | None:
        """The id generation stops at: ``stop`` (checked against the vocabulary), or the default."""
        vocab = self.prep.vocab
        if stop is None:
            return vocab.eos_id if self.prep.cfg.level != "char" and self.prep.line_ending == "eos" else None
        if stop == "":
            return None
        if stop == vocab.unk_token:
            raise ValueError(f"stop token {stop!r} is never generated (it stands for every token outside the "
                             "vocabulary), so generation could never stop at it; fix: give a token of the vocabulary, "
                             "or '' to never stop")
        for token in (stop, stop.lower(), "\u2581" + stop, "\u2581" + stop.lower()):  # subword pieces start with ▁
            if token in vocab and token != vocab.unk_token:
                if vocab.token_to_id(token) in self._never_sampled():
                    raise ValueError(f"stop token {stop!r} is never generated by this model (its text has no "
                                     f"{token!r}: data.line_ending={self.prep.line_ending}), so generation could "
                                     "never stop at it; fix: give another token of the vocabulary, or '' to never stop")
                return vocab.token_to_id(token)
        example = next((vocab.id_to_token(i) for i in range(len(vocab.specials), len(vocab))), "")
        raise ValueError(f"stop token {stop!r} is not in the vocabulary, so generation could never stop at it; fix: "
                         f"give a token of the model (e.g. {example!r}), or '' to never stop")

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """Generation with default settings for each prompt (seed 0)."""
        check_batch(inputs, "prompts")
        return [self.generate(p, length=50, seed=0) for p in inputs]


# -- training ----------------------------------------------------------------------------------
def has_text(path: Path) -> bool:
    """Whether ``path`` holds a line that is not blank (read up to the first one)."""
    from ..data.io import iter_lines

    return any(line.strip() for _, line in iter_lines(path))


def unk_causes(prep: Preprocessor, train_file: Path, dev_file: Path) -> Counter[str]:
    """Why the dev tokens read as ``<unk>`` do: ``"text"``, the text itself holds ``<unk>`` (a corpus
    preprocessed with a fixed vocabulary, as PTB is); ``"cut"``, the token occurs in the training
    text but ``data.min_freq`` or ``data.vocab_size`` left it out of the vocabulary; ``"unseen"``, it
    never occurs in the training text (only more training text helps)."""
    from ..data.io import iter_lines

    unk = prep.vocab.unk_token
    training: set[str] = set()
    for _, line in iter_lines(train_file):
        training.update(prep.tokenizer.tokenize(line))
    causes: Counter[str] = Counter()
    for _, line in iter_lines(dev_file):
        for token in prep.tokenizer.tokenize(line):
            if token == unk:
                causes["text"] += 1
            elif token not in prep.vocab:
                causes["cut" if token in training else "unseen"] += 1
    return causes


def unk_note(share: float, causes: Counter[str], vocab_size: int) -> str:
    """The training note on a dev stream with more than :data:`UNK_NOTE_SHARE` ``<unk>``: how many
    of them each cause of :func:`unk_causes` gave, and the setting that helps only where one does
    (``data.vocab_size``/``data.min_freq`` only for tokens they cut out of the vocabulary)."""
    parts = [f"{causes[key]:,} {what}" for key, what in (
        ("text", "are <unk> in the text itself"),
        ("cut", "were left out of the vocabulary by data.min_freq or data.vocab_size"),
        ("unseen", "never occur in the training text")) if causes[key]]
    fix = {"cut": "raise data.vocab_size or lower data.min_freq", "unseen": "train on more text"}
    fixes = [fix[key] for key in ("cut", "unseen") if causes[key]]
    return (f"{share:.1%} of the dev tokens are <unk> (vocabulary of {vocab_size:,}: {'; '.join(parts)}); <unk> "
            "stands for many tokens and is easy to predict, so the perplexity flatters the model and compares only "
            "with models of the same vocabulary" + (f"; fix: {' or '.join(fixes)}" if fixes else ""))


def dev_metrics(config: Config) -> dict[str, str | None]:
    """Every quality metric ``train`` reports under ``metrics["dev"]`` for ``config``, with its
    direction: ``"max"`` (higher is better), ``"min"`` (lower is better) or ``None`` (no better
    direction). Counts and speeds are left out. ``rnnkit compare`` reads it."""
    out: dict[str, str | None] = {"perplexity": "min", "cross_entropy": "min"}
    if config.data.level == "char":
        out["bits_per_character"] = "min"
    return out


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: perplexity, the one that selects the best epoch."""
    return "perplexity"


def train(config: Config, train_path: str | Path, dev_path: str | Path | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    from ..data.corpus import batchify
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import markdown_table, plot_learning_curves

    cfg, t0 = config, time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    train_file = text_file(train_path)
    cache = run.file("cache")
    cache.mkdir(exist_ok=True)
    fit_file = train_file
    if dev_path is None:  # hold the tail out before the vocabulary (or subword model) sees any of it
        fit_file, dev_file = cache / "train.txt", cache / "dev.txt"
        held = split_dev_tail(train_file, cfg.data.dev_fraction, fit_file, dev_file)
    prep = Preprocessor.fit(fit_file, cfg.data)
    if len(prep.vocab) <= len(prep.vocab.specials):
        from ..data.io import iter_lines

        if not any(prep.tokenizer.tokenize(line) for _, line in iter_lines(fit_file)):
            raise ConfigError(f"{train_file}: the text has no tokens, only blank lines; fix: give a text file")
        raise ConfigError(f"{train_file}: no token of the corpus is in the vocabulary (data.min_freq={cfg.data.min_freq}, "
                          f"data.vocab_size={cfg.data.vocab_size}), so every token would be <unk>; fix: lower "
                          "data.min_freq or raise data.vocab_size")
    train_ids = prep.ids_of_file(fit_file, cache / "train.bin")
    if dev_path is None:
        try:
            dev_ids = prep.ids_of_file(dev_file, cache / "dev.bin")
        except ValueError:
            raise ConfigError(f"{train_file}: the held-out tail (data.dev_fraction={cfg.data.dev_fraction}) is too "
                              "short for a dev stream; fix: raise data.dev_fraction or give a dev file with --dev") from None
        share = f"{cfg.data.dev_fraction:.0%}"
        part = (f"the last {held:,} line{'s' if held != 1 else ''} ({share}) of {train_file.name} "
                f"{'are' if held != 1 else 'is'}" if held
                else f"the last {share} of the single line of {train_file.name} is")
        log(f"no --dev given: {part} the dev stream; the vocabulary is built from the rest")
    else:
        dev_ids = prep.ids_of_file(Path(dev_path), cache / "dev.bin")
    if not has_text(Path(dev_path) if dev_path is not None else dev_file):
        # its perplexity would only measure how well a line break follows a line break: no model is selected on that
        source = dev_path if dev_path is not None else f"the held-out tail of {train_file}"
        raise ConfigError(f"{source}: the dev text is empty or only blank lines, so its perplexity says nothing; "
                          "fix: give a dev file with text (--dev), or let data.dev_fraction hold out the tail")
    needed = cfg.train.batch_size * (cfg.train.bptt + 1)
    if len(train_ids) < needed:
        held_out = f" after data.dev_fraction={cfg.data.dev_fraction} was held out" if dev_path is None else ""
        raise ConfigError(f"{train_file}: {len(train_ids)} training tokens{held_out} cannot fill {cfg.train.batch_size} "
                          f"streams of one window of {cfg.train.bptt} steps ({needed} tokens); lower train.batch_size or "
                          f"train.bptt{' (or data.dev_fraction)' if dev_path is None else ''}")
    train_streams = np.asarray(batchify(np.asarray(train_ids), cfg.train.batch_size))
    dev_streams = np.asarray(batchify(np.asarray(dev_ids), min(10, max(1, len(dev_ids) // (cfg.train.bptt + 1)))))
    m = cfg.model
    hyper: dict[str, Any] = {"vocab_size": len(prep.vocab), "embedding_dim": m.embedding_dim, "hidden_size": m.hidden_size,
             "num_layers": m.num_layers, "cell": m.cell, "tie_weights": m.tie_weights, "dropout": m.dropout,
             "embedding_dropout": m.embedding_dropout, "weight_drop": m.weight_drop, "softmax": m.softmax,
             "adaptive_cutoffs": check_cutoffs(m.adaptive_cutoffs, len(prep.vocab)) if m.softmax == "adaptive" else []}
    model = build_for_run(run, lambda: RNNLanguageModel(**hyper))
    params = sum(p.numel() for p in model.parameters())
    output = f"adaptive softmax (cutoffs {hyper['adaptive_cutoffs']})" if m.softmax == "adaptive" else "full softmax"
    unk_id = prep.vocab.unk_id
    unk_share = {name: float(np.mean(np.asarray(ids) == unk_id)) if len(ids) else 0.0
                 for name, ids in (("train", train_ids), ("dev", dev_ids))}
    log(f"{len(train_ids):,} training / {len(dev_ids):,} dev tokens, vocabulary {len(prep.vocab):,} ({cfg.data.level}s; "
        f"<unk> {unk_share['train']:.1%} of training, {unk_share['dev']:.1%} of dev tokens); "
        f"{m.cell} x{m.num_layers}, {output}, {params:,} parameters; {cfg.train.batch_size} streams, bptt {cfg.train.bptt}")
    notes = []
    if unk_share["dev"] > UNK_NOTE_SHARE:  # <unk> is one easy token standing for many: perplexity looks better
        dev_text = Path(dev_path) if dev_path is not None else dev_file
        notes.append(unk_note(unk_share["dev"], unk_causes(prep, fit_file, dev_text), len(prep.vocab)))
        log(f"note: {notes[-1]}")
    carried: dict[str, Any] = {"dev": None}
    # the training streams' state between windows: in the engine's task_state, so a checkpoint written
    # mid-epoch holds it and a resumed run continues the streams where they were
    train_state: dict[str, Any] = {"carried": None}

    def loss_fn(mdl: nn.Module, batch: Any) -> Tensor:
        inputs, targets, start = batch
        if int(start) == 0:
            train_state["carried"] = None  # a new epoch starts the streams again
        nll, state = mdl.nll(inputs, targets, train_state["carried"])  # type: ignore[operator]
        train_state["carried"] = detach_state(state)
        loss = nll / targets.numel()
        # AWD-LSTM scales the learning rate by window length / bptt, so each token weighs the same
        # whatever window it falls in; scaling the loss does the same for every optimizer's step size
        return loss * (inputs.shape[1] / cfg.train.bptt) if cfg.train.variable_bptt else loss

    def predict_fn(mdl: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        inputs, targets, start = batch
        if int(start) == 0:
            carried["dev"] = None
        nll, carried["dev"] = mdl.nll(inputs, targets, carried["dev"])  # type: ignore[operator]
        return nll.reshape(1), torch.tensor([targets.numel()])

    def metric_fn(nll: Tensor, count: Tensor) -> dict[str, float]:
        metrics = lm_metrics(float(nll.sum()), int(count.sum()), cfg.data.level)
        metrics.pop("tokens")
        return metrics

    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate, optimizer=cfg.train.optimizer,
                            weight_decay=cfg.train.weight_decay, clip_norm=cfg.train.clip_norm,
                            patience=cfg.train.patience, monitor="perplexity", mode="min", seed=cfg.train.seed,
                            accelerator=cfg.train.accelerator, progress=progress, lr_decay=cfg.train.lr_decay, lr_decay_patience=cfg.train.lr_decay_patience,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    history = fit(model, _loader(train_streams, cfg.train.bptt, cfg.train.variable_bptt, cfg.train.seed),
                  _loader(dev_streams, cfg.train.bptt, False, 0), loss_fn=loss_fn, predict_fn=predict_fn,
                  metric_fn=metric_fn, options=options, run=run, log=log, task_state=train_state)
    prep.save(run)
    run.save_model(model, NAME, hyper)
    for f in cache.iterdir():
        f.unlink()
    cache.rmdir()
    nll, count = stream_nll(model, np.asarray(dev_ids), batch_size=1)
    dev = lm_metrics(nll, count, cfg.data.level)
    sample = TrainedLanguageModel(model, prep).generate("", length=60 if cfg.data.level == "word" else 300, seed=0,
                                                        temperature=0.8)
    seconds = time.perf_counter() - t0 + prior_seconds()  # a resumed run: its whole training
    tokens_per_second = len(train_ids) * len(history) / max(sum(
        (h["seconds"] - (history[i - 1]["seconds"] if i else 0)) for i, h in enumerate(history)), 1e-9)
    metrics = {"dev": dev, "train_seconds": seconds, "parameters": params, "epochs_run": len(history), "stopped": stop_reason(),
               "train_tokens_per_second": tokens_per_second, "unk_share": unk_share,
               "best_epoch": min(history, key=lambda r: r.get("dev_perplexity", math.inf))["epoch"] if history else 0}
    if notes:
        metrics["notes"] = notes
    run.write_json("metrics.json", metrics)
    run.write_json("sample.json", sample)
    curves = plot_learning_curves(history, run.file("learning_curves.png"))
    rows = [["dev cross-entropy (nats/token)", dev["cross_entropy"]], ["dev perplexity", dev["perplexity"]]]
    if "bits_per_character" in dev:
        rows.append(["dev bits per character", dev["bits_per_character"]])
    report = [f"# Language model run: {run.path.name}", "",
              f"{cfg.data.level}-level {m.cell} x{m.num_layers} ({params:,} parameters) trained on `{train_file}` "
              f"in {seconds:.0f} s ({len(history)} epoch{'' if len(history) == 1 else 's'}, about {tokens_per_second:,.0f} tokens/s). Dev figures use "
              "batch size 1 with the state carried through the whole stream.", "",
              markdown_table(["metric", "value"], rows), "", "## Sample (temperature 0.8, seed 0)", "", "```",
              sample["text"], "```", ""]
    if notes:
        report[4:4] = [*(f"**Note:** {n}." for n in notes), ""]
    if curves:
        report += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    run.write_text("report.md", "\n".join(report))
    return metrics


def render_tokens(tokens: Sequence[str], level: str, specials: Sequence[str] = ("<unk>", "<eos>", "<pad>", "<bos>")
                  ) -> str:
    """Generated tokens as text: characters concatenated; words joined by spaces; subwords
    detokenized (``▁`` starts a word); ``<eos>``, the end of a line (word and subword models, and
    character models with ``line_ending=eos``), is a line break (no space around it). Other special
    tokens stay visible as words. The same rules as the terminal stream (:class:`TerminalStream`)."""
    parts: list[str] = []
    stream = TerminalStream(level, specials=specials, write=parts.append)
    for token in tokens:
        stream(token)
    return "".join(parts)


def subword_text(token: str, specials: Sequence[str] = ()) -> str:
    """How a subword piece reads in text: ``▁`` (a word start) becomes a space; a special token
    such as ``<eos>`` is written as a word of its own."""
    return f" {token}" if token in specials else token.replace("\u2581", " ")


class TerminalStream:
    """Writes generated tokens as they come (to standard output, or ``write``), the rules :func:`render_tokens` uses:
    words separated by one space (none before a line break or at the end), subword lines without
    the leading or trailing space a ``▁`` piece would give, ``<eos>`` as a line break.

    ``line_start``: whether the first token begins a line (``False`` after a prompt on the same line:
    a subword piece then keeps its word-starting space; the caller writes the space after a word
    prompt itself).
    """

    SPECIALS = ("<unk>", "<eos>", "<pad>", "<bos>")

    def __init__(self, level: str, *, line_start: bool = True, specials: Sequence[str] = SPECIALS,
                 write: Callable[[str], Any] | None = None) -> None:
        self.level, self.line_start, self.specials = level, line_start, specials
        self.pending = ""  # a subword line's trailing spaces: written only if the line goes on
        self.write = write  # None: standard output, flushed after every token

    def __call__(self, token: str) -> None:
        if token == "<eos>":
            text, self.pending, self.line_start = "\n", "", True
        elif self.level == "char":
            text = token
        elif self.level == "subword":
            piece = subword_text(token, self.specials)
            if self.line_start:
                piece = piece.lstrip(" ")
            body = piece.rstrip(" ")
            text = (self.pending + body) if body else ""
            self.pending = (piece[len(body):] if body else self.pending + piece)
            self.line_start = self.line_start and not body
        else:
            text = token if self.line_start else " " + token
            self.line_start = False
        if not text:
            return
        if self.write is not None:
            self.write(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()


