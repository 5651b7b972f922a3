"""Token vocabularies and label encoders.

:class:`Vocabulary` maps tokens to ids with special tokens first (``<pad>`` = 0, then
``<unk>``, ``<bos>``, ``<eos>`` when enabled), then tokens by decreasing frequency (ties
broken alphabetically, so the result is deterministic). :class:`LabelEncoder` does the same
for class labels. Both save to JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import DataError
from .serialization import JsonSerializable

__all__ = ["Vocabulary", "LabelEncoder"]


class Vocabulary(JsonSerializable):
    """A token <-> id mapping with special tokens.

    Args:
        tokens: Regular tokens in id order (specials are prepended automatically).
        pad_token: Padding token, id 0 (``None`` disables it).
        unk_token: Token that unknown tokens map to (``None``: unknown tokens are an error).
        bos_token: Beginning-of-sequence token or ``None``.
        eos_token: End-of-sequence token or ``None``.
        extra_specials: More special tokens placed after the standard ones.
        counts: Optional token frequencies (kept for inspection, saved with the vocabulary).
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        pad_token: str | None = "<pad>",
        unk_token: str | None = "<unk>",
        bos_token: str | None = "<bos>",
        eos_token: str | None = "<eos>",
        extra_specials: Sequence[str] = (),
        counts: dict[str, int] | None = None,
    ) -> None:
        self.pad_token = pad_token
        self.unk_token = unk_token
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.extra_specials = tuple(extra_specials)
        specials = [t for t in (pad_token, unk_token, bos_token, eos_token) if t is not None]
        specials += [t for t in self.extra_specials if t not in specials]
        odd = [t for t in specials if not isinstance(t, str)]
        if odd:
            raise DataError(f"special tokens must be strings, got {odd[0]!r}", hint='use strings such as "<pad>"')
        if len(set(specials)) != len(specials):
            raise DataError(
                f"special tokens must be distinct, got {specials}",
                hint="give each special a different string",
            )
        self.specials: tuple[str, ...] = tuple(specials)
        self._itos: list[str] = list(self.specials)
        self._stoi: dict[str, int] = {t: i for i, t in enumerate(self._itos)}
        for tok in tokens:
            if tok not in self._stoi:
                if not isinstance(tok, str):  # a saved vocabulary is JSON: 3 would come back as "3"
                    raise DataError(
                        f"vocabulary tokens must be strings, got {type(tok).__name__} {tok!r}",
                        hint="convert the tokens with str() (or use LabelEncoder for labels)",
                    )
                self._stoi[tok] = len(self._itos)
                self._itos.append(tok)
        self.counts = dict(counts) if counts else {}

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        pad_token: str | None = "<pad>",
        unk_token: str | None = "<unk>",
        bos_token: str | None = "<bos>",
        eos_token: str | None = "<eos>",
        extra_specials: Sequence[str] = (),
    ) -> Vocabulary:
        """Count tokens and build a vocabulary.

        Args:
            token_lists: Tokenized texts (any iterable; consumed once, streaming).
            min_freq: Keep tokens seen at least this often.
            max_size: Maximum total size, special tokens included.
            pad_token: See the class.
            unk_token: See the class.
            bos_token: See the class.
            eos_token: See the class.
            extra_specials: See the class.

        Returns:
            The vocabulary, most frequent tokens first.
        """
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        return cls.from_counts(
            counter,
            min_freq=min_freq,
            max_size=max_size,
            pad_token=pad_token,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            extra_specials=extra_specials,
        )

    @classmethod
    def from_counts(
        cls,
        counts: dict[str, int] | Counter[str],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        **specials: Any,
    ) -> Vocabulary:
        """Build a vocabulary from token counts.

        Args:
            counts: Token frequencies.
            min_freq: Keep tokens seen at least this often.
            max_size: Maximum total size, special tokens included.
            **specials: ``pad_token``, ``unk_token``, ``bos_token``, ``eos_token``,
                ``extra_specials``.

        Returns:
            The vocabulary.
        """
        if min_freq < 1:
            raise DataError(
                f"min_freq must be >= 1, got {min_freq}", hint="pass min_freq=1 to keep every token"
            )
        empty = cls(**specials)
        if max_size is not None and max_size < len(empty.specials):
            raise DataError(
                f"max_size={max_size} is smaller than the {len(empty.specials)} special tokens",
                hint=f"pass max_size >= {len(empty.specials)}",
            )
        ordered = sorted(
            ((t, c) for t, c in counts.items() if c >= min_freq and t not in empty.specials),
            key=lambda tc: (-tc[1], tc[0]),
        )
        if max_size is not None:
            ordered = ordered[: max_size - len(empty.specials)]
        return cls((t for t, _ in ordered), counts={t: c for t, c in ordered}, **specials)

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __iter__(self) -> Any:
        return iter(self._itos)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, specials={list(self.specials)})"

    @property
    def pad_id(self) -> int | None:
        """Id of the padding token (0) or ``None``."""
        return None if self.pad_token is None else self._stoi[self.pad_token]

    @property
    def unk_id(self) -> int | None:
        """Id of the unknown token or ``None``."""
        return None if self.unk_token is None else self._stoi[self.unk_token]

    @property
    def bos_id(self) -> int | None:
        """Id of the beginning-of-sequence token or ``None``."""
        return None if self.bos_token is None else self._stoi[self.bos_token]

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-sequence token or ``None``."""
        return None if self.eos_token is None else self._stoi[self.eos_token]

    def token_to_id(self, token: str) -> int:
        """Map one token (unknown tokens to ``<unk>``).

        Args:
            token: The token.

        Returns:
            Its id.
        """
        idx = self._stoi.get(token)
        if idx is not None:
            return idx
        if self.unk_token is None:
            raise DataError(
                f"token {token!r} is not in the vocabulary and there is no unk token",
                hint="build the vocabulary with unk_token='<unk>'",
            )
        return self._stoi[self.unk_token]

    def id_to_token(self, index: int) -> str:
        """Map one id back to its token.

        Args:
            index: The id.

        Returns:
            The token.
        """
        if not 0 <= int(index) < len(self._itos):
            raise DataError(
                f"id {index} out of range [0, {len(self._itos)})",
                hint="decode ids produced by this vocabulary",
            )
        return self._itos[int(index)]

    def encode(self, tokens: Sequence[str], *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Map tokens to ids.

        Args:
            tokens: The tokens.
            add_bos: Prepend the ``<bos>`` id.
            add_eos: Append the ``<eos>`` id.

        Returns:
            The ids.
        """
        stoi = self._stoi
        unk = self.unk_id
        if unk is None:
            ids = [self.token_to_id(t) for t in tokens]
        else:
            ids = [stoi.get(t, unk) for t in tokens]
        if add_bos:
            if self.bos_id is None:
                raise DataError(
                    "add_bos=True but the vocabulary has no bos token", hint="build it with bos_token='<bos>'"
                )
            ids.insert(0, self.bos_id)
        if add_eos:
            if self.eos_id is None:
                raise DataError(
                    "add_eos=True but the vocabulary has no eos token", hint="build it with eos_token='<eos>'"
                )
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_specials: bool = True) -> list[str]:
        """Map ids back to tokens.

        Args:
            ids: Token ids (ints or a 1-D tensor/array).
            skip_specials: Drop pad/bos/eos and extra specials (``<unk>`` is kept).

        Returns:
            The tokens.
        """
        skip = set(self.specials) - {self.unk_token} if skip_specials else set()
        out = []
        for i in ids:
            tok = self.id_to_token(int(i))
            if tok not in skip:
                out.append(tok)
        return out

    def to_config(self) -> dict[str, Any]:
        """Return the vocabulary as JSON data (tokens in id order, specials, counts)."""
        return {
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "extra_specials": list(self.extra_specials),
            "tokens": self._itos[len(self.specials) :],
            "counts": self.counts,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Vocabulary:
        """Rebuild from :meth:`to_config` output."""
        _check_list(config["tokens"], "Vocabulary", "tokens")
        _check_list(config.get("extra_specials", ()), "Vocabulary", "extra_specials")
        counts = config.get("counts")
        if counts is not None and not isinstance(counts, dict):
            raise DataError("corrupt Vocabulary config (counts is not a JSON object)",
                            hint="re-save the vocabulary with .save()")
        return cls(
            config["tokens"],
            pad_token=config["pad_token"],
            unk_token=config["unk_token"],
            bos_token=config["bos_token"],
            eos_token=config["eos_token"],
            extra_specials=config.get("extra_specials", ()),
            counts=config.get("counts"),
        )


def _check_list(value: Any, kind: str, key: str) -> None:
    """A saved list must come back a JSON list (a string would be split into its characters)."""
    if not isinstance(value, list | tuple):
        raise DataError(f"corrupt {kind} config ({key} is a {type(value).__name__}, not a list)",
                        hint=f"re-save the {kind} with .save()")


def _is_missing(label: Any) -> bool:
    if label is None:
        return True
    try:
        return bool(label != label)  # NaN (float, NumPy or 0-d tensor)
    except (TypeError, ValueError, RuntimeError):
        return False


def _label_str(label: Any) -> str:
    # 0-d tensors and NumPy scalars by value: str(torch.tensor(1)) is 'tensor(1)', not '1'
    if getattr(label, "ndim", None) == 0 and hasattr(label, "item"):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        return str(int(label))  # 1.0 (a float column, JSON 1.0) is the class of 1, not a class '1.0'
    return str(label)


class LabelEncoder(JsonSerializable):
    """Map class labels to ids ``0..K-1`` (sorted order by default) and back.

    Args:
        classes: The labels in id order.
    """

    def __init__(self, classes: Sequence[str] = ()) -> None:
        self.classes: tuple[str, ...] = tuple(str(c) for c in classes)
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"duplicate labels in {list(self.classes)}", hint="give each class once")
        self._index = {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def fit(cls, labels: Iterable[Any]) -> LabelEncoder:
        """Collect the distinct labels (sorted; numeric strings in numeric order).

        A missing label (``None`` or NaN) or an empty list is an error.

        Args:
            labels: Training labels.

        Returns:
            The fitted encoder.
        """
        distinct = set()
        for i, x in enumerate(labels):
            if _is_missing(x):
                raise DataError(
                    f"label {i} is missing ({x!r})",
                    hint="drop the unlabeled examples before fitting (readers give None for a missing label)",
                )
            distinct.add(_label_str(x))
        if not distinct:
            raise DataError("cannot fit a LabelEncoder on no labels", hint="pass the training labels")

        def key(s: str) -> tuple[int, float, str]:
            try:
                value = float(s)
            except ValueError:
                return (1, 0.0, s)
            # 'nan' is no number to order by (NaN compares false to everything, which made the
            # order, hence the ids, depend on set iteration order): sort it with the words
            return (1, 0.0, s) if math.isnan(value) else (0, value, s)

        return cls(sorted(distinct, key=key))

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, labels: Iterable[Any]) -> list[int]:
        """Map labels to ids.

        Args:
            labels: Labels seen at fit time.

        Returns:
            Their ids.
        """
        out = []
        for x in labels:
            i = self._index.get(_label_str(x))
            if i is None:  # an encoder saved before 1.0 was read as '1' holds the class '1.0'
                i = self._index.get(str(x.item() if getattr(x, "ndim", None) == 0 and hasattr(x, "item") else x))
            if i is None:
                raise DataError(
                    f"unknown label {x!r}; known labels: {list(self.classes)}",
                    hint="fit the encoder on data containing every class",
                )
            out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to labels.

        Args:
            ids: Class ids.

        Returns:
            The labels.
        """
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.classes):
                raise DataError(
                    f"class id {i} out of range [0, {len(self.classes)})",
                    hint="decode ids produced by this encoder",
                )
            out.append(self.classes[int(i)])
        return out

    def to_config(self) -> dict[str, Any]:
        """Return ``{"classes": [...]}``."""
        return {"classes": list(self.classes)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LabelEncoder:
        """Rebuild from :meth:`to_config` output."""
        _check_list(config["classes"], "LabelEncoder", "classes")
        return cls(config["classes"])
