"""The main job on a fresh install: train a recurrent classifier on the shipped digits data.

Each 8x8 image is read as a sequence of 8 rows (8 features per step). A plain loop keeps the
demo free of the optional training engine; the task commands use the full engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .datasets import load_digits
from .nn import GRU, LSTM, RNN


@dataclass
class DemoConfig:
    cell: str = "lstm"  # rnn | lstm | gru
    hidden_size: int = 64
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 1e-2
    seed: int = 0


class RowClassifier(nn.Module):
    """Image rows -> recurrent layer -> last hidden state -> class logits."""

    def __init__(self, cell: str, hidden_size: int, classes: int = 10) -> None:
        super().__init__()
        layers = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
        if cell not in layers:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(layers)}")
        self.rnn = layers[cell](8, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)  # x: [B, 8 rows, 8 pixels]
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])  # [B, classes]


def run_demo(config: DemoConfig, *, quiet: bool = False) -> dict[str, float]:
    """Train on 80% of the digits, report accuracy on the held-out 20%."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(quiet=quiet)
    torch.manual_seed(config.seed)
    images, labels = load_digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.seed))
    x, y = torch.from_numpy(images)[order], torch.from_numpy(labels)[order]
    split = int(0.8 * len(y))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    model = RowClassifier(config.cell, config.hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    console.print(f"[bold]rnnkit demo[/]: {config.cell.upper()} reading 8x8 digits row by row "
                  f"({len(y_train)} train / {len(y_test)} test)")
    start = time.perf_counter()
    with Progress(console=console, transient=False, disable=quiet) as progress:
        task = progress.add_task("training", total=config.epochs)
        for epoch in range(config.epochs):
            model.train()
            perm = torch.randperm(len(y_train))
            total = 0.0
            for i in range(0, len(perm), config.batch_size):
                idx = perm[i:i + config.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(model(x_train[idx]), y_train[idx])
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                total += loss.item() * len(idx)
            accuracy = evaluate(model, x_test, y_test)
            progress.update(task, advance=1,
                            description=f"epoch {epoch + 1}: loss {total / len(y_train):.3f}, test acc {accuracy:.3f}")
    metrics = {"test_accuracy": evaluate(model, x_test, y_test), "train_seconds": time.perf_counter() - start}
    console.print(f"test accuracy [bold green]{metrics['test_accuracy']:.4f}[/] "
                  f"in {metrics['train_seconds']:.1f} s")
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(-1) == y).float().mean())
