"""The README's Python examples run as written: the quick start and the Keras-style model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    if not README.is_file():
        pytest.skip(f"{README} not found")
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _run(block: str, namespace: dict[str, object], name: str) -> dict[str, object]:
    try:
        exec(compile(block, f"README.md {name}", "exec"), namespace)
    except Exception as exc:  # pragma: no cover - shows which block failed
        raise AssertionError(f"README.md {name} failed: {exc!r}\n{block}") from exc
    return namespace


def test_quick_start_runs_and_says_what_it_does() -> None:
    block = _python_blocks()[0]
    assert "import rnnkit.nn as rnn" in block
    ns = _run(block, {"__name__": "readme"}, "quick start")
    import torch

    out, gates = ns["out"], ns["gates"]
    assert isinstance(out, torch.Tensor) and isinstance(gates, dict)
    assert tuple(gates["l0"]["forget"].shape) == (4, 10, 64)  # as the comment in the block says
    lengths = ns["lengths"]
    assert isinstance(lengths, torch.Tensor)
    assert out[3].abs().sum() == 0 and out[1, 7:].abs().sum() == 0  # padded outputs are zero


def test_keras_style_block_runs_on_tiny_data() -> None:
    pytest.importorskip("lightning")
    block = next(b for b in _python_blocks() if "from rnnkit.models import Sequential" in b)
    rng = np.random.default_rng(0)
    vocab_size, max_length, classes = 20, 6, 10
    ns: dict[str, object] = {
        "__name__": "readme",
        "vocab_size": vocab_size,
        "max_length": max_length,
        "X_train": rng.integers(1, vocab_size, (16, max_length)),
        "y_train": np.eye(classes)[rng.integers(0, classes, 16)],  # one-hot: categorical_crossentropy
        "X_val": rng.integers(1, vocab_size, (4, max_length)),
        "y_val": np.eye(classes)[rng.integers(0, classes, 4)],
    }
    # the names the block leaves to the reader are the ones filled in above
    defined = set(re.findall(r"^(\w+)\s*=", block, flags=re.M))
    assert not defined & {"vocab_size", "max_length", "X_train", "y_train", "X_val", "y_val"}
    ns = _run(block, ns, "Keras-style block")
    model = ns["model"]
    history = model.history.history  # type: ignore[attr-defined]
    assert len(history["loss"]) == 10 and "val_accuracy" in history
    assert model.predict(ns["X_val"], verbose=0).shape == (4, classes)  # type: ignore[attr-defined]
