"""The training loader of an epoch resumed in its middle (both training engines use it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

_END = object()


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
