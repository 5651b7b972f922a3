"""Lightning's progress bar, counting epochs from 1 as rnnkit's logs and Keras do.

Lightning's own bars count from 0: the last of 5 epochs shows ``Epoch 4/4``. Both training engines
(the task command line's and the Keras-style ``fit``) show ``Epoch 5/5`` instead. Lightning is
imported when a bar is made, never at import.
"""

from __future__ import annotations

from typing import Any


def epoch_progress_bar(offset: int = 0, epochs: int | None = None) -> Any:
    """A rich (or, without rich, tqdm) progress bar whose epochs read ``Epoch k/N`` with ``k`` from 1,
    drawn on stderr (as tqdm draws), so stdout carries only results.

    ``offset``: epochs done before this fit (Keras' ``initial_epoch``); ``epochs``: the ``N`` shown
    (default: the trainer's ``max_epochs``).
    """
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    def description(current_epoch: int, trainer: Any) -> str:
        total = epochs if epochs is not None else trainer.max_epochs
        return f"Epoch {current_epoch + offset + 1}" + (f"/{total}" if total is not None else "")

    if _RICH_AVAILABLE:
        class RichBar(RichProgressBar):
            def _get_train_description(self, current_epoch: int) -> str:
                text = description(current_epoch, None if epochs is not None else self.trainer)
                return f"{text:{max(len(text), len(self.validation_description))}}"

        return RichBar(console_kwargs={"stderr": True})  # stdout is for results (rnnkit train --json > file)

    class TQDMBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description(description(trainer.current_epoch, trainer))

    return TQDMBar()
