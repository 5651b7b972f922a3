"""Named-entity recognition and sequence labelling (NER, POS, chunking) from CoNLL column files.

Model (Lample et al. 2016, "Neural Architectures for Named Entity Recognition", sec. 2-4):
word embeddings plus character features (a character BiLSTM or a CNN per word, so unseen words
still carry their shape), a bidirectional recurrent encoder of any cell and depth, then a
softmax per token or a linear-chain CRF with transition constraints from the tag scheme.
Regularisation: word dropout (a word is replaced by ``<unk>`` in training) and locked
(variational) dropout on the embeddings and encoder outputs.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import CELLS
from ..nn import recurrent_layer
from ..nn.crf import CRF, allowed_transitions
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
    check_lr_decay,
    check_max_minutes,
    check_precision,
    check_rates,
    option,
    reading_overrides,
    seconds_budget,
    section,
)
from .run import RunDir, RunError

NAME = "tagging"
# config keys that name files: made absolute when a run starts (--resume reads them again from any folder)
PATH_KEYS = ("data.pretrained_vectors",)
DESCRIPTION = "Named-entity recognition and sequence labelling from CoNLL column files (BiLSTM-CRF)"
_TOKEN = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")
_DIGIT = re.compile(r"\d")
# The data readers' arguments as config keys, for one-line errors worded for the command line.
CONFIG_KEYS = {"errors": "data.encoding_errors", "separator": "data.separator", "token_column": "data.token_column",
               "tag_column": "data.tag_column"}
# The data.* keys that evaluate and predict may change: how files are read, not what the model learnt.
READING_KEYS = ("token_column", "tag_column", "encoding_errors", "separator")


@dataclass
class DataConfig:
    token_column: int = option(0, "0-based column of the tokens")
    tag_column: int = option(-1, "0-based column of the tags (-1: last; CoNLL-2003: 1 POS, 2 chunk, 3 NER)")
    scheme: Literal["auto", "IOB1", "IOB2", "BIOES", "none"] = option(
        "auto", "tag scheme of the files; auto detects it; none for tags that are not chunks (POS)")
    train_scheme: Literal["BIOES", "IOB2", "same"] = option(
        "BIOES", "scheme the model is trained in (predictions are converted back to the file's scheme)")
    min_freq: int = option(1, "minimum count for a word to enter the vocabulary")
    lowercase: bool = option(False, "lowercase words for the word vocabulary (characters keep their case)")
    zero_digits: bool = option(False, "map every digit to 0 in the word vocabulary (characters keep the digits)")
    pretrained_vectors: str | None = option(None, "word vectors in GloVe/word2vec text format (size = model.embedding_dim)")
    encoding_errors: Literal["strict", "replace"] = option("strict", "undecodable bytes: strict stops, replace substitutes")
    separator: Literal["whitespace", "tab"] = option(
        "whitespace", "column separator: any run of spaces and tabs, or tab only (for tokens that contain spaces)")
    document_context: int = option(
        0, "read consecutive sentences of a document (-DOCSTART- to -DOCSTART-) as one sequence of up to this many "
           "tokens, so the encoder sees the neighbouring sentences; each sentence is still scored (0: alone)")


@dataclass
class ModelConfig:
    cell: str = option("lstm", f"recurrent cell: {', '.join(sorted(CELLS))}")
    embedding_dim: int = option(100, "word embedding size")
    char_encoder: Literal["lstm", "cnn", "none"] = option("lstm", "character features per word")
    char_embedding_dim: int = option(25, "character embedding size")
    char_hidden_size: int = option(25, "character BiLSTM units per direction, or CNN filters")
    hidden_size: int = option(200, "encoder units per direction")
    num_layers: int = option(1, "stacked encoder layers")
    decoder: Literal["crf", "softmax"] = option("crf", "crf: linear-chain CRF with scheme constraints; softmax: per token")
    dropout: float = option(0.5, "locked dropout on embeddings and encoder outputs")
    word_dropout: float = option(0.05, "probability of replacing a training word by <unk>")
    singleton_dropout: float = option(
        0.0, "probability of replacing a training word seen once in the training data by <unk> (Lample et al.: 0.5)")


@dataclass
class TrainConfig:
    epochs: int = option(20, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(16, "sentences per batch (with data.document_context: groups of sentences)")
    learning_rate: float = option(1e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = option("adam", "optimizer")
    lr_decay: float | None = option(None, LR_DECAY_HELP)
    lr_decay_patience: int = option(1, LR_DECAY_PATIENCE_HELP)
    average_weights: bool = option(
        False, "from the first epoch without dev improvement, evaluate and keep the running mean of the weights")
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(5.0, "gradient norm clipping (null: none)")
    patience: int | None = option(3, "early-stopping patience in epochs on dev entity F1 (null: never)")
    seed: int = option(0, "random seed")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "reading the CoNLL files")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "optimisation")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        check_cell(self.model.cell)
        check_at_least_one(("model.embedding_dim", self.model.embedding_dim), ("model.hidden_size", self.model.hidden_size),
                           ("model.num_layers", self.model.num_layers), ("train.epochs", self.train.epochs),
                           ("train.batch_size", self.train.batch_size))
        check_rates(("model.dropout", self.model.dropout), ("model.word_dropout", self.model.word_dropout),
                    ("model.singleton_dropout", self.model.singleton_dropout))
        check_lr_decay(self.train.lr_decay, self.train.lr_decay_patience)
        if not 0 <= self.data.document_context <= 100_000:
            raise ConfigError(f"data.document_context={self.data.document_context}: give a number of tokens from 0 "
                              "(each sentence alone) to 100000, such as 128")


# -- model -------------------------------------------------------------------------------------
def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout: one mask per sequence, shared by every time step (``x`` is ``[B, T, F]``)."""
    if not training or p == 0:
        return x
    mask = torch.bernoulli(x.new_full((x.shape[0], 1, x.shape[2]), 1 - p)) / (1 - p)
    return x * mask


class CharEncoder(nn.Module):
    """One vector per word from its characters: BiLSTM final states or CNN + max-pool."""

    def __init__(self, num_chars: int, embedding_dim: int, hidden_size: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(num_chars, embedding_dim, padding_idx=0)
        if kind == "lstm":
            self.rnn = recurrent_layer("lstm", embedding_dim, hidden_size, bidirectional=True)
            self.output_size = 2 * hidden_size
        else:
            self.conv = nn.Conv1d(embedding_dim, hidden_size, kernel_size=3, padding=1)
            self.output_size = hidden_size

    def forward(self, chars: Tensor, char_lengths: Tensor) -> Tensor:
        batch, words, width = chars.shape
        flat = self.embedding(chars.view(batch * words, width))  # [B*W, C, E]
        lengths = char_lengths.view(-1)
        if self.kind == "lstm":
            _, (h, _) = self.rnn(flat, lengths=lengths)  # h: [2, B*W, H]
            out = torch.cat([h[0], h[1]], -1)
        else:
            mask = torch.arange(width, device=chars.device).unsqueeze(0) < lengths.unsqueeze(1)
            conv = self.conv(flat.transpose(1, 2)).transpose(1, 2)  # [B*W, C, H]
            conv = conv.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
            out = torch.where(mask.any(1, keepdim=True), conv, torch.zeros_like(conv))
        return out.view(batch, words, -1)


class SequenceTagger(nn.Module):
    """Words (+ characters) -> BiRNN -> per-token scores -> CRF or softmax.

    ``forward(words [B, T], chars [B, T, C], char_lengths [B, T], lengths [B])`` returns the
    emission scores ``[B, T, K]``; :meth:`loss` and :meth:`decode` work from them.
    """

    def __init__(self, vocab_size: int, num_chars: int, num_tags: int, *, embedding_dim: int = 100,
                 char_encoder: str = "lstm", char_embedding_dim: int = 25, char_hidden_size: int = 25,
                 hidden_size: int = 200, num_layers: int = 1, cell: str = "lstm", decoder: str = "crf",
                 dropout: float = 0.5, word_dropout: float = 0.05, singleton_dropout: float = 0.0, unk_id: int = 1,
                 constraints: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.word_embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.chars = CharEncoder(num_chars, char_embedding_dim, char_hidden_size, char_encoder) \
            if char_encoder != "none" else None
        features = embedding_dim + (self.chars.output_size if self.chars is not None else 0)
        self.encoder = recurrent_layer(cell, features, hidden_size, num_layers=num_layers, bidirectional=True,
                                       dropout=dropout if num_layers > 1 else 0.0)
        self.emit = nn.Linear(2 * hidden_size, num_tags)
        self.crf = CRF(num_tags, constraints) if decoder == "crf" else None
        self.dropout, self.word_dropout, self.unk_id = dropout, word_dropout, unk_id
        self.singleton_dropout = singleton_dropout
        # Which word ids were seen once in training (set by :meth:`set_singletons`; not saved).
        self.singletons: Tensor
        self.register_buffer("singletons", torch.zeros(vocab_size, dtype=torch.bool), persistent=False)

    def set_singletons(self, word_ids: Sequence[int]) -> None:
        """Mark the training singletons that ``singleton_dropout`` may replace by ``<unk>``."""
        self.singletons.zero_()
        self.singletons[torch.as_tensor(list(word_ids), dtype=torch.long)] = True

    def forward(self, words: Tensor, chars: Tensor, char_lengths: Tensor, lengths: Tensor) -> Tensor:
        if self.training and (self.word_dropout or self.singleton_dropout):
            draw = torch.rand_like(words, dtype=torch.float)
            drop = (draw < self.word_dropout) | ((draw < self.singleton_dropout) & self.singletons[words])
            words = words.masked_fill(drop & (words > 0), self.unk_id)
        x = self.word_embedding(words)  # [B, T, E]
        if self.chars is not None:
            x = torch.cat([x, self.chars(chars, char_lengths)], -1)
        x = locked_dropout(x, self.dropout, self.training)
        mask = torch.arange(words.shape[1], device=words.device).unsqueeze(0) < lengths.unsqueeze(1)
        out, _ = self.encoder(x, mask=mask)  # [B, T, 2H]
        return self.emit(locked_dropout(out, self.dropout, self.training))  # [B, T, K]

    def loss(self, emissions: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        mask = torch.arange(tags.shape[1], device=tags.device).unsqueeze(0) < lengths.unsqueeze(1)
        if self.crf is not None:
            return self.crf(emissions, tags, mask)
        return F.cross_entropy(emissions[mask], tags[mask]) if bool(mask.any()) else emissions.sum() * 0

    def decode(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        return decode_tags(self.crf, emissions, lengths)

    def tag_probabilities(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """``p(tag k at token t)`` ``[B, T, K]``: CRF marginals (forward-backward) or the softmax."""
        return tag_probabilities(self.crf, emissions, lengths)


def decode_tags(crf: CRF | None, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
    """Best tag ids per sentence: Viterbi under ``crf``, or the per-token argmax without one."""
    mask = torch.arange(emissions.shape[1], device=emissions.device).unsqueeze(0) < lengths.unsqueeze(1)
    if crf is not None:
        return crf.decode(emissions, mask)[0]
    best = emissions.argmax(-1)
    return [best[b, :n].tolist() for b, n in enumerate(lengths.tolist())]


def tag_probabilities(crf: CRF | None, emissions: Tensor, lengths: Tensor) -> Tensor:
    """``p(tag k at token t)`` ``[B, T, K]``: marginals under ``crf`` (forward-backward), or the softmax."""
    mask = torch.arange(emissions.shape[1], device=emissions.device).unsqueeze(0) < lengths.unsqueeze(1)
    if crf is not None:
        return crf.marginals(emissions, mask)
    return emissions.softmax(-1) * mask.unsqueeze(2).to(emissions.dtype)


# -- data --------------------------------------------------------------------------------------
def read_sentences(path: str | Path, cfg: DataConfig) -> list[Any]:
    from ..data.conll import read_conll

    p = check_conll_path(path)
    return read_conll(p, cfg.token_column, cfg.tag_column, separator=separator_of(cfg), errors=cfg.encoding_errors)


def _count(n: int, thing: str) -> str:
    """``"1 sentence"``, ``"12 sentences"``."""
    return f"{n} {thing}{'' if n == 1 else 's'}"


def check_conll_path(path: str | Path) -> Path:
    """``path`` when it is a file; a folder (CoNLL-2003's, say) is a one-line error naming the fix."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder, not a file; fix: give the path of a CoNLL column file in it (e.g. "
                          f"{p / 'train.txt'})")
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    return p


def keep_every_tag_last(order: Sequence[int], tags: Sequence[set[str]], keys: Sequence[Any]) -> list[int]:
    """``order`` (the seeded draw of the dev hold-out, taken from the front) with, for every tag, the
    last item of the draw that carries it moved to the end, with the items of equal ``keys`` (copies
    of a sentence, which are held out together). A hold-out drawn from the front then leaves each
    tag at least one training sentence, as text classification leaves each class a text, instead of
    stopping with "tag 'B-MISC' appears in dev data but not in training data" for dev data the user
    never gave; the other items keep the draw's order."""
    last = {tag: i for i in order for tag in tags[i]}
    kept = {keys[i] for i in last.values()}
    return [i for i in order if keys[i] not in kept] + [i for i in order if keys[i] in kept]


def separator_of(cfg: DataConfig) -> str | None:
    """``data.separator`` as :func:`~rnnkit.data.conll.read_conll` takes it."""
    return "\t" if getattr(cfg, "separator", "whitespace") == "tab" else None


def line_of(sentence: Any, position: int) -> str:
    """``file:line`` of token ``position`` of a sentence read from a CoNLL file (one token per line)."""
    path, _, start = str(sentence.source).rpartition(":")
    return f"{path}:{int(start) + position}" if path and start.isdigit() else str(sentence.source)


def check_chunk_tags(sentences: Sequence[Any], cfg: DataConfig, trained_column: int | None = None) -> None:
    """Every tag must be ``O`` or ``B-``/``I-``/``E-``/``S-`` plus a type when the tags are read as chunks;
    a one-line error names the file, line and tag and the keys that fix it otherwise. ``trained_column``:
    the tag column of a trained run's files (when evaluating one)."""
    for s in sentences:
        for i, tag in enumerate(s.tags):
            if tag == "O" or (len(tag) > 2 and tag[0] in "BIES" and tag[1] in "-_"):
                continue
            where = line_of(s, i)
            if len(tag) > 2 and tag[0] in "UL" and tag[1] in "-_":
                raise ConfigError(f"{where}: tag {tag!r} is a BILOU tag, a scheme rnnkit does not read; fix: write the "
                                  "file in BIOES (U- becomes S-, L- becomes E-) and keep data.scheme=auto or BIOES")
            if trained_column is not None:
                column = "the last column" if trained_column == -1 else f"column {trained_column}"
                fix = (f"this run tags chunks, read from {column} of its training files; give a file with that "
                       "column, or pick the column of the chunk tags with --set data.tag_column=N")
            else:
                fix = ("for tags that are not chunks (POS tags) add --set data.scheme=none; for entity tags pick their "
                       "column with --set data.tag_column=N")
            raise ConfigError(f"{where}: tag {tag!r} (column {cfg.tag_column}, data.tag_column) is not a chunk tag "
                              f"(O, or B-/I-/E-/S- and a type); fix: {fix}")


def scheme_note(sentences: Sequence[Any], scheme: str, split: str, trained: bool = False) -> str | None:
    """A one-line note naming the first tag of ``sentences`` that ``scheme`` does not allow (an ``I-``
    after ``O`` in IOB2, say) and how many sentences have one; ``None`` when all are well formed.
    Such tags are read leniently, as conlleval reads them (an ``I-X`` that cannot go on a chunk opens one).
    ``trained``: the file is read by a trained run, whose ``data.scheme`` can no longer change."""
    from ..data.conll import first_scheme_violation

    found = first_scheme_violation([s.tags for s in sentences], scheme)
    if found is None:
        return None
    index, position, count = found
    tags = sentences[index].tags
    before = f"follows {tags[position - 1]!r}" if position else "starts the sentence"
    if scheme == "BIOES" and position == len(tags) - 1 and tags[position][0] in "BI":
        before = "ends the sentence without closing its chunk"
    if trained:  # data.scheme is fixed at training: say what the run does instead
        fix = (f"fix the tags if they are wrong (this run reads and writes {scheme}, the scheme of its training "
               "files; data.scheme was fixed at training)")
    else:
        fix = f"fix the tags, or set data.scheme to the files' scheme if it is not {scheme}"
    return (f"note: {line_of(sentences[index], position)}: tag {tags[position]!r} {before}, which {scheme} does not "
            f"allow ({count} of {len(sentences)} {split} sentences break {scheme}); such tags are read as conlleval "
            f"reads them (a tag that cannot continue a chunk starts one); {fix}")


def tokenize_sentence(text: str) -> list[str]:
    """Words and punctuation marks of a raw sentence."""
    return _TOKEN.findall(text)


def group_sentences(lengths: Sequence[int], documents: Sequence[int] | None, max_tokens: int) -> list[range]:
    """Consecutive sentences of one document packed, in order, into groups of at most ``max_tokens`` tokens.

    A sentence longer than ``max_tokens`` forms a group of its own. Without ``documents``, or with
    ``max_tokens`` 0, every sentence is its own group.
    """
    if not max_tokens or documents is None:
        return [range(i, i + 1) for i in range(len(lengths))]
    if len(documents) != len(lengths):
        raise ValueError(f"{len(documents)} document indices for {len(lengths)} sentences: give one per sentence")
    groups, start, total = [], 0, 0
    for i, (length, document) in enumerate(zip(lengths, documents)):
        if i > start and (document != documents[start] or total + length > max_tokens):
            groups.append(range(start, i))
            start, total = i, 0
        total += length
    if len(lengths):
        groups.append(range(start, len(lengths)))
    return groups


def documents_of(sentences: Sequence[Any]) -> list[int] | None:
    """The document index of each sentence (``TaggedSentence.document``), or None if they have none."""
    documents = [getattr(s, "document", None) for s in sentences]
    return None if any(d is None for d in documents) else documents  # type: ignore[return-value]


class Preprocessor:
    """Word, character and tag vocabularies plus the tag schemes, fitted on training data."""

    def __init__(self, words: Any, chars: Any, tags: list[str], file_scheme: str, model_scheme: str,
                 cfg: DataConfig, tag_separator: str = "-") -> None:
        self.words, self.chars, self.tags = words, chars, tags
        self.file_scheme, self.model_scheme, self.cfg = file_scheme, model_scheme, cfg
        # how the training files join prefix and type (B-PER or B_PER): answers are written the same way
        self.tag_separator = tag_separator
        self.tag_ids = {t: i for i, t in enumerate(tags)}

    @classmethod
    def fit(cls, sentences: Sequence[Any], cfg: DataConfig) -> Preprocessor:
        from ..data.conll import convert_tags, detect_scheme, normalize_scheme
        from ..data.vocab import Vocabulary

        if cfg.scheme != "none":
            check_chunk_tags(sentences, cfg)
        if cfg.scheme == "auto":
            file_scheme = detect_scheme([s.tags for s in sentences])
        elif cfg.scheme == "none":
            file_scheme = "none"
        else:
            file_scheme = normalize_scheme(cfg.scheme)
        model_scheme = file_scheme if cfg.train_scheme == "same" or file_scheme == "none" else cfg.train_scheme
        words = Vocabulary.build(([cls._word(t, cfg) for t in s.tokens] for s in sentences), min_freq=cfg.min_freq,
                                 bos_token=None, eos_token=None)
        chars = Vocabulary.build((c for s in sentences for t in s.tokens for c in [list(t)]), bos_token=None,
                                 eos_token=None)
        tag_set: Counter[str] = Counter()
        for s in sentences:
            # chunk tags are rewritten well formed (through spans, as conlleval reads them) even in the files'
            # own scheme: a stray I- after O would otherwise be a gold path the CRF's constraints forbid
            tags = list(s.tags) if file_scheme == "none" else convert_tags(s.tags, file_scheme, model_scheme)
            tag_set.update(tags)
        if model_scheme != "none":  # every spelling of a seen type: an entity of another length than training's
            # (a 2-token LOC in BIOES B-LOC E-LOC where training had only S-LOC) is no tag the training data never had
            prefixes = {"BIOES": "BIES", "IOB2": "BI", "IOB1": "BI"}[model_scheme]
            tag_set.update(f"{p}-{t[2:]}" for t in list(tag_set) if t != "O" for p in prefixes)
        joins = Counter(t[1] for s in sentences for t in s.tags if t != "O" and len(t) > 2)
        return cls(words, chars, sorted(tag_set), file_scheme, model_scheme, cfg,
                   "_" if joins["_"] > joins["-"] else "-")

    @staticmethod
    def _word(token: str, cfg: DataConfig) -> str:
        if cfg.zero_digits:
            token = _DIGIT.sub("0", token)
        return token.lower() if cfg.lowercase else token

    def to_model_tags(self, tags: Sequence[str]) -> list[str]:
        """Tags of the files as the model learns them: in the model's scheme and well formed (a stray
        ``I-X`` after ``O`` in IOB2 becomes ``B-X``, as conlleval reads it), so no gold path uses a
        transition the CRF forbids."""
        from ..data.conll import convert_tags

        if self.file_scheme == "none":
            return list(tags)
        return convert_tags(tags, self.file_scheme, self.model_scheme)

    def to_file_tags(self, tags: Sequence[str]) -> list[str]:
        """Model tags as the training files write them: their scheme, and ``B_PER`` for files that join
        prefix and type with ``_`` (the model's own tags always use ``-``)."""
        from ..data.conll import convert_tags

        out = list(tags) if self.model_scheme == self.file_scheme else convert_tags(tags, self.model_scheme,
                                                                                    self.file_scheme)
        if self.tag_separator != "-" and self.file_scheme != "none":
            out = [f"{t[0]}{self.tag_separator}{t[2:]}" if t != "O" and t[1:2] == "-" else t for t in out]
        return out

    def encode(self, tokens: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        words = [self.words.token_to_id(self._word(t, self.cfg)) for t in tokens]
        chars = [[self.chars.token_to_id(c) for c in t] for t in tokens]
        return words, chars

    def encode_tags(self, sentence: Any, split: str) -> list[int]:
        tags = self.to_model_tags(sentence.tags)
        unknown = [i for i, t in enumerate(tags) if t not in self.tag_ids]
        if unknown:  # name the tag as the file writes it (the model's scheme may spell it differently)
            types = sorted({t[2:] for t in self.tags if t != "O"})
            known = (", ".join(self.tags) if self.file_scheme == "none"
                     else f"O and the types {', '.join(types)}" if types else "O only, no entity types")
            raise ConfigError(f"{line_of(sentence, unknown[0])}: tag {sentence.tags[unknown[0]]!r} appears in {split} "
                              f"data but not in training data (known: {known}); add training sentences with it or "
                              "remove it")
        return [self.tag_ids[t] for t in tags]

    def constraints(self) -> tuple[Tensor, Tensor, Tensor] | None:
        if self.model_scheme in ("IOB2", "BIOES"):
            return allowed_transitions(self.tags, self.model_scheme)
        return None

    def save(self, run: RunDir) -> None:
        self.words.save(run.file("words.json"))
        self.chars.save(run.file("chars.json"))
        run.write_json("tags.json", {"tags": self.tags, "file_scheme": self.file_scheme,
                                     "model_scheme": self.model_scheme, "tag_separator": self.tag_separator,
                                     "data": asdict(self.cfg)})

    @classmethod
    def load(cls, run: RunDir) -> Preprocessor:
        from ..data.vocab import Vocabulary

        meta = run.read_json("tags.json")
        try:
            words = Vocabulary.load(run.file("words.json"))
            chars = Vocabulary.load(run.file("chars.json"))
        except Exception as err:
            raise RunError(f"run folder {run.path}: vocabulary files are missing or corrupt ({err}); train again") from None
        return cls(words, chars, meta["tags"], meta["file_scheme"], meta["model_scheme"], DataConfig(**meta["data"]),
                   meta.get("tag_separator", "-"))  # runs from before it was saved: '-'


class TaggedDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[list[int], list[list[int]], list[int] | None]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], list[list[int]], list[int] | None]:
        return self.items[index]


def collate(items: Sequence[tuple[list[int], list[list[int]], list[int] | None]]) -> tuple[Tensor, ...]:
    """words ``[B, T]``, chars ``[B, T, C]``, char lengths ``[B, T]``, lengths ``[B]``, tags ``[B, T]`` (-1 padded)."""
    steps = max((len(w) for w, _, _ in items), default=0) or 1
    width = max((len(c) for _, cs, _ in items for c in cs), default=0) or 1
    # padded as Python lists, one torch.tensor call each: a call per word cost 2 ms a batch of 32
    no_word = [0] * width
    words = torch.tensor([w + [0] * (steps - len(w)) for w, _, _ in items], dtype=torch.long)
    chars = torch.tensor([[c + [0] * (width - len(c)) for c in cs] + [no_word] * (steps - len(cs))
                          for _, cs, _ in items], dtype=torch.long).view(len(items), steps, width)
    char_lengths = torch.tensor([[len(c) for c in cs] + [0] * (steps - len(cs)) for _, cs, _ in items],
                                dtype=torch.long).view(len(items), steps)
    tags = torch.tensor([(t if t is not None else []) + [-1] * (steps - (len(t) if t is not None else 0))
                         for _, _, t in items], dtype=torch.long).view(len(items), steps)
    lengths = torch.tensor([len(w) for w, _, _ in items], dtype=torch.long)
    return words.view(len(items), steps), chars, char_lengths, lengths, tags


def make_loader(items: list[Any], batch_size: int, *, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    from ..data import BucketBatchSampler

    sampler = BucketBatchSampler([len(w) for w, _, _ in items], batch_size, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(TaggedDataset(items), batch_sampler=sampler, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed))  # seed draws off the global random state


def build_model(hyper: dict[str, Any], prep: Preprocessor) -> SequenceTagger:
    return SequenceTagger(**hyper, unk_id=prep.words.unk_id, constraints=prep.constraints())


# -- trained model -----------------------------------------------------------------------------
class Tagger:
    """What every trained tagger does: tag raw sentences or CoNLL files, score labelled files.

    Subclasses give the emission scores of a batch (:meth:`_emissions`) and the CRF that decodes
    them (:attr:`_crf`, ``None`` for a per-token softmax); ``prep`` reads files and names tags.
    """

    prep: Preprocessor
    batch_size: int

    @property
    def _crf(self) -> CRF | None:
        raise NotImplementedError

    def _emissions(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        """Emission scores ``[B, T, K]`` and lengths ``[B]`` for a batch of tokenized sentences."""
        raise NotImplementedError

    def tag_tokens(self, sentences: Sequence[Sequence[str]], documents: Sequence[int] | None = None) -> list[list[str]]:
        """Tags (in the training file's scheme) for tokenized sentences, in order.

        ``documents`` gives each sentence's document; with ``data.document_context`` set at training,
        consecutive sentences of a document are read together, as in training, and each sentence is
        then decoded on its own from its tokens' scores (no entity crosses a sentence boundary).
        """
        if documents is not None and len(documents) != len(sentences):
            raise ValueError(f"{len(documents)} document indices for {len(sentences)} sentences: give one per sentence")
        if documents is None or not self._document_context():
            return [tags for tags, _ in self._tag(sentences, with_scores=False)]
        scores = self._sentence_emissions(sentences, documents)
        out: list[list[str]] = []
        with torch.no_grad():
            for start in range(0, len(sentences), self.batch_size):
                batch = scores[start:start + self.batch_size]
                lengths = torch.tensor([len(x) for x in batch], dtype=torch.long)
                emissions = torch.zeros(len(batch), max(1, int(lengths.max())), len(self.prep.tags))
                for b, x in enumerate(batch):
                    emissions[b, : len(x)] = x
                out += [self.prep.to_file_tags([self.prep.tags[k] for k in path])
                        for path in decode_tags(self._crf, emissions, lengths)]
        return out

    def _document_context(self) -> bool:
        """Whether sentences are read with their neighbours (``data.document_context`` at training)."""
        return bool(self.prep.cfg.document_context)

    def _sentence_emissions(self, sentences: Sequence[Sequence[str]], documents: Sequence[int]) -> list[Tensor]:
        """Emission scores ``[n_i, K]`` of each sentence, read with its document's neighbours."""
        raise NotImplementedError

    def _tag(self, sentences: Sequence[Sequence[str]], with_scores: bool) -> list[tuple[list[str], list[float]]]:
        """Per sentence: the decoded tags (file scheme) and, with ``with_scores``, each tag's probability."""
        out: list[tuple[list[str], list[float]]] = []
        shown_as = self._shown_as() if with_scores else None  # [K, K], the same for every batch
        with torch.no_grad():
            for start in range(0, len(sentences), self.batch_size):
                emissions, lengths = self._emissions(sentences[start:start + self.batch_size])
                paths = decode_tags(self._crf, emissions, lengths)
                probs = None if shown_as is None else tag_probabilities(self._crf, emissions, lengths) @ shown_as
                for b, ids in enumerate(paths):
                    scores = [] if probs is None else probs[b, torch.arange(len(ids)), ids].tolist()
                    out.append((self.prep.to_file_tags([self.prep.tags[i] for i in ids]), scores))
        return out

    def _shown_as(self) -> Tensor:
        """``[K, K]`` 0/1: model tags ``j`` that read as the same file-scheme tag as model tag ``k``.

        A BIOES model answering for an IOB file shows ``B-X`` for ``B-X`` and ``S-X`` (a chunk of
        type X starts here) and ``I-X`` for ``I-X`` and ``E-X`` (it goes on), so a token's score
        sums the marginals of the model tags behind the tag shown.
        """
        tags = self.prep.tags
        if self.prep.model_scheme == self.prep.file_scheme or self.prep.model_scheme != "BIOES":
            return torch.eye(len(tags))

        def meaning(tag: str) -> tuple[str, str]:
            if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
                return ("start" if tag[0] in "BS" else "inside"), tag[2:]
            return tag, ""

        keys = [meaning(t) for t in tags]
        return torch.tensor([[float(a == b) for b in keys] for a in keys])

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Tokens, tags with their probabilities, and entity spans with scores for raw sentences.

        Sentences are split into words and punctuation. ``scores[t]`` is the model's probability of
        token ``t``'s tag as shown: the CRF marginal ``p(y_t | sentence)`` (forward-backward) or the
        softmax, summed over the model-scheme tags that read as that tag (``B-X`` and ``S-X`` for an
        IOB2 ``B-X``). An entity's ``score`` is the mean of its tokens' scores (as Flair reports spans).
        """
        check_batch(texts, "sentences")
        from ..data.conll import tags_to_spans

        tokenized = [tokenize_sentence(t) for t in texts]
        results = []
        for text, tokens, (tags, scores) in zip(texts, tokenized, self._tag(tokenized, with_scores=True)):
            spans = tags_to_spans(tags, self.prep.file_scheme) if self.prep.file_scheme != "none" else []
            entities = [{"text": " ".join(tokens[s.start:s.end]), "type": s.label, "start": s.start, "end": s.end,
                         "score": round(sum(scores[s.start:s.end]) / (s.end - s.start), 4)} for s in spans]
            results.append({"text": text, "tokens": tokens, "tags": tags, "scores": [round(p, 4) for p in scores],
                            "entities": entities})
        return results

    def use_overrides(self, overrides: Sequence[str]) -> None:
        """Read later files (``evaluate``, ``tag_conll``) with ``data.*`` overrides (``READING_KEYS``
        only: columns, separator, encoding errors)."""
        self.prep.cfg = reading_overrides(self.prep.cfg, overrides, READING_KEYS, "predict --set")

    def evaluate(self, path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Scores on a labelled CoNLL file; ``overrides`` (``data.key=value``, ``READING_KEYS`` only)
        change how it is read, e.g. ``data.tag_column=2``. Tags never seen in training are an error."""
        cfg = reading_overrides(self.prep.cfg, overrides, READING_KEYS, "evaluate --set")
        sentences = [s for s in read_sentences(path, cfg) if len(s)]
        if not sentences:
            raise ConfigError(f"{path}: no tagged sentences read (an empty file?); give a CoNLL file with one token "
                              "and its tag per line")
        if self.prep.file_scheme != "none":
            check_chunk_tags(sentences, cfg, trained_column=self.prep.cfg.tag_column)
        for s in sentences:
            self.prep.encode_tags(s, "evaluation")
        metrics = self.score(sentences)
        if self.prep.file_scheme != "none":  # gold tags the scheme does not allow are scored leniently: say so
            note = scheme_note(sentences, self.prep.file_scheme, "evaluated", trained=True)
            if note:
                metrics["notes"] = [*metrics.get("notes", []), note.removeprefix("note: ")]
        return metrics

    def score(self, sentences: Sequence[Any]) -> dict[str, Any]:
        from ..metrics.entities import entity_scores

        gold = [list(s.tags) for s in sentences]
        start = time.perf_counter()
        predicted = self.tag_tokens([s.tokens for s in sentences], documents_of(sentences))
        seconds = time.perf_counter() - start
        if self.prep.file_scheme == "none":
            total = sum(len(g) for g in gold)
            acc = sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p)) / max(total, 1)
            return {"token_accuracy": acc, "sentences": len(sentences),
                    "sentences_per_second": len(sentences) / max(seconds, 1e-9)}
        metrics = entity_scores(gold, predicted, self.prep.file_scheme)
        metrics["sentences"] = len(sentences)
        metrics["sentences_per_second"] = len(sentences) / max(seconds, 1e-9)
        return metrics

    def tag_conll(self, path: str | Path) -> list[str]:
        """The lines of a CoNLL column file, each token line with the predicted tag appended.

        Tokens come from ``data.token_column`` (other columns, tags included, are kept as they
        are, so a file without tags works too); blank and ``-DOCSTART-`` lines are copied.
        """
        from ..data.conll import read_conll, split_columns
        from ..data.errors import DataError
        from ..data.io import iter_lines

        col, errors = self.prep.cfg.token_column, self.prep.cfg.encoding_errors
        separator = separator_of(self.prep.cfg)
        check_conll_path(path)  # as evaluate says it, not as a column-layout problem
        try:
            sentences = read_conll(path, col, col, separator=separator, errors=errors)  # names file and line
        except (DataError, UnicodeDecodeError) as err:
            if isinstance(err, DataError):
                where = ":".join(str(x) for x in (err.path, err.line) if x is not None) or str(path)
                where = f"{where}: {err.message}"
            else:
                where = str(err)
            # the reading keys apply to this file as they do to evaluate: undecodable bytes take the reader's
            # fix (--set data.encoding_errors=replace), a layout the run's columns do not fit --set data.token_column
            undecodable = not isinstance(err, DataError) or err.message.startswith("cannot decode")
            hint = (getattr(err, "hint", None) if undecodable else None) or (
                "give a file with the training files' column layout, or read this one's with --set "
                "data.token_column=N (and data.separator=tab|whitespace)")
            raise DataError(f"{where} (this run reads tokens from column {col}, data.token_column)",
                            hint=hint) from None
        tagged = iter(self.tag_tokens([s.tokens for s in sentences], documents_of(sentences)))
        out: list[str] = []
        current: Iterator[str] | None = None
        for _, line in iter_lines(path, errors=errors):
            # split as read_conll does, so token lines here are the tokens it read
            fields = split_columns(line, separator)
            if not fields or line.split()[0] == "-DOCSTART-":
                out.append(line)
                current = None
                continue
            if current is None:
                current = iter(next(tagged))
            appended = "\t" if "\t" in line else " "  # the file's own separator
            out.append(f"{line}{appended}{next(current)}")
        return out

    def write_conll(self, sentences: Sequence[Any], path: str | Path) -> None:
        """Write ``token gold predicted`` lines (conlleval's input format)."""
        predicted = self.tag_tokens([s.tokens for s in sentences], documents_of(sentences))
        lines = []
        for s, tags in zip(sentences, predicted):
            lines += [f"{tok} {gold} {pred}" for tok, gold, pred in zip(s.tokens, s.tags, tags)] + [""]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


class TrainedTagger(Tagger):
    """A trained tagger with its vocabularies (see :class:`Tagger` for what it does)."""

    def __init__(self, model: SequenceTagger, prep: Preprocessor, batch_size: int = 64) -> None:
        self.model, self.prep, self.batch_size = model.eval(), prep, batch_size

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedTagger:
        run, meta = RunDir.open_task(run_dir, NAME)
        prep = Preprocessor.load(run)
        return cls(run.load_into(run.build_model(meta, lambda hyper: build_model(hyper, prep))), prep)  # type: ignore[arg-type]

    def diagnostic_batch(self, path: str | Path, size: int = 32) -> tuple[nn.Module, Any, Callable[[nn.Module, Any], Tensor]]:
        """``(model, batch, loss_fn)`` on the first ``size`` non-empty sentences of ``path`` (for
        :func:`rnnkit.insight.gradient_diagnostics`); the loss is the tagger's training objective."""
        sentences = [s for s in read_sentences(path, self.prep.cfg) if len(s)][:size]
        if not sentences:
            raise ValueError(f"{path}: no non-empty sentences")
        batch = collate([(*self.prep.encode(list(s.tokens)), self.prep.encode_tags(s, "diagnostic")) for s in sentences])

        def loss_fn(m: nn.Module, b: Any) -> Tensor:
            words, chars, char_lengths, lengths, tags = b
            return m.loss(m(words, chars, char_lengths, lengths), tags.clamp(min=0), lengths)  # type: ignore[operator]

        return self.model, batch, loss_fn

    @property
    def _crf(self) -> CRF | None:
        return self.model.crf

    def _emissions(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        words, chars, char_lengths, lengths, _ = collate([(*self.prep.encode(s), None) for s in sentences])
        return self.model(words, chars, char_lengths, lengths), lengths

    def _sentence_emissions(self, sentences: Sequence[Sequence[str]], documents: Sequence[int]) -> list[Tensor]:
        groups = group_sentences([len(s) for s in sentences], documents, self.prep.cfg.document_context)
        joined = [[token for i in g for token in sentences[i]] for g in groups]
        out: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, len(joined), self.batch_size):
                emissions = self._emissions(joined[start:start + self.batch_size])[0]
                for b, group in enumerate(groups[start:start + self.batch_size]):
                    position = 0
                    for i in group:
                        out.append(emissions[b, position:position + len(sentences[i])])
                        position += len(sentences[i])
        return out


# -- training ----------------------------------------------------------------------------------
def dev_metrics(config: Config) -> dict[str, str | None]:
    """Every quality metric ``train`` reports under ``metrics["dev"]`` for ``config``, with its
    direction: ``"max"`` (higher is better), ``"min"`` (lower is better) or ``None`` (no better
    direction). Counts and speeds are left out. ``rnnkit compare`` reads it."""
    if config.data.scheme == "none":
        return {"token_accuracy": "max"}
    # with data.scheme=auto, entity scores come only when the files' tags form chunks
    return {"f1": "max", "precision": "max", "recall": "max", "token_accuracy": "max"}


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: the one that selects the best epoch (entity F1,
    token accuracy for tags without a chunk scheme)."""
    return "token_accuracy" if config.data.scheme == "none" else "f1"


def train(config: Config, train_path: str | Path, dev_path: str | Path | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    from ..metrics.entities import entity_scores
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import markdown_table, plot_learning_curves

    cfg, t0 = config, time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    train_sents = [s for s in read_sentences(train_path, cfg.data) if len(s)]
    documents = sorted({s.document for s in train_sents}) if dev_path is None else []
    if dev_path is None and cfg.data.document_context and len(documents) > 1:  # keep documents whole
        order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
        tags_of: dict[int, set[str]] = {d: set() for d in documents}
        for s in train_sents:
            tags_of[s.document].update(s.tags)
        order = keep_every_tag_last(order, [tags_of[d] for d in documents], documents)
        held_out = {documents[i] for i in order[: max(1, len(documents) // 10)]}
        dev_sents = [s for s in train_sents if s.document in held_out]
        train_sents = [s for s in train_sents if s.document not in held_out]
        if dev_sents:
            log(f"no --dev given: held out {_count(len(held_out), 'training document')} "
                f"({_count(len(dev_sents), 'sentence')}) for model selection")
    elif dev_path is None:
        from ..data.splits import take_whole_groups

        order = torch.randperm(len(train_sents), generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
        order = keep_every_tag_last(order, [set(s.tags) for s in train_sents], [s.tokens for s in train_sents])
        n_dev = max(1, len(train_sents) // 10)
        # a sentence that occurs more than once (a score line, a dateline) goes to dev with all its copies or not at
        # all; dev never grows past n_dev (a group of more copies than that stays in training)
        held = take_whole_groups(order, [s.tokens for s in train_sents], n_dev, keep=1 if len(order) > 1 else 0)
        dev_sents = [s for i, s in enumerate(train_sents) if i in held]
        train_sents = [s for i, s in enumerate(train_sents) if i not in held]
        if dev_sents:  # an empty file stops just below, without a "held out 0" line first
            log(f"no --dev given: held out {_count(len(dev_sents), 'training sentence')} for model selection")
    else:
        dev_sents = [s for s in read_sentences(dev_path, cfg.data) if len(s)]
    if not train_sents or not dev_sents:
        if dev_path is None and dev_sents:  # the file had sentences, all of them held out for dev
            raise ConfigError(f"{train_path}: only {len(dev_sents)} non-empty sentence(s), all held out for model "
                              "selection, none left to train on; give more sentences or a dev file with --dev")
        which, source = ("training", train_path) if not train_sents else ("dev", dev_path or train_path)
        raise ConfigError(f"{source}: no non-empty sentences in the {which} data (an empty file, or only -DOCSTART- "
                          "and blank lines?); give a CoNLL file with one token and its tag per line, sentences "
                          "separated by blank lines")
    prep = Preprocessor.fit(train_sents, cfg.data)
    if prep.file_scheme != "none":
        check_chunk_tags(dev_sents, cfg.data)
        for split, sentences in (("training", train_sents), ("dev", dev_sents)):
            note = scheme_note(sentences, prep.file_scheme, split)
            if note:
                log(note)
    def items(sentences: list[Any], split: str) -> list[Any]:  # one item per group of sentences read together
        groups = group_sentences([len(s) for s in sentences], documents_of(sentences), cfg.data.document_context)
        return [(*prep.encode([t for i in g for t in sentences[i].tokens]),
                 [tag for i in g for tag in prep.encode_tags(sentences[i], split)]) for g in groups]

    train_items, dev_items = items(train_sents, "training"), items(dev_sents, "dev")
    if cfg.data.document_context:
        log(f"document context: {len(train_items)} training / {len(dev_items)} dev sequences of consecutive "
            f"sentences, up to {cfg.data.document_context} tokens each")
    schemes = ("not chunks, data.scheme=none" if prep.file_scheme == "none"  # POS tags: no scheme to convert
               else f"{prep.file_scheme} in the file, {prep.model_scheme} in the model")
    log(f"{len(train_sents)} training / {len(dev_sents)} dev sentences; tags ({schemes}): {', '.join(prep.tags)}; "
        f"{len(prep.words)} words, {len(prep.chars)} characters")
    m = cfg.model
    hyper = {"vocab_size": len(prep.words), "num_chars": len(prep.chars), "num_tags": len(prep.tags),
             "embedding_dim": m.embedding_dim, "char_encoder": m.char_encoder, "char_embedding_dim": m.char_embedding_dim,
             "char_hidden_size": m.char_hidden_size, "hidden_size": m.hidden_size, "num_layers": m.num_layers,
             "cell": m.cell, "decoder": m.decoder, "dropout": m.dropout, "word_dropout": m.word_dropout,
             "singleton_dropout": m.singleton_dropout}
    model = build_for_run(run, lambda: build_model(hyper, prep))
    if m.singleton_dropout:
        singles = [i for i, w in enumerate(prep.words) if prep.words.counts.get(w) == 1]
        model.set_singletons(singles)
        log(f"singleton dropout: {len(singles)} words seen once may be replaced by <unk> "
            f"with probability {m.singleton_dropout}")
    if cfg.data.pretrained_vectors:
        from ..data.vectors import load_word_vectors

        vectors, found = load_word_vectors(cfg.data.pretrained_vectors, list(prep.words), m.embedding_dim)
        with torch.no_grad():
            model.word_embedding.weight[found] = vectors[found]
        log(f"pretrained vectors: {int(found.sum())} of {len(prep.words)} words found in {cfg.data.pretrained_vectors}")
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {m.char_encoder} characters + Bi{m.cell.upper()} x{m.num_layers} + {m.decoder}, {params:,} parameters")
    max_len = max(len(w) for w, _, _ in dev_items)
    scheme = prep.model_scheme if prep.model_scheme != "none" else None

    def loss_fn(mdl: nn.Module, batch: Any) -> Tensor:
        words, chars, char_lengths, lengths, tags = batch
        emissions = mdl(words, chars, char_lengths, lengths)
        return mdl.loss(emissions, tags.clamp(min=0), lengths)  # type: ignore[operator]

    def predict_fn(mdl: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        words, chars, char_lengths, lengths, tags = batch
        paths = mdl.decode(mdl(words, chars, char_lengths, lengths), lengths)  # type: ignore[operator]
        pred = torch.full((len(paths), max_len), -1, dtype=torch.long)
        for b, p in enumerate(paths):
            pred[b, : len(p)] = torch.tensor(p, dtype=torch.long)
        gold = torch.full((len(paths), max_len), -1, dtype=torch.long)
        gold[:, : tags.shape[1]] = tags
        return pred, gold

    def metric_fn(pred: Tensor, gold: Tensor) -> dict[str, float]:
        g = [[prep.tags[i] for i in row if i >= 0] for row in gold.tolist()]
        p = [[prep.tags[i] for i in row if i >= 0] for row in pred.tolist()]
        if scheme is not None:  # scored in the file's scheme, as evaluate and metrics.json score them
            from ..data.conll import convert_tags

            if prep.model_scheme != prep.file_scheme:
                g = [convert_tags(x, prep.model_scheme, prep.file_scheme) for x in g]
                p = [convert_tags(x, prep.model_scheme, prep.file_scheme) for x in p]
        if scheme is None:
            total = sum(len(x) for x in g)
            return {"token_accuracy": sum(a == b for x, y in zip(g, p) for a, b in zip(x, y)) / max(total, 1)}
        s = entity_scores(g, p, prep.file_scheme)
        return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"], "token_accuracy": s["token_accuracy"]}

    monitor = "f1" if scheme is not None else "token_accuracy"
    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate, optimizer=cfg.train.optimizer,
                            weight_decay=cfg.train.weight_decay, clip_norm=cfg.train.clip_norm,
                            patience=cfg.train.patience, monitor=monitor, mode="max", seed=cfg.train.seed,
                            accelerator=cfg.train.accelerator, progress=progress,
                            lr_decay=cfg.train.lr_decay, lr_decay_patience=cfg.train.lr_decay_patience, average_weights=cfg.train.average_weights,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    history = fit(model, make_loader(train_items, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed),
                  make_loader(dev_items, 4 * cfg.train.batch_size, shuffle=False, seed=0),
                  loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn, options=options, run=run, log=log)
    prep.save(run)
    run.save_model(model, NAME, hyper)
    tagger = TrainedTagger(model, prep)
    dev_metrics = tagger.score(dev_sents)
    tagger.write_conll(dev_sents, run.file("dev.predictions.conll"))
    seconds = time.perf_counter() - t0 + prior_seconds()  # a resumed run: its whole training
    best = max(history, key=lambda r: r.get(f"dev_{monitor}", -math.inf))["epoch"] if history else 0
    metrics = {"dev": dev_metrics, "train_seconds": seconds, "parameters": params, "best_epoch": best,
               "epochs_run": len(history), "stopped": stop_reason()}
    run.write_json("metrics.json", metrics)
    curves = plot_learning_curves(history, run.file("learning_curves.png"))
    report = [f"# Sequence labelling run: {run.path.name}", "",
              f"Trained on `{train_path}` ({len(train_sents)} sentences), selected on "
              f"{'`' + str(dev_path) + '`' if dev_path else 'a held-out tenth of the training file'} "
              f"({len(dev_sents)} sentences) in {seconds:.0f} s; best epoch {best} of {len(history)}; "
              f"{params:,} parameters.", ""]
    if "per_type" in dev_metrics:
        report += ["## Dev entity scores (CoNLL counting)", "",
                   markdown_table(["type", "precision", "recall", "f1", "support"],
                                  [[k, v["precision"], v["recall"], v["f1"], v["support"]]
                                   for k, v in dev_metrics["per_type"].items()]
                                  + [["all (micro)", dev_metrics["precision"], dev_metrics["recall"], dev_metrics["f1"],
                                      sum(v["support"] for v in dev_metrics["per_type"].values())]]),
                   "", f"Token accuracy {dev_metrics['token_accuracy']:.4f}; decoding "
                   f"{dev_metrics['sentences_per_second']:.0f} sentences/s.", ""]
    else:
        report += [f"Dev token accuracy {dev_metrics['token_accuracy']:.4f}.", ""]
    if curves:
        report += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    run.write_text("report.md", "\n".join(report))
    return metrics
