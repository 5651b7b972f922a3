"""Machine translation with recurrent encoder-decoders and attention (the model is in ``seq2seq.py``).

Data: two line-aligned files (``--train train.de train.en``) or one TSV file, read with
:func:`rnnkit.data.read_parallel`; pairs with an empty side are skipped and counted
(``data.empty=skip``) or stop training (``data.empty=error``). Subword vocabularies (BPE or
unigram, shared by both languages or one per language) are trained on the training data only.
Training pairs longer than ``data.max_source_tokens`` / ``data.max_target_tokens`` subwords are
left out (and counted); at translation time a longer source is an error unless ``truncate=True``
(``rnnkit translate --truncate``).

Training: teacher forcing, label-smoothed cross entropy, length-bucketed batches, early stopping
on dev BLEU from greedy decoding. Evaluation: beam search, detokenized output scored with
sacreBLEU (BLEU and chrF, reported with sacreBLEU's signatures) against the raw references.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..cells import CELLS
from ..nn.attention import ATTENTIONS
from .config import (
    LR_DECAY_HELP,
    LR_DECAY_PATIENCE_HELP,
    MAX_MINUTES_HELP,
    PRECISION_HELP,
    ConfigError,
    PrecisionName,
    check_batch,
    check_cell,
    check_lr_decay,
    check_max_minutes,
    check_precision,
    check_rates,
    option,
    seconds_budget,
    section,
)
from .run import RunDir, RunError
from .seq2seq import Hypothesis, Seq2Seq, beam_search, greedy_search, normalized

NAME = "translation"
# The data readers' arguments as config keys, for one-line errors worded for the command line.
CONFIG_KEYS = {"empty": "data.empty"}
DESCRIPTION = "Machine translation with attentional recurrent encoder-decoders (two aligned files or TSV; BLEU/chrF)"
# data.* keys that ``evaluate --set`` may change (how the evaluation files are read); the others were fixed
# by training (the subword vocabularies, lowercasing, length limits), so changing one is a one-line error
EVALUATE_DATA_KEYS = ("source_column", "target_column", "empty")
# source and target texts whose sides each split into this many times more subwords per word under
# their own vocabulary than under the other side's are taken as swapped (Preprocessor.check_sides); the
# first SIDE_SAMPLE pairs are measured
SWAPPED_MARGIN = 1.2
SIDE_SAMPLE = 1000
# a side whose text splits into this many times the subwords per word of its training text gets a note
# (Preprocessor.language_notes): likely another language than the model's
FOREIGN_RATIO = 1.5
SWAP_FIX = ("give the source file first, as at training (--data SOURCE TARGET); for a .tsv file swap "
            "data.source_column and data.target_column")
PAIRED_INPUT = True  # --train/--dev/--data accept two paths: source file and target file
PathArg = str | Path | Sequence[str | Path]


@dataclass
class DataConfig:
    tokenizer: Literal["bpe", "unigram"] = option("bpe", "subword model trained on the training data")
    vocab_size: int = option(8000, "subword vocabulary size per vocabulary (special tokens included)")
    shared_vocabulary: bool = option(False, "one subword vocabulary for both languages (else one per language)")
    min_frequency: int = option(2, "minimum pair frequency for BPE merges")
    lowercase: bool = option(False, "lowercase both sides before subword tokenization")
    max_source_tokens: int = option(100, "longest source in subwords: longer training pairs are left out, "
                                         "longer inputs are refused at translation time")
    max_target_tokens: int = option(100, "longest training target in subwords (longer pairs are left out)")
    empty: Literal["skip", "error"] = option("skip", "pairs with an empty side: skip them (counted) or stop")
    source_column: int = option(0, "TSV input: 0-based column of the source sentence")
    target_column: int = option(1, "TSV input: 0-based column of the target sentence")
    dev_fraction: float = option(0.05, "share of the training pairs held out for model selection without --dev")


@dataclass
class ModelConfig:
    cell: str = option("lstm", f"recurrent cell of encoder and decoder: {', '.join(sorted(CELLS))}")
    embedding_dim: int = option(256, "embedding size (source and target)")
    hidden_size: int = option(256, "encoder units per direction")
    num_layers: int = option(1, "encoder layers (bidirectional)")
    decoder_hidden_size: int | None = option(None, "decoder units (null: 2 * hidden_size)")
    decoder_layers: int = option(1, "decoder layers")
    attention: Literal["bahdanau", "luong_dot", "luong_general"] = option(
        "bahdanau", "bahdanau: additive on s_{t-1}; luong_dot / luong_general: multiplicative on s_t")
    attention_size: int | None = option(None, "hidden width of additive attention (null: decoder size)")
    input_feeding: bool = option(True, "feed the previous attentional vector into the decoder")
    coverage: bool = option(False, "coverage vector in the attention score plus a coverage loss")
    tie_embeddings: bool = option(True, "decoder input embedding = output projection")
    dropout: float = option(0.3, "dropout on embeddings, between layers and before the output layer")


@dataclass
class TrainConfig:
    epochs: int = option(10, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(64, "sentence pairs per batch (length-bucketed)")
    learning_rate: float = option(1e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = option("adam", "optimizer")
    lr_decay: float | None = option(None, LR_DECAY_HELP)
    lr_decay_patience: int = option(1, LR_DECAY_PATIENCE_HELP)
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(1.0, "gradient norm clipping (null: none)")
    patience: int | None = option(3, "early-stopping patience in epochs on dev BLEU (null: never)")
    label_smoothing: float = option(0.1, "label smoothing of the cross entropy")
    coverage_weight: float = option(1.0, "weight of the coverage loss (with model.coverage)")
    seed: int = option(0, "random seed")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class DecodeConfig:
    beam_size: int = option(5, "beam size for evaluation and translation (1: greedy)")
    nbest: int = option(1, "hypotheses returned per sentence")
    length_penalty: float = option(1.0, "rank finished hypotheses by log_prob / length ** length_penalty")
    max_length_ratio: float = option(1.5, "output limit: ratio * source length + offset tokens")
    max_length_offset: int = option(10, "output limit: ratio * source length + offset tokens")
    batch_size: int = option(64, "sentences decoded together")

    def validate(self) -> None:
        """Checked wherever decoding options are read: the training config, a run's ``model.json`` and
        ``--set decode.*`` on ``translate`` / ``evaluate`` / ``predict`` (``nbest <= beam_size`` is checked
        where both are used: a run's n-best setting must not refuse a greedy evaluation)."""
        for key in ("beam_size", "nbest", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"decode.{key}: must be >= 1, got {getattr(self, key)}")
        if not (math.isfinite(self.max_length_ratio) and self.max_length_ratio >= 0):
            raise ConfigError(f"decode.max_length_ratio: must be a finite number >= 0, got {self.max_length_ratio}")
        if not math.isfinite(self.length_penalty):
            raise ConfigError(f"decode.length_penalty: must be a finite number, got {self.length_penalty}")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "reading the parallel files and subword vocabularies")
    model: ModelConfig = section(ModelConfig, "the encoder-decoder")
    train: TrainConfig = section(TrainConfig, "optimisation")
    decode: DecodeConfig = section(DecodeConfig, "beam search for the final dev score and translation")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        check_cell(self.model.cell)
        positive = [("data.vocab_size", self.data.vocab_size), ("data.max_source_tokens", self.data.max_source_tokens),
                    ("data.max_target_tokens", self.data.max_target_tokens),
                    ("model.embedding_dim", self.model.embedding_dim), ("model.hidden_size", self.model.hidden_size),
                    ("model.num_layers", self.model.num_layers), ("model.decoder_layers", self.model.decoder_layers),
                    ("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size)]
        for key, value in positive:
            if value < 1:
                raise ConfigError(f"{key}: must be >= 1, got {value}")
        if self.data.vocab_size < 8:
            raise ConfigError(f"data.vocab_size: must be >= 8 (4 special tokens plus subwords), got {self.data.vocab_size}")
        self.decode.validate()
        if self.decode.nbest > self.decode.beam_size:
            raise ConfigError(f"decode.nbest ({self.decode.nbest}) cannot exceed decode.beam_size "
                              f"({self.decode.beam_size})")
        check_rates(("model.dropout", self.model.dropout), ("train.label_smoothing", self.train.label_smoothing))
        check_lr_decay(self.train.lr_decay, self.train.lr_decay_patience)
        if not 0 < self.data.dev_fraction < 1:
            raise ConfigError(f"data.dev_fraction: must be in (0, 1), got {self.data.dev_fraction}")
        dec = self.model.decoder_hidden_size or 2 * self.model.hidden_size
        if self.model.attention == "luong_dot" and dec != 2 * self.model.hidden_size:
            raise ConfigError(f"model.attention=luong_dot compares decoder states ({dec} units) with encoder outputs "
                              f"(2 * model.hidden_size = {2 * self.model.hidden_size}); make them equal "
                              "(model.decoder_hidden_size=null) or use luong_general")
        if self.model.attention not in ATTENTIONS:  # pragma: no cover - Literal already checks
            raise ConfigError(f"model.attention: choose one of {', '.join(ATTENTIONS)}")


# -- metrics -----------------------------------------------------------------------------------
def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("translation metrics need sacrebleu: pip install 'rnnkit[translation]'") from None
    return sacrebleu


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool = False) -> dict[str, Any]:
    """Detokenized corpus BLEU and chrF with sacreBLEU's default settings and their signatures.

    Args:
        hypotheses: System outputs, plain text (not tokenized).
        references: One reference per hypothesis, plain text.
        lowercase: Score case-insensitively (sacreBLEU's ``lowercase``; the signatures then say
            ``case:lc``). A model trained with ``data.lowercase`` outputs lowercase text, which
            case-sensitive scoring against cased references would count as errors in every
            capitalised word; training and ``evaluate`` pass the run's ``data.lowercase`` here.

    Returns:
        ``bleu``, ``chrf`` (0-100), ``bleu_signature``, ``chrf_signature`` and BLEU's details
        (``bleu_precisions``, ``brevity_penalty``, ``length_ratio``).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:  # sacreBLEU fails here with an IndexError
        raise ValueError("no sentences to score: corpus BLEU and chrF need at least one hypothesis and reference")
    metrics = _sacrebleu().metrics
    bleu, chrf = metrics.BLEU(lowercase=lowercase), metrics.CHRF(lowercase=lowercase)
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": float(b.score), "chrf": float(c.score), "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "bleu_precisions": [float(p) for p in b.precisions],
            "brevity_penalty": float(b.bp), "length_ratio": float(b.ratio)}


# -- data --------------------------------------------------------------------------------------
def read_pairs(path: PathArg, cfg: DataConfig) -> Any:
    """Sentence pairs from ``(source file, target file)`` or one TSV file (``.tsv``/``.tsv.gz``)."""
    from ..data.parallel import read_parallel, read_parallel_tsv

    paths = [path] if isinstance(path, str | Path) else list(path)
    if len(paths) == 2:
        return read_parallel(paths[0], paths[1], empty=cfg.empty)
    if len(paths) == 1 and str(paths[0]).endswith((".tsv", ".tsv.gz", ".txt.tsv")):
        return read_parallel_tsv(paths[0], cfg.source_column, cfg.target_column, empty=cfg.empty)
    shown = " ".join(str(p) for p in paths)
    raise ConfigError(f"translation reads two line-aligned files (source then target, e.g. train.de train.en) "
                      f"or one .tsv file; got {len(paths)} path(s): {shown}")


class Preprocessor:
    """Source and target subword encoders fitted on the training pairs."""

    def __init__(self, source: Any, target: Any, cfg: DataConfig,
                 train_subwords_per_word: dict[str, float] | None = None) -> None:
        self.source, self.target, self.cfg = source, target, cfg
        tok = target.tokenizer
        self.pad_id, self.bos_id, self.eos_id = (int(tok.token_to_id(t)) for t in ("<pad>", "<bos>", "<eos>"))
        # subwords per word of the training sources and targets (None: a run saved before they were kept)
        self.train_subwords_per_word = train_subwords_per_word

    @classmethod
    def fit(cls, sources: Sequence[str], targets: Sequence[str], cfg: DataConfig) -> Preprocessor:
        from ..data.encoding import TextEncoder
        from ..data.tokenizers import SubwordTokenizer

        def train(texts: Sequence[str]) -> TextEncoder:
            tok = SubwordTokenizer.train(texts, model=cfg.tokenizer, vocab_size=cfg.vocab_size,
                                         min_frequency=cfg.min_frequency, lowercase=cfg.lowercase)
            return TextEncoder(tok)

        if cfg.shared_vocabulary:
            shared = train(list(sources) + list(targets))
            prep = cls(shared, shared, cfg)
        else:
            prep = cls(train(sources), train(targets), cfg)
        prep.train_subwords_per_word = {"source": prep.subwords_per_word(sources[:SIDE_SAMPLE], "source"),
                                        "target": prep.subwords_per_word(targets[:SIDE_SAMPLE], "target")}
        return prep

    @property
    def shared(self) -> bool:
        return self.source is self.target

    def encode_source(self, text: str) -> list[int]:
        """Subword ids of a source sentence followed by ``<eos>``."""
        return self.source.encode(text) + [self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        """Subword ids of a target sentence (no specials)."""
        return self.target.encode(text)

    def source_tokens(self, text: str) -> list[str]:
        return [*self.source.tokenizer.tokenize(text), "<eos>"]

    def target_tokens(self, ids: Sequence[int]) -> list[str]:
        backend = self.target.tokenizer.backend
        return [str(backend.id_to_token(int(i))) for i in ids]

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.target.decode(ids))

    def subwords_per_word(self, texts: Sequence[str], side: str) -> float:
        """Mean subwords per whitespace word of ``texts`` under the ``side`` (``"source"`` or
        ``"target"``) vocabulary. A subword vocabulary learnt on one language splits text of another
        into many more, shorter pieces, which is what :meth:`check_sides` reads. An unknown piece
        counts once per character it covers: a vocabulary that cannot spell the text is no cheaper for it
        (a Unigram model puts a whole word of another script into one ``<unk>``, which would otherwise
        read as the cheapest split of all and an English-Russian pair as swapped)."""
        tokenizer = (self.source if side == "source" else self.target).tokenizer
        words = sum(len(t.split()) for t in texts)
        unk = tokenizer.backend.token_to_id(tokenizer.special_tokens[1])
        pieces = sum(max(end - start, 1) if i == unk else 1
                     for encoding in tokenizer.backend.encode_batch(list(texts))
                     for i, (start, end) in zip(encoding.ids, encoding.offsets))
        return pieces / max(words, 1)

    def check_sides(self, sources: Sequence[str], targets: Sequence[str], where: str, fix: str) -> None:
        """A one-line error when the source and target texts look swapped: the source text splits into
        fewer subwords per word under the target vocabulary than under the source one, and the target
        text fewer under the source vocabulary, both by more than :data:`SWAPPED_MARGIN` (in a pair the
        right way round each side is far cheaper under its own vocabulary: on Multi30k De-En about 1.8
        against 3.5 subwords per word). A swapped pair would otherwise be scored (BLEU near 0) or, as a
        dev set, select epochs on noise. Not checked with a shared vocabulary (one for both languages)."""
        if self.shared or not sources:
            return
        src, tgt = list(sources[:SIDE_SAMPLE]), list(targets[:SIDE_SAMPLE])
        src_own, src_other = self.subwords_per_word(src, "source"), self.subwords_per_word(src, "target")
        tgt_own, tgt_other = self.subwords_per_word(tgt, "target"), self.subwords_per_word(tgt, "source")
        if src_own > SWAPPED_MARGIN * src_other and tgt_own > SWAPPED_MARGIN * tgt_other:
            raise ConfigError(f"{where}: the source and target look swapped: the source text splits into "
                              f"{src_own:.2f} subwords per word with the model's source vocabulary but {src_other:.2f} "
                              f"with its target one, and the target text into {tgt_own:.2f} with the target "
                              f"vocabulary but {tgt_other:.2f} with the source one; fix: {fix}")

    def language_notes(self, sources: Sequence[str], targets: Sequence[str], where: str) -> list[str]:
        """Notes for a side whose text splits into more than :data:`FOREIGN_RATIO` times the subwords per
        word of the training text of that side: most likely another language than the model's (a French
        source given to a German-English model: 3.3 against 1.8 on Multi30k), whose BLEU means nothing, or
        a very different domain. Empty for runs saved before the training figures were kept."""
        if not self.train_subwords_per_word:
            return []
        notes = []
        for side, texts in (("source", sources), ("target", targets)):
            seen, trained = self.subwords_per_word(texts[:SIDE_SAMPLE], side), self.train_subwords_per_word[side]
            if seen > FOREIGN_RATIO * trained:
                notes.append(f"{where}: the {side} text splits into {seen:.2f} subwords per word against {trained:.2f} "
                             f"in the training {side}s: is it in the model's {side} language? (text in another "
                             "language, or far from the training domain, scores near 0)")
        return notes

    def save(self, run: RunDir) -> None:
        self.source.save(run.file("source_encoder.json"))
        self.target.save(run.file("target_encoder.json"))
        run.write_json("translation.json", {"shared_vocabulary": self.shared, "data": asdict(self.cfg),
                                            "train_subwords_per_word": self.train_subwords_per_word})

    @classmethod
    def load(cls, run: RunDir) -> Preprocessor:
        from ..data.encoding import TextEncoder

        meta = run.read_json("translation.json")
        try:
            source = TextEncoder.load(run.file("source_encoder.json"))
            target = source if meta["shared_vocabulary"] else TextEncoder.load(run.file("target_encoder.json"))
        except Exception as err:
            raise RunError(f"run folder {run.path}: subword vocabularies are missing or corrupt ({err}); "
                           "train again") from None
        spw = meta.get("train_subwords_per_word")
        valid = isinstance(spw, dict) and all(isinstance(spw.get(k), int | float) for k in ("source", "target"))
        return cls(source, target, DataConfig(**meta["data"]), spw if valid else None)


Item = tuple[list[int], list[int], int]


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[Item]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]


def collate(items: Sequence[Item], pad_id: int = 0, bos_id: int = 2, eos_id: int = 3) -> tuple[Tensor, ...]:
    """source ``[B, S]``, lengths ``[B]``, decoder input ``[B, T]`` (``<bos>`` y), output ``[B, T]`` (y ``<eos>``), index ``[B]``."""
    from ..data.padding import pad_batch

    source = pad_batch([torch.tensor(s, dtype=torch.long) for s, _, _ in items], pad_value=pad_id)
    target_in = pad_batch([torch.tensor([bos_id, *t], dtype=torch.long) for _, t, _ in items], pad_value=pad_id)
    target_out = pad_batch([torch.tensor([*t, eos_id], dtype=torch.long) for _, t, _ in items], pad_value=pad_id)
    index = torch.tensor([i for _, _, i in items], dtype=torch.long)
    return source.padded, source.lengths, target_in.padded, target_out.padded, index


def make_loader(items: list[Item], batch_size: int, prep: Preprocessor, *, shuffle: bool,
                seed: int) -> torch.utils.data.DataLoader:
    from ..data.bucketing import BucketBatchSampler

    sampler = BucketBatchSampler([max(len(s), len(t) + 1) for s, t, _ in items], batch_size, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(
        PairDataset(items), batch_sampler=sampler, generator=torch.Generator().manual_seed(seed),  # off global RNG
        collate_fn=lambda batch: collate(batch, prep.pad_id, prep.bos_id, prep.eos_id))


def build_model(hyper: dict[str, Any]) -> Seq2Seq:
    return Seq2Seq(**hyper)


# -- trained model -----------------------------------------------------------------------------
class TrainedTranslator:
    """A translation model with its subword vocabularies: translate raw sentences, score parallel files.

    Args:
        model: The trained :class:`~rnnkit.tasks.seq2seq.Seq2Seq`.
        prep: Its preprocessing.
        decode: Default decoding options (beam size, n-best, length penalty and limit).
    """

    paired_input = True  # ``rnnkit evaluate --data test.de test.en``

    def __init__(self, model: Seq2Seq, prep: Preprocessor, decode: DecodeConfig | None = None) -> None:
        self.model, self.prep, self.decode = model.eval(), prep, decode or DecodeConfig()
        self.decode.validate()

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedTranslator:
        from .config import from_dict

        run, meta = RunDir.open_task(run_dir, NAME)
        prep = Preprocessor.load(run)
        model = run.load_into(run.build_model(meta, build_model))
        decode = from_dict(DecodeConfig, meta.get("decode", {}), "decode.")
        return cls(model, prep, decode)  # type: ignore[arg-type]

    def _encode_inputs(self, texts: Sequence[str], truncate: bool) -> list[list[int]]:
        limit = self.model.max_source_length
        encoded = []
        for i, text in enumerate(texts):
            ids = self.prep.encode_source(text) if text.strip() else []
            if len(ids) > limit:
                if not truncate:
                    raise ValueError(f"input {i + 1} has {len(ids)} source tokens (subwords + <eos>), more than the "
                                     f"model's maximum of {limit} (data.max_source_tokens at training); split it "
                                     "into shorter sentences, or cut it to the maximum: 'rnnkit translate "
                                     "--truncate' (truncate=True in Python)")
                ids = ids[: limit - 1] + [self.prep.eos_id]
            encoded.append(ids)
        return encoded

    def _source_tokens(self, text: str, truncate: bool) -> list[str]:
        """The source tokens (``<eos>`` last) that the model reads for ``text``: cut as
        :meth:`_encode_inputs` cuts the ids when ``truncate`` is set."""
        tokens = self.prep.source_tokens(text)
        limit = self.model.max_source_length
        if truncate and len(tokens) > limit:
            tokens = [*tokens[: limit - 1], "<eos>"]
        return tokens

    def hypotheses(self, texts: Sequence[str], *, beam_size: int | None = None, nbest: int | None = None,
                   truncate: bool = False) -> list[list[Hypothesis]]:
        """The n-best :class:`Hypothesis` lists (ids and attention), in input order.

        Empty inputs are not decoded: they get one empty hypothesis with score 0. Scores are
        ``log_prob / length ** decode.length_penalty`` (length counts ``<eos>``) for every beam size,
        greedy decoding (``beam_size=1``) included, as :func:`~rnnkit.tasks.seq2seq.beam_search` ranks them.
        """
        check_batch(texts, "sentences", "translate", "translate([text])")
        beam = self.decode.beam_size if beam_size is None else beam_size
        n = min(self.decode.nbest, beam) if nbest is None else nbest  # the run's n-best, within this beam
        if beam < 1:
            raise ValueError(f"beam_size must be >= 1 (1: greedy), got {beam}")
        if n < 1:
            raise ValueError(f"nbest must be >= 1, got {n}")
        if n > beam:
            raise ValueError(f"nbest ({n}) cannot exceed the beam size ({beam})")
        encoded = self._encode_inputs(texts, truncate)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0, torch.zeros(0, 0))] for _ in texts]
        order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i]))
        size = self.decode.batch_size
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            source, lengths, *_ = collate([(encoded[i], [], i) for i in chunk], self.prep.pad_id)
            ratio, offset = self.decode.max_length_ratio, self.decode.max_length_offset
            if beam == 1:  # greedy_search scores by the raw log-probability: normalise as beam search does
                alpha = self.decode.length_penalty
                found = [[Hypothesis(h.tokens, h.log_prob, normalized(h.log_prob, len(h.tokens) + 1, alpha),
                                     h.attention)]
                         for h in greedy_search(self.model, source, lengths, max_length_ratio=ratio,
                                                max_length_offset=offset)]
            else:
                found = beam_search(self.model, source, lengths, beam_size=beam, nbest=n,
                                    length_penalty=self.decode.length_penalty, max_length_ratio=ratio,
                                    max_length_offset=offset)
            for i, hyps in zip(chunk, found):
                results[i] = hyps
        return results

    def translate(self, texts: Sequence[str], *, beam_size: int | None = None, nbest: int | None = None,
                  truncate: bool = False, attention: bool = False) -> list[dict[str, Any]]:
        """Translate raw sentences.

        Args:
            texts: Source sentences (an empty one translates to an empty string).
            beam_size: Beam size (default ``decode.beam_size`` of the run; 1 = greedy).
            nbest: Hypotheses per sentence (at most ``beam_size``).
            truncate: Cut sources longer than the model's maximum instead of raising.
            attention: Include source tokens, target tokens and the attention matrix.

        Returns:
            Per input: ``source``, ``translation``, ``score`` and ``nbest`` (a list of
            ``{"translation", "score", "log_prob"}``), plus ``source_tokens``,
            ``target_tokens`` and ``attention`` (``[target steps][source tokens]``) if asked.
        """
        out = []
        for text, hyps in zip(texts, self.hypotheses(texts, beam_size=beam_size, nbest=nbest, truncate=truncate)):
            best = hyps[0]
            item: dict[str, Any] = {
                "source": text, "translation": self.prep.detokenize(best.tokens), "score": best.score,
                "nbest": [{"translation": self.prep.detokenize(h.tokens), "score": h.score, "log_prob": h.log_prob}
                          for h in hyps]}
            if attention:
                item["source_tokens"] = self._source_tokens(text, truncate) if text.strip() else []
                item["target_tokens"] = [*self.prep.target_tokens(best.tokens), "<eos>"] if text.strip() else []
                item["attention"] = best.attention.tolist()
            out.append(item)
        return out

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Translations with the run's decoding options (for ``rnnkit predict``)."""
        check_batch(texts, "sentences")
        return self.translate(texts)

    def score_pairs(self, sources: Sequence[str], references: Sequence[str], *, beam_size: int | None = None
                    ) -> dict[str, Any]:
        """BLEU and chrF of the translations of ``sources`` against ``references``, plus speed."""
        check_batch(sources, "sentences", "score_pairs", "score_pairs([source], [reference])")
        check_batch(references, "references", "score_pairs", "score_pairs([source], [reference])")
        start = time.perf_counter()
        translations = [r["translation"] for r in self.translate(sources, beam_size=beam_size, nbest=1,
                                                                    truncate=True)]
        seconds = time.perf_counter() - start
        metrics = corpus_scores(translations, references, lowercase=self.prep.cfg.lowercase)
        metrics.update({"sentences": len(sources), "sentences_per_second": len(sources) / max(seconds, 1e-9),
                        "beam_size": beam_size or self.decode.beam_size})
        metrics["translations"] = translations
        return metrics

    def evaluate(self, path: PathArg, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """BLEU/chrF on a parallel file pair or TSV; ``overrides`` may set ``decode.*`` (e.g.
        ``decode.beam_size=1``) and :data:`EVALUATE_DATA_KEYS`: the TSV columns
        ``data.source_column``/``data.target_column`` and ``data.empty``."""
        from .config import apply_overrides, from_dict, reading_overrides

        data = apply_overrides({"data": asdict(self.prep.cfg), "decode": asdict(self.decode)}, list(overrides))
        if set(data) != {"data", "decode"}:
            raise ConfigError(f"evaluate --set accepts data.* and decode.* keys only, got "
                              f"{sorted(set(data) - {'data', 'decode'})}")
        # the subword vocabularies, lowercasing and length limits are the model's: such a key would do nothing
        data_cfg = reading_overrides(self.prep.cfg, [o for o in overrides if o.strip().startswith("data.")],
                                     EVALUATE_DATA_KEYS, "evaluate --set")
        saved, self.decode = self.decode, from_dict(DecodeConfig, data["decode"], "decode.")
        try:
            corpus = read_pairs(path, data_cfg)
            if not corpus.sources:
                shown = " + ".join(map(str, [path] if isinstance(path, str | Path) else path))
                raise ConfigError(f"{shown}: no sentence pairs read ({corpus.num_skipped_empty} with an "
                                  "empty side skipped); give parallel files with at least one pair")
            self.prep.check_sides(corpus.sources, corpus.targets, _plain(path), SWAP_FIX)
            metrics = self.score_pairs(corpus.sources, corpus.targets)
        finally:
            self.decode = saved
        metrics.pop("translations")
        metrics["skipped_empty_pairs"] = corpus.num_skipped_empty
        notes = [corpus.ragged_note(), *self.prep.language_notes(corpus.sources, corpus.targets, _plain(path))]
        if any(notes):
            metrics["notes"] = [*metrics.get("notes", []), *filter(None, notes)]
        return metrics

    def use_overrides(self, overrides: Sequence[str]) -> None:
        """Decode later inputs (``translate``, ``predict``) with ``decode.*`` overrides, e.g.
        ``decode.length_penalty=0.6``; raw sentences are read as at training, so ``data.*`` keys do not apply."""
        from .config import apply_overrides, from_dict

        data = apply_overrides({"decode": asdict(self.decode)}, list(overrides))
        if set(data) != {"decode"}:
            raise ConfigError(f"--set on translating accepts decode.* keys only (data.* keys apply to files: "
                              f"'rnnkit evaluate --set'), got {', '.join(sorted(set(data) - {'decode'}))}")
        self.decode = from_dict(DecodeConfig, data["decode"], "decode.")

    def plot_attention(self, text: str, path: str | Path, *, beam_size: int | None = None,
                       truncate: bool = False) -> Path:
        """Save the attention matrix of ``text``'s best translation as a PNG heat map; ``truncate``
        cuts a source longer than the model's maximum as :meth:`translate` does (else it is an error)."""
        if not text.strip():
            raise ValueError("cannot plot attention for an empty sentence")
        result = self.translate([text], beam_size=beam_size, nbest=1, truncate=truncate, attention=True)[0]
        return plot_attention(result["source_tokens"], result["target_tokens"], result["attention"], path)


def plot_attention(source_tokens: Sequence[str], target_tokens: Sequence[str], weights: Sequence[Sequence[float]],
                   path: str | Path) -> Path:
    """Heat map of attention: one row per output token, one column per source token."""
    from .report import _pyplot

    plt = _pyplot()
    rows, cols = len(target_tokens), len(source_tokens)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * cols, 1.2 + 0.4 * rows))
    # Colours run from 0 to the largest weight shown (a colour bar gives the scale): on a fixed 0..1
    # scale the diffuse attention of a young model (about 1 / source length everywhere) is all white.
    top = max((float(w) for row in weights for w in row), default=1.0)
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=top if top > 0 else 1.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="weight")
    ax.set_xticks(range(cols), list(source_tokens), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), list(target_tokens), fontsize=8)
    ax.set(xlabel="source", ylabel="output", title="attention")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# -- training ----------------------------------------------------------------------------------
def _split_dev(corpus: Any, fraction: float, seed: int) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """``(train, dev)`` sources and targets: ``round(n * fraction)`` pairs (at least 1, and at most
    ``n - 2`` where the corpus has 3 or more, so training keeps the 2 pairs it needs) drawn by ``seed``,
    disjoint from the rest; both parts keep the corpus order. A source sentence that occurs more than
    once goes to dev with all its pairs or not at all (:func:`~rnnkit.data.splits.take_whole_groups`),
    so dev never holds a sentence training has seen."""
    from ..data.splits import take_whole_groups

    n = len(corpus)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_dev = max(1, int(round(n * fraction)))
    held = take_whole_groups(order, corpus.sources, n_dev, keep=2 if n >= 3 else 0)
    dev, train = sorted(held), [i for i in range(n) if i not in held]
    return ([corpus.sources[i] for i in train], [corpus.targets[i] for i in train]), \
        ([corpus.sources[i] for i in dev], [corpus.targets[i] for i in dev])


def _plain(path: PathArg | None) -> str:
    """The data argument as the user typed it, for one-line errors."""
    if path is None:
        return "held out of the training pairs"
    return " + ".join(map(str, [path] if isinstance(path, str | Path) else path))


def _describe(path: PathArg | None) -> str:
    if path is None:
        return "a held-out part of the training data"
    return " + ".join(f"`{p}`" for p in ([path] if isinstance(path, str | Path) else path))


def dev_metrics(config: Config) -> dict[str, str | None]:
    """Every quality metric ``train`` reports under ``metrics["dev"]`` for ``config``, with its
    direction: ``"max"`` (higher is better), ``"min"`` (lower is better) or ``None`` (no better
    direction). Counts and speeds are left out. ``rnnkit compare`` reads it."""
    return {"bleu": "max", "chrf": "max"}


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: BLEU, the one that selects the best epoch (greedy
    dev BLEU)."""
    return "bleu"


def train(config: Config, train_path: PathArg, dev_path: PathArg | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    """Read, fit subword vocabularies, train with early stopping on dev BLEU, save into ``run``, report."""
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import markdown_table, plot_learning_curves

    cfg, t0 = config, time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    _sacrebleu()  # fail before training when the metric package is missing
    corpus = read_pairs(train_path, cfg.data)
    skipped = corpus.num_skipped_empty
    if not len(corpus):
        emptied = f" ({skipped} pair(s) with an empty side were skipped, data.empty=skip)" if skipped else ""
        raise ConfigError(f"{_plain(train_path)}: no sentence pairs read (empty files?){emptied}; give line-aligned "
                          "files with one sentence per line")
    if dev_path is None:
        if len(corpus) < 3:
            raise ConfigError(f"{_plain(train_path)}: {len(corpus)} sentence pair(s); without --dev, "
                              f"data.dev_fraction={cfg.data.dev_fraction} of them is held out for model selection, "
                              "and training needs at least 2 pairs besides it (3 in all); fix: give more pairs, or "
                              "a dev set with --dev SOURCE TARGET")
        (train_src, train_tgt), (dev_src, dev_tgt) = _split_dev(corpus, cfg.data.dev_fraction, cfg.train.seed)
        log(f"no --dev given: held out {len(dev_src)} of the {len(corpus)} training pairs (data.dev_fraction="
            f"{cfg.data.dev_fraction}, drawn by train.seed={cfg.train.seed}) as the dev set for model selection")
    else:
        train_src, train_tgt = corpus.sources, corpus.targets
        dev = read_pairs(dev_path, cfg.data)
        dev_src, dev_tgt = dev.sources, dev.targets
        skipped += dev.num_skipped_empty
    if skipped:
        log(f"skipped {skipped} pair(s) with an empty side (data.empty=skip; data.empty=error stops instead)")
    for read in (corpus, dev) if dev_path is not None else (corpus,):
        note = read.ragged_note()
        if note:
            log(f"warning: {note}")
    if len(train_src) < 2 or not dev_src:
        raise ConfigError(f"need at least 2 training pairs and 1 dev pair, got {len(train_src)} "
                          f"({_plain(train_path)}) and {len(dev_src)} ({_plain(dev_path)}); give more pairs")
    prep = Preprocessor.fit(train_src, train_tgt, cfg.data)
    if dev_path is not None:  # a swapped dev pair would select epochs on a BLEU near 0
        prep.check_sides(dev_src, dev_tgt, _plain(dev_path), SWAP_FIX.replace("--data", "--dev"))
        for note in prep.language_notes(dev_src, dev_tgt, _plain(dev_path)):
            log(f"warning: {note}")
    d = cfg.data
    train_items: list[Item] = []
    too_long = 0
    for i, (s, t) in enumerate(zip(train_src, train_tgt)):
        src_ids, tgt_ids = prep.encode_source(s), prep.encode_target(t)
        if len(src_ids) > d.max_source_tokens or len(tgt_ids) + 1 > d.max_target_tokens:
            too_long += 1
            continue
        train_items.append((src_ids, tgt_ids, i))
    if not train_items:
        raise ConfigError(f"every training pair is longer than data.max_source_tokens={d.max_source_tokens} or "
                          f"data.max_target_tokens={d.max_target_tokens} subwords; split the sentences or raise "
                          "the limits (--set data.max_source_tokens=N --set data.max_target_tokens=N)")
    dev_items: list[Item] = []
    for i, (s, t) in enumerate(zip(dev_src, dev_tgt)):
        src_ids = prep.encode_source(s)
        if len(src_ids) > d.max_source_tokens:
            src_ids = src_ids[: d.max_source_tokens - 1] + [prep.eos_id]
        dev_items.append((src_ids, prep.encode_target(t)[: d.max_target_tokens - 1], i))
    vocab = (f"shared {d.tokenizer} vocabulary of {prep.source.vocab_size}" if prep.shared else
             f"{d.tokenizer} vocabularies of {prep.source.vocab_size} (source) and {prep.target.vocab_size} (target)")
    log(f"{len(train_items)} training / {len(dev_items)} dev pairs; {vocab}"
        + (f"; left out {too_long} training pairs longer than {d.max_source_tokens}/{d.max_target_tokens} subwords"
           if too_long else ""))
    m = cfg.model
    hyper = {"source_vocab_size": prep.source.vocab_size, "target_vocab_size": prep.target.vocab_size,
             "cell": m.cell, "embedding_dim": m.embedding_dim, "hidden_size": m.hidden_size,
             "num_layers": m.num_layers, "decoder_hidden_size": m.decoder_hidden_size,
             "decoder_layers": m.decoder_layers, "attention": m.attention, "attention_size": m.attention_size,
             "input_feeding": m.input_feeding, "coverage": m.coverage, "tie_embeddings": m.tie_embeddings,
             "dropout": m.dropout, "max_source_length": d.max_source_tokens, "pad_id": prep.pad_id,
             "bos_id": prep.bos_id, "eos_id": prep.eos_id}
    model = build_for_run(run, lambda: build_model(hyper))
    params = sum(p.numel() for p in model.parameters())
    log(f"model: Bi{m.cell.upper()} x{m.num_layers} encoder, {m.cell} x{m.decoder_layers} decoder, {m.attention} "
        f"attention{', coverage' if m.coverage else ''}{', tied embeddings' if m.tie_embeddings else ''}; "
        f"{params:,} parameters")
    dec = cfg.decode
    width = max(int(len(s) * dec.max_length_ratio + dec.max_length_offset) for s, _, _ in dev_items) + 1

    def loss_fn(mdl: nn.Module, batch: Any) -> Tensor:
        source, lengths, target_in, target_out, _ = batch
        return mdl.loss(source, lengths, target_in, target_out,  # type: ignore[operator]
                        label_smoothing=cfg.train.label_smoothing, coverage_weight=cfg.train.coverage_weight)

    def predict_fn(mdl: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        source, lengths, _, _, index = batch
        hyps = greedy_search(mdl, source, lengths, max_length_ratio=dec.max_length_ratio,  # type: ignore[arg-type]
                             max_length_offset=dec.max_length_offset)
        pred = torch.full((len(hyps), width), -1, dtype=torch.long)
        for b, h in enumerate(hyps):
            pred[b, : len(h.tokens)] = torch.tensor(h.tokens, dtype=torch.long)
        return pred, index

    def metric_fn(pred: Tensor, index: Tensor) -> dict[str, float]:
        hyps = [prep.detokenize([i for i in row if i >= 0]) for row in pred.tolist()]
        scores = corpus_scores(hyps, [dev_tgt[i] for i in index.tolist()], lowercase=d.lowercase)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}

    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate,
                            optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay,
                            clip_norm=cfg.train.clip_norm, patience=cfg.train.patience, monitor="bleu", mode="max",
                            seed=cfg.train.seed, accelerator=cfg.train.accelerator, progress=progress,
                            lr_decay=cfg.train.lr_decay, lr_decay_patience=cfg.train.lr_decay_patience,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    history = fit(model, make_loader(train_items, cfg.train.batch_size, prep, shuffle=True, seed=cfg.train.seed),
                  make_loader(dev_items, 2 * cfg.train.batch_size, prep, shuffle=False, seed=0),
                  loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn, options=options, run=run, log=log)
    train_seconds = time.perf_counter() - t0 + prior_seconds()  # a resumed run: its whole training
    prep.save(run)
    run.save_model(model, NAME, hyper)
    meta = run.read_json("model.json")
    run.write_json("model.json", {**meta, "decode": asdict(dec)})
    translator = TrainedTranslator(model, prep, dec)
    dev_metrics = translator.score_pairs(dev_src, dev_tgt)
    translations = dev_metrics.pop("translations")
    run.write_text("dev.translations.txt", "\n".join(translations) + "\n")
    log(f"dev (beam {dec.beam_size}): BLEU {dev_metrics['bleu']:.2f}, chrF {dev_metrics['chrf']:.2f}; "
        f"{dev_metrics['bleu_signature']}; {dev_metrics['chrf_signature']}")
    example = next((s for s in dev_src if s.strip()), None)
    # truncate as the dev score does: a first dev sentence over data.max_source_tokens must not end the run
    attention_png = translator.plot_attention(example, run.file("attention.png"), truncate=True) if example else None
    seconds = time.perf_counter() - t0
    best = max(history, key=lambda r: r.get("dev_bleu", -math.inf))["epoch"] if history else 0
    metrics = {"dev": dev_metrics, "train_seconds": train_seconds, "parameters": params, "best_epoch": best,
               "epochs_run": len(history), "stopped": stop_reason(), "training_pairs": len(train_items), "left_out_too_long": too_long,
               "skipped_empty_pairs": skipped}
    run.write_json("metrics.json", metrics)
    curves = plot_learning_curves(history, run.file("learning_curves.png"))
    report = [f"# Translation run: {run.path.name}", "",
              f"Trained on {_describe(train_path)} ({len(train_items)} pairs), selected on {_describe(dev_path)} "
              f"({len(dev_items)} pairs) by greedy dev BLEU in {train_seconds:.0f} s; best epoch {best} of "
              f"{len(history)}; {params:,} parameters; {vocab}.", "",
              f"## Dev scores (beam {dec.beam_size}, length penalty {dec.length_penalty})", "",
              markdown_table(["metric", "value", "sacreBLEU signature"],
                             [["BLEU", dev_metrics["bleu"], dev_metrics["bleu_signature"]],
                              ["chrF", dev_metrics["chrf"], dev_metrics["chrf_signature"]]]),
              "", f"Decoding {dev_metrics['sentences_per_second']:.1f} sentences/s; total {seconds:.0f} s.", "",
              "## Examples (dev)", ""]
    for s, t, h in list(zip(dev_src, dev_tgt, translations))[:5]:
        report += [f"- source: {s}", f"  - reference: {t}", f"  - output: {h}"]
    report.append("")
    if attention_png is not None:
        report += ["## Attention (first dev sentence)", "", "![attention](attention.png)", ""]
    if curves:
        report += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    run.write_text("report.md", "\n".join(report))
    return metrics
