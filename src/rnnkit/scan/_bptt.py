"""The step of backpropagation through time that every hand-written engine shares."""

from __future__ import annotations

import torch
from torch import Tensor

from .step_matmul import StepMatmul


def recurrent_grad(skip: Tensor | None, d: Tensor, back: StepMatmul, rec_mask: Tensor | None) -> Tensor:
    """``dL/dh_{t-1}`` from the gradient ``d`` of ``W_hh h_in`` (``h_in = h_{t-1} * rec_mask``).

    That is ``(d W_hh) * rec_mask``, plus ``skip``: what reached ``h_{t-1}`` around the matmul;
    ``back`` multiplies by ``W_hh`` (a :class:`StepMatmul` over ``W_hh^T``).
    """
    if rec_mask is None:
        return back(d, add=skip)
    grad = back(d)
    return grad.mul_(rec_mask) if skip is None else torch.addcmul(skip, grad, rec_mask)
