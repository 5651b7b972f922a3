"""What every hand-written engine shares: whether a call needs its backward, and the step of backpropagation through time."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:  # step_matmul imports without_autocast from here
    from .step_matmul import StepMatmul

F = TypeVar("F", bound=Callable[..., Any])
_TRANSFORMS = {"Vmap": "vmap", "Grad": "grad", "Jvp": "jvp", "Functionalize": "functionalize"}
_EAGER: dict[Callable[..., Any], Callable[..., Any]] = {}


def unsupported_transform() -> str | None:
    """The function transform in force that the hand-written paths cannot run under, else ``None``.

    The engines and the sequential scan are custom ``autograd.Function``s without ``setup_context``,
    ``vmap`` or ``jvp`` rules and write into buffers with ``out=``: under ``torch.func`` (``grad``,
    ``vmap``, ``jvp``, ``functional_call`` inside them; per-sample gradients as in Opacus) or
    forward-mode AD they stop with torch's internal errors. ``"auto"`` runs the reference scan
    there instead, which every transform supports; an explicit implementation names it.
    """
    if torch._C._functorch.maybe_current_level() is not None:
        names = [_TRANSFORMS.get(i.key().name, i.key().name.lower())
                 for i in torch._C._functorch.get_interpreter_stack() or ()]
        return "torch.func." + "/".join(dict.fromkeys(names) or ["transform"])
    if torch.autograd.forward_ad._current_level >= 0:
        return "forward-mode AD (torch.autograd.forward_ad.dual_level)"
    if torch.jit.is_tracing():  # the Functions' buffers and None arguments stop torch.jit.trace
        return "torch.jit.trace"
    return None


def vmap_active() -> bool:
    """Whether ``torch.func.vmap`` is in force (torch's fused RNN kernels have no batching rule)."""
    return torch._C._functorch.maybe_current_level() is not None and any(
        i.key().name == "Vmap" for i in torch._C._functorch.get_interpreter_stack() or ())


def eager_under_compile(fn: F) -> F:
    """``fn`` run eagerly, never traced, under ``torch.compile`` (``torch.compiler.disable``).

    The engines write their states into views of preallocated buffers (``out=``) inside an
    ``autograd.Function``; dynamo traced those loops with graph breaks inside the Function and,
    with ``backend="aot_eager"``, the LSTM engine returned uninitialised memory (outputs of 1e29),
    and inductor failed to lower the GRU engine's inference loop. Eagerly they are exact and
    fast; the rest of the model still compiles around them. Outside ``torch.compile`` the plain
    function runs (and ``torch._dynamo``, 1 s to import, is not imported for it).
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return _eager(fn)(*args, **kwargs)  # run eagerly; torch.compile(fullgraph=True): implementation='reference'

    return wrapper  # type: ignore[return-value]


def _eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    disabled = _EAGER.get(fn)
    if disabled is None:
        reason = (f"rnnkit's {fn.__name__} runs eagerly under torch.compile (hand-written loops over out= "
                  "buffers); implementation='reference' traces as one graph (fullgraph=True)")
        try:
            disabled = torch.compiler.disable(fn, reason=reason)
        except TypeError:  # torch before 2.7 takes no reason
            disabled = torch.compiler.disable(fn)
        _EAGER[fn] = disabled
    return disabled


def needs_grad(cell: nn.Module, *tensors: Tensor | None) -> bool:
    """Whether autograd will want gradients from this call: it is on and ``cell``'s parameters or
    any of ``tensors`` (inputs, states, masks; ``None`` skipped) require them. Where not, the
    engines run a lean inference loop that saves nothing."""
    return torch.is_grad_enabled() and any(
        t.requires_grad for t in (*tensors, *cell.parameters()) if t is not None)


def check_constant_mask(recurrent_mask: Tensor | None) -> None:
    """The engines treat ``recurrent_mask`` as a constant (a dropout mask): their backward gives it
    no gradient, so one that asks for a gradient is refused rather than left at ``None``."""
    if recurrent_mask is not None and recurrent_mask.requires_grad and torch.is_grad_enabled():
        raise ValueError("the engine gives no gradient for recurrent_mask (it is taken as a constant dropout "
                         "mask), and this one requires grad: pass recurrent_mask.detach(), or run "
                         "reference_scan for its gradient")


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


def without_autocast(backward: Callable[..., Any]) -> Callable[..., Any]:
    """A hand-written ``backward`` run with autocast off, as its forward ran (``torch.amp.custom_bwd``'s rule).

    Under ``torch.autocast`` the engines compute in the weights' dtype (they call themselves again
    with autocast disabled). A ``loss.backward()`` inside the autocast region would otherwise run
    their backward's matmuls in bfloat16 against float32 saved tensors: gradients 0.5% off those of
    the float32 forward they belong to (1e-7 outside the region)."""
    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        device = next((g.device.type for g in grads if isinstance(g, Tensor)), "cpu")
        if not torch.is_autocast_enabled(device):
            return backward(ctx, *grads)
        with torch.autocast(device, enabled=False):
            return backward(ctx, *grads)

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
