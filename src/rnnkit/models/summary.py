"""``Model.summary()``: a table of layers, output shapes and parameter counts."""

from __future__ import annotations

from typing import Any

from ..layers.base import Layer, SymbolicTensor, flatten
from ..layers.core import InputLayer


def _shape(shape: Any) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_shape(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _params(layer: Layer) -> int:
    return sum(p.numel() for p in layer.parameters())


def summary_lines(model: Any, line_length: int = 90) -> list[str]:
    """The lines ``Model.summary`` prints."""
    if not model.built:
        sequential_spec = getattr(model, "input_spec", None)
        if sequential_spec is None:
            raise ValueError("the model is not built yet, so its shapes are unknown: give it an Input (or "
                             "input_shape=/Embedding(input_length=)), call model.build((None, ...)), or fit it first")
    if getattr(model, "input_spec", None) is not None and getattr(model, "_examples", None) is None:
        model.build()
    graph = getattr(model, "_graph", False)
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else [])
    rows: list[list[str]] = []
    for layer in model.layers:
        if graph:
            nodes = [n for n in model._nodes if n.layer is layer]
            if isinstance(layer, InputLayer):
                rows.append([f"{layer.name} (InputLayer)", _shape(layer.output_shape), "0", "-"])
                continue
            for node in nodes:
                parents = sorted({s.node.layer.name for s in node.inputs if isinstance(s, SymbolicTensor) and s.node})
                shapes = [o.shape for o in flatten(node.output_structure)]
                rows.append([f"{layer.name} ({type(layer).__name__})", _shape(shapes if len(shapes) > 1 else shapes[0]),
                             f"{_params(layer):,}", ", ".join(parents)])
        else:
            rows.append([f"{layer.name} ({type(layer).__name__})", _shape(layer.output_shape),
                         f"{_params(layer):,}" if layer.built else "0 (unbuilt)"])
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    widths = [max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header))]
    width = max(line_length, sum(widths))

    def fmt(cells: list[str]) -> str:
        return "".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()

    kind = "Functional" if graph else type(model).__name__
    lines = [f'Model: "{model.name}" ({kind})', "=" * width, fmt(header), "=" * width]
    for r in rows:
        lines.append(fmt(r))
    lines += ["=" * width, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}", "_" * width]
    return lines
