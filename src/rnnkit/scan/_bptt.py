"""What every hand-written engine shares: whether a call needs its backward, and the step of backpropagation through time."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .step_matmul import StepMatmul


def needs_grad(cell: nn.Module, *tensors: Tensor | None) -> bool:
    """Whether autograd will want gradients from this call: it is on and ``cell``'s parameters or
    any of ``tensors`` (inputs, states, masks; ``None`` skipped) require them. Where not, the
    engines run a lean inference loop that saves nothing."""
    return torch.is_grad_enabled() and any(
        t.requires_grad for t in (*tensors, *cell.parameters()) if t is not None)


def first_order_only(backward: Callable[..., Any]) -> Callable[..., Any]:
    """``once_differentiable`` that refuses ``create_graph=True`` out loud.

    A hand-written backward computes its gradients without a graph. ``once_differentiable`` alone
    raises on double backward only when the incoming gradients require grad; in a gradient penalty
    they do not (``autograd.grad(loss, x, create_graph=True)``), and the second derivative would
    silently miss every term through this function.
    """
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError("rnnkit's fast recurrent paths (engine, sequential scan) give first derivatives "
                               "only, and create_graph=True asks for second ones: build the layer with "
                               "implementation='reference' (or 'fused' for plain LSTM/GRU cells) for double "
                               "backward (gradient penalties, Hessian-vector products)")
        return inner(ctx, *grads)

    return wrapper


def recurrent_grad(skip: Tensor | None, d: Tensor, back: StepMatmul, rec_mask: Tensor | None) -> Tensor:
    """``dL/dh_{t-1}`` from the gradient ``d`` of ``W_hh h_in`` (``h_in = h_{t-1} * rec_mask``).

    That is ``(d W_hh) * rec_mask``, plus ``skip``: what reached ``h_{t-1}`` around the matmul;
    ``back`` multiplies by ``W_hh`` (a :class:`StepMatmul` over ``W_hh^T``).
    """
    if rec_mask is None:
        return back(d, add=skip)
    grad = back(d)
    return grad.mul_(rec_mask) if skip is None else torch.addcmul(skip, grad, rec_mask)
