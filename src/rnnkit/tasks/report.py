"""Reports: Markdown with metrics tables and PNG plots (learning curves, confusion matrix)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: Sequence[dict[str, float]], path: Path) -> Path | None:
    """Train loss and every dev metric against the epoch."""
    if not history:
        return None
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    dev_keys = [k for k in history[0] if k.startswith("dev_")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(epochs, [row["train_loss"] for row in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch", ylabel="loss")
    for key in dev_keys:
        axes[1].plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=key[4:])
    axes[1].set(title="dev metrics", xlabel="epoch")
    axes[1].legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:  # whole epochs only (1, 2, 3; not 1.2, 1.4 on a short run)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    top = max((max(row) for row in matrix), default=0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center",
                    color="white" if matrix[i][j] > top / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats to 4 decimals, and a ``|`` inside a cell (``||dL/dh||``, a class
    named ``a|b``) escaped so it does not start a new column."""
    def fmt(v: object) -> str:
        return (f"{v:.4f}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(fmt(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
