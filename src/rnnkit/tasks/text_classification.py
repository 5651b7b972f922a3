"""Sentiment analysis and text classification.

Three layers, as in the rest of rnnkit: this module speaks in texts and labels (reading files,
fitting the text encoder and label set, reports); :class:`TextClassifier` and
:class:`HierarchicalAttentionNetwork` speak in tensors; ``rnnkit.nn`` runs the recurrences.

Models:

* ``architecture="rnn"``: embedding -> (bi)directional recurrent encoder of any cell and depth ->
  pooling (``last`` state, ``mean``, ``max`` or ``attention``) -> dropout -> linear classifier.
* ``architecture="han"``: hierarchical attention network (Yang et al. 2016): words -> sentence
  vectors (BiRNN + attention), sentences -> document vector (BiRNN + attention) -> classifier.

Multi-label data (``train.multi_label=true``, labels joined by ``data.label_separator``) trains
with a sigmoid per class and binary cross-entropy.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import CELLS
from ..nn import AttentionPooling, Hierarchical, masked_max, masked_mean, recurrent_layer
from .config import (
    MAX_MINUTES_HELP,
    PRECISION_HELP,
    ConfigError,
    PrecisionName,
    check_at_least_one,
    check_batch,
    check_cell,
    check_early_stopping_and_clipping,
    check_max_minutes,
    check_precision,
    from_dict,
    option,
    reading_overrides,
    seconds_budget,
    section,
)
from .run import RunDir, RunError

NAME = "text-classification"
DESCRIPTION = "Sentiment analysis and text classification (CSV/TSV/JSONL, class folders, 'label sentence' lines)"
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|<br\s*/?>|\n+")
# The data readers' arguments as config keys, for one-line errors worded for the command line.
CONFIG_KEYS = {"text_column": "data.text_column", "label_column": "data.label_column", "text_field": "data.text_column",
               "label_field": "data.label_column", "classes": "data.classes", "member_prefix": "data.member_prefix",
               "errors": "data.encoding_errors", "has_header": "data.has_header", "vocab_size": "data.vocab_size"}
# The data.* keys that evaluate and predict may change: how files are read, not how texts are encoded.
READING_KEYS = ("format", "text_column", "label_column", "has_header", "member_prefix", "classes", "label_separator",
                "encoding_errors")
_MISSING_LABELS = ("", "nan")
# multi-label: a class is predicted when its probability is at least this, in predict and in the metrics
THRESHOLD = 0.5


# -- configuration -----------------------------------------------------------------------------
@dataclass
class DataConfig:
    format: Literal["auto", "csv", "tsv", "jsonl", "folders", "label-sentence"] = option(
        "auto", "input format; auto: by extension (.csv .tsv .jsonl), folder or tar archive -> folders, else label-sentence")
    text_column: str = option("text", "text column (CSV/TSV/JSONL): name, or 0-based index")
    label_column: str = option("label", "label column (CSV/TSV/JSONL): name, or 0-based index")
    has_header: bool = option(True, "CSV/TSV: the first row names the columns; false: it is data (give the columns "
                                    "as 0-based indexes)")
    member_prefix: str | None = option(None, "folder inside a tar archive or folder holding the class folders, e.g. aclImdb/train")
    classes: list[str] = option([], "class folders to read (folders format); empty: all")
    label_separator: str = option("|", "separator between labels of one text (multi-label)")
    tokenizer: Literal["word", "char", "bpe", "wordpiece", "unigram"] = option("word", "tokenization")
    lowercase: bool = option(True, "lowercase before tokenizing")
    vocab_size: int = option(30000, "maximum vocabulary size (specials included)")
    min_freq: int = option(2, "minimum count for a word to enter the vocabulary (word/char tokenizers)")
    max_length: int = option(400, "tokens kept per text (rnn architecture); longer texts are cut, and the log says how many")
    truncation: Literal["pre", "post"] = option("post", "post keeps the start of long texts, pre keeps the end")
    max_sentences: int = option(30, "sentences kept per document (han architecture)")
    max_sentence_length: int = option(60, "tokens kept per sentence (han architecture)")
    dev_fraction: float = option(0.1, "fraction of training data held out as dev when --dev is not given")
    encoding_errors: Literal["strict", "replace"] = option("strict", "undecodable bytes: strict stops with the file and line, replace substitutes U+FFFD")


@dataclass
class ModelConfig:
    architecture: Literal["rnn", "han"] = option("rnn", "rnn: one recurrent encoder; han: hierarchical attention network")
    cell: str = option("lstm", f"recurrent cell: {', '.join(sorted(CELLS))}")
    embedding_dim: int = option(128, "word embedding size")
    hidden_size: int = option(128, "hidden units per direction")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(True, "read the text in both directions")
    pooling: Literal["last", "mean", "max", "attention"] = option("max", "how the encoder outputs become one vector (rnn architecture)")
    dropout: float = option(0.3, "dropout on embeddings, between layers and before the classifier")


@dataclass
class TrainConfig:
    epochs: int = option(5, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(32, "texts per batch")
    learning_rate: float = option(2e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = option("adam", "optimizer")
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(5.0, "clip the gradient norm to this (null: no clipping)")
    patience: int | None = option(2, "stop after this many epochs without dev improvement (null: never)")
    monitor: Literal["accuracy", "macro_f1", "micro_f1"] = option("accuracy", "dev metric that selects the best epoch")
    bucketing: bool = option(True, "batch texts of similar length together (less padding)")
    multi_label: bool = option(False, "each text may have several labels")
    class_weight: Literal["none", "balanced"] = option(
        "none", "balanced: weight each class's loss by N / (classes x its count) (multi-label: positives by "
        "negatives / positives), so rare classes count as much as common ones")
    seed: int = option(0, "random seed (data split, initialisation, batching)")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "reading and preprocessing")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "optimisation")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        check_cell(self.model.cell)
        check_at_least_one(("model.embedding_dim", self.model.embedding_dim), ("model.hidden_size", self.model.hidden_size),
                           ("model.num_layers", self.model.num_layers), ("train.epochs", self.train.epochs),
                           ("train.batch_size", self.train.batch_size), ("data.max_length", self.data.max_length),
                           ("data.vocab_size", self.data.vocab_size))
        if not 0 <= self.model.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.model.dropout}")
        if self.data.vocab_size < 5:
            raise ConfigError(f"data.vocab_size: must be >= 5 (the 4 special tokens <pad>, <unk>, <bos>, <eos> and at "
                              f"least one token of the texts), got {self.data.vocab_size}; fix: --set "
                              "data.vocab_size=30000")
        if not 0 < self.data.dev_fraction < 1:
            raise ConfigError(f"data.dev_fraction: must be in (0, 1), got {self.data.dev_fraction}")
        if self.train.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.train.learning_rate}")
        check_at_least_one(("data.min_freq", self.data.min_freq), ("data.max_sentences", self.data.max_sentences),
                           ("data.max_sentence_length", self.data.max_sentence_length))
        check_early_stopping_and_clipping(self.train.patience, self.train.clip_norm, self.train.weight_decay)
        if self.train.multi_label and not self.data.label_separator:
            raise ConfigError("data.label_separator: must not be empty with train.multi_label=true; e.g. "
                              "--set 'data.label_separator=|'")


# -- models ------------------------------------------------------------------------------------
class TextClassifier(nn.Module):
    """Embedding -> recurrent encoder -> pooling -> classifier.

    ``forward(ids [B, T], lengths [B])`` returns logits ``[B, C]``; ``last_attention`` holds the
    attention weights ``[B, T]`` of the last call when ``pooling="attention"``.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = True, cell: str = "lstm", pooling: str = "max",
                 dropout: float = 0.3, padding_idx: int = 0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.encoder = recurrent_layer(cell, embedding_dim, hidden_size, num_layers=num_layers,
                                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        features = hidden_size * (2 if bidirectional else 1)
        self.pooling = pooling
        self.attention = AttentionPooling(features) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, num_classes)
        self.last_attention: Tensor | None = None

    def embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.embedding(ids))  # [B, T, E]

    def forward(self, ids: Tensor, lengths: Tensor, embedded: Tensor | None = None) -> Tensor:
        x = self.embed(ids) if embedded is None else embedded
        mask = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)
        outputs, state = self.encoder(x, mask=mask)  # [B, T, D*H]
        if self.pooling == "attention":
            assert self.attention is not None
            pooled, self.last_attention = self.attention(outputs, mask)
        elif self.pooling == "mean":
            pooled = masked_mean(outputs, mask)
        elif self.pooling == "max":
            pooled = masked_max(outputs, mask)
        else:
            h = state[0] if isinstance(state, tuple) else state  # [L*D, B, H]
            directions = 2 if getattr(self.encoder, "bidirectional", False) else 1
            pooled = torch.cat(list(h[-directions:]), -1)
        return self.classifier(self.dropout(pooled))  # [B, C]


class HierarchicalAttentionNetwork(nn.Module):
    """Yang et al. 2016: word encoder + word attention -> sentence encoder + sentence attention.

    ``forward(ids [B, S, W], word_lengths [B, S])`` returns logits ``[B, C]``; the attention
    weights of the last call are in ``word_attention.last_weights`` (``[B*S, W]``) and
    ``sentence_attention.last_weights`` (``[B, S]``).
    """

    def __init__(self, vocab_size: int, num_classes: int, *, embedding_dim: int = 128, hidden_size: int = 64,
                 num_layers: int = 1, bidirectional: bool = True, cell: str = "gru", dropout: float = 0.3,
                 padding_idx: int = 0) -> None:
        super().__init__()
        directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.sentence_attention = AttentionPooling(hidden_size * directions)
        self.encoder = Hierarchical(
            recurrent_layer(cell, embedding_dim, hidden_size, num_layers=num_layers, bidirectional=bidirectional),
            recurrent_layer(cell, hidden_size * directions, hidden_size, num_layers=num_layers,
                            bidirectional=bidirectional),
            pool=AttentionPooling(hidden_size * directions))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * directions, num_classes)

    @property
    def word_attention(self) -> AttentionPooling:
        pool = self.encoder.pool
        assert isinstance(pool, AttentionPooling)
        return pool

    def forward(self, ids: Tensor, word_lengths: Tensor) -> Tensor:
        x = self.dropout(self.embedding(ids))  # [B, S, W, E]
        outputs, _, _ = self.encoder(x, word_lengths)  # [B, S, D*H]
        document, _ = self.sentence_attention(outputs, word_lengths > 0)
        return self.classifier(self.dropout(document))


# -- data --------------------------------------------------------------------------------------
def detect_format(path: Path, fmt: str) -> str:
    """``fmt``, or for ``auto`` the format named by the path: a folder or a tar archive (every suffix
    the class-folder reader opens: ``.tar.xz``, ``.txz``, ...) holds class folders; ``.csv``, ``.tsv``
    and ``.jsonl``, plain or gzipped, are read by their columns; anything else is ``label sentence``
    lines."""
    from ..data.text import _ARCHIVE_SUFFIXES

    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if path.is_dir() or name.endswith(_ARCHIVE_SUFFIXES):
        return "folders"
    for kind in ("csv", "tsv", "jsonl"):
        if name.endswith((f".{kind}", f".{kind}.gz")):
            return kind
    return "label-sentence"


def _column(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def read_examples(path: str | Path, cfg: DataConfig, *, labelled: bool = True, keep_empty: bool = False) -> list[Any]:
    """Read a file into ``TextExample`` records (text, label, source) with the data layer.

    Records whose text is empty or only whitespace are left out unless ``keep_empty`` (``predict
    --file`` keeps them, so its answers stay one per record)."""
    from ..data import text as readers

    p = Path(path)
    if not p.exists():
        if str(path).startswith("builtin:"):  # (the image task's datasets: diagnose and compare pass them on)
            raise FileNotFoundError(f"{path}: builtin datasets are for image-classification; give a text file")
        raise FileNotFoundError(f"data file not found: {p}")
    fmt = detect_format(p, cfg.format)
    label_column = _column(cfg.label_column) if labelled else None
    if fmt in ("csv", "tsv"):
        return readers.read_delimited(p, _column(cfg.text_column), label_column,
                                      delimiter="\t" if fmt == "tsv" else ",", errors=cfg.encoding_errors,
                                      has_header=cfg.has_header, skip_empty=not keep_empty)
    if fmt == "jsonl":
        return readers.read_jsonl(p, cfg.text_column, cfg.label_column if labelled else None,
                                  errors=cfg.encoding_errors, skip_empty=not keep_empty,
                                  label_separator=cfg.label_separator or "|")
    if fmt == "folders":
        examples = readers.read_class_folders(p, member_prefix=cfg.member_prefix, classes=cfg.classes or None,
                                              errors=cfg.encoding_errors)
        return examples if keep_empty else [e for e in examples if e.text.strip()]
    return readers.read_label_sentence(p, errors=cfg.encoding_errors)


def read_labelled(path: str | Path, cfg: DataConfig) -> tuple[list[Any], str]:
    """The labelled texts of ``path`` and a note on the records left out for an empty text ("" if none)."""
    examples = read_examples(path, cfg, keep_empty=True)
    empty = [e.source for e in examples if not e.text.strip()]
    if not empty:
        return examples, ""
    note = (f"{path}: left out {len(empty)} record{'s' if len(empty) > 1 else ''} whose text is empty (first: "
            f"{empty[0]})")
    return [e for e in examples if e.text.strip()], note


_INTEGRAL_FLOAT = re.compile(r"([+-]?\d+)\.0*")
_PLUS_INTEGER = re.compile(r"(\+\d+)")


def label_name(label: Any) -> str:
    """A label as a class name: stripped, and a whole number written as a float (``1.0``, as a label
    column with a missing value is written by pandas, or ``1.0`` in JSON) as that integer (``1``), so
    ``1.0`` in one file and ``1`` in another are one class."""
    name = str(label).strip()
    whole = _INTEGRAL_FLOAT.fullmatch(name) or _PLUS_INTEGER.fullmatch(name)  # +1 as 1, as +1.0 already was
    return str(int(whole.group(1))) if whole else name


def class_weights(targets: Tensor, num_classes: int, multi_label: bool) -> Tensor:
    """``train.class_weight=balanced``: ``N / (C n_c)`` per class for single-label targets ``[N]``
    (scikit-learn's "balanced"; a cross-entropy weight), or ``(N - n_c) / n_c`` per class for
    multi-label targets ``[N, C]`` (the positives' weight in binary cross-entropy, 1 for a class
    that is always or never on)."""
    if multi_label:
        positives = targets.float().sum(0)
        negatives = targets.shape[0] - positives
        ok = (positives > 0) & (negatives > 0)
        return torch.where(ok, negatives / positives.clamp(min=1), torch.ones_like(positives))
    counts = torch.bincount(targets.long(), minlength=num_classes).float()
    return torch.where(counts > 0, targets.shape[0] / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))


def _labels_of(example: Any, cfg: DataConfig, multi_label: bool) -> list[str]:
    label = example.label
    if label is None or (isinstance(label, float) and math.isnan(label)) \
            or str(label).strip().lower() in _MISSING_LABELS:
        shown = repr(label) if isinstance(label, str) and label.strip() else "empty, null or NaN"
        raise ConfigError(f"{example.source}: missing label ({shown}); every labelled text needs one: fill it in "
                          "or remove the line")
    if not multi_label:
        return [label_name(label)]
    parts = [label_name(s) for s in str(label).split(cfg.label_separator)]
    empty = [i for i, s in enumerate(parts, 1) if s.lower() in _MISSING_LABELS]
    if empty:
        raise ConfigError(f"{example.source}: missing label in {str(label)!r} (part {empty[0]} of {len(parts)} after "
                          f"splitting on data.label_separator={cfg.label_separator!r} is empty or NaN); every "
                          "labelled text needs one: fill it in or remove the line")
    return parts


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_SPLIT.split(text)) if s]


class Preprocessor:
    """Text encoder + label set, fitted on training data only and saved in the run folder."""

    def __init__(self, encoder: Any, labels: Any, cfg: DataConfig, architecture: str, multi_label: bool) -> None:
        self.encoder, self.labels, self.cfg = encoder, labels, cfg
        self.architecture, self.multi_label = architecture, multi_label
        self.truncated = 0
        self.tokens_total = 0
        self.tokens_kept = 0

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[list[str]], cfg: DataConfig, architecture: str,
            multi_label: bool) -> Preprocessor:
        from ..data.encoding import TextEncoder
        from ..data.tokenizers import CharTokenizer, SubwordTokenizer, WordTokenizer
        from ..data.vocab import LabelEncoder

        if cfg.tokenizer == "word":
            encoder = TextEncoder.fit(texts, WordTokenizer(lowercase=cfg.lowercase), min_freq=cfg.min_freq,
                                      max_size=cfg.vocab_size)
        elif cfg.tokenizer == "char":
            encoder = TextEncoder.fit(texts, CharTokenizer(lowercase=cfg.lowercase), min_freq=cfg.min_freq,
                                      max_size=cfg.vocab_size)
        else:
            tokenizer = SubwordTokenizer.train(texts, model=cfg.tokenizer, vocab_size=cfg.vocab_size,
                                               lowercase=cfg.lowercase)
            encoder = TextEncoder(tokenizer)
        label_set = LabelEncoder.fit(label for ls in labels for label in ls)
        return cls(encoder, label_set, cfg, architecture, multi_label)

    def encode_labels(self, labels: Sequence[list[str]], sources: Sequence[str], split: str) -> Tensor:
        known = set(self.labels.classes)
        # runs trained before label names were normalised may hold classes such as '1.0'
        alias = {label_name(c): c for c in self.labels.classes if label_name(c) not in known}
        labels = [[label if label in known else alias.get(label, label) for label in ls] for ls in labels]
        for ls, source in zip(labels, sources):
            for label in ls:
                if label not in known:
                    raise ConfigError(f"{source}: label {label!r} appears in {split} data but not in training data "
                                      f"(known: {', '.join(map(str, self.labels.classes))}); add training examples "
                                      "or remove it")
        if self.multi_label:
            target = torch.zeros(len(labels), len(self.labels))
            for row, ls in enumerate(labels):
                target[row, self.labels.encode(ls)] = 1.0
            return target
        return torch.tensor([self.labels.encode(ls)[0] for ls in labels], dtype=torch.long)

    def encode_texts(self, texts: Sequence[str]) -> list[Any]:
        """Token ids per text (rnn) or per sentence (han), truncated as configured and counted."""
        encoded: list[Any] = []
        for text in texts:
            if self.architecture == "han":
                sentences = [self.encoder.encode(s) for s in split_sentences(text)]
                ids = [self.cut(s, self.cfg.max_sentence_length) for s in self.cut(sentences, self.cfg.max_sentences)]
                total, kept = sum(map(len, sentences)), sum(map(len, ids))
                self.tokens_total += total
                self.tokens_kept += kept
                self.truncated += kept < total
                encoded.append(ids)
                continue
            ids = self.encoder.encode(text)
            self.tokens_total += len(ids)
            if len(ids) > self.cfg.max_length:
                self.truncated += 1
                ids = self.cut(ids, self.cfg.max_length)
            self.tokens_kept += len(ids)
            encoded.append(ids)
        return encoded

    def cut(self, items: list[Any], limit: int) -> list[Any]:
        """The first ``limit`` items (``data.truncation=post``) or the last (``pre``): tokens of a text
        (rnn), sentences of a document and tokens of a sentence (han)."""
        return items[:limit] if self.cfg.truncation == "post" else items[max(len(items) - limit, 0):]

    def counts(self) -> tuple[int, int, int]:
        """``(texts cut, tokens read, tokens kept)`` so far, for :meth:`truncation_note`'s ``since``."""
        return self.truncated, self.tokens_total, self.tokens_kept

    def truncation_note(self, since: tuple[int, int, int] = (0, 0, 0)) -> str:
        """How many of the texts encoded (since the :meth:`counts` ``since``) were cut, and the share of
        tokens kept."""
        truncated, total, kept = (now - before for now, before in zip(self.counts(), since))
        if not total:
            return ""
        if self.architecture == "han":
            return (f"{truncated} texts with more than data.max_sentences={self.cfg.max_sentences} sentences or a "
                    f"sentence longer than data.max_sentence_length={self.cfg.max_sentence_length} tokens were "
                    f"cut; {kept / total:.1%} of all tokens were used")
        if not truncated and self.architecture != "han":  # not "0 texts ... kept their first 400 tokens"
            return f"no text was longer than data.max_length={self.cfg.max_length} tokens; every token was used"
        side = "first" if self.cfg.truncation == "post" else "last"
        return (f"{truncated} texts longer than data.max_length={self.cfg.max_length} tokens kept their {side} "
                f"{self.cfg.max_length} tokens; {kept / total:.1%} of all tokens were used")

    def save(self, run: RunDir) -> None:
        self.encoder.save(run.file("text_encoder.json"))
        self.labels.save(run.file("labels.json"))
        run.write_json("preprocessing.json", {"data": asdict(self.cfg), "architecture": self.architecture,
                                              "multi_label": self.multi_label})

    @classmethod
    def load(cls, run: RunDir) -> Preprocessor:
        from ..data.encoding import TextEncoder
        from ..data.vocab import LabelEncoder

        meta = run.read_json("preprocessing.json")
        for name in ("text_encoder.json", "labels.json"):
            if not run.file(name).is_file():
                raise RunError(f"run folder {run.path} is incomplete: missing {name}; train again")
        try:
            encoder = TextEncoder.load(run.file("text_encoder.json"))
            labels = LabelEncoder.load(run.file("labels.json"))
        except Exception as err:
            raise RunError(f"run folder {run.path}: preprocessing files are corrupt ({err}); train again") from None
        try:
            cfg = from_dict(DataConfig, meta["data"], "data.")
            architecture, multi_label = meta["architecture"], meta["multi_label"]
            if architecture not in ("rnn", "han") or not isinstance(multi_label, bool):
                raise ValueError(f"architecture {architecture!r}, multi_label {multi_label!r}")
        except (KeyError, TypeError, ValueError) as err:
            detail = f"no {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
            raise RunError(f"{run.file('preprocessing.json')} is corrupt or from another rnnkit version ({detail}); "
                           "train again") from None
        return cls(encoder, labels, cfg, architecture, multi_label)


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, ids: list[Any], targets: Tensor | None) -> None:
        self.ids, self.targets = ids, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        return self.ids[index], (None if self.targets is None else self.targets[index]), index


def collate_flat(items: Sequence[tuple[Any, Any, int]]) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Right-padded ids ``[B, T]``, lengths ``[B]``, targets, original indices."""
    from ..data.padding import pad_batch

    seqs = [torch.as_tensor(ids, dtype=torch.long) for ids, _, _ in items]
    longest = max((len(s) for s in seqs), default=0)
    if longest == 0:  # every text empty: one padded step so tensors keep a time axis
        seqs = [torch.zeros(0, dtype=torch.long) for _ in seqs]
        padded = torch.zeros(len(seqs), 1, dtype=torch.long)
        lengths = torch.zeros(len(seqs), dtype=torch.long)
    else:
        padded, lengths, _ = pad_batch(seqs, padding="post", pad_value=0, dtype=torch.long)
    targets = None if items[0][1] is None else torch.stack([torch.as_tensor(t) for _, t, _ in items])
    return padded, lengths, targets, torch.tensor([i for _, _, i in items])


def collate_nested(items: Sequence[tuple[Any, Any, int]]) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Documents as ``[B, S, W]`` ids with ``[B, S]`` sentence lengths (0 for padded sentences)."""
    sentences = max((len(doc) for doc, _, _ in items), default=1) or 1
    words = max((len(s) for doc, _, _ in items for s in doc), default=1) or 1
    ids = torch.zeros(len(items), sentences, words, dtype=torch.long)
    lengths = torch.zeros(len(items), sentences, dtype=torch.long)
    for b, (doc, _, _) in enumerate(items):
        for s, sent in enumerate(doc):
            ids[b, s, : len(sent)] = torch.as_tensor(sent, dtype=torch.long)
            lengths[b, s] = len(sent)
    targets = None if items[0][1] is None else torch.stack([torch.as_tensor(t) for _, t, _ in items])
    return ids, lengths, targets, torch.tensor([i for _, _, i in items])


def make_loader(dataset: EncodedDataset, architecture: str, batch_size: int, *, shuffle: bool, bucketing: bool,
                seed: int) -> torch.utils.data.DataLoader:
    collate = collate_nested if architecture == "han" else collate_flat
    if bucketing:
        from ..data import BucketBatchSampler

        lengths = [sum(len(s) for s in d) if architecture == "han" else len(d) for d in dataset.ids]
        sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                           generator=torch.Generator().manual_seed(seed))  # seed draws off the global random state
    from ..data.bucketing import EpochSampler

    generator = torch.Generator().manual_seed(seed)  # the loader's seed draws stay off the global random state
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, generator=generator,
                                       sampler=EpochSampler(len(dataset), shuffle=shuffle, seed=seed))


# -- metrics -----------------------------------------------------------------------------------
def classification_metrics(scores: Tensor, targets: Tensor, multi_label: bool) -> dict[str, Any]:
    """Accuracy, micro/macro F1, per-class precision/recall/F1/support (lists in class order) and the
    confusion matrix (torchmetrics). Multi-label: a class is predicted at probability >= ``THRESHOLD``,
    and accuracy is the share of texts whose label set is exactly right."""
    import torchmetrics.functional.classification as tmf

    num = scores.shape[1]
    if multi_label:
        # counted here, not with torchmetrics' multilabel_*, which refuse a single label (num_labels=1),
        # a multi-label run training allows; same figures (scikit-learn's, zero_division=0)
        t = targets.long().reshape(-1, num)
        hard = (scores >= THRESHOLD).long()  # as predict decides (torchmetrics alone counts only > 0.5)
        tp, fp, fn = (hard & t).sum(0), (hard & (1 - t)).sum(0), ((1 - hard) & t).sum(0)

        def ratio(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(b > 0, a.double() / b.clamp(min=1), torch.zeros((), dtype=torch.float64))

        f1 = ratio(2 * tp, 2 * tp + fp + fn)
        return {
            "accuracy": float((hard == t).all(1).double().mean()),
            "micro_f1": float(ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())),
            "macro_f1": float(f1.mean()),
            "per_class": {
                "precision": ratio(tp, tp + fp).tolist(),
                "recall": ratio(tp, tp + fn).tolist(),
                "f1": f1.tolist(),
                "support": t.sum(0).tolist(),
            },
        }
    preds = scores.argmax(-1)
    num = max(num, 2)
    return {
        "accuracy": float((preds == targets).float().mean()),
        "micro_f1": float(tmf.multiclass_f1_score(preds, targets, num_classes=num, average="micro")),
        "macro_f1": float(tmf.multiclass_f1_score(preds, targets, num_classes=num, average="macro")),
        "per_class": {
            "precision": tmf.multiclass_precision(preds, targets, num_classes=num, average=None).tolist(),
            "recall": tmf.multiclass_recall(preds, targets, num_classes=num, average=None).tolist(),
            "f1": tmf.multiclass_f1_score(preds, targets, num_classes=num, average=None).tolist(),
            "support": torch.bincount(targets, minlength=num).tolist(),
        },
        "confusion_matrix": tmf.multiclass_confusion_matrix(preds, targets, num_classes=num).tolist(),
    }


# -- the trained classifier --------------------------------------------------------------------
def build_model(hyper: dict[str, Any]) -> nn.Module:
    kw = dict(hyper)
    architecture = kw.pop("architecture")
    if architecture == "han":
        kw.pop("pooling", None)
        return HierarchicalAttentionNetwork(**kw)
    return TextClassifier(**kw)


class TrainedTextClassifier:
    """A model with its preprocessing: predict on raw texts, evaluate on labelled files."""

    def __init__(self, model: nn.Module, prep: Preprocessor, batch_size: int = 64) -> None:
        self.model, self.prep, self.batch_size = model.eval(), prep, batch_size

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedTextClassifier:
        run, meta = RunDir.open_task(run_dir, NAME)
        prep = Preprocessor.load(run)
        model = run.build_model(meta, build_model)  # under a budget from model.safetensors' size
        hyper = meta["hyperparameters"]
        # the files must describe one model: as many classes as outputs, as many words as embeddings
        for what, saved, needed in (("classes", len(prep.labels), hyper["num_classes"]),
                                    ("vocabulary entries", prep.encoder.vocab_size, hyper["vocab_size"])):
            if saved != needed:
                raise RunError(f"run folder {run.path}: {'labels.json' if what == 'classes' else 'text_encoder.json'} "
                               f"holds {saved} {what} but the model in model.json has {needed}; the run folder was "
                               "mixed up or edited, train again")
        return cls(run.load_into(model), prep)

    def diagnostic_batch(self, path: str | Path, size: int = 32) -> tuple[nn.Module, Any, Callable[[nn.Module, Any], Tensor]]:
        """``(model, (ids, lengths, targets), loss_fn)`` on the first ``size`` labelled texts of ``path``
        (for :func:`rnnkit.insight.gradient_diagnostics`); single-label, ``architecture=rnn`` runs."""
        if self.prep.multi_label or self.prep.architecture != "rnn":
            this = f"architecture={self.prep.architecture}" + (", multi-label" if self.prep.multi_label else "")
            raise ValueError(f"diagnose needs a single-label text classifier with model.architecture=rnn, and this run "
                             f"is {this}; fix: train one with --set model.architecture=rnn on single-label data")
        examples = read_examples(path, self.prep.cfg)[:size]
        if not examples:
            raise ValueError(f"{path}: no labelled texts to diagnose; give a file with at least one row")
        labels = [_labels_of(e, self.prep.cfg, False) for e in examples]
        targets = self.prep.encode_labels(labels, [e.source for e in examples], "diagnostic")
        ids, lengths, _, _ = collate_flat([(ids, None, i) for i, ids in
                                           enumerate(self.prep.encode_texts([e.text for e in examples]))])

        def loss_fn(model: nn.Module, batch: Any) -> Tensor:
            return F.cross_entropy(model(batch[0], batch[1]), batch[2])

        return self.model, (ids, lengths, targets), loss_fn

    def scores(self, encoded: list[Any]) -> Tensor:
        """Class probabilities ``[N, C]`` in input order."""
        loader = make_loader(EncodedDataset(encoded, None), self.prep.architecture, self.batch_size,
                             shuffle=False, bucketing=False, seed=0)
        out = []
        with torch.no_grad():
            for ids, lengths, _, _ in loader:
                logits = self.model(ids, lengths)
                out.append(torch.sigmoid(logits) if self.prep.multi_label else torch.softmax(logits, -1))
        return torch.cat(out) if out else torch.zeros(0, len(self.prep.labels))

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Label(s) and per-class probabilities for each text.

        A text with no tokens (empty, or only whitespace) still gets the model's answer for an
        empty input, with a ``note`` saying so.
        """
        check_batch(texts, "texts")
        encoded = self.prep.encode_texts(list(texts))
        probs = self.scores(encoded)
        classes = [str(c) for c in self.prep.labels.classes]
        results = []
        for text, ids, row in zip(texts, encoded, probs.tolist()):
            if self.prep.multi_label:
                label: Any = [c for c, p in zip(classes, row) if p >= THRESHOLD]
            else:
                label = classes[max(range(len(row)), key=row.__getitem__)]
            result = {"text": text, "label": label, "probabilities": dict(zip(classes, row))}
            if not _has_tokens(ids):
                result["note"] = EMPTY_TEXT_NOTE
            results.append(result)
        return results

    def use_overrides(self, overrides: Sequence[str]) -> None:
        """Read later files (``texts_of_file``, ``evaluate``) with ``data.*`` overrides (``READING_KEYS``
        only), e.g. ``data.text_column=review`` for a CSV given to ``rnnkit predict --file``."""
        self.prep.cfg = reading_overrides(self.prep.cfg, overrides, READING_KEYS, "predict --set")
        if any(o.split("=", 1)[0].strip() == "data.format" for o in overrides):
            self.file_format = self.prep.cfg.format

    def texts_of_file(self, path: str | Path) -> list[tuple[str, str]]:
        """``(text, source)`` pairs to predict from a file: the text column of a CSV/TSV/JSONL file
        (read like the training data, ``data.text_column``), else one text per line."""
        from ..data.io import iter_lines

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"input file {'is a folder, not a file' if p.is_dir() else 'not found'}: {p}; "
                                    "fix: give the path of a text, CSV, TSV or JSONL file (relative to "
                                    f"{Path.cwd()})")
        fmt = detect_format(p, getattr(self, "file_format", "auto"))
        if fmt in ("csv", "tsv", "jsonl"):
            cfg = DataConfig(**{**asdict(self.prep.cfg), "format": fmt})
            return [(e.text, e.source) for e in read_examples(p, cfg, labelled=False, keep_empty=True)]
        if fmt == "label-sentence" and getattr(self, "file_format", "auto") == "label-sentence":
            # asked for by name (SST-2's stsa.binary.*): the sentences, each line's label dropped
            from ..data.text import read_label_sentence

            return [(e.text, e.source) for e in read_label_sentence(p, errors=self.prep.cfg.encoding_errors)]
        if fmt == "folders":
            raise ConfigError(f"{p}: predict reads texts one per line or from a CSV/TSV/JSONL text column; to score "
                              "a folder or archive of class folders use 'rnnkit evaluate RUN --data' instead")
        return [(line, f"{p}:{number}") for number, line in iter_lines(p, errors=self.prep.cfg.encoding_errors)]

    def evaluate_examples(self, examples: Sequence[Any], source: str = "the data") -> dict[str, Any]:
        if not examples:
            raise ConfigError(f"{source}: no labelled texts read (an empty file, or a header only?); give a file "
                              "with at least one text and its label")
        labels = [_labels_of(e, self.prep.cfg, self.prep.multi_label) for e in examples]
        targets = self.prep.encode_labels(labels, [e.source for e in examples], "evaluation")
        probs = self.scores(self.prep.encode_texts([e.text for e in examples]))
        metrics = classification_metrics(probs, targets, self.prep.multi_label)
        metrics["classes"] = [str(c) for c in self.prep.labels.classes]  # names of the per_class entries
        metrics["examples"] = len(examples)
        return metrics

    def evaluate(self, path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Metrics on a labelled file; ``overrides`` (``data.key=value``) change how it is read,
        e.g. ``data.member_prefix=aclImdb/test`` for the test folders of an archive."""
        cfg = reading_overrides(self.prep.cfg, overrides, READING_KEYS, "evaluate --set")
        given = any(o.split("=", 1)[0].strip() == "data.member_prefix" for o in overrides)
        _check_inherited_prefix(Path(path), cfg, given)
        examples, empty_note = read_labelled(path, cfg)
        counts = self.prep.counts()
        metrics = self.evaluate_examples(examples, str(path))
        notes = [empty_note] if empty_note else []
        cut = self.prep.truncation_note(since=counts)
        if self.prep.truncated > counts[0]:
            notes.append(f"{path}: {cut}")
        p = Path(path)
        if detect_format(p, cfg.format) == "folders":  # say which folder was read
            metrics["read"] = f"{p}, folder {cfg.member_prefix or '/'}"
            if cfg.member_prefix and not given:
                test = re.sub(r"train$", "test", cfg.member_prefix.rstrip("/"))
                other = test if test != cfg.member_prefix.rstrip("/") else "<folder of the evaluation split>"
                notes.append(f"read {cfg.member_prefix} of {p}: data.member_prefix as at training, so these "
                             "may be the training texts; for another split add --set "
                             f"data.member_prefix={other}")
        if notes:
            metrics["notes"] = notes
        return metrics

    def explain(self, text: str, top: int = 8) -> dict[str, Any]:
        """Which tokens carried the decision: attention weights, or gradient x input saliency.

        A text with no tokens has nothing to explain: its prediction comes with empty token lists
        and the prediction's ``note``."""
        prediction = self.predict([text])[0]
        if self.prep.architecture == "han":
            sentences = self._han_attention(text) if "note" not in prediction else []
            return {**prediction, "method": "sentence attention", "weights": sentences}
        encoded = self.prep.encode_texts([text])[0]
        if not encoded:
            method = "attention" if getattr(self.model, "pooling", "") == "attention" else "gradient x input saliency"
            return {**prediction, "method": method, "tokens": [], "top_tokens": []}
        ids = torch.tensor([encoded], dtype=torch.long)
        lengths = torch.tensor([len(encoded)])
        tokens = [self.prep.encoder.decode([i]) or "<unk>" for i in encoded]
        model = self.model
        assert isinstance(model, TextClassifier)
        if model.pooling == "attention":
            with torch.no_grad():
                model(ids, lengths)
            assert model.last_attention is not None
            weights = model.last_attention[0].tolist()
            method = "attention"
        else:
            embedded = model.embedding(ids).detach().requires_grad_(True)
            logits = model(ids, lengths, embedded=embedded)
            (grad,) = torch.autograd.grad(logits[0, logits[0].argmax()], embedded)  # parameters' .grad untouched
            weights = (grad * embedded.detach()).sum(-1).abs()[0].tolist()
            total = sum(weights) or 1.0
            weights = [w / total for w in weights]
            method = "gradient x input saliency"
        ranked = sorted(zip(tokens, weights), key=lambda tw: -tw[1])[:top]
        return {**prediction, "method": method, "tokens": list(zip(tokens, weights)), "top_tokens": ranked}

    def _han_attention(self, text: str) -> list[tuple[str, float]]:
        encoded = self.prep.encode_texts([text])
        self.scores(encoded)
        model = self.model
        assert isinstance(model, HierarchicalAttentionNetwork)
        weights = model.sentence_attention.last_weights
        sentences = self.prep.cut(split_sentences(text), self.prep.cfg.max_sentences)
        return list(zip(sentences, weights[0].tolist())) if weights is not None else []


def _check_inherited_prefix(path: Path, cfg: DataConfig, given: bool) -> None:
    """A folder given to ``evaluate`` is read under the training ``data.member_prefix`` (``aclImdb/train``)
    unless ``--set`` names another; a folder without that sub-folder (an extracted split such as
    ``aclImdb/test`` given directly) stops with a one-line error naming the fix, not the reader's
    "folder not found"."""
    if given or not cfg.member_prefix or not path.is_dir() or detect_format(path, cfg.format) != "folders":
        return
    if not (path / cfg.member_prefix).is_dir():
        raise ConfigError(f"{path}: no folder {cfg.member_prefix} in it (data.member_prefix as at training); fix: add "
                          "--set data.member_prefix=null to read the class folders directly under it, or --set "
                          "data.member_prefix=<its sub-folder that holds them>")


EMPTY_TEXT_NOTE = "the text has no tokens: the label is the model's answer to an empty input, not read from the text"


def _has_tokens(ids: Any) -> bool:
    """Whether an encoded text (ids, or ids per sentence for han) holds at least one token."""
    return any(len(s) for s in ids) if ids and isinstance(ids[0], list) else bool(ids)


# -- training ----------------------------------------------------------------------------------
def _split_dev(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out ``fraction`` of the examples as dev, stratified by label and fixed by ``seed``.

    Each label (for multi-label data: each label combination, as written) gives its share of the
    dev texts (largest remainders, so the total is ``round(n * fraction)``, at least 1), and keeps
    at least one text in training: a rare class is never held out whole, which would stop training
    with a label seen only in dev. A text that occurs more than once is held out with all its
    copies or not at all (copies under another label too, unless that label would keep no training
    text), so dev holds no text training has seen. Both parts keep the file order."""
    from ..data.splits import class_quotas, take_whole_groups

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(examples), generator=generator).tolist()
    groups: dict[str, list[int]] = {}
    for i in order:  # each group's members in a seeded random order
        label = examples[i].label
        groups.setdefault("" if label is None else label_name(label), []).append(i)
    n_dev = max(1, int(round(len(examples) * fraction)))
    keys = list(groups)
    take = dict(zip(keys, class_quotas([len(groups[k]) for k in keys], n_dev, [groups[k][0] for k in keys])))
    texts = [e.text for e in examples]  # a text given more than once goes to dev with all its copies or not at all
    held = {i for key, members in groups.items() for i in take_whole_groups(members, texts, take[key], keep=1)}
    held_texts = {texts[i] for i in held}  # copies under another label (a conflicting annotation) follow them,
    for members in groups.values():        # unless that would leave their label without a training text
        left = [i for i in members if i not in held]
        following = [i for i in left if texts[i] in held_texts]
        if len(following) < len(left):
            held.update(following)
    if not held and order:  # every label has a single text: hold out one text anyway (training then names it)
        held = {order[0]}
    dev = [e for i, e in enumerate(examples) if i in held]
    train = [e for i, e in enumerate(examples) if i not in held]
    return train, dev


def dev_metrics(config: Config) -> dict[str, str | None]:
    """Every quality metric ``train`` reports under ``metrics["dev"]`` for ``config``, with its
    direction: ``"max"`` (higher is better), ``"min"`` (lower is better) or ``None`` (no better
    direction). Counts and speeds are left out. ``rnnkit compare`` reads it."""
    return {"accuracy": "max", "macro_f1": "max", "micro_f1": "max"}


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: the one that selects the best epoch
    (``train.monitor``)."""
    return config.train.monitor


def train(config: Config, train_path: str | Path, dev_path: str | Path | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    """Read, preprocess, train with early stopping on dev, save everything into ``run``, report."""
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import markdown_table, plot_confusion, plot_learning_curves

    cfg, t = config, time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    train_examples, empty_note = read_labelled(train_path, cfg.data)
    if not train_examples:
        raise ConfigError(f"{train_path}: no labelled texts read (an empty file, or a header only?); give a file "
                          "with at least one text and its label")
    if empty_note:
        log(f"note: {empty_note}")
    if dev_path is not None:
        dev_examples, empty_note = read_labelled(dev_path, cfg.data)
        if empty_note:
            log(f"note: {empty_note}")
    else:
        train_examples, dev_examples = _split_dev(train_examples, cfg.data.dev_fraction, cfg.train.seed)
        log(f"no --dev given: held out {len(dev_examples)} of the training texts (data.dev_fraction="
            f"{cfg.data.dev_fraction}, stratified by label, train.seed={cfg.train.seed}) for model selection")
    if len(train_examples) < 2:
        raise ConfigError(f"{train_path}: need at least 2 training texts, found {len(train_examples)}")
    if not dev_examples:
        raise ConfigError(f"{dev_path}: the dev data holds no texts")
    multi = cfg.train.multi_label
    train_labels = [_labels_of(e, cfg.data, multi) for e in train_examples]
    if dev_path is None:  # a label whose only text was held out: not "appears in dev data" the user never gave
        seen = {label for ls in train_labels for label in ls}
        for e in dev_examples:
            unseen = [label for label in _labels_of(e, cfg.data, multi) if label not in seen]
            if unseen:
                raise ConfigError(f"{e.source}: label {unseen[0]!r} has no text left for training: no --dev was "
                                  f"given, so this text was held out as the dev set (data.dev_fraction="
                                  f"{cfg.data.dev_fraction}) and it is the label's only text; fix: add training "
                                  "texts of that label, or give a dev set with --dev FILE")
    prep = Preprocessor.fit([e.text for e in train_examples], train_labels, cfg.data, cfg.model.architecture, multi)
    specials = 4  # <pad>, <unk>, <bos>, <eos>
    if prep.encoder.vocab_size <= specials:
        raise ConfigError(f"{train_path}: no token of the training texts is in the vocabulary (data.min_freq="
                          f"{cfg.data.min_freq}, data.vocab_size={cfg.data.vocab_size}), so every token would be "
                          "<unk>; fix: lower data.min_freq or raise data.vocab_size")
    if len(prep.labels) < 2 and not multi:
        raise ConfigError(f"{train_path}: only one label ({prep.labels.classes[0]!r}) in the training data; "
                          "a classifier needs at least two")
    y_train = prep.encode_labels(train_labels, [e.source for e in train_examples], "training")
    y_dev = prep.encode_labels([_labels_of(e, cfg.data, multi) for e in dev_examples],
                               [e.source for e in dev_examples], "dev")
    x_train = prep.encode_texts([e.text for e in train_examples])
    note = prep.truncation_note()
    x_dev = prep.encode_texts([e.text for e in dev_examples])
    counts = Counter(label for ls in train_labels for label in ls)
    log(f"{len(train_examples)} training / {len(dev_examples)} dev texts, {len(prep.labels)} classes "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}), vocabulary {prep.encoder.vocab_size}")
    if note:
        log(note)

    hyper = {"architecture": cfg.model.architecture, "vocab_size": prep.encoder.vocab_size,
             "num_classes": len(prep.labels), "embedding_dim": cfg.model.embedding_dim,
             "hidden_size": cfg.model.hidden_size, "num_layers": cfg.model.num_layers,
             "bidirectional": cfg.model.bidirectional, "cell": cfg.model.cell, "pooling": cfg.model.pooling,
             "dropout": cfg.model.dropout, "padding_idx": prep.encoder.pad_id}
    model = build_for_run(run, lambda: build_model(hyper))
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {cfg.model.architecture} with {cfg.model.cell} cells, {params:,} parameters")
    arch = cfg.model.architecture
    train_loader = make_loader(EncodedDataset(x_train, y_train), arch, cfg.train.batch_size, shuffle=True,
                               bucketing=cfg.train.bucketing, seed=cfg.train.seed)
    dev_loader = make_loader(EncodedDataset(x_dev, y_dev), arch, 2 * cfg.train.batch_size, shuffle=False,
                             bucketing=False, seed=0)

    weights = class_weights(y_train, len(prep.labels), multi) if cfg.train.class_weight == "balanced" else None
    if weights is not None:
        log("class weights (train.class_weight=balanced): " + ", ".join(
            f"{c}: {w:.3g}" for c, w in zip(prep.labels.classes, weights.tolist())))

    def loss_fn(m: nn.Module, batch: Any) -> Tensor:
        ids, lengths, targets, _ = batch
        logits = m(ids, lengths)
        w = None if weights is None else weights.to(logits.device)
        return (F.binary_cross_entropy_with_logits(logits, targets, pos_weight=w) if multi
                else F.cross_entropy(logits, targets, weight=w))

    def predict_fn(m: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        ids, lengths, targets, _ = batch
        logits = m(ids, lengths)
        return (torch.sigmoid(logits) if multi else torch.softmax(logits, -1)), targets

    def metric_fn(scores: Tensor, targets: Tensor) -> dict[str, float]:
        m = classification_metrics(scores, targets, multi)
        return {k: m[k] for k in ("accuracy", "macro_f1", "micro_f1")}

    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate,
                            optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay,
                            clip_norm=cfg.train.clip_norm, patience=cfg.train.patience, monitor=cfg.train.monitor,
                            mode="max", seed=cfg.train.seed, accelerator=cfg.train.accelerator, progress=progress,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    history = fit(model, train_loader, dev_loader, loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn,
                  options=options, run=run, log=log)

    prep.save(run)
    run.save_model(model, NAME, hyper)
    trained = TrainedTextClassifier(model, prep)
    dev_metrics = trained.evaluate_examples(dev_examples)
    seconds = time.perf_counter() - t + prior_seconds()  # a resumed run: its whole training
    metrics = {"dev": dev_metrics, "train_seconds": seconds, "parameters": params,
               "best_epoch": _best_epoch(history, cfg.train.monitor), "epochs_run": len(history), "stopped": stop_reason()}
    run.write_json("metrics.json", metrics)
    curves = plot_learning_curves(history, run.file("learning_curves.png"))
    classes = [str(c) for c in prep.labels.classes]
    if "confusion_matrix" in dev_metrics:
        plot_confusion(dev_metrics["confusion_matrix"], classes, run.file("confusion_matrix.png"))
    per_class = dev_metrics["per_class"]
    held_out = (f"{len(dev_examples)} texts held out of the training file (data.dev_fraction="
                f"{cfg.data.dev_fraction}, stratified by label, train.seed={cfg.train.seed})")
    report = [f"# Text classification run: {run.path.name}", "",
              f"Trained on `{train_path}` ({len(train_examples)} texts), selected on "
              f"{f'`{dev_path}` ({len(dev_examples)} texts)' if dev_path else held_out} "
              f"in {seconds:.0f} s; best epoch {metrics['best_epoch']} of {len(history)}.",
              "", f"Model: {cfg.model.architecture}, cell {cfg.model.cell}, {params:,} parameters.", "",
              (f"Truncation: {note}." if note else ""), "", "## Dev metrics", "",
              markdown_table(["metric", "value"], [[k, dev_metrics[k]] for k in ("accuracy", "macro_f1", "micro_f1")]),
              "", "## Per class (dev)", "",
              markdown_table(["class", "precision", "recall", "f1", "support"],
                             [[c, per_class["precision"][i], per_class["recall"][i], per_class["f1"][i],
                               per_class["support"][i]] for i, c in enumerate(classes)]), ""]
    if curves:  # no heading over a figure that is not there
        report += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    if "confusion_matrix" in dev_metrics:
        report += ["## Confusion matrix (dev)", "", "![confusion matrix](confusion_matrix.png)", ""]
    run.write_text("report.md", "\n".join(report))
    return metrics


def _best_epoch(history: list[dict[str, float]], monitor: str) -> int:
    key = f"dev_{monitor}"
    scored = [(row.get(key, -math.inf), -row["epoch"]) for row in history]
    return int(-max(scored)[1]) if scored else 0
