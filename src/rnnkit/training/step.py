"""One batch through a compiled model: forward, weighted and masked losses, metric updates.

Shared by the Lightning module (``fit``) and the plain loops of ``evaluate``; it imports
neither Lightning nor torchmetrics itself.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..layers.activations import get_activation
from ..layers.base import flatten, module_mode, reset_states
from ..metrics import BoundMetric
from .compile import CompileState
from .data import InputDataError, canonical_batch, check_finite
from .dtypes import full_precision
from .losses import Loss


def _positions_mask(per: Tensor, *masks: Tensor | None) -> Tensor | None:
    out: Tensor | None = None
    for m in masks:
        if isinstance(m, Tensor) and tuple(m.shape) == tuple(per.shape):
            m = m.to(per.device).bool()
            out = m if out is None else out & m
    return out


class StepLogic:
    """Loss and metrics of one batch for a compiled model.

    Args:
        model: an ``rnnkit.models.Model``.
        compiled: its :class:`CompileState` (bound to the outputs).
        class_weight: ``{class_id: weight}`` for single-output classification, or ``None``.
        check_values: check every batch for NaN/infinite inputs and label values the loss cannot
            take (used for data from a user's Dataset or DataLoader).
    """

    def __init__(self, model: Any, compiled: CompileState, *, class_weight: dict[int, float] | None = None,
                 check_values: bool = False) -> None:
        self.model = model
        self.compiled = compiled
        self.input_names: list[str] = list(getattr(model, "input_names", ["input"]))
        self.output_names: list[str] = list(compiled.output_names or getattr(model, "output_names", ["output"]))
        self.losses: list[Loss] = compiled.losses
        self.loss_weights = compiled.loss_weights
        self.prefixes = compiled.log_prefixes()
        self.check_values = check_values
        self.fused: list[bool] = [False] * len(self.losses)
        self.activations: list[str] = [""] * len(self.losses)
        self._output_layers = model.output_layers() if hasattr(model, "output_layers") else [None] * len(self.losses)
        for i, (layer, loss) in enumerate(zip(self._output_layers, self.losses)):
            act = layer.output_activation() if layer is not None else ""
            self.activations[i] = act
            if loss.fusable_activation is not None and act == loss.fusable_activation and not loss.from_logits:
                self.fused[i] = True
        self._class_table: Tensor | None = None
        self.preflight_outputs: list[Tensor] = []
        compiled.optimizer.name_weights(model)  # Keras weight names, for exclude_from_weight_decay(var_names=)
        if class_weight:
            if len(self.losses) != 1:
                raise ValueError("class_weight works for single-output models; for several outputs pass "
                                 "sample_weight instead")
            if self.losses[0].task == "regression":
                raise ValueError(f"class_weight is for classification losses, not {self.losses[0].name}")
            if any(int(k) < 0 for k in class_weight):
                raise ValueError("class_weight keys must be class ids >= 0")
            size = max(int(k) for k in class_weight) + 1
            table = torch.ones(size)
            for k, v in class_weight.items():
                table[int(k)] = float(v)
            self._class_table = table

    # -- logits mode -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def logits_mode(self) -> Iterator[None]:
        """While active, output layers whose activation is fused into the loss emit logits.

        :meth:`forward` runs the model inside it and nothing else does, so user code that runs during
        ``fit`` (a Keras callback calling ``predict``) sees the model as it is outside ``fit``."""
        layers = [layer for layer, fused in zip(self._output_layers, self.fused) if fused and layer is not None]
        for layer in layers:
            layer.set_emit_logits(True)
        try:
            yield
        finally:
            for layer in layers:
                layer.set_emit_logits(False)

    # -- batches ---------------------------------------------------------------------------------
    def canonical(self, batch: Any) -> dict[str, Any]:
        """The batch as a batch dict (see :mod:`rnnkit.training.data`), checked if asked."""
        b = canonical_batch(batch, self.input_names, self.output_names)
        if self.check_values:
            for i, x in enumerate(b["x"]):
                check_finite(x, "x" if len(b["x"]) == 1 else f"x[{i}]")
            for i, y in enumerate(b["y"] or []):
                check_finite(y, "y" if len(b["y"]) == 1 else f"y[{i}]")
        return b

    def model_inputs(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        """``(inputs, masks)`` in the form the model takes."""
        xs, masks = batch["x"], batch["mask"]
        if len(xs) != len(self.input_names):
            raise InputDataError(f"the model has {len(self.input_names)} input(s) {self.input_names}, the batch "
                                 f"has {len(xs)}")
        if len(xs) == 1:
            return xs[0], masks[0]
        return list(xs), (None if all(m is None for m in masks) else list(masks))

    def forward(self, batch: dict[str, Any]) -> tuple[list[Tensor], list[Tensor | None]]:
        """Run the model: outputs and output masks as lists (one per output); a fused activation is
        left to the loss (:meth:`logits_mode`)."""
        inputs, masks = self.model_inputs(batch)
        with self.logits_mode():
            outs, out_masks = self.model.forward_with_mask(inputs, mask=masks)
        flat = flatten(outs)
        flat_masks = flatten(out_masks) if out_masks is not None else [None] * len(flat)
        if len(flat_masks) != len(flat):
            flat_masks = [None] * len(flat)
        return flat, flat_masks

    # -- losses ----------------------------------------------------------------------------------
    def _class_weights(self, loss: Loss, y: Tensor, out: Tensor, per: Tensor) -> Tensor:
        assert self._class_table is not None
        if loss.task == "multiclass" and y.shape == out.shape:
            ids = y.argmax(-1)
        elif loss.task == "binary":
            if out.shape[-1] != 1 and y.dim() == out.dim():
                raise ValueError("class_weight needs one label per sample; this binary output has several units")
            ids = y.reshape(per.shape).round()
        else:
            ids = y.reshape(per.shape)
        ids = ids.long().clamp(min=0)
        table = self._class_table.to(per.device)
        if int(ids.max()) >= table.shape[0]:
            table = torch.cat([table, table.new_ones(int(ids.max()) + 1 - table.shape[0])])
        return table[ids]

    def losses_of(self, outputs: list[Tensor], out_masks: list[Tensor | None],
                  batch: dict[str, Any]) -> tuple[Tensor, list[Tensor]]:
        """``(total, per-output losses)`` with sample/class weights and masks applied."""
        ys = batch["y"]
        if ys is None:
            raise InputDataError("training and evaluation need targets y")
        if len(ys) != len(outputs):
            raise InputDataError(f"the model has {len(outputs)} output(s) {self.output_names}, got {len(ys)} target "
                                 "array(s); pass one per output (a list, or a dict by output name)")
        y_masks = batch.get("y_mask") or [None] * len(ys)
        sw = batch.get("sw")
        parts: list[Tensor] = []
        total: Tensor | None = None
        for i, (loss, out, y) in enumerate(zip(self.losses, outputs, ys)):
            y = y.to(out.device)
            out = full_precision(out)
            loss.check(y, out, values=self.check_values)
            per = loss.elementwise(y, out, logits=self.fused[i] or loss.from_logits)
            weight: Tensor | None = None
            if sw is not None:
                w = sw.to(device=per.device, dtype=per.dtype)
                if w.dim() == 2 and w.shape[1] == 1 and per.dim() == 1:
                    w = w[:, 0]
                while w.dim() < per.dim():
                    w = w.unsqueeze(-1)
                try:
                    w = w.expand_as(per)
                except RuntimeError:
                    raise InputDataError(f"sample_weight of shape {list(sw.shape)} does not fit the per-sample loss "
                                         f"of shape {list(per.shape)}; pass [N] (or [N, T] for sequence outputs)") from None
                weight = w
            if self._class_table is not None:
                cw = self._class_weights(loss, y, out, per)
                weight = cw if weight is None else weight * cw
            mask = _positions_mask(per, out_masks[i], y_masks[i], loss.positions(y, out))
            if weight is not None:
                per = per * weight
            if mask is not None:
                value = (per * mask).sum() / mask.sum().clamp(min=1)
            else:
                value = per.sum() / max(per.numel(), 1)
            parts.append(value)
            weighted = value * self.loss_weights[i]
            total = weighted if total is None else total + weighted
        assert total is not None
        # the optimizer's loss_scale_factor (Keras): its gradient is scaled, its value (logged) is not
        return self.compiled.optimizer.scale_loss_for_backward(total), parts

    # -- metrics ---------------------------------------------------------------------------------
    def probabilities(self, i: int, out: Tensor) -> Tensor:
        """Output ``i`` as probabilities for the metrics: the fused activation applied, and the
        loss's activation (sigmoid or softmax) applied to an output that a ``from_logits=True`` loss
        reads as logits. (torchmetrics would otherwise apply it only to a batch holding a value
        outside [0, 1], so the same logit would be scored differently from batch to batch.)"""
        if self.fused[i]:
            return get_activation(self.activations[i])(out)
        loss = self.losses[i]
        if loss.from_logits and loss.fusable_activation is not None:
            return get_activation(loss.fusable_activation)(out)
        return out

    def make_metrics(self, features: list[int]) -> nn.ModuleList:
        """Fresh metric objects: one list per output (torchmetrics is imported here)."""
        per_output = nn.ModuleList()
        for i, specs in enumerate(self.compiled.metrics):
            bound = nn.ModuleList()
            for spec in specs:
                m = spec.bind(features[i], self.losses[i].task)
                m.name = self.prefixes[i] + m.name
                bound.append(m)
            per_output.append(bound)
        return per_output

    def update_metrics(self, metrics: nn.ModuleList, outputs: list[Tensor], out_masks: list[Tensor | None],
                       batch: dict[str, Any]) -> None:
        """Feed one batch to the metric objects."""
        ys = batch["y"]
        y_masks = batch.get("y_mask") or [None] * len(ys)
        for i, group in enumerate(metrics):
            bound = cast(nn.ModuleList, group)
            if not len(bound):
                continue
            prob = self.probabilities(i, full_precision(outputs[i].detach()))
            lead = prob.shape[:-1] if prob.dim() > 1 else prob.shape
            mask = None
            for m in (out_masks[i], y_masks[i]):
                if isinstance(m, Tensor) and tuple(m.shape) == tuple(lead[: m.dim()]) and m.dim() >= 2:
                    mask = m.bool() if mask is None else mask & m.bool()
            if prob.dim() > 1 and ys[i] is not None:  # positions of the loss's ignore_class: left out, like padding
                keep = self.losses[i].positions(ys[i].to(prob.device), prob)
                if keep is not None:
                    if mask is not None:
                        while mask.dim() < keep.dim():
                            mask = mask.unsqueeze(-1)
                        keep = keep & mask
                    mask = keep
            for metric in bound:
                assert isinstance(metric, BoundMetric)
                metric.update(prob, ys[i], mask)

    # -- checks before training ------------------------------------------------------------------
    def preflight(self, batch: dict[str, Any]) -> list[int]:
        """Run one batch without gradients and check the labels against the losses.

        Returns:
            The last-axis size of each output (for binding metrics).

        Raises:
            ValueError: one line, saying what the loss expected.
        """
        try:
            with module_mode(self.model, False), torch.no_grad():
                outputs, out_masks = self.forward(batch)
                self.preflight_outputs = outputs
                if len(outputs) != len(self.losses):
                    raise ValueError(f"the model returns {len(outputs)} output(s) but compile() set "
                                     f"{len(self.losses)} loss(es)")
                if batch["y"] is not None:
                    check = self.check_values
                    self.check_values = True
                    try:
                        self.losses_of(outputs, out_masks, batch)
                    finally:
                        self.check_values = check
        finally:
            reset_states(self.model)  # a stateful model must not carry this preview into training
        for i, loss in enumerate(self.losses):
            if (loss.fusable_activation is not None and not loss.from_logits and not self.fused[i]
                    and self._output_layers[i] is not None and self.activations[i] == "linear"):
                warnings.warn(f"the output {self.output_names[i]!r} has no {loss.fusable_activation} but "
                              f"{loss.name} expects probabilities; add activation='{loss.fusable_activation}' "
                              "to the last layer or use from_logits=True", stacklevel=3)
        return [int(o.shape[-1]) if o.dim() > 1 else 1 for o in outputs]
