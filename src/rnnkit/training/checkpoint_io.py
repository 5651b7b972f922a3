"""Lightning checkpoints written straight to the path they are given, and flushed to disk.

Lightning's default writer serialises a checkpoint into memory, then writes it through an
``fsspec`` transaction, which on a local disk puts it in the system's temporary folder first and
moves it after: a second full write, and a checkpoint that fails wherever ``/tmp`` is small,
however much room the run folder has. rnnkit's callers already write each checkpoint under a
temporary name in the run folder and ``os.replace`` it over the last one (the old checkpoint or
the new one, never half of either), so this writer only saves to that name and ``fsync``s it.
Importing this module imports Lightning: import it where training starts.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class DirectCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``path`` itself, flushed to disk before returning (callers rename it into place);
    reads always with ``weights_only=True`` (a checkpoint is data, never code)."""

    def load_checkpoint(self, path: Any, map_location: Any | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        # ``None`` would leave the choice to torch, whose default an environment variable
        # (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) or an older torch turns into full unpickling
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with open(path, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
