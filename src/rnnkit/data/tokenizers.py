"""Tokenizers: characters, words (regex) and trained subwords (BPE, WordPiece, Unigram).

All tokenizers share ``tokenize(text) -> list[str]`` and save to JSON (``save``/``load``,
``to_config``/``from_config``). Character and word tokenizers produce strings that a
:class:`~rnnkit.data.vocab.Vocabulary` maps to ids; :class:`SubwordTokenizer` owns its
vocabulary and also offers ``encode``/``decode`` on ids. The HuggingFace ``tokenizers``
library is imported lazily, only when a subword tokenizer is trained or loaded.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import DataError, setting
from .serialization import JsonSerializable

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "SubwordTokenizer",
    "SUBWORD_MODELS",
    "NORMALIZATIONS",
    "normalize_text",
    "DEFAULT_WORD_PATTERN",
]

NORMALIZATIONS = ("NFC", "NFD", "NFKC", "NFKD")
SUBWORD_MODELS = ("bpe", "wordpiece", "unigram")
DEFAULT_WORD_PATTERN = r"\w+(?:['’]\w+)*|[^\w\s]"


def _check_normalization(normalization: str | None) -> str | None:
    if normalization is None:
        return None
    norm = normalization.upper()
    if norm not in NORMALIZATIONS:
        raise DataError(
            f"unknown Unicode normalization {normalization!r}; valid: {NORMALIZATIONS} or None",
            hint="use 'NFKC'",
        )
    return norm


def normalize_text(text: str, normalization: str | None = "NFKC", lowercase: bool = False) -> str:
    """Apply Unicode normalization and optional lowercasing.

    Args:
        text: Input text.
        normalization: ``'NFC'``, ``'NFD'``, ``'NFKC'``, ``'NFKD'`` or ``None``.
        lowercase: Lowercase after normalizing.

    Returns:
        The normalized text.
    """
    norm = _check_normalization(normalization)
    if norm is not None:
        text = unicodedata.normalize(norm, text)  # type: ignore[arg-type]
    if lowercase:
        text = text.lower()
    return text


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        shown = repr(text)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise DataError(
            f"text is a {type(text).__name__} ({shown}), not a str",
            hint="drop or fill missing texts (None/NaN) before tokenizing, or convert them with str()",
        )
    return text


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def _wordish(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or _is_mark(ch)


def _join_marks(matches: Iterable[re.Match[str]]) -> list[str]:
    """Glue combining marks (accents, Indic vowel signs, Arabic harakat: Unicode category M),
    which ``\\w`` does not match, to the word they belong to."""
    out: list[str] = []
    prev_end = -1
    for m in matches:
        tok = m.group(0)
        start, end = m.span()
        if (
            out
            and tok
            and out[-1]
            and start == prev_end
            and ((_is_mark(tok[0]) and _wordish(out[-1][-1])) or (_is_mark(out[-1][-1]) and _wordish(tok[0])))
        ):
            out[-1] += tok
        else:
            out.append(tok)
        prev_end = end
    return out


class Tokenizer(JsonSerializable):
    """Base class: ``tokenize(text) -> list[str]`` plus JSON persistence."""

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into tokens.

        Args:
            text: Input text.

        Returns:
            Tokens.
        """
        raise NotImplementedError

    def __call__(self, text: str) -> list[str]:
        return self.tokenize(text)

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Tokenize several texts.

        Args:
            texts: Input texts.

        Returns:
            One token list per text.
        """
        return [self.tokenize(t) for t in texts]

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Join tokens back into text (exact for characters, space-joined for words).

        Args:
            tokens: Tokens.

        Returns:
            Text.
        """
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    """Split text into Unicode characters.

    Args:
        lowercase: Lowercase the text first.
        normalization: Unicode normalization applied first (``None`` keeps the text as is).
    """

    def __init__(self, lowercase: bool = False, normalization: str | None = None) -> None:
        self.lowercase = lowercase
        self.normalization = _check_normalization(normalization)

    def tokenize(self, text: str) -> list[str]:
        """Return the characters of the normalized text."""
        return list(normalize_text(_check_text(text), self.normalization, self.lowercase))

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Concatenate characters."""
        return "".join(tokens)

    def to_config(self) -> dict[str, Any]:
        """Return the options."""
        return {"lowercase": self.lowercase, "normalization": self.normalization}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CharTokenizer:
        """Rebuild from :meth:`to_config` output."""
        return cls(**config)


class WordTokenizer(Tokenizer):
    """Split text into words with a regular expression (or on whitespace).

    Args:
        pattern: Regex whose matches are the tokens (default: words, keeping inner
            apostrophes, and single punctuation marks). ``None`` splits on whitespace.
        lowercase: Lowercase the text first.
        normalization: Unicode normalization (default NFKC).
        join_marks: Keep combining marks (Unicode category M: decomposed accents, Indic vowel
            signs and viramas, Arabic harakat), which the regex ``\\w`` does not match, inside
            their word instead of splitting ``'हिन्दी'`` into letters and signs. Applies to
            patterns without groups. A tokenizer saved before this option existed loads with
            ``False``, so it keeps tokenizing as it did.
    """

    def __init__(
        self,
        pattern: str | None = DEFAULT_WORD_PATTERN,
        lowercase: bool = True,
        normalization: str | None = "NFKC",
        join_marks: bool = True,
    ) -> None:
        self.pattern = pattern
        self.lowercase = lowercase
        self.normalization = _check_normalization(normalization)
        self.join_marks = bool(join_marks)
        try:
            self._regex = None if pattern is None else re.compile(pattern)
        except re.error as exc:
            raise DataError(
                f"invalid token pattern {pattern!r}: {exc}", hint="pass a valid Python regular expression"
            ) from None

    def tokenize(self, text: str) -> list[str]:
        """Return the regex matches (or whitespace-separated words) of the normalized text."""
        text = normalize_text(_check_text(text), self.normalization, self.lowercase)
        if self._regex is None:
            return text.split()
        if self.join_marks and self._regex.groups == 0:
            return _join_marks(self._regex.finditer(text))
        return self._regex.findall(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Join tokens with spaces."""
        return " ".join(tokens)

    def to_config(self) -> dict[str, Any]:
        """Return the options."""
        return {
            "pattern": self.pattern,
            "lowercase": self.lowercase,
            "normalization": self.normalization,
            "join_marks": self.join_marks,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WordTokenizer:
        """Rebuild from :meth:`to_config` output (older configs: ``join_marks=False``)."""
        return cls(**{"join_marks": False, **config})


def _hf() -> Any:
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(
            "subword tokenizers need the 'tokenizers' package, which is not installed",
            hint="pip install 'rnnkit[text]' (or pip install tokenizers)",
        ) from None
    return tokenizers


class SubwordTokenizer(Tokenizer):
    """A trained subword tokenizer (BPE, WordPiece or Unigram) backed by HuggingFace ``tokenizers``.

    Build one with :meth:`train`. Special tokens come first: ``<pad>`` = 0, ``<unk>`` = 1,
    ``<bos>`` = 2, ``<eos>`` = 3 by default.

    Args:
        backend: A ``tokenizers.Tokenizer``.
        model: ``'bpe'``, ``'wordpiece'`` or ``'unigram'``.
        special_tokens: The special tokens (first is padding, second unknown).
    """

    def __init__(self, backend: Any, model: str, special_tokens: Sequence[str]) -> None:
        self.backend = backend
        self.model = model
        self.special_tokens = tuple(special_tokens)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        model: str = "bpe",
        vocab_size: int = 8000,
        *,
        min_frequency: int = 2,
        lowercase: bool = False,
        normalization: str | None = "NFKC",
        special_tokens: Sequence[str] = ("<pad>", "<unk>", "<bos>", "<eos>"),
    ) -> SubwordTokenizer:
        """Train a subword tokenizer on texts.

        Args:
            texts: Training texts (any iterable, streamed).
            model: ``'bpe'``, ``'wordpiece'`` or ``'unigram'``.
            vocab_size: Target vocabulary size (special tokens included).
            min_frequency: Minimum pair frequency for BPE/WordPiece merges.
            lowercase: Lowercase before tokenizing.
            normalization: Unicode normalization (``None`` for none).
            special_tokens: Special tokens, placed first; the first is padding (id 0), the
                second the unknown token.

        Returns:
            The trained tokenizer.
        """
        hf = _hf()
        kind = str(model).lower()
        if kind not in SUBWORD_MODELS:
            raise DataError(
                f"unknown subword model {model!r}; valid: {SUBWORD_MODELS}", hint="pick one of them"
            )
        if len(special_tokens) < 2:
            raise DataError(
                "special_tokens needs at least a padding and an unknown token", hint="e.g. ('<pad>', '<unk>')"
            )
        unk = special_tokens[1]
        specials = list(special_tokens)
        models, trainers, pre_tokenizers, decoders, normalizers = (
            hf.models,
            hf.trainers,
            hf.pre_tokenizers,
            hf.decoders,
            hf.normalizers,
        )
        if kind == "bpe":
            backend = hf.Tokenizer(models.BPE(unk_token=unk))
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                show_progress=False,
            )
            backend.pre_tokenizer = pre_tokenizers.Metaspace()
            backend.decoder = decoders.Metaspace()
        elif kind == "wordpiece":
            backend = hf.Tokenizer(models.WordPiece(unk_token=unk))
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                show_progress=False,
            )
            backend.pre_tokenizer = pre_tokenizers.Whitespace()
            backend.decoder = decoders.WordPiece()
        else:
            backend = hf.Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size, special_tokens=specials, unk_token=unk, show_progress=False
            )
            backend.pre_tokenizer = pre_tokenizers.Metaspace()
            backend.decoder = decoders.Metaspace()
        steps = []
        norm = _check_normalization(normalization)
        if norm is not None:
            steps.append(getattr(normalizers, norm)())
        if lowercase:
            steps.append(normalizers.Lowercase())
        if steps:
            backend.normalizer = normalizers.Sequence(steps)
        try:
            backend.train_from_iterator(texts, trainer=trainer)
        except Exception as exc:  # the tokenizers library raises a bare Exception
            if "not large enough" in str(exc):
                raise DataError(
                    f"vocab_size={vocab_size} is too small for a {kind} model of these texts: it must hold "
                    "every distinct character and the special tokens",
                    hint=setting("vocab_size", ("8000", "8000"), then=" or another size larger than the alphabet"),
                ) from None
            raise DataError(f"training the {kind} tokenizer failed: {exc}", hint="check the texts") from None
        return cls(backend, kind, specials)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, special tokens included."""
        return int(self.backend.get_vocab_size())

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return int(self.backend.token_to_id(self.special_tokens[0]))

    def token_to_id(self, token: str) -> int | None:
        """Id of ``token`` or ``None`` if unknown.

        Args:
            token: A token string.

        Returns:
            The id or ``None``.
        """
        i = self.backend.token_to_id(token)
        return None if i is None else int(i)

    def tokenize(self, text: str) -> list[str]:
        """Return the subword strings of ``text``."""
        return list(self.backend.encode(_check_text(text)).tokens)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Return the subword ids of ``text``.

        Args:
            text: Input text.
            add_bos: Prepend the third special token (``<bos>``) if present.
            add_eos: Append the fourth special token (``<eos>``) if present.

        Returns:
            Token ids.
        """
        ids = list(self.backend.encode(_check_text(text)).ids)
        return self._add_specials(ids, add_bos, add_eos)

    def encode_many(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """Encode several texts in one (parallel) call.

        Args:
            texts: Input texts.
            add_bos: See :meth:`encode`.
            add_eos: See :meth:`encode`.

        Returns:
            One id list per text.
        """
        return [
            self._add_specials(list(e.ids), add_bos, add_eos)
            for e in self.backend.encode_batch([_check_text(t) for t in texts])
        ]

    def _add_specials(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
        for flag, pos, name in ((add_bos, 2, "bos"), (add_eos, 3, "eos")):
            if not flag:
                continue
            if len(self.special_tokens) <= pos:
                raise DataError(
                    f"add_{name}=True but no {name} special token", hint="train with 4 special tokens"
                )
            tid = self.backend.token_to_id(self.special_tokens[pos])
            if pos == 2:
                ids.insert(0, int(tid))
            else:
                ids.append(int(tid))
        return ids

    def decode(self, ids: Iterable[int], *, skip_specials: bool = True) -> str:
        """Turn ids back into text.

        Args:
            ids: Token ids.
            skip_specials: Drop special tokens.

        Returns:
            The text.
        """
        return str(self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_specials))

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Turn subword strings back into text; a string outside the vocabulary becomes the unknown
        token (it used to vanish from the text without a trace)."""
        unk = self.backend.token_to_id(self.special_tokens[1])
        ids = [self.backend.token_to_id(t) for t in tokens]
        missing = [t for t, i in zip(tokens, ids, strict=True) if i is None]
        if missing and unk is None:
            raise DataError(f"{len(missing)} tokens are not in the subword vocabulary (first: {missing[0]!r}) "
                            "and it has no unknown token to stand for them",
                            hint="pass tokens from this tokenizer's tokenize()")
        return self.decode([unk if i is None else i for i in ids], skip_specials=False)

    def to_config(self) -> dict[str, Any]:
        """Return the model kind, specials and the full ``tokenizers`` JSON."""
        return {
            "model": self.model,
            "special_tokens": list(self.special_tokens),
            "tokenizer": json.loads(self.backend.to_str()),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SubwordTokenizer:
        """Rebuild from :meth:`to_config` output."""
        hf = _hf()
        specials = config["special_tokens"]
        if not isinstance(specials, list) or not all(isinstance(t, str) for t in specials):
            raise DataError("corrupt SubwordTokenizer config (special_tokens is not a list of strings)",
                            hint="re-save the tokenizer with .save()")
        if not isinstance(config["model"], str):
            raise DataError("corrupt SubwordTokenizer config (model is not a string)",
                            hint="re-save the tokenizer with .save()")
        try:
            backend = hf.Tokenizer.from_str(json.dumps(config["tokenizer"]))
        except Exception as exc:  # tokenizers raises a bare Exception for a bad document
            raise DataError(
                f"corrupt SubwordTokenizer config (the tokenizers document does not load: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})",
                hint="re-save the tokenizer with .save()",
            ) from None
        return cls(backend, config["model"], specials)
