"""Sequence pooling: turn ``[B, T, F]`` outputs into one ``[B, F]`` vector, honouring the mask."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..scan.elementwise import tanh


class AttentionPooling(nn.Module):
    r"""Additive attention pooling (Bahdanau et al. 2015; Yang et al. 2016, sec. 2.2).

    .. math::
        u_t = \tanh(W h_t + b),\quad a_t = \frac{\exp(v^\top u_t)}{\sum_{s \in \text{real}} \exp(v^\top u_s)},
        \quad y = \sum_t a_t h_t

    Padded steps get weight 0. ``forward`` returns ``(pooled [B, F], weights [B, T])``; the
    weights of the last call are kept in ``last_weights`` for inspection.
    """

    def __init__(self, features: int, attention_size: int | None = None) -> None:
        super().__init__()
        for name, value in (("features", features), ("attention_size", attention_size or 1)):
            if value < 1:
                raise ValueError(f"AttentionPooling {name} must be >= 1, got {value}")
        size = attention_size or features
        self.project = nn.Linear(features, size)
        self.score = nn.Linear(size, 1, bias=False)
        self.last_weights: Tensor | None = None

    def forward(self, outputs: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        features = self.project.in_features
        if outputs.dim() != 3 or outputs.shape[-1] != features:
            raise ValueError(f"AttentionPooling expects outputs of shape [batch, time, {features}], "
                             f"got {list(outputs.shape)}")
        _check_mask("AttentionPooling", outputs, mask)
        scores = self.score(tanh(self.project(outputs))).squeeze(-1)  # [B, T]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:
            weights = weights.nan_to_num(0.0)  # rows with no real step
        self.last_weights = weights.detach()
        return torch.einsum("bt,btf->bf", weights, outputs), weights


def _check_mask(owner: str, outputs: Tensor, mask: Tensor | None) -> None:
    if mask is None:
        return
    if tuple(mask.shape) != tuple(outputs.shape[:2]):
        raise ValueError(f"{owner}: mask must have shape [batch, time] = {list(outputs.shape[:2])}, "
                         f"got {list(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{owner}: mask must be a bool tensor (True on real steps), got {mask.dtype}; "
                         "pass mask.bool()")


def masked_mean(outputs: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real steps (zeros for an empty sequence). Padded steps are never read (even
    ``inf``/``NaN`` there is ignored); half and bfloat16 sums accumulate in float32."""
    _check_mask("masked_mean", outputs, mask)
    if outputs.shape[1] == 0:
        return outputs.sum(1)  # zeros (still differentiable)
    if mask is None:
        return outputs.mean(1)
    m = mask.unsqueeze(-1)
    acc = torch.float32 if outputs.dtype in (torch.float16, torch.bfloat16) else None
    total = outputs.masked_fill(~m, 0.0).sum(1, dtype=acc)  # a float16 sum of 2000 steps overflows
    return (total / m.sum(1).clamp(min=1)).to(outputs.dtype)


def masked_max(outputs: Tensor, mask: Tensor | None) -> Tensor:
    """Maximum over real steps (zeros for an empty sequence)."""
    _check_mask("masked_max", outputs, mask)
    if outputs.shape[1] == 0:
        return outputs.sum(1)  # zeros (still differentiable)
    if mask is None:
        return outputs.amax(1)
    filled = outputs.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    return torch.where(mask.any(1, keepdim=True), filled, torch.zeros_like(filled))
