"""``Model.summary()``: a table of layers, output shapes and parameter counts."""

from __future__ import annotations

import re
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
    return sum(p.numel() for p in layer.keras_parameters())


def _layer_range(layers: list[Layer], layer_range: Any) -> tuple[int, int]:
    """Keras' ``layer_range``: the first layer matching ``layer_range[0]`` to the last matching ``[1]``."""
    if layer_range is None:
        return 0, len(layers)
    if len(layer_range) != 2 or not all(isinstance(n, str) for n in layer_range):
        raise ValueError(f"layer_range must be a list or tuple of two layer names, got {layer_range!r}")
    lower = [i for i, layer in enumerate(layers) if re.match(layer_range[0], layer.name)]
    upper = [i for i, layer in enumerate(layers) if re.match(layer_range[1], layer.name)]
    if not lower or not upper:
        raise ValueError(f"layer_range {list(layer_range)} matches no layer name of the model; layers: "
                         f"{[layer.name for layer in layers]}")
    if min(lower) > max(upper):
        return min(upper), max(lower) + 1
    return min(lower), max(upper) + 1


def _trainable_cell(layer: Layer) -> str:
    return ("Y" if layer.trainable else "N") if any(True for _ in layer.parameters()) else "-"


def summary_lines(model: Any, line_length: int | None = 90, *, expand_nested: bool = False,
                  show_trainable: bool = False, layer_range: Any = None) -> list[str]:
    """The lines ``Model.summary`` prints.

    ``expand_nested`` adds the layers of nested models below them (indented ``└``),
    ``show_trainable`` a ``Trainable`` column (``Y``/``N``, ``-`` without weights), and
    ``layer_range`` (two layer names, regular expressions as in Keras) limits the rows.
    """
    line_length = 90 if line_length is None else int(line_length)
    if not model.built:
        sequential_spec = getattr(model, "input_spec", None)
        if sequential_spec is None:
            raise ValueError("the model is not built yet, so its shapes are unknown: give it an Input (or "
                             "input_shape=/Embedding(input_length=)), call model.build((None, ...)), or fit it first")
    if getattr(model, "input_spec", None) is not None and getattr(model, "_examples", None) is None:
        model.build()
    graph = getattr(model, "_graph", False)
    header = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else []) \
        + (["Trainable"] if show_trainable else [])
    rows: list[list[str]] = []

    def nested(layer: Layer, level: int) -> None:
        inner_layers = getattr(layer, "layers", None)
        if not expand_nested or not isinstance(inner_layers, list):
            return
        for inner in inner_layers:
            params = f"{_params(inner):,}" if inner.built else "0 (unbuilt)"
            cells = [f"{'   ' * level}└ {inner.name} ({type(inner).__name__})", _shape(inner.output_shape), params]
            rows.append(cells + (["-"] if graph else []) + ([_trainable_cell(inner)] if show_trainable else []))
            nested(inner, level + 1)

    start, stop = _layer_range(model.layers, layer_range)
    for layer in model.layers[start:stop]:
        first_row = len(rows)
        if graph:
            nodes = [n for n in model._nodes if n.layer is layer]
            if isinstance(layer, InputLayer):
                rows.append([f"{layer.name} (InputLayer)", _shape(layer.output_shape), "0", "-"]
                            + (["-"] if show_trainable else []))
                continue
            for node in nodes:
                parents = sorted({s.node.layer.name for s in node.inputs if isinstance(s, SymbolicTensor) and s.node})
                shapes = [o.shape for o in flatten(node.output_structure)]
                rows.append([f"{layer.name} ({type(layer).__name__})", _shape(shapes if len(shapes) > 1 else shapes[0]),
                             f"{_params(layer):,}", ", ".join(parents)])
        else:
            rows.append([f"{layer.name} ({type(layer).__name__})", _shape(layer.output_shape),
                         f"{_params(layer):,}" if layer.built else "0 (unbuilt)"])
        if show_trainable:
            for row in rows[first_row:]:
                row.append(_trainable_cell(layer))
        nested(layer, 1)
    total = sum(p.numel() for p in model.keras_parameters())
    trainable = sum(p.numel() for p in model.keras_parameters() if p.requires_grad)
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
