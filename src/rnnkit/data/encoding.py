"""Text -> ids in one saveable object, so prediction repeats training's preprocessing.

:class:`TextEncoder` bundles a tokenizer, a vocabulary (for character/word tokenizers) and
the options (``add_bos``, ``add_eos``, ``max_length``, truncation side). Fit it on training
texts, save it next to the model, load it at prediction time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import DataError
from .serialization import JsonSerializable, transform_from_config
from .tokenizers import SubwordTokenizer, Tokenizer
from .vocab import Vocabulary

__all__ = ["TextEncoder"]


class TextEncoder(JsonSerializable):
    """Tokenizer + vocabulary + encoding options.

    Args:
        tokenizer: Any :class:`~rnnkit.data.tokenizers.Tokenizer`.
        vocab: Vocabulary for character/word tokenizers (``None`` for subword tokenizers,
            which carry their own).
        add_bos: Prepend ``<bos>``.
        add_eos: Append ``<eos>``.
        max_length: Truncate encoded sequences to this many ids (``None``: no limit); it must
            leave room for ``<bos>``/``<eos>`` and one token.
        truncation: ``'post'`` keeps the start, ``'pre'`` keeps the end.
        keep_specials: Truncate the text's tokens, not the added ``<bos>``/``<eos>``, so every
            sequence still starts with ``<bos>`` and ends with ``<eos>``. An encoder saved before
            this option existed loads with ``False`` (the ids then lost their ``<bos>`` or
            ``<eos>`` when cut), so it encodes as it did.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        vocab: Vocabulary | None = None,
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        max_length: int | None = None,
        truncation: str = "post",
        keep_specials: bool = True,
    ) -> None:
        if vocab is None and not isinstance(tokenizer, SubwordTokenizer):
            raise DataError(
                f"{type(tokenizer).__name__} needs a Vocabulary",
                hint="use TextEncoder.fit(texts, tokenizer) or pass vocab=Vocabulary.build(...)",
            )
        if truncation not in ("pre", "post"):
            raise DataError(
                f"truncation must be 'pre' or 'post', got {truncation!r}", hint="use 'post' or 'pre'"
            )
        n_specials = int(bool(add_bos)) + int(bool(add_eos))
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= n_specials
        ):
            room = " plus <bos>/<eos>" if n_specials else ""
            raise DataError(
                f"max_length must be an int with room for at least one token{room}, got {max_length!r}",
                hint=f"pass max_length >= {n_specials + 1} or None",
            )
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.max_length = max_length
        self.truncation = truncation
        self.keep_specials = bool(keep_specials)
        self.num_truncated = 0
        self.tokens_dropped = 0

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        tokenizer: Tokenizer,
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        add_bos: bool = False,
        add_eos: bool = False,
        max_length: int | None = None,
        truncation: str = "post",
        **vocab_options: Any,
    ) -> TextEncoder:
        """Build the vocabulary from training texts.

        Args:
            texts: Training texts.
            tokenizer: A character or word tokenizer (subword tokenizers need no fitting).
            min_freq: Vocabulary minimum frequency.
            max_size: Vocabulary maximum size (specials included).
            add_bos: See the class.
            add_eos: See the class.
            max_length: See the class.
            truncation: See the class.
            **vocab_options: Special-token options of :meth:`Vocabulary.build`.

        Returns:
            The fitted encoder.
        """
        if isinstance(texts, str):  # iterating a str would fit on its characters, one 'text' each
            raise DataError(
                "texts is one str, not a list of texts", hint="pass a list of training texts, e.g. [text]"
            )
        vocab = None
        if not isinstance(tokenizer, SubwordTokenizer):
            vocab = Vocabulary.build(
                (tokenizer.tokenize(t) for t in texts), min_freq=min_freq, max_size=max_size, **vocab_options
            )
        return cls(
            tokenizer, vocab, add_bos=add_bos, add_eos=add_eos, max_length=max_length, truncation=truncation
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids the encoder can produce."""
        if self.vocab is not None:
            return len(self.vocab)
        assert isinstance(self.tokenizer, SubwordTokenizer)
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        """The padding id (0 with the default specials)."""
        if self.vocab is not None:
            return 0 if self.vocab.pad_id is None else self.vocab.pad_id
        assert isinstance(self.tokenizer, SubwordTokenizer)
        return self.tokenizer.pad_id

    def encode(self, text: str) -> list[int]:
        """Encode one text (truncations are counted in ``num_truncated``/``tokens_dropped``).

        Args:
            text: Input text.

        Returns:
            Token ids.
        """
        if not self.keep_specials:
            if self.vocab is None:
                assert isinstance(self.tokenizer, SubwordTokenizer)
                ids = self.tokenizer.encode(text, add_bos=self.add_bos, add_eos=self.add_eos)
            else:
                tokens = self.tokenizer.tokenize(text)
                ids = self.vocab.encode(tokens, add_bos=self.add_bos, add_eos=self.add_eos)
            return self._truncate(ids, self.max_length)
        room = None if self.max_length is None else self.max_length - int(self.add_bos) - int(self.add_eos)
        if self.vocab is None:
            assert isinstance(self.tokenizer, SubwordTokenizer)
            body = self._truncate(self.tokenizer.encode(text), room)
            return self.tokenizer._add_specials(body, self.add_bos, self.add_eos)
        tokens = self._truncate(self.tokenizer.tokenize(text), room)
        return self.vocab.encode(tokens, add_bos=self.add_bos, add_eos=self.add_eos)

    def _truncate(self, items: list[Any], limit: int | None) -> list[Any]:
        if limit is None or len(items) <= limit:
            return items
        self.num_truncated += 1
        self.tokens_dropped += len(items) - limit
        return items[:limit] if self.truncation == "post" else items[len(items) - limit :]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several texts.

        Args:
            texts: Input texts.

        Returns:
            One id list per text.
        """
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text (special tokens dropped).

        Args:
            ids: Token ids.

        Returns:
            The text.
        """
        if self.vocab is None:
            assert isinstance(self.tokenizer, SubwordTokenizer)
            return self.tokenizer.decode(ids)
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def to_config(self) -> dict[str, Any]:
        """Return tokenizer, vocabulary and options as JSON data."""
        return {
            "tokenizer": self.tokenizer.to_document(),
            "vocab": None if self.vocab is None else self.vocab.to_document(),
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "keep_specials": self.keep_specials,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextEncoder:
        """Rebuild from :meth:`to_config` output."""
        tokenizer = transform_from_config(config["tokenizer"])
        vocab = None if config["vocab"] is None else transform_from_config(config["vocab"])
        assert isinstance(tokenizer, Tokenizer)
        assert vocab is None or isinstance(vocab, Vocabulary)
        return cls(
            tokenizer,
            vocab,
            add_bos=config["add_bos"],
            add_eos=config["add_eos"],
            max_length=config["max_length"],
            truncation=config["truncation"],
            keep_specials=config.get("keep_specials", False),
        )
