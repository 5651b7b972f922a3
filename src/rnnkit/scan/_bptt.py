"""The step of backpropagation through time that every hand-written engine shares."""

from __future__ import annotations

import torch
from torch import Tensor


def recurrent_grad(skip: Tensor | None, d: Tensor, w_hh: Tensor, rec_mask: Tensor | None) -> Tensor:
    """``dL/dh_{t-1}`` from the gradient ``d`` of ``W_hh h_in`` (``h_in = h_{t-1} * rec_mask``).

    That is ``(d W_hh) * rec_mask``, plus ``skip``: what reached ``h_{t-1}`` around the matmul.
    """
    if rec_mask is None:
        return torch.mm(d, w_hh) if skip is None else torch.addmm(skip, d, w_hh)
    back = torch.mm(d, w_hh)
    return back.mul_(rec_mask) if skip is None else torch.addcmul(skip, back, rec_mask)
