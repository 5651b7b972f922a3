"""The :class:`Batch` container and the collate functions that build it.

A :class:`Batch` holds padded ``inputs`` ``[B, T, ...]``, ``targets`` (a ``[B]`` class vector,
a padded ``[B, T']`` sequence, or ``None``), ``lengths`` ``[B]``, a boolean ``mask`` ``[B, T]``
(``True`` = real step), the ``padding_side`` and an ``extras`` dict for anything else
(target lengths and mask for sequence targets, truncation counts, ids...).

:class:`SequenceCollator` is a configurable, picklable ``collate_fn`` for
``torch.utils.data.DataLoader``; :func:`collate_sequences` is the functional form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .errors import DataError
from .padding import pad_batch

__all__ = ["Batch", "SequenceCollator", "collate_sequences", "SequenceDataset"]


def _move(value: Any, device: torch.device | str, non_blocking: bool) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: _move(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_move(v, device, non_blocking) for v in value)
    return value


@dataclass
class Batch:
    """A padded mini-batch.

    Attributes:
        inputs: ``[B, T, ...]`` padded inputs.
        targets: Targets (``[B]``, ``[B, T']`` padded or ``None``).
        lengths: ``[B]`` int64 true input lengths.
        mask: ``[B, T]`` bool, ``True`` at real input steps.
        padding_side: ``'post'`` or ``'pre'``.
        extras: Additional tensors or values (e.g. ``target_lengths``, ``target_mask``).
    """

    inputs: Tensor
    targets: Tensor | None
    lengths: Tensor
    mask: Tensor
    padding_side: str = "post"
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor (extras included) to ``device``.

        Args:
            device: Target device.
            non_blocking: Passed to ``Tensor.to``.

        Returns:
            A new :class:`Batch` on ``device``.
        """
        return replace(
            self,
            inputs=self.inputs.to(device, non_blocking=non_blocking),
            targets=_move(self.targets, device, non_blocking),  # a tensor, None or a list of tensors
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            extras=_move(self.extras, device, non_blocking),
        )

    def pin_memory(self) -> Batch:
        """Pin the tensors' memory (called by ``DataLoader(pin_memory=True)``).

        Returns:
            A new :class:`Batch` with pinned tensors.
        """

        def pin(t: Any) -> Any:
            return t.pin_memory() if isinstance(t, Tensor) else t

        return replace(
            self,
            inputs=pin(self.inputs),
            targets=pin(self.targets),
            lengths=pin(self.lengths),
            mask=pin(self.mask),
            extras={k: pin(v) for k, v in self.extras.items()},
        )

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return int(self.inputs.shape[0])

    def __len__(self) -> int:
        return self.batch_size


def _split_sample(sample: Any, index: int) -> tuple[Any, Any, dict[str, Any]]:
    if isinstance(sample, Mapping):
        if "inputs" not in sample:
            raise DataError(
                f"sample {index} is a dict without an 'inputs' key (keys: {sorted(sample)})",
                hint="name the input sequence 'inputs' (and the target 'targets')",
            )
        extras = {k: v for k, v in sample.items() if k not in ("inputs", "targets")}
        return sample["inputs"], sample.get("targets"), extras
    if isinstance(sample, tuple) and len(sample) == 2:
        return sample[0], sample[1], {}
    return sample, None, {}


def _is_sequence_target(t: Any) -> bool:
    if isinstance(t, Tensor):
        return t.dim() >= 1
    if hasattr(t, "ndim"):
        return int(t.ndim) >= 1
    return isinstance(t, list | tuple)


def collate_sequences(
    samples: Sequence[Any],
    padding: str = "post",
    pad_value: float = 0,
    target_pad_value: float = -100,
    max_length: int | None = None,
    truncation: str = "post",
) -> Batch:
    """Collate samples into a padded :class:`Batch`.

    Each sample is an input sequence, an ``(inputs, target)`` tuple or a dict with keys
    ``inputs``, optional ``targets`` and extra keys (collected into ``extras`` as lists, or
    stacked when they are equal-shaped tensors/numbers). Scalar targets are stacked into
    ``[B]``; sequence targets are padded with ``target_pad_value`` (``-100``, the
    ``ignore_index`` of PyTorch losses) and their lengths and mask go to
    ``extras['target_lengths']`` / ``extras['target_mask']``.

    Args:
        samples: The samples of one batch.
        padding: ``'post'`` or ``'pre'``.
        pad_value: Padding value for inputs.
        target_pad_value: Padding value for sequence targets.
        max_length: Optional truncation length for inputs and sequence targets.
        truncation: ``'post'`` or ``'pre'``.

    Returns:
        A :class:`Batch`; ``extras['num_truncated']`` and ``extras['tokens_dropped']`` report
        input truncation (with ``max_length``, ``extras['truncation_side']`` says which end went:
        ``'post'`` or ``'pre'``), ``extras['target_num_truncated']`` and
        ``extras['target_tokens_dropped']`` that of sequence targets.
    """
    if len(samples) == 0:
        raise DataError("cannot collate an empty batch", hint="check the sampler yields non-empty batches")
    inputs, targets, extras_list = zip(*(_split_sample(s, i) for i, s in enumerate(samples)))
    padded = pad_batch(
        list(inputs), max_length=max_length, padding=padding, truncation=truncation, pad_value=pad_value
    )
    extras: dict[str, Any] = {"num_truncated": padded.num_truncated, "tokens_dropped": padded.tokens_dropped}
    if max_length is not None:
        extras["truncation_side"] = truncation  # which end lost its steps, next to how many did
    target_tensor: Tensor | None = None
    has_target = [t is not None for t in targets]
    if any(has_target):
        if not all(has_target):
            missing = has_target.index(False)
            raise DataError(
                f"sample {missing} has no target while others do", hint="give every sample a target or none"
            )
        for i, t in enumerate(targets):
            if isinstance(t, str | bytes):
                raise DataError(
                    f"target of sample {i} is a string ({t!r}), not a number",
                    hint="encode labels to ids first, e.g. rnnkit.data.LabelEncoder.fit(labels).encode(...)",
                )
        kinds = [_is_sequence_target(t) for t in targets]
        if len(set(kinds)) > 1:
            odd = kinds.index(not kinds[0])
            raise DataError(
                f"sample 0 has a {'sequence' if kinds[0] else 'scalar'} target but sample {odd} has a "
                f"{'sequence' if kinds[odd] else 'scalar'} one",
                hint="give every sample the same kind of target (one label, or one label per step)",
            )
        if kinds[0]:
            tp = pad_batch(
                list(targets),
                max_length=max_length,
                padding=padding,
                truncation=truncation,
                pad_value=target_pad_value,
            )
            target_tensor = tp.padded
            extras["target_lengths"] = tp.lengths
            extras["target_mask"] = tp.mask
            extras["target_num_truncated"] = tp.num_truncated
            extras["target_tokens_dropped"] = tp.tokens_dropped
        else:
            target_tensor = torch.as_tensor([t.item() if isinstance(t, Tensor) else t for t in targets])
    keys = {k for e in extras_list for k in e}
    for key in sorted(keys):
        values = [e.get(key) for e in extras_list]
        if all(isinstance(v, int | float | bool) for v in values):
            extras[key] = torch.as_tensor(values)
        elif all(isinstance(v, Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            extras[key] = torch.stack(values)
        else:
            extras[key] = values
    return Batch(padded.padded, target_tensor, padded.lengths, padded.mask, padded.padding, extras)


@dataclass
class SequenceCollator:
    """A picklable ``collate_fn`` that calls :func:`collate_sequences` with fixed options.

    Args:
        padding: ``'post'`` or ``'pre'``.
        pad_value: Padding value for inputs.
        target_pad_value: Padding value for sequence targets.
        max_length: Optional truncation length.
        truncation: ``'post'`` or ``'pre'``.
    """

    padding: str = "post"
    pad_value: float = 0
    target_pad_value: float = -100
    max_length: int | None = None
    truncation: str = "post"

    def __call__(self, samples: Sequence[Any]) -> Batch:
        """Collate ``samples``.

        Args:
            samples: The samples of one batch.

        Returns:
            The padded :class:`Batch`.
        """
        return collate_sequences(
            samples,
            padding=self.padding,
            pad_value=self.pad_value,
            target_pad_value=self.target_pad_value,
            max_length=self.max_length,
            truncation=self.truncation,
        )


class SequenceDataset(Dataset):
    """An in-memory dataset of ``(inputs, target)`` pairs, optionally transformed lazily.

    Args:
        inputs: Input sequences (lists of ids, arrays or tensors).
        targets: Targets, one per input, or ``None``.
        transform: Optional function applied to each input on access.
    """

    def __init__(
        self,
        inputs: Sequence[Any],
        targets: Sequence[Any] | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if targets is not None and len(targets) != len(inputs):
            raise DataError(
                f"{len(inputs)} inputs but {len(targets)} targets",
                hint="give exactly one target per input sequence",
            )
        self.inputs = inputs
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> Any:
        x = self.inputs[index]
        if self.transform is not None:
            x = self.transform(x)
        x = torch.as_tensor(x)
        if self.targets is None:
            return x
        return x, self.targets[index]

    def lengths(self) -> list[int]:
        """Return every input's length (for bucketing; applies ``transform``).

        Returns:
            One length per input.
        """
        if self.transform is None:
            return [len(x) for x in self.inputs]
        return [len(self.transform(x)) for x in self.inputs]
