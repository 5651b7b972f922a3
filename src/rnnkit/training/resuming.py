"""What both training engines need to resume: a checked read of a training checkpoint, and the
training loader of an epoch resumed in its middle."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from os import PathLike
from typing import Any

import torch

_END = object()


def read_checkpoint(path: str | PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True, mmap=True)`` on the CPU, after checking the zip's CRCs
    (``torch.load`` does not: a flipped bit would load). Raises ``ValueError("CRC check failed for
    ...")`` or the error of ``zipfile`` / ``torch.load`` (a truncated file, not a zip, unpickling
    refused, ``PermissionError``)."""
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(f"CRC check failed for {damaged}")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


class PassOver:
    """``loader``, whose first pass starts after its first ``skip`` batches: they are drawn and
    dropped (the same order as before the interruption, since it depends only on the seed and the
    epoch; none of them is trained on again); later passes are whole. Other attributes are the
    loader's (Lightning sets its samplers' epochs through them). When the data gives fewer than
    ``skip`` batches, ``too_few(skip)`` is raised."""

    def __init__(self, loader: Any, skip: int, too_few: Callable[[int], Exception]) -> None:
        self.loader, self.skip, self.too_few = loader, skip, too_few

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        batches = iter(self.loader)
        for _ in range(skip):
            if next(batches, _END) is _END:
                raise self.too_few(skip)
        yield from batches

    def __getattr__(self, name: str) -> Any:
        loader = self.__dict__.get("loader")
        if loader is None:  # mid-construction (copy, unpickling): no forwarding yet
            raise AttributeError(name)
        return getattr(loader, name)
