"""Encoder-decoder attention: additive (Bahdanau) and multiplicative (Luong dot / general).

A decoder query ``q`` ``[B, Q]`` attends over encoder outputs ``h_s`` ``[B, S, K]`` (keys and
values are the same tensor) whose real positions are given by ``mask`` ``[B, S]`` (``True`` =
real, either padding side). Every module returns ``(context [B, K], weights [B, S])``; the
weights sum to one over the real positions and are exactly zero on padding.

* :class:`BahdanauAttention` (Bahdanau et al. 2015, "Neural Machine Translation by Jointly
  Learning to Align and Translate", sec. 3.1 and appendix A.1.2)::

      e_s = v^T tanh(W_q q + W_k h_s [+ w_c cov_s])

* :class:`LuongAttention` (Luong et al. 2015, "Effective Approaches to Attention-based Neural
  Machine Translation", sec. 3.1, eq. 8)::

      dot:      e_s = q^T h_s                       (needs Q == K)
      general:  e_s = q^T W_a h_s  [+ w_c cov_s]

* Then ``a = softmax(e)`` over real positions and ``context = sum_s a_s h_s``.

Coverage (Tu et al. 2016, "Modeling Coverage for Neural Machine Translation"; See et al. 2017,
sec. 2.2): ``cov_s`` is the attention a source position received at earlier steps; feeding it
into the score lets the model learn not to attend to the same words again.

The key projection does not depend on the query, so a decoder computes it once per sentence
with :meth:`project_keys` and passes it to every step as ``projected_keys``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..scan.elementwise import tanh

__all__ = ["ATTENTIONS", "Attention", "BahdanauAttention", "LuongAttention", "make_attention", "masked_softmax"]


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` that gives exactly zero weight where ``mask`` is ``False``.

    A row with no real position gets all-zero weights (not NaN).

    Args:
        scores: Unnormalised scores, e.g. ``[B, S]``.
        mask: Bool tensor broadcastable to ``scores`` (``True`` = keep), or ``None``.
        dim: The dimension to normalise.

    Returns:
        Weights with the shape of ``scores``.
    """
    if mask is None:
        return torch.softmax(scores, dim)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = real position), got {mask.dtype}")
    filled = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(filled, dim)
    return weights.masked_fill(~mask, 0.0)  # all-padding rows: NaN -> 0


class Attention(nn.Module):
    """Base class: the score function varies, masking, normalisation and the context do not."""

    query_size: int
    key_size: int

    def __init__(self, query_size: int, key_size: int, *, coverage: bool = False) -> None:
        super().__init__()
        for name, value in (("query_size", query_size), ("key_size", key_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.query_size, self.key_size, self.coverage = query_size, key_size, coverage

    def project_keys(self, keys: Tensor) -> Tensor:
        """The query-independent part of the score for ``keys`` ``[B, S, K]`` (compute once per sentence)."""
        raise NotImplementedError

    def score(self, query: Tensor, projected_keys: Tensor, coverage: Tensor | None) -> Tensor:
        """Unnormalised scores ``[B, S]`` for ``query`` ``[B, Q]``."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor | None = None, *,
                projected_keys: Tensor | None = None, coverage: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` over ``keys``.

        Args:
            query: ``[B, Q]`` decoder state.
            keys: ``[B, S, K]`` encoder outputs (also the values).
            mask: ``[B, S]`` bool, ``True`` on real source positions (``None``: all real).
            projected_keys: :meth:`project_keys` of ``keys``, to skip recomputing it each step.
            coverage: ``[B, S]`` attention received so far (needed when built with ``coverage=True``).

        Returns:
            ``(context [B, K], weights [B, S])``.
        """
        if query.dim() != 2 or query.shape[-1] != self.query_size:
            raise ValueError(f"{type(self).__name__} expects a query of shape [batch, {self.query_size}], "
                             f"got {list(query.shape)}")
        if keys.dim() != 3 or keys.shape[-1] != self.key_size or keys.shape[0] != query.shape[0]:
            raise ValueError(f"{type(self).__name__} expects keys of shape [{query.shape[0]}, source, "
                             f"{self.key_size}], got {list(keys.shape)}")
        if mask is not None and tuple(mask.shape) != tuple(keys.shape[:2]):
            raise ValueError(f"mask must have shape {list(keys.shape[:2])} (batch, source), got {list(mask.shape)}")
        ref = next(iter(self.parameters()), None)
        for what, t in (("query", query), ("keys", keys)):
            if ref is not None and (t.device != ref.device or (
                    t.dtype != ref.dtype and not torch.is_autocast_enabled(t.device.type))):
                raise ValueError(f"{type(self).__name__}: {what} is {t.dtype} on {t.device} but the parameters are "
                                 f"{ref.dtype} on {ref.device}; convert one of them")
        if coverage is not None and tuple(coverage.shape) != tuple(keys.shape[:2]):
            raise ValueError(f"coverage must have shape {list(keys.shape[:2])} (batch, source), "
                             f"got {list(coverage.shape)}")
        if self.coverage and coverage is None:
            coverage = keys.new_zeros(keys.shape[:2])
        if projected_keys is None:
            projected_keys = self.project_keys(keys)
        else:
            expected = [*keys.shape[:2], getattr(self, "attention_size", self.query_size)]
            if list(projected_keys.shape) != expected:
                raise ValueError(f"projected_keys must be project_keys(keys), of shape {expected}, "
                                 f"got {list(projected_keys.shape)}")
        weights = masked_softmax(self.score(query, projected_keys, coverage if self.coverage else None), mask)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # [B, K]
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention: ``e_s = v^T tanh(W_q q + W_k h_s [+ w_c cov_s])``.

    Args:
        query_size: Features of the decoder query ``Q``.
        key_size: Features of the encoder outputs ``K``.
        attention_size: Width ``A`` of the hidden layer (default ``query_size``).
        coverage: Add the coverage term ``w_c cov_s``.

    Example:
        >>> attn = BahdanauAttention(16, 32, 24)
        >>> context, weights = attn(torch.randn(2, 16), torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool))
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int | None = None, *,
                 coverage: bool = False) -> None:
        super().__init__(query_size, key_size, coverage=coverage)
        if attention_size is not None and attention_size < 1:
            raise ValueError(f"attention_size must be >= 1 (or None for query_size), got {attention_size}")
        size = attention_size or query_size
        self.attention_size = size
        self.query_proj = nn.Linear(query_size, size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, size, bias=True)  # W_k (+ bias)
        self.v = nn.Linear(size, 1, bias=False)
        self.coverage_proj = nn.Linear(1, size, bias=False) if coverage else None  # w_c

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)  # [B, S, A]

    def score(self, query: Tensor, projected_keys: Tensor, coverage: Tensor | None) -> Tensor:
        hidden = projected_keys + self.query_proj(query).unsqueeze(1)  # [B, S, A]
        if coverage is not None and self.coverage_proj is not None:
            hidden = hidden + self.coverage_proj(coverage.unsqueeze(-1))
        return self.v(tanh(hidden)).squeeze(-1)  # [B, S]

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.key_size}, attention_size={self.attention_size}, coverage={self.coverage}"


class LuongAttention(Attention):
    """Multiplicative attention: ``dot`` (``q^T h_s``) or ``general`` (``q^T W_a h_s``).

    Args:
        query_size: Features of the decoder query ``Q``.
        key_size: Features of the encoder outputs ``K`` (must equal ``Q`` for ``dot``).
        score: ``"dot"`` or ``"general"``.
        coverage: Add ``w_c cov_s`` (a learned scalar times the coverage) to the score.

    Example:
        >>> attn = LuongAttention(32, 32, "dot")
        >>> context, weights = attn(torch.randn(2, 32), torch.randn(2, 5, 32))
    """

    SCORES = ("dot", "general")

    def __init__(self, query_size: int, key_size: int, score: str = "general", *, coverage: bool = False) -> None:
        super().__init__(query_size, key_size, coverage=coverage)
        if score not in self.SCORES:
            raise ValueError(f"LuongAttention score must be one of {self.SCORES}, got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs query_size == key_size, got {query_size} and {key_size}; "
                             "use score='general' (a learned W_a) or make the sizes equal")
        self.score_name = score
        self.key_proj = nn.Linear(key_size, query_size, bias=False) if score == "general" else None  # W_a
        self.coverage_weight = nn.Parameter(torch.zeros(1)) if coverage else None

    def project_keys(self, keys: Tensor) -> Tensor:
        return keys if self.key_proj is None else self.key_proj(keys)  # [B, S, Q]

    def score(self, query: Tensor, projected_keys: Tensor, coverage: Tensor | None) -> Tensor:
        scores = torch.bmm(projected_keys, query.unsqueeze(-1)).squeeze(-1)  # [B, S]
        if coverage is not None and self.coverage_weight is not None:
            scores = scores + self.coverage_weight * coverage
        return scores

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.key_size}, score={self.score_name!r}, coverage={self.coverage}"


ATTENTIONS = ("bahdanau", "luong_dot", "luong_general")


def make_attention(kind: str, query_size: int, key_size: int, *, attention_size: int | None = None,
                   coverage: bool = False) -> Attention:
    """Build an attention module by name: ``"bahdanau"``, ``"luong_dot"`` or ``"luong_general"``."""
    name = kind.lower().replace("-", "_")
    if name == "bahdanau":
        return BahdanauAttention(query_size, key_size, attention_size, coverage=coverage)
    if name in ("luong_dot", "luong_general"):
        return LuongAttention(query_size, key_size, name.split("_")[1], coverage=coverage)
    raise ValueError(f"unknown attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")
