"""A model's dtypes kept across training in another precision.

Lightning's ``bf16-true``, ``16-true`` and ``64-true`` precisions convert the whole module
(``module.to(dtype=...)``, which replaces each parameter's ``.data``) for training and leave it
converted. ``Model.fit`` and the task engine record the dtypes before training
(:func:`floating_dtypes`) and put them back after it (:func:`restore_dtypes`), also when training
stops with an exception or Ctrl-C: a model comes back from training as it went in, as in Keras,
where ``fit`` never changes a model's dtypes.
"""

from __future__ import annotations

import torch
from torch import nn

DtypeRecord = dict[tuple[int, str, str], torch.dtype]


def floating_dtypes(model: nn.Module) -> DtypeRecord:
    """The dtype of each floating-point parameter and buffer of ``model``, by module and name."""
    return {(id(m), kind, name): t.dtype for m in model.modules()
            for kind, store in (("p", m._parameters), ("b", m._buffers)) for name, t in store.items()
            if t is not None and t.is_floating_point()}


@torch.no_grad()
def restore_dtypes(model: nn.Module, dtypes: DtypeRecord) -> None:
    """Put back the dtypes :func:`floating_dtypes` recorded. A parameter keeps its identity (its
    ``.data`` is converted: tied weights stay tied and an optimizer's references stay valid; a
    gradient it holds is converted with it); bfloat16 and float16 values are exact in float32, a float64 run is rounded to float32."""
    for m in model.modules():
        for name, p in m._parameters.items():
            want = dtypes.get((id(m), "p", name))
            if p is not None and want is not None and p.dtype != want:
                p.data = p.data.to(want)  # the same Parameter (tied weights stay tied)
                if p.grad is not None:  # the last step's gradient, in the parameter's dtype as torch requires
                    p.grad = p.grad.to(want)
        for name, b in m._buffers.items():
            want = dtypes.get((id(m), "b", name))
            if b is not None and want is not None and b.dtype != want:
                m._buffers[name] = b.to(want)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is float16 or bfloat16 (outputs under ``bf16-mixed``, or of a model
    trained in ``bf16-true``): losses and metrics are computed and summed in float32, as Keras' mixed
    precision does, not rounded to bfloat16's 8 significant bits (a count past 256 no longer grows by 1)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
