"""Optimizers by Keras name, learning-rate schedules and gradient clipping.

An :class:`Optimizer` is a Keras-style description (``Adam(learning_rate=1e-3)``) that builds
its ``torch.optim`` optimizer once the model has parameters and keeps it across ``fit`` calls,
so a second ``fit`` continues with the same moments, as in Keras. ``learning_rate`` may be a
number or a :class:`LearningRateSchedule` (a function of the optimizer step), applied before
every step.

Names and Keras defaults: ``sgd`` (``learning_rate=0.01, momentum=0, nesterov=False``),
``adam`` (``0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False``), ``adamw``
(``weight_decay=0.004``), ``rmsprop`` (``0.001, rho=0.9, momentum=0, epsilon=1e-7,
centered=False``), ``adagrad`` (``0.001, initial_accumulator_value=0.1, epsilon=1e-7``), ``nadam``
(``0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``), ``adamax`` (the same), ``adadelta`` (``0.001,
rho=0.95, epsilon=1e-7``), ``lion`` (``0.001, beta_1=0.9, beta_2=0.99``), ``ftrl`` (``0.001,
learning_rate_power=-0.5, initial_accumulator_value=0.1``, no regularization).

Clipping (Keras semantics): ``clipvalue`` clips every gradient element to
``[-clipvalue, clipvalue]``; ``clipnorm`` rescales each parameter's gradient to norm at most
``clipnorm``; ``global_clipnorm`` rescales all gradients together (``torch``'s
``clip_grad_norm_``). ``weight_decay`` is decoupled for every optimizer, as in Keras 3: before
each step every parameter with a gradient is multiplied by ``1 - learning_rate * weight_decay``
(``torch.optim.AdamW`` for ``adam``/``adamw``), not added to the gradient as an L2 term.

The updates are Keras 3's (to float32 rounding, tested against Keras): Adam adds ``epsilon`` to
``sqrt(v)`` before the bias correction (torch's ``eps`` is set per step to
``epsilon / sqrt(1 - beta_2**t)``, so the fused torch step computes it), RMSprop and Adagrad divide
by ``sqrt(v + epsilon)`` (own foreach steps; torch divides by ``sqrt(v) + epsilon``), and the
momentum buffers of SGD and RMSprop are rescaled when the learning rate changes, since Keras keeps
the rate inside its momentum. Nadam and Adadelta are torch's classes, which compute Keras's updates
with Keras's settings (NAdam's ``momentum_decay=1``: Keras's ``0.96**t`` momentum schedule); Adamax
(torch puts ``epsilon`` inside the decaying norm, Keras adds it when dividing), Lion and Ftrl (not in
torch) are own foreach steps. docs/models.md lists the deliberate differences.

Keras 3's ``gradient_accumulation_steps`` (mean gradient applied every N-th call, the accumulators
kept as optimizer state), ``loss_scale_factor`` (the backward of ``loss * factor``, the gradients
divided by it before accumulation and clipping) and ``exclude_from_weight_decay`` (by parameter, or
by Keras weight name: :func:`keras_weight_names`) behave as Keras's (tested against Keras).
"""

from __future__ import annotations

import math
import numbers
import re
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def has_trainable_parameters(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` takes gradients (a fully frozen model trains nothing)."""
    return any(p.requires_grad for p in model.parameters())


# -- schedules ------------------------------------------------------------------------------------
class LearningRateSchedule:
    """A learning rate as a function of the optimizer step (0-based)."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        raise NotImplementedError


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored with ``staircase``)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False) -> None:
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate, self.decay_steps = float(initial_learning_rate), int(decay_steps)
        self.decay_rate, self.staircase = float(decay_rate), staircase

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(p) if self.staircase else p)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase}


class InverseTimeDecay(ExponentialDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``."""

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        return self.initial_learning_rate / (1 + self.decay_rate * (math.floor(p) if self.staircase else p))


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` while ``step <= boundaries[i]`` (``len(values) == len(boundaries) + 1``)."""

    def __init__(self, boundaries: list[int], values: list[float]) -> None:
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstantDecay needs len(values) == len(boundaries) + 1, got "
                             f"{len(values)} values and {len(boundaries)} boundaries")
        self.boundaries, self.values = [int(b) for b in boundaries], [float(v) for v in values]

    def __call__(self, step: int) -> float:
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": self.boundaries, "values": self.values}


class CosineDecay(LearningRateSchedule):
    """Optional linear warm-up to ``warmup_target``, then cosine decay to ``alpha * peak``
    over ``decay_steps`` (Loshchilov and Hutter 2017, without restarts)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: float | None = None, warmup_steps: int = 0) -> None:
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate, self.decay_steps, self.alpha = float(initial_learning_rate), int(decay_steps), float(alpha)
        self.warmup_target, self.warmup_steps = warmup_target, int(warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:  # as Keras: no warm-up without a target (warmup_steps is ignored)
            peak, warmup = self.initial_learning_rate, 0
        else:
            peak, warmup = float(self.warmup_target), self.warmup_steps
        if step < warmup:
            return self.initial_learning_rate + (peak - self.initial_learning_rate) * step / warmup
        p = min(step - warmup, self.decay_steps) / self.decay_steps
        return peak * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * p)) + self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


SCHEDULES: dict[str, type[LearningRateSchedule]] = {
    cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, CosineDecay)
}


class FunctionSchedule(LearningRateSchedule):
    """Wrap ``fn(step) -> learning rate``."""

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn

    def __call__(self, step: int) -> float:
        return float(self.fn(step))

    def get_config(self) -> dict[str, Any]:
        raise ValueError("a learning-rate schedule given as a Python function cannot be saved in a config")


# -- clipping -------------------------------------------------------------------------------------
def check_clipping(**limits: float | None) -> None:
    """Raise a one-line ``ValueError`` for a clipping limit that is not a positive number."""
    for name, value in limits.items():
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number (None for no clipping), got {value!r}")


def check_norm_limits(clipnorm: float | None, global_clipnorm: float | None) -> None:
    """One norm limit at a time, as Keras: ``ValueError`` for both."""
    if clipnorm is not None and global_clipnorm is not None:
        raise ValueError("pass clipnorm (per parameter) or global_clipnorm (all together), not both")


def merge_clipping(base: dict[str, float | None], new: dict[str, float | None]) -> dict[str, float | None]:
    """``base`` limits with ``new`` ones (from ``compile`` or ``fit``) in their place: a norm limit
    in ``new`` replaces both norm limits of ``base`` (a per-parameter ``clipnorm`` given to ``fit``
    is not added to the optimizer's ``global_clipnorm``); ``clipvalue`` replaces ``clipvalue``."""
    merged = dict(base)
    if new.get("clipnorm") is not None or new.get("global_clipnorm") is not None:
        merged["clipnorm"], merged["global_clipnorm"] = new.get("clipnorm"), new.get("global_clipnorm")
    if new.get("clipvalue") is not None:
        merged["clipvalue"] = new["clipvalue"]
    return merged


@torch.no_grad()
def clip_gradients(parameters: Iterable[nn.Parameter], *, clipnorm: float | None = None,
                   clipvalue: float | None = None, global_clipnorm: float | None = None) -> None:
    """Clip gradients in place with Keras semantics (see the module docstring).

    The norm limits scale by ``limit / max(norm, limit)`` exactly as Keras 3 does (torch's
    ``clip_grad_norm_`` divides by ``norm + 1e-6``, which is off by ``1e-6 / norm`` relative).
    Unlike Keras, which refuses more than one limit, ``clipvalue`` may be combined with a norm
    limit: the values are clipped first."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return
    grads: list[Tensor] = [p.grad for p in params if p.grad is not None]
    if clipvalue is not None:
        nn.utils.clip_grad_value_(params, clipvalue)
    if clipnorm is not None:
        for g, norm in zip(grads, torch._foreach_norm(grads)):
            g.mul_(clipnorm / norm.clamp(min=clipnorm))
    if global_clipnorm is not None:
        norms = torch._foreach_norm(grads)
        if len({n.device for n in norms}) == 1:
            total = torch.linalg.vector_norm(torch.stack(norms))
        else:
            total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
        scale = (global_clipnorm / total).clamp(max=1.0)  # NaN for a non-finite norm, as in Keras
        for device in {g.device for g in grads}:
            torch._foreach_mul_([g for g in grads if g.device == device], scale.to(device))


# -- optimizers -----------------------------------------------------------------------------------
class _KerasNumber:
    """A number read from an optimizer attribute that also takes Keras 3's idioms for the variable
    behind it: ``.assign(v)`` (sets the attribute; returns the new reading), ``.numpy()`` and
    ``.value``. Pickled or copied, it is the plain number (it never carries the optimizer along)."""

    _optimizer: Any
    _attribute: str  # the optimizer attribute it reads, and that assign() sets
    _plain: type
    _numpy: Callable[[Any], Any]

    def __new__(cls, value: Any, optimizer: Any) -> Any:
        number = super().__new__(cls, value)  # type: ignore[call-arg]
        number._optimizer = optimizer
        return number

    def assign(self, value: Any) -> Any:
        """Set the optimizer's attribute (as ``optimizer.<attribute> = value``); returns its new reading."""
        setattr(self._optimizer, self._attribute, value)
        return getattr(self._optimizer, self._attribute)

    def numpy(self) -> Any:
        return self._numpy(self)

    @property
    def value(self) -> Any:
        return self._plain(self)

    def __reduce__(self) -> tuple[type, tuple[Any]]:
        return self._plain, (self._plain(self),)


class LearningRateValue(_KerasNumber, float):
    """The learning rate that ``optimizer.learning_rate`` reads: a float that also takes Keras 3's
    idioms for its learning-rate variable, ``optimizer.learning_rate.assign(1e-4)`` (sets the
    optimizer's rate, refused while a schedule drives it) and ``.numpy()`` (a float32 scalar).
    Pickled or copied, it is a plain float."""

    _attribute, _plain, _numpy = "learning_rate", float, np.float32


class IterationsValue(_KerasNumber, int):
    """The update count that ``optimizer.iterations`` reads: an ``int`` that also takes Keras 3's idioms
    for its iteration variable, ``.numpy()`` (a NumPy int64) and ``.assign(n)``. Pickled or copied,
    it is a plain int."""

    _attribute, _plain, _numpy = "iterations", int, np.int64


class CallCountValue(IterationsValue):
    """The call count that ``apply_gradients`` returns, as Keras returns its ``iteration`` variable
    (with ``gradient_accumulation_steps=N`` it is ``N`` times :attr:`Optimizer.iterations` plus the
    calls of the open window): ``.assign(n)`` sets that count. Pickled or copied, a plain int."""

    def assign(self, value: Any) -> Any:
        self._optimizer._iterations = int(np.asarray(value))
        return CallCountValue(self._optimizer._iterations, self._optimizer)


class OptimizerVariable:
    """One entry of :attr:`Optimizer.variables`, with the parts of a Keras variable that are read:
    ``path``/``name``, ``shape``, ``dtype``, ``numpy()``, ``value`` (the torch tensor: the optimizer's
    own state tensor for a slot, a copy for ``iteration`` and ``learning_rate``) and ``assign(v)``."""

    __slots__ = ("path", "value", "_setter")

    def __init__(self, path: str, value: Tensor, setter: Callable[[Any], None] | None = None) -> None:
        self.path, self.value, self._setter = path, value, setter

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def dtype(self) -> str:
        return str(self.value.dtype).removeprefix("torch.")

    def numpy(self) -> np.ndarray:
        return self.value.detach().cpu().numpy().copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def assign(self, value: Any) -> None:
        """Set the variable (a slot is overwritten in place)."""
        if self._setter is not None:
            self._setter(value)
            return
        with torch.no_grad():
            self.value.copy_(torch.as_tensor(np.asarray(value), dtype=self.value.dtype).reshape(self.value.shape))

    def __repr__(self) -> str:
        return f"<OptimizerVariable path={self.path}, shape={self.shape}, dtype={self.dtype}>"


def _check_learning_rate(value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"learning_rate must be a finite number >= 0, got {value}")


def _scalar_learning_rate(value: Any) -> Any:
    """A NumPy scalar (``np.float32(1e-3)``) or a 0-d float tensor or array as a Python float, as
    Keras takes them; anything else unchanged."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, numbers.Real):  # NumPy's scalars register as numbers.Real
        return float(value)
    if isinstance(value, Tensor) and value.ndim == 0 and value.dtype != torch.bool:
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        return float(value)
    return value


_ACCUMULATOR = "gradient_accumulator"  # the torch state entry of Keras' gradient accumulator slot


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, loss: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def keras_weight_names(model: nn.Module) -> dict[int, str]:
    """``id(parameter) -> name`` as Keras 3 names the same weight (``variable.name``, which
    ``exclude_from_weight_decay(var_names=...)`` searches): ``embeddings`` for an embedding's table,
    ``gamma``/``beta`` for a normalization's scale and offset, ``kernel``/``recurrent_kernel``/``bias``
    for a recurrent layer's ``weight_ih``/``weight_hh``/``bias_ih`` and ``bias_hh`` (Keras has one
    ``bias``), ``kernel`` for any other ``weight``; other parameters keep their torch attribute name."""
    from ..layers.core import Embedding
    from ..layers.normalization import BatchNormalization, LayerNormalization

    norms = (BatchNormalization, LayerNormalization, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    names: dict[int, str] = {}
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            if attr == "weight" and isinstance(module, Embedding | nn.Embedding):
                name = "embeddings"
            elif attr in ("weight", "bias") and isinstance(module, norms):
                name = "gamma" if attr == "weight" else "beta"
            elif attr.startswith("weight_ih"):
                name = "kernel"
            elif attr.startswith("weight_hh"):
                name = "recurrent_kernel"
            elif attr.startswith(("bias_ih", "bias_hh")):
                name = "bias"
            else:
                name = "kernel" if attr == "weight" else attr
            names.setdefault(id(param), name)
    return names


class Optimizer:
    """Keras-style optimizer description that owns its ``torch.optim`` optimizer.

    Args:
        learning_rate: a number or a :class:`LearningRateSchedule` / ``fn(step)``.
        weight_decay: see the module docstring (``None``: none).
        clipnorm: per-parameter gradient norm limit.
        clipvalue: element-wise gradient limit.
        global_clipnorm: limit on the norm of all gradients together.
        use_ema: keep an exponential moving average of the weights (Keras' EMA): after every step
            ``average = ema_momentum * average + (1 - ema_momentum) * weight`` (the first step
            copies the weight), written into the weights every ``ema_overwrite_frequency`` steps
            (if set) and at the end of every ``fit``.
        ema_momentum: the average's momentum, in ``[0, 1]``.
        ema_overwrite_frequency: steps between writes of the average into the weights (``None``:
            only at the end of ``fit``).
        loss_scale_factor: Keras' loss scaling: training backpropagates ``loss * loss_scale_factor``
            (the loss logged is unscaled) and the gradients are divided by it before accumulation,
            clipping and the update; ``scale_loss(loss)`` and ``apply`` do the same in a custom loop.
        gradient_accumulation_steps: Keras' accumulation (an integer >= 2): the gradients of every
            call are summed in a ``gradient_accumulator`` slot and the weights move only every
            ``gradient_accumulation_steps``-th call, with the mean ``(g + accumulated) / steps``
            (clipped, weight decay applied, the rate of that call's step); :attr:`iterations` counts
            the updates (``calls // N``, Keras' ``iterations`` property) while the schedule, the
            ``iteration`` entry of :attr:`variables`, saves and checkpoints count every call (Keras'
            ``iteration`` variable).
        name: optional name.

    ``exclude_from_weight_decay(var_list, var_names)`` exempts weights from ``weight_decay``.
    """

    registry_name = ""
    default_learning_rate = 0.001
    torch_weight_decay = False  # the torch class applies weight_decay itself (decoupled)
    use_ema, ema_momentum, ema_overwrite_frequency = False, 0.99, None  # (also for objects pickled before EMA)
    loss_scale_factor: float | None = None  # (class defaults: objects pickled before these existed)
    gradient_accumulation_steps: int | None = None
    _iterations = 0
    _excluded: tuple[nn.Parameter, ...] = ()  # exclude_from_weight_decay(var_list=...)
    _excluded_pattern: re.Pattern[str] | None = None  # exclude_from_weight_decay(var_names=...)
    _weight_names: dict[int, str] = {}  # id(parameter) -> Keras weight name (set by name_weights)
    _decay_cache: tuple[list[int], list[int]] | None = None  # (ids of the parameters, ids excluded)
    _prepared: dict[int, tuple[weakref.ref[Tensor], int]] = {}  # gradients prepare_gradients left (and versions)
    _pending: list[tuple[nn.Parameter, Tensor]] = []  # an accumulating call's gradients, until its step runs
    _model: weakref.ref[nn.Module] | None = None  # the model the training step trains (name_weights)

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[int], float] | None = None,
                 weight_decay: float | None = None, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, loss_scale_factor: float | None = None,
                 gradient_accumulation_steps: int | None = None, name: str | None = None) -> None:
        if loss_scale_factor is not None and not (isinstance(loss_scale_factor, numbers.Real)
                                                  and not isinstance(loss_scale_factor, bool)
                                                  and math.isfinite(loss_scale_factor) and loss_scale_factor > 0):
            raise ValueError(f"loss_scale_factor must be a positive number (None for no scaling), got {loss_scale_factor!r}")
        if gradient_accumulation_steps is not None and not (
                isinstance(gradient_accumulation_steps, numbers.Integral)
                and not isinstance(gradient_accumulation_steps, bool) and gradient_accumulation_steps >= 2):
            raise ValueError("gradient_accumulation_steps must be an integer >= 2 (None for no accumulation), got "
                             f"{gradient_accumulation_steps!r}")
        if not 0 <= ema_momentum <= 1:
            raise ValueError(f"ema_momentum must be between 0 and 1, got {ema_momentum}")
        if ema_overwrite_frequency is not None and not (isinstance(ema_overwrite_frequency, int)
                                                        and ema_overwrite_frequency >= 1):
            raise ValueError(f"ema_overwrite_frequency must be an integer >= 1 or None, got {ema_overwrite_frequency!r}")
        if learning_rate is None:
            learning_rate = self.default_learning_rate
        check_norm_limits(clipnorm, global_clipnorm)
        check_clipping(clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        if weight_decay is not None and not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0 (None for none), got {weight_decay}")
        learning_rate = _scalar_learning_rate(learning_rate)
        if isinstance(learning_rate, int | float):
            _check_learning_rate(learning_rate)
        if not isinstance(learning_rate, int | float | LearningRateSchedule):
            if not callable(learning_rate):
                raise TypeError(f"learning_rate must be a number or a schedule, got {type(learning_rate).__name__}")
            learning_rate = FunctionSchedule(learning_rate)
        self._learning_rate: float | LearningRateSchedule = (
            float(learning_rate) if isinstance(learning_rate, int | float) else learning_rate)
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.use_ema, self.ema_momentum = bool(use_ema), float(ema_momentum)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = None if loss_scale_factor is None else float(loss_scale_factor)
        self.gradient_accumulation_steps = None if gradient_accumulation_steps is None else int(gradient_accumulation_steps)
        self.name = name or self.registry_name
        self.torch_optimizer: torch.optim.Optimizer | None = None
        self._params: list[nn.Parameter] = []
        self._iterations = 0

    # -- torch side ----------------------------------------------------------------------------
    def _torch_class(self) -> type[torch.optim.Optimizer]:
        raise NotImplementedError

    def _torch_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, parameters: Iterable[nn.Parameter], *, fused: bool = True) -> torch.optim.Optimizer:
        """Create (or keep) the ``torch.optim`` optimizer for these parameters.

        Built once, for one model, as in Keras: parameters of another model (none shared with the
        ones it was built for) raise ``ValueError``. When the trainable set of the same model
        changes (a layer frozen or unfrozen between fits) the torch optimizer is rebuilt for the new
        set, keeping the state (moments) of the parameters still in it, its learning rate and its
        step count; the newly trainable ones start with fresh state. ``fused=False`` asks for
        torch's default step where :func:`make_torch_optimizer` would take the fused one (a fused
        optimizer built before is rebuilt, its state kept): a ``GradScaler`` (``16-mixed``) leaves
        the gradients of a fused step scaled until the step itself, so clipping, loss-scale division
        and gradient accumulation would see them scaled."""
        given = list(parameters)  # the frozen ones too: they tell the same model from another one
        params = [p for p in given if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters; is every layer frozen (trainable=False)?")
        old = self.torch_optimizer
        if (old is not None and [id(p) for p in params] == [id(p) for p in self._params]
                and (fused or not old.defaults.get("fused"))):
            self.match_parameter_dtypes()
            return old
        kwargs = self._torch_kwargs()
        kwargs["lr"] = self.current_learning_rate(self._iterations)
        if old is not None:
            built = {id(p) for p in self._params}
            if not any(id(p) in built for p in given):  # (the same model may swap which layers train)
                raise ValueError(f"this {type(self).__name__} optimizer was built for another model's weights "
                                 f"({len(self._params)} tensors, {self.iterations} steps taken); compile each model "
                                 f"with its own optimizer, e.g. compile(optimizer={type(self).__name__}(...)) or a "
                                 f"name such as {self.registry_name or 'adam'!r}")
            kwargs["lr"] = old.param_groups[0]["lr"]
        torch_optimizer = make_torch_optimizer(self._torch_class(), params, fused=fused, **kwargs)
        if old is not None:  # the same model with another trainable set (or step): carry the state over
            for p in params:
                if p in old.state and old.state[p]:
                    state = old.state[p]
                    step = state.get("step")
                    if not fused and isinstance(step, Tensor) and step.device.type != "cpu":
                        state = {**state, "step": step.cpu()}  # (a fused step keeps it on the device)
                    torch_optimizer.state[p] = state
            if "keras_lr" in old.param_groups[0]:
                for group in torch_optimizer.param_groups:
                    group["keras_lr"] = old.param_groups[0]["keras_lr"]
        self.torch_optimizer = torch_optimizer
        self._params = params
        return torch_optimizer

    @property
    def built(self) -> bool:
        """Whether the ``torch.optim`` optimizer exists."""
        return self.torch_optimizer is not None

    @property
    def iterations(self) -> IterationsValue:
        """Weight updates so far, across ``fit`` and ``train_on_batch`` calls (Keras' ``iterations``):
        an int with Keras' ``.numpy()`` and ``.assign(n)``. Every call is an update, except with
        ``gradient_accumulation_steps=N``, where it is ``calls // N`` as Keras' property (the call
        count, Keras' ``iteration`` variable, is the ``iteration`` entry of :attr:`variables`; the
        schedule and EMA's overwrite frequency read those as Keras does)."""
        return IterationsValue(self._keras_iteration(self._iterations), self)

    @iterations.setter
    def iterations(self, value: int) -> None:
        """Set the update count: with accumulation the call count becomes ``value * N``, the start of
        that update's window (``iterations`` then reads ``value``)."""
        self._iterations = int(value) * (self.gradient_accumulation_steps or 1)

    @property
    def calls(self) -> int:
        """Calls (``apply``, training steps) so far: Keras' ``iteration`` variable, which the schedule
        reads and saves, checkpoints and resuming keep; :attr:`iterations` with no gradient accumulation."""
        return self._iterations

    @calls.setter
    def calls(self, value: int) -> None:
        self._iterations = int(value)

    @torch.no_grad()
    def match_parameter_dtypes(self) -> None:
        """Give each parameter's element-wise state (the state tensors of its shape: moments, the EMA
        average, the gradient accumulator) the parameter's dtype, as torch's ``load_state_dict``
        casts state; the scalars (``step``, NAdam's ``mu_product``) stay in the float32 torch keeps
        them in. A model converted after its state was made (Lightning's ``bf16-true``, ``16-true``
        and ``64-true`` convert it for a ``fit`` and ``fit`` converts it back) then steps with state
        in its own dtype: torch's foreach steps refuse mixed dtypes. Called by :meth:`build`."""
        opt = self.torch_optimizer
        if opt is None:
            return
        for p in self._params:
            state = opt.state.get(p)
            if not state or not p.is_floating_point():
                continue
            for key, value in state.items():
                if (key not in ("step", "mu_product") and isinstance(value, Tensor) and value.is_floating_point()
                        and value.dtype != p.dtype and value.shape == p.shape):
                    state[key] = value.to(p.dtype)

    # -- Keras variables -----------------------------------------------------------------------
    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        """Keras' optimizer slots as blocks of ``(torch state key, Keras slot name)``: within a block
        the slots are listed parameter by parameter (interleaved), blocks one after the other."""
        return []

    def _extra_variables(self) -> list[OptimizerVariable]:
        """Keras variables after the slots that belong to no parameter (Nadam's ``u_product``)."""
        return []

    @property
    def variables(self) -> list[OptimizerVariable]:
        """The optimizer's state in Keras 3's order and count: ``iteration`` (the call count, Keras'
        ``iteration`` variable; with ``gradient_accumulation_steps=N``, :attr:`iterations` is it
        ``// N``), ``learning_rate``, then the slots per parameter, in the model's Keras weight order once
        it trained (:meth:`name_weights`) (Adam: ``momentum`` and ``velocity``
        of each parameter, then ``velocity_hat`` with ``amsgrad``; SGD with momentum: ``momentum``; RMSprop: ``velocity``, then
        ``momentum`` with momentum, then ``average_gradient`` when centered; Adagrad: ``accumulator``;
        Nadam: ``momentum`` and ``velocity``, then one scalar ``u_product``; Adamax: ``momentum`` and
        ``norm``; Adadelta: ``accumulated_grad`` and ``accumulated_delta_var``; Lion: ``momentum``; Ftrl:
        ``accumulator`` and ``linear``;
        ``average`` first with ``use_ema``, then ``gradient_accumulator`` with
        ``gradient_accumulation_steps``). A slot's ``value`` is the torch state tensor itself (torch's
        units: SGD's and RMSprop's momentum hold the buffer without the learning rate); a slot torch
        has not created yet (before the first step) reads as zeros."""
        it, lr = self._iterations, float(self.learning_rate)  # the call count, Keras' ``iteration`` variable

        def set_lr(value: Any) -> None:
            self.learning_rate = float(np.asarray(value))

        def set_iterations(value: Any) -> None:
            self._iterations = int(np.asarray(value))

        out = [OptimizerVariable(f"{self.name}/iteration", torch.tensor(int(it)), set_iterations),
               OptimizerVariable(f"{self.name}/learning_rate", torch.tensor(lr, dtype=torch.float32), set_lr)]
        opt = self.torch_optimizer
        if opt is None:
            return out
        layout = self._slot_layout()
        if self.gradient_accumulation_steps:
            layout = [[(_ACCUMULATOR, "gradient_accumulator")], *layout]
        if self.use_ema:
            layout = [[("ema_average", "average")], *layout]
        params = self._keras_ordered(self._params)
        for block in layout:
            for i, p in enumerate(params):
                state = opt.state.get(p) or {}
                for key, slot in block:
                    value = state.get(key)
                    if not isinstance(value, Tensor):
                        value = torch.zeros_like(p, memory_format=torch.contiguous_format).detach()
                    out.append(OptimizerVariable(f"{self.name}/variable_{i}_{slot}", value))
        return out + self._extra_variables()

    def _keras_ordered(self, params: list[nn.Parameter]) -> list[nn.Parameter]:
        """``params`` in the Keras weight order of the model :meth:`name_weights` recorded (its
        ``keras_parameters()``; a functional model's are in Keras' layer order), the others after them
        in their order; as given without such a model (a custom loop with :meth:`apply`)."""
        model = self._model() if self._model is not None else None
        order = getattr(model, "keras_parameters", None)
        if not callable(order):
            return params
        positions = {id(p): i for i, p in enumerate(order())}
        return sorted(params, key=lambda p: positions.get(id(p), len(positions)))

    # -- custom training loops -----------------------------------------------------------------
    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, nn.Parameter]]) -> CallCountValue:
        """Keras' ``apply_gradients(zip(grads, model.trainable_weights))``: one optimizer step with
        these gradients (clipping, schedule, weight decay and EMA included); returns the call count,
        Keras' ``iteration`` variable (:attr:`iterations` without ``gradient_accumulation_steps``)."""
        pairs = list(grads_and_vars)
        return self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads: Iterable[Any], trainable_variables: Iterable[nn.Parameter] | None = None) -> CallCountValue:
        """Keras' ``apply(grads, trainable_variables)``: one step of the parameters given (default:
        those it was built with) with these gradients; ``None`` gradients are passed over. The
        first call builds the optimizer for its parameters; later calls take them or a subset of them
        (others: ``ValueError``, as Keras). The parameters' own ``.grad`` are left as they were.
        With ``loss_scale_factor`` the gradients are taken as those of :meth:`scale_loss`'s loss
        (divided by the factor), as Keras. Returns the call count, as :meth:`apply_gradients`."""
        grads = list(grads)
        variables = list(self._params if trainable_variables is None else trainable_variables)
        if len(grads) != len(variables):
            raise ValueError(f"apply() got {len(grads)} gradients for {len(variables)} variables")
        if self.torch_optimizer is None:
            self.build(variables)
        built = {id(p) for p in self._params}
        unknown = [i for i, v in enumerate(variables) if id(v) not in built]
        if unknown:
            raise ValueError(f"apply() got variable {unknown[0]} (shape {list(variables[unknown[0]].shape)}) that this "
                             f"{type(self).__name__} optimizer was not built with; use a new optimizer for other "
                             "variables")
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not pairs:
            raise ValueError("apply() got no gradients (every gradient is None)")
        assert self.torch_optimizer is not None
        saved = {id(p): p.grad for p in self._params}
        try:
            for p in self._params:
                p.grad = None
            for g, v in pairs:
                v.grad = torch.as_tensor(np.asarray(g) if not isinstance(g, Tensor) else g,
                                         dtype=v.dtype, device=v.device).detach().reshape(v.shape).clone()
            self.clip(self._params)
            self.before_step()
            self.torch_optimizer.step()
        finally:
            for p in self._params:
                p.grad = saved[id(p)]
        return CallCountValue(self._iterations, self)

    def finalize_variable_values(self, var_list: Any = None) -> None:
        """Keras' end-of-``fit`` step: with ``use_ema`` the weights take their moving averages."""
        if self.use_ema and self.torch_optimizer is not None:
            self._ema_overwrite()

    def _ema_update(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """Step post-hook (``use_ema``): move each parameter's average toward it, as Keras after its update."""
        step = self._keras_iteration(self._iterations - 1)  # Keras' iterations before this call
        momentum = self.ema_momentum if step > 0 else 0.0
        averages, weights = [], []
        with torch.no_grad():
            for p in self._params:
                state = optimizer.state.get(p)
                average = state.get("ema_average") if state else None
                if average is None:
                    if p.grad is not None:  # stepped (its torch state, if any, exists): the average starts at it
                        optimizer.state[p]["ema_average"] = p.detach().clone()
                    continue
                averages.append(average)
                weights.append(p.detach())
            if averages:
                torch._foreach_lerp_(averages, weights, 1.0 - momentum)
        if self.ema_overwrite_frequency and (step + 1) % self.ema_overwrite_frequency == 0:
            self._ema_overwrite()

    def _ema_overwrite(self) -> None:
        assert self.torch_optimizer is not None
        with torch.no_grad():
            for p in self._params:
                average = (self.torch_optimizer.state.get(p) or {}).get("ema_average")
                if average is not None:
                    p.copy_(average)

    # -- learning rate -------------------------------------------------------------------------
    @property
    def learning_rate(self) -> LearningRateValue:
        """The learning rate of the next step, a float that also has Keras' ``assign(value)`` and
        ``numpy()`` (setting it is refused while a schedule drives it; with a schedule it is the
        schedule at the call count, :attr:`iterations` without ``gradient_accumulation_steps``, as Keras)."""
        if self.torch_optimizer is not None and not isinstance(self._learning_rate, LearningRateSchedule):
            return LearningRateValue(float(self.torch_optimizer.param_groups[0]["lr"]), self)
        return LearningRateValue(self.current_learning_rate(self._iterations), self)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if isinstance(self._learning_rate, LearningRateSchedule):
            raise TypeError("this optimizer's learning rate follows a schedule; it cannot be set directly "
                            "(ReduceLROnPlateau and LearningRateScheduler need a constant learning_rate)")
        value = _scalar_learning_rate(value)
        _check_learning_rate(float(value))
        self._learning_rate = float(value)
        if self.torch_optimizer is not None:
            for group in self.torch_optimizer.param_groups:
                group["lr"] = float(value)

    @property
    def schedule(self) -> LearningRateSchedule | None:
        """The learning-rate schedule, if any."""
        return self._learning_rate if isinstance(self._learning_rate, LearningRateSchedule) else None

    def current_learning_rate(self, step: int) -> float:
        """The learning rate for optimizer step ``step``."""
        lr = self._learning_rate
        return lr(step) if isinstance(lr, LearningRateSchedule) else float(lr)

    def before_step(self, step: int | None = None) -> None:
        """Prepare optimizer step ``step`` (0-based; default the call count, so the steps of
        successive ``fit`` calls continue one schedule, as in Keras): apply the schedule and the
        decoupled weight decay, and count the step. Called once before each optimizer step."""
        step = self._iterations if step is None else step
        self.prepare_gradients(step)
        self._iterations = step + 1
        if self.torch_optimizer is None:
            return
        if self.use_ema and getattr(self.torch_optimizer, "_rnnkit_ema", None) is not self:
            self.torch_optimizer.register_step_post_hook(self._ema_update)  # again after a copy (hooks are not pickled)
            self.torch_optimizer._rnnkit_ema = self  # type: ignore[attr-defined]
        if isinstance(self._learning_rate, LearningRateSchedule):
            lr = self._learning_rate(step)
            for group in self.torch_optimizer.param_groups:
                group["lr"] = lr
        if not self._is_update_step(step):  # accumulating: the gradients went to the accumulators
            return
        self._keras_form(step)
        # the torch class decays only without exclusions (it decays every parameter of its group); the
        # group's rate is set every step, so a loaded state or checkpoint cannot carry another one
        torch_decay = self.torch_weight_decay and not (self._excluded or self._excluded_pattern is not None)
        for group in self.torch_optimizer.param_groups:
            group["weight_decay"] = (self.weight_decay or 0.0) if torch_decay else 0.0
        if self.weight_decay and not torch_decay:
            excluded = self._excluded_from_decay()
            with torch.no_grad():
                for group in self.torch_optimizer.param_groups:
                    decayed = [p for p in group["params"] if p.grad is not None and id(p) not in excluded]
                    for device in {p.device for p in decayed}:
                        torch._foreach_mul_([p for p in decayed if p.device == device],
                                            1.0 - group["lr"] * self.weight_decay)

    def _keras_form(self, step: int) -> None:
        """Adjust the torch optimizer so that its step ``step`` is Keras' update (see the subclasses)."""

    def _carry_momentum_over_lr_change(self) -> None:
        """Keras keeps the learning rate inside its momentum (``m = momentum * m - lr * g``), torch
        outside (``buf = momentum * buf + g``, ``p -= lr * buf``): the same update while the rate is
        constant. When it changes (a schedule, ``ReduceLROnPlateau``) the torch buffers are rescaled by
        ``old_lr / new_lr`` so the step stays Keras' one. The rate of the last step is kept in each
        param group (``keras_lr``), so it survives saving and checkpoints."""
        assert self.torch_optimizer is not None
        for group in self.torch_optimizer.param_groups:
            new, old = float(group["lr"]), group.get("keras_lr")
            if new <= 0:
                continue  # a zero rate: the buffers stay in the last rate's units (the step itself is Keras's)
            if old is not None and float(old) > 0 and float(old) != new:
                bufs = [buf for p in group["params"]
                        if (buf := self.torch_optimizer.state.get(p, {}).get("momentum_buffer")) is not None]
                if bufs:
                    with torch.no_grad():
                        torch._foreach_mul_(bufs, float(old) / new)
            group["keras_lr"] = new

    def clip(self, parameters: Iterable[nn.Parameter], overrides: dict[str, float | None] | None = None) -> None:
        """Clip gradients with this optimizer's settings (``overrides`` from compile/fit win), after
        :meth:`prepare_gradients` (unscaled and accumulated first, as Keras)."""
        self.prepare_gradients()
        settings = merge_clipping({"clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                                   "global_clipnorm": self.global_clipnorm}, overrides or {})
        if any(v is not None for v in settings.values()):
            clip_gradients(parameters, **settings)
            if self._prepared:  # clipped in place: still the prepared gradients (a later before_step leaves them)
                self._prepared = {i: (ref, g._version) for i, (ref, _) in self._prepared.items()
                                  if (g := ref()) is not None}

    # -- loss scaling and gradient accumulation -----------------------------------------------
    def scale_loss(self, loss: Any) -> Any:
        """Keras' ``scale_loss``: ``loss * loss_scale_factor`` (``loss`` itself without one), for a
        custom loop whose gradients then go to :meth:`apply`, which divides them by the factor."""
        return loss if self.loss_scale_factor is None else loss * self.loss_scale_factor

    def scale_loss_for_backward(self, loss: Tensor) -> Tensor:
        """``loss`` with its value unchanged and its gradient multiplied by ``loss_scale_factor``:
        backpropagating it is backpropagating :meth:`scale_loss` (``d(s * loss) = s``, what Keras'
        trainer does), while ``fit`` logs the unscaled loss, as Keras. Used by the training step."""
        if self.loss_scale_factor is None or not (loss.requires_grad and torch.is_grad_enabled()):
            return loss
        return _ScaleGradient.apply(loss, self.loss_scale_factor)

    def _keras_iteration(self, step: int) -> int:
        """Keras' ``iterations`` at raw step ``step``: the updates before it (``step // N`` with
        ``gradient_accumulation_steps=N``), which Adam's bias correction and EMA count."""
        return step // self.gradient_accumulation_steps if self.gradient_accumulation_steps else step

    def _is_update_step(self, step: int) -> bool:
        """Whether call ``step`` (0-based) moves the weights: every call, or with accumulation every
        ``N``-th (``(step + 1) % N == 0``, as Keras)."""
        steps = self.gradient_accumulation_steps
        return not steps or (step + 1) % steps == 0

    @torch.no_grad()
    def prepare_gradients(self, step: int | None = None) -> None:
        """Keras' ``apply`` before clipping, once per step (called by :meth:`clip` and
        :meth:`before_step`, whichever comes first; later calls see the gradients it left and do
        nothing): divide the gradients by ``loss_scale_factor``; with
        ``gradient_accumulation_steps=N``, on call ``step`` (default the call count) add them to
        the ``gradient_accumulator`` slots and drop them (``.grad = None``: the torch step then moves
        nothing), or on every ``N``-th call replace them by ``(g + accumulated) / N`` and reset all
        accumulators (removed from the state: zeros, which a slot not there reads as). A parameter
        without torch state holds ``{"step": 0, "gradient_accumulator": ...}`` until its first update,
        so that its state saves and loads like torch's.

        The gradients of an accumulating call enter the accumulators when the torch step runs (a step
        post-hook, :meth:`_commit_accumulation`), not here: a step that does not run adds nothing, as
        a ``GradScaler`` (Lightning's ``16-mixed``) skips the step of a call whose gradients
        overflowed, and Keras' loss-scale optimizer never hands such gradients to the optimizer (an
        overflow accumulated would turn the weights to inf at the next update)."""
        scale, steps = self.loss_scale_factor, self.gradient_accumulation_steps
        opt = self.torch_optimizer
        if (scale is None and not steps) or opt is None:
            return
        params = [p for p in self._params if p.grad is not None]
        grads: list[Tensor] = [p.grad for p in params if p.grad is not None]
        prepared = self._prepared
        if not params or (len(prepared) == len(params) and all(
                (entry := prepared.get(id(p))) is not None and entry[0]() is g and entry[1] == g._version
                for p, g in zip(params, grads))):
            return  # no gradients, or the ones this method left (same tensors, not written since)
        if scale is not None:
            torch._foreach_div_(grads, scale)
        if steps:
            step = self._iterations if step is None else step
            states = [opt.state.get(p) or {} for p in params]
            if self._is_update_step(step):
                self._pending = []  # (the gradients of an accumulating call whose step did not run)
                pairs = [(g, st[_ACCUMULATOR]) for g, st in zip(grads, states) if _ACCUMULATOR in st]
                if pairs:
                    torch._foreach_add_([g for g, _ in pairs], [a.to(g.dtype) for g, a in pairs])
                torch._foreach_div_(grads, float(steps))
                for p in self._params:
                    state = opt.state.get(p)
                    if state and state.pop(_ACCUMULATOR, None) is not None and state.keys() == {"step"}:
                        del state["step"]  # only the accumulator's: torch starts the state at the step
            else:
                self._pending = list(zip(params, grads))  # added by the step, if it runs
                for p in params:
                    p.grad = None
                if getattr(opt, "_rnnkit_accumulation", None) is not self:  # (hooks are not pickled or copied)
                    opt.register_step_post_hook(self._commit_accumulation)
                    opt._rnnkit_accumulation = self  # type: ignore[attr-defined]
                self._prepared = {}
                return
        self._prepared = {id(p): (weakref.ref(g), g._version) for p, g in zip(params, grads)}

    @torch.no_grad()
    def _commit_accumulation(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """Step post-hook (``gradient_accumulation_steps``): add the gradients :meth:`prepare_gradients`
        set aside on an accumulating call to the ``gradient_accumulator`` slots, after the step, which
        moved nothing (a step given a closure, as Lightning's, runs its pre-hooks before the closure
        computes the gradients). A ``GradScaler`` runs the step of an optimizer that unscales inside
        it (torch's fused steps) also when the gradients overflowed, with ``found_inf`` set (the
        kernel then skips the update): nothing is added then."""
        pending, self._pending = self._pending, []
        opt = self.torch_optimizer
        found_inf = getattr(optimizer, "found_inf", None)
        if not pending or opt is None or (isinstance(found_inf, Tensor) and bool(found_inf.item())):
            return
        states = [opt.state.get(p) or {} for p, _ in pending]
        held = [(st[_ACCUMULATOR], g) for (_, g), st in zip(pending, states) if _ACCUMULATOR in st]
        if held:
            torch._foreach_add_([a for a, _ in held], [g.to(a.dtype) for a, g in held])
        for (p, g), st in zip(pending, states):
            if _ACCUMULATOR not in st:
                state = opt.state[p]
                if not state:  # (torch's load_state_dict needs a "step" in every state; 0: none taken)
                    state["step"] = torch.tensor(0.0)
                state[_ACCUMULATOR] = g.detach().to(p.dtype, copy=True)

    # -- weight decay exclusions ---------------------------------------------------------------
    def exclude_from_weight_decay(self, var_list: Iterable[nn.Parameter] | None = None,
                                  var_names: Iterable[str] | None = None) -> None:
        """Keras' ``exclude_from_weight_decay``: no ``weight_decay`` for the parameters in
        ``var_list`` nor for those whose Keras weight name (``kernel``, ``recurrent_kernel``,
        ``bias``, ``embeddings``, ``gamma``, ``beta``: see :func:`keras_weight_names`) matches one of
        ``var_names`` (regular expressions searched in the name, as Keras). Call it before the
        optimizer is built (before the first step); each call replaces the previous exclusions."""
        if self.built:
            raise ValueError("exclude_from_weight_decay() can only be configured before the optimizer is built "
                             "(before its first step); call it right after creating the optimizer")
        if isinstance(var_names, str):
            raise TypeError(f"var_names must be a list of names, got the string {var_names!r}; "
                            f"pass var_names=[{var_names!r}]")
        names = list(var_names or [])
        if any(not isinstance(n, str) for n in names):
            raise TypeError(f"var_names must be strings, got {names!r}")
        self._excluded = tuple(var_list or ())
        self._excluded_pattern = re.compile("|".join(sorted(set(names)))) if names else None
        self._decay_cache = None

    def name_weights(self, model: nn.Module) -> None:
        """Record the Keras weight names of ``model``'s parameters (for ``var_names`` of
        :meth:`exclude_from_weight_decay`; the training step calls it with the model it trains) and
        the model itself (a weak reference), whose Keras weight order :attr:`variables` follows (a
        functional model's weights come in Keras' layer order, not in the order torch registered them)."""
        self._model = weakref.ref(model)
        if self._excluded_pattern is not None:
            names = keras_weight_names(model)
            if names != self._weight_names:
                self._weight_names, self._decay_cache = names, None

    def _excluded_from_decay(self) -> set[int]:
        """``id`` of each parameter that weight decay passes over (cached per parameter list)."""
        cache, ids = self._decay_cache, [id(p) for p in self._params]
        if cache is not None and cache[0] == ids:
            return set(cache[1])
        excluded = {id(p) for p in self._excluded}
        pattern = self._excluded_pattern
        if pattern is not None:
            unnamed = [p for p in self._params if id(p) not in self._weight_names and id(p) not in excluded]
            if unnamed:
                raise ValueError(f"exclude_from_weight_decay(var_names=...) needs the weight names, which this optimizer "
                                 f"does not know for {len(unnamed)} parameter(s) (a custom loop with apply()); call "
                                 "optimizer.name_weights(model) first or pass var_list=[...] instead")
            excluded |= {id(p) for p in self._params if pattern.search(self._weight_names[id(p)]) is not None}
        self._decay_cache = (ids, [i for i in ids if i in excluded])
        return excluded

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly; schedules as ``{"class_name", "config"}``)."""
        lr: Any = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        config = {"learning_rate": lr, "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                  "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm, "name": self.name}
        if self.use_ema:
            config.update(use_ema=True, ema_momentum=self.ema_momentum, ema_overwrite_frequency=self.ema_overwrite_frequency)
        if self.loss_scale_factor is not None:
            config["loss_scale_factor"] = self.loss_scale_factor
        if self.gradient_accumulation_steps is not None:
            config["gradient_accumulation_steps"] = self.gradient_accumulation_steps
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        """Rebuild from :meth:`get_config` output."""
        config = dict(config)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            sched = SCHEDULES.get(lr.get("class_name", ""))
            if sched is None:
                raise ValueError(f"unknown learning-rate schedule {lr.get('class_name')!r}; "
                                 f"choose one of {', '.join(SCHEDULES)}")
            sched_config = {k: v for k, v in (lr.get("config") or {}).items() if k != "name"}  # Keras names it
            config["learning_rate"] = sched(**sched_config)
        return cls(**config)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled or copied without what is keyed by ``id`` of this process's tensors (the
        gradients of the last step, the weight names: the training step sets them again)."""
        state = dict(self.__dict__)
        for key in ("_prepared", "_pending", "_weight_names", "_decay_cache", "_model"):
            state.pop(key, None)
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self._learning_rate})"


_FUSED_CLASSES = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
_FUSED_DEVICES = ("cpu", "cuda")


def fused_step_kwargs(optimizer_class: type[torch.optim.Optimizer], params: Iterable[nn.Parameter]) -> dict[str, Any]:
    """``{"fused": True}`` where torch has a fused step (one kernel over all parameters) for
    ``optimizer_class`` and ``params``, else ``{}``.

    Adam's default step on CPU runs a dozen ``foreach`` passes over the parameters: on our 2-core
    machine, 2.6 ms a step for a 3M-parameter tagger against 0.61 ms fused (AdamW likewise, SGD with
    momentum 0.47 against 0.31 ms), a tenth of a small model's training step. Same update to float32
    rounding (3e-8 after five steps, tested). Fused needs floating-point parameters on one CPU or
    CUDA device type (torch >= 2.4 on CPU); anything else keeps torch's default.
    """
    if optimizer_class not in _FUSED_CLASSES:
        return {}
    params = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    if not params:
        return {}
    devices = {p.device.type for p in params}
    if len(devices) != 1 or not devices <= set(_FUSED_DEVICES):
        return {}
    if not all(p.is_floating_point() for p in params):
        return {}
    return {"fused": True}


def make_torch_optimizer(optimizer_class: type[torch.optim.Optimizer], params: Iterable[nn.Parameter], *,
                         fused: bool = True, **kwargs: Any) -> torch.optim.Optimizer:
    """``optimizer_class(params, **kwargs)`` with the fused step where :func:`fused_step_kwargs` allows it,
    falling back to torch's default step where this torch refuses it; ``fused=False``: the default step."""
    params = list(params)
    if not fused:
        return optimizer_class(params, **kwargs)
    try:
        return optimizer_class(params, **kwargs, **fused_step_kwargs(optimizer_class, params))
    except (RuntimeError, TypeError, ValueError):  # an older torch without a fused CPU step, or bad settings:
        return optimizer_class(params, **kwargs)  # the default step (which reports bad settings itself)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum."""

    registry_name = "sgd"
    default_learning_rate = 0.01

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be between 0 and 1, got {momentum}")
        self.momentum, self.nesterov = float(momentum), nesterov

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return torch.optim.SGD

    def _torch_kwargs(self) -> dict[str, Any]:
        # Keras takes nesterov=True without momentum (plain SGD then); torch refuses it
        return {"momentum": self.momentum, "nesterov": bool(self.nesterov and self.momentum > 0)}

    def _keras_form(self, step: int) -> None:
        if self.momentum:
            self._carry_momentum_over_lr_change()
            self._zero_rate_step()

    def _zero_rate_step(self) -> None:
        """Keras's momentum step at learning rate 0, which torch's cannot take: ``m = momentum * m``
        and ``p += m`` (nesterov ``p += momentum * m``) with no gradient in ``m``. The buffers hold
        ``m = -keras_lr * buf``, so they decay in place and move the weights; the gradients are then
        dropped, so torch's step neither adds them to its buffers nor moves anything."""
        assert self.torch_optimizer is not None
        for group in self.torch_optimizer.param_groups:
            if float(group["lr"]) > 0:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            rate = float(group.get("keras_lr") or 0.0)  # the rate the buffers were accumulated with
            pairs = [(p, buf) for p in params
                     if (buf := self.torch_optimizer.state.get(p, {}).get("momentum_buffer")) is not None]
            if rate > 0 and pairs:
                moved, bufs = [p for p, _ in pairs], [buf for _, buf in pairs]
                with torch.no_grad():
                    torch._foreach_mul_(bufs, self.momentum)
                    scale = -rate * (self.momentum if self.nesterov else 1.0)
                    torch._foreach_add_(moved, bufs, alpha=scale)
            for p in params:
                p.grad = None

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("momentum_buffer", "momentum")]] if self.momentum else []

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015); with ``weight_decay`` it is decoupled (AdamW), as in Keras 3."""

    registry_name = "adam"
    torch_weight_decay = True

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), amsgrad

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return torch.optim.AdamW if self.weight_decay else torch.optim.Adam

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon, "amsgrad": self.amsgrad,
                "weight_decay": self.weight_decay or 0.0}

    def _keras_form(self, step: int) -> None:
        # Keras adds epsilon to sqrt(v) before the bias correction, torch after it:
        #   Keras: p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
        #   torch: p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps_torch)
        # equal with eps_torch = eps / sqrt(1 - b2^t) (t = Keras' iterations + 1, torch's step count). A number
        # set per step: the fused kernel runs unchanged.
        assert self.torch_optimizer is not None
        t = self._keras_iteration(step) + 1  # Keras' local step (the updates, with gradient accumulation)
        eps = self.epsilon / math.sqrt(1.0 - self.beta_2 ** t) if self.beta_2 < 1 else self.epsilon
        for group in self.torch_optimizer.param_groups:
            group["eps"] = eps

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        layout = [[("exp_avg", "momentum"), ("exp_avg_sq", "velocity")]]
        return [*layout, [("max_exp_avg_sq", "velocity_hat")]] if self.amsgrad else layout

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019); Keras default decay 0.004."""

    registry_name = "adamw"

    def __init__(self, learning_rate: Any = 0.001, weight_decay: float = 0.004, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return torch.optim.AdamW


class _KerasFormStep:
    """A torch optimizer whose ``step`` runs :meth:`_group_step` on every param group's parameters
    that have a gradient (foreach ops, no fused kernel); the update rule is the subclass's."""

    param_groups: list[dict[str, Any]]
    state: Any

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad is not None and p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if params:
                self._group_step(group, params, [p.grad for p in params if p.grad is not None])
        return loss

    def _group_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        raise NotImplementedError


class _KerasRMSprop(_KerasFormStep, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` with Keras 3's update: epsilon inside the square root,
    ``p -= lr * g / sqrt(v + eps)`` (``sqrt(v - mean_g**2 + eps)`` centered), where torch divides by
    ``sqrt(v) + eps``; the two differ wherever ``v`` is not much larger than ``eps`` (small
    gradients). Same state entries as torch's (``square_avg``, ``grad_avg``, ``momentum_buffer``:
    ``p -= lr * buf``), so saved states load either way."""

    def _group_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        rho, eps, lr = group["alpha"], group["eps"], group["lr"]
        momentum, centered = group["momentum"], group["centered"]
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0)
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if momentum > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if centered and "grad_avg" not in state:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
        square_avgs = [self.state[p]["square_avg"] for p in params]
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        if centered:
            grad_avgs = [self.state[p]["grad_avg"] for p in params]
            torch._foreach_mul_(grad_avgs, rho)
            torch._foreach_add_(grad_avgs, grads, alpha=1 - rho)
            denom = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_add_(denom, eps)
        else:
            denom = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(denom)
        if momentum > 0:
            # Keras: m = momentum * m + lr * g / denom, p -= m; here m = rate * buf, where rate is the
            # learning rate the buffers are in (this step's; at rate 0 the last one: m just decays)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, momentum)
            rate = lr if lr > 0 else float(group.get("keras_lr") or 0.0)
            if lr > 0:
                torch._foreach_addcdiv_(bufs, grads, denom)
            if rate > 0:
                torch._foreach_add_(params, bufs, alpha=-rate)
        else:
            torch._foreach_addcdiv_(params, grads, denom, value=-lr)


class _KerasAdagrad(_KerasFormStep, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with Keras 3's update ``p -= lr * g / sqrt(acc + eps)`` (torch divides
    by ``sqrt(acc) + eps``); same state entries (``sum``, ``step``) as torch's."""

    def _group_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        for p in params:
            self.state[p]["step"] += 1
        sums = [self.state[p]["sum"] for p in params]
        torch._foreach_addcmul_(sums, grads, grads)
        denom = torch._foreach_add(sums, group["eps"])
        torch._foreach_sqrt_(denom)
        torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])


# Saved optimizer states record the torch class name; these keep torch's names and state entries.
# (``__name__`` only: pickle finds a class by its ``__qualname__``, which must stay this module's
# own name for it, or a model compiled with RMSprop/Adagrad could not be pickled.)
_KerasRMSprop.__name__ = "RMSprop"
_KerasAdagrad.__name__ = "Adagrad"


class RMSprop(Optimizer):
    """RMSprop (Tieleman and Hinton 2012)."""

    registry_name = "rmsprop"

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-7,
                 centered: bool = False, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), centered

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return _KerasRMSprop

    def _keras_form(self, step: int) -> None:
        if self.momentum:
            self._carry_momentum_over_lr_change()

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"alpha": self.rho, "momentum": self.momentum, "eps": self.epsilon, "centered": self.centered}

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        layout = [[("square_avg", "velocity")]]
        if self.momentum:
            layout.append([("momentum_buffer", "momentum")])
        if self.centered:
            layout.append([("grad_avg", "average_gradient")])
        return layout

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011)."""

    registry_name = "adagrad"

    def __init__(self, learning_rate: Any = 0.001, initial_accumulator_value: float = 0.1, epsilon: float = 1e-7,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return _KerasAdagrad

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"initial_accumulator_value": self.initial_accumulator_value, "eps": self.epsilon}

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("sum", "accumulator")]]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class _KerasAdamax(_KerasFormStep, torch.optim.Adamax):
    """``torch.optim.Adamax`` with Keras 3's update: ``u = max(beta_2 * u, |g|)`` and
    ``p -= lr * m / ((1 - beta_1**t) * (u + eps))``, where torch keeps ``u = max(beta_2 * u, |g| + eps)``
    and divides by it: its epsilon enters the norm and decays with it, so wherever the decayed norm
    wins the two denominators part by ``(1 - beta_2) * eps`` a step (13% of the update with
    ``beta_2=0.5`` and gradients of 1e-7), which no per-step setting of torch's step can undo.
    ``t`` is Keras' update count (the param group's ``keras_step``, set before every step). Same
    state entries as torch's (``step``, ``exp_avg``, ``exp_inf``: here Keras' ``u``)."""

    def _group_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        beta_1, beta_2 = group["betas"]
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)
        ms, us = [self.state[p]["exp_avg"] for p in params], [self.state[p]["exp_inf"] for p in params]
        torch._foreach_mul_(ms, beta_1)
        torch._foreach_add_(ms, grads, alpha=1 - beta_1)
        torch._foreach_mul_(us, beta_2)
        torch._foreach_maximum_(us, torch._foreach_abs(grads))
        denom = torch._foreach_add(us, group["eps"])
        torch._foreach_mul_(denom, 1 - beta_1 ** group["keras_step"])
        torch._foreach_addcdiv_(params, ms, denom, value=-group["lr"])


class _KerasLion(_KerasFormStep, torch.optim.Optimizer):
    """Lion (Chen et al. 2023) as Keras 3 computes it (torch has no Lion):
    ``p -= lr * sign(beta_1 * m + (1 - beta_1) * g)``, then ``m = beta_2 * m + (1 - beta_2) * g``.
    State per parameter: ``exp_avg`` (Keras' ``momentum``)."""

    def __init__(self, params: Any, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.99)) -> None:
        super().__init__(params, {"lr": lr, "betas": betas})

    def _group_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        beta_1, beta_2 = group["betas"]
        for p in params:
            if "exp_avg" not in self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        ms = [self.state[p]["exp_avg"] for p in params]
        direction = torch._foreach_mul(ms, beta_1)
        torch._foreach_add_(direction, grads, alpha=1 - beta_1)
        torch._foreach_sign_(direction)
        torch._foreach_add_(params, direction, alpha=-group["lr"])
        torch._foreach_mul_(ms, beta_2)
        torch._foreach_add_(ms, grads, alpha=1 - beta_2)


_KerasAdamax.__name__ = "Adamax"
_KerasLion.__name__ = "Lion"


class Nadam(Optimizer):
    """Nadam: Adam with Nesterov momentum (Dozat 2016), with Keras 3's momentum schedule
    ``u_t = beta_1 * (1 - 0.5 * 0.96**t)``.

    ``torch.optim.NAdam`` computes exactly Keras' update once its ``momentum_decay`` (psi in
    ``0.96**(t * psi)``, default 0.004) is 1: ``m_hat = u_{t+1} m / (1 - prod u_1..u_{t+1}) +
    (1 - u_t) g / (1 - prod u_1..u_t)``, ``p -= lr * m_hat / (sqrt(v / (1 - beta_2**t)) + eps)``;
    so its (foreach) step runs unchanged. Its ``mu_product`` state is Keras' ``u_product``, kept per
    parameter (the same number for all parameters that step together)."""

    registry_name = "nadam"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return torch.optim.NAdam

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon, "momentum_decay": 1.0}

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("exp_avg", "momentum"), ("exp_avg_sq", "velocity")]]

    def _extra_variables(self) -> list[OptimizerVariable]:
        """Keras' ``u_product`` (1 before the first step): the ``mu_product`` of the parameters;
        ``assign`` sets it for all of them."""
        assert self.torch_optimizer is not None
        opt = self.torch_optimizer
        products = [state["mu_product"] for p in self._params if "mu_product" in (state := opt.state.get(p) or {})]

        def set_product(value: Any) -> None:
            with torch.no_grad():
                for product in products:
                    product.fill_(float(np.asarray(value)))

        value = products[0] if products else torch.tensor(1.0)
        return [OptimizerVariable(f"{self.name}/u_product", value, set_product if products else None)]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm (Kingma and Ba 2015, section 7.1), with Keras 3's epsilon
    placement (added to the norm when dividing, see ``_KerasAdamax``; own foreach step)."""

    registry_name = "adamax"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return _KerasAdamax

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon}

    def _keras_form(self, step: int) -> None:
        # the bias correction counts Keras' updates, as Adam's epsilon does (the same for all parameters)
        assert self.torch_optimizer is not None
        for group in self.torch_optimizer.param_groups:
            group["keras_step"] = self._keras_iteration(step) + 1

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("exp_avg", "momentum"), ("exp_inf", "norm")]]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012) with a learning rate, as Keras 3: ``v = rho v + (1 - rho) g**2``,
    ``d = -sqrt(D + eps) / sqrt(v + eps) * g``, ``D = rho D + (1 - rho) d**2``, ``p += lr * d``.
    ``torch.optim.Adadelta`` computes the same (epsilon inside both square roots) and runs unchanged,
    with Keras' defaults (``learning_rate=0.001, rho=0.95, epsilon=1e-7``; torch's are 1.0, 0.9, 1e-6)."""

    registry_name = "adadelta"

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.95, epsilon: float = 1e-7, **kwargs: Any) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return torch.optim.Adadelta

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"rho": self.rho, "eps": self.epsilon}

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("square_avg", "accumulated_grad"), ("acc_delta", "accumulated_delta_var")]]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Lion(Optimizer):
    """Lion, the sign of an interpolated momentum (Chen et al. 2023; own foreach step, see
    ``_KerasLion``). Keras' defaults ``learning_rate=0.001, beta_1=0.9, beta_2=0.99``; a rate 3-10x
    smaller than AdamW's and a weight decay 3-10x larger suit it."""

    registry_name = "lion"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.99, **kwargs: Any) -> None:
        if not 0 < beta_1 <= 1:
            raise ValueError(f"Lion's beta_1 must be in (0, 1] (at 0 it is sign SGD), got {beta_1}")
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return _KerasLion

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2)}

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("exp_avg", "momentum")]]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


class _KerasFtrl(_KerasFormStep, torch.optim.Optimizer):
    """FTRL-Proximal (McMahan et al. 2013) as Keras 3 computes it (torch has no FTRL), with
    ``n = accumulator``, ``z = linear``, ``p = -lr_power`` (0.5 by default)::

        g' = g + 2 * l2_shrinkage * w
        z += g' - (n_new**p - n**p) / lr * w,    n_new = n + g**2
        w = (clip(z, -l1, l1) - z) / (n_new**p / lr + 2 * (l2 + beta / (2 * lr)))

    State per parameter: ``accumulator`` (starting at ``initial_accumulator_value``) and ``linear``."""

    def __init__(self, params: Any, lr: float = 0.001, lr_power: float = -0.5, initial_accumulator_value: float = 0.1,
                 l1: float = 0.0, l2: float = 0.0, l2_shrinkage: float = 0.0, beta: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "lr_power": lr_power, "initial_accumulator_value": initial_accumulator_value,
                                  "l1": l1, "l2": l2, "l2_shrinkage": l2_shrinkage, "beta": beta})

    def _group_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        lr, power, l1 = group["lr"], -group["lr_power"], group["l1"]
        if not lr > 0:  # (Keras's weights turn NaN)
            raise ValueError(f"Ftrl divides by the learning rate, which is {lr} at this step; use a rate above 0 "
                             "(a schedule's warm-up that starts above 0)")
        for p in params:
            state = self.state[p]
            if "accumulator" not in state:
                state["accumulator"] = torch.full_like(p, group["initial_accumulator_value"],
                                                       memory_format=torch.preserve_format)
                state["linear"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        accumulators = [self.state[p]["accumulator"] for p in params]
        linears = [self.state[p]["linear"] for p in params]
        shrunk = torch._foreach_add(grads, params, alpha=2 * group["l2_shrinkage"]) if group["l2_shrinkage"] else grads
        new_accumulators = torch._foreach_addcmul(accumulators, grads, grads)
        new_powers = torch._foreach_pow(new_accumulators, power)
        change = torch._foreach_sub(new_powers, torch._foreach_pow(accumulators, power))
        torch._foreach_div_(change, lr)
        torch._foreach_mul_(change, params)
        torch._foreach_add_(linears, torch._foreach_sub(shrunk, change))
        quadratic = torch._foreach_div(new_powers, lr)
        torch._foreach_add_(quadratic, 2 * (group["l2"] + group["beta"] / (2.0 * lr)))
        clipped = torch._foreach_clamp_min(torch._foreach_clamp_max(linears, l1), -l1)
        torch._foreach_sub_(clipped, linears)
        torch._foreach_div_(clipped, quadratic)
        torch._foreach_copy_(params, clipped)
        torch._foreach_copy_(accumulators, new_accumulators)


_KerasFtrl.__name__ = "Ftrl"


class Ftrl(Optimizer):
    """FTRL-Proximal with Keras 3's arguments (own foreach step, see ``_KerasFtrl``): L1 (sparsity),
    L2, L2 shrinkage and ``beta`` regularization, ``learning_rate_power`` (<= 0) for the per-weight
    rate ``lr / accumulator**-learning_rate_power``."""

    registry_name = "ftrl"

    def __init__(self, learning_rate: Any = 0.001, learning_rate_power: float = -0.5,
                 initial_accumulator_value: float = 0.1, l1_regularization_strength: float = 0.0,
                 l2_regularization_strength: float = 0.0, l2_shrinkage_regularization_strength: float = 0.0,
                 beta: float = 0.0, **kwargs: Any) -> None:
        if learning_rate_power > 0:
            raise ValueError(f"Ftrl's learning_rate_power must be <= 0, got {learning_rate_power}")
        for name, value in (("initial_accumulator_value", initial_accumulator_value),
                            ("l1_regularization_strength", l1_regularization_strength),
                            ("l2_regularization_strength", l2_regularization_strength),
                            ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength)):
            if not value >= 0:
                raise ValueError(f"Ftrl's {name} must be >= 0, got {value}")
        super().__init__(learning_rate, **kwargs)
        self.learning_rate_power, self.initial_accumulator_value = float(learning_rate_power), float(initial_accumulator_value)
        self.l1_regularization_strength = float(l1_regularization_strength)
        self.l2_regularization_strength = float(l2_regularization_strength)
        self.l2_shrinkage_regularization_strength = float(l2_shrinkage_regularization_strength)
        self.beta = float(beta)

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return _KerasFtrl

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"lr_power": self.learning_rate_power, "initial_accumulator_value": self.initial_accumulator_value,
                "l1": self.l1_regularization_strength, "l2": self.l2_regularization_strength,
                "l2_shrinkage": self.l2_shrinkage_regularization_strength, "beta": self.beta}

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        return [[("accumulator", "accumulator"), ("linear", "linear")]]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength, "beta": self.beta}


class TorchOptimizer(Optimizer):
    """Any ``torch.optim`` optimizer class with its keyword arguments (not saved with the model).

    Args:
        cls: e.g. ``torch.optim.NAdam``.
        learning_rate: the ``lr`` argument (or a schedule).
        **kwargs: the other constructor arguments of ``cls``.
    """

    registry_name = "torch"

    def __init__(self, cls: type[torch.optim.Optimizer], learning_rate: Any = 0.001, **kwargs: Any) -> None:
        clip = {k: kwargs.pop(k) for k in ("clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor",
                                           "gradient_accumulation_steps") if k in kwargs}
        if "lr" in kwargs:
            learning_rate = kwargs.pop("lr")
        super().__init__(learning_rate, name=cls.__name__.lower(), **clip)
        self.cls, self.kwargs = cls, kwargs

    def _torch_class(self) -> type[torch.optim.Optimizer]:
        return self.cls

    def _torch_kwargs(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def _slot_layout(self) -> list[list[tuple[str, str]]]:
        """The torch state's tensors (other than ``step``), per parameter in the order torch made them."""
        keys: dict[str, None] = {}
        for state in (self.torch_optimizer.state.values() if self.torch_optimizer is not None else []):
            keys.update((k, None) for k, v in state.items()
                        if isinstance(v, Tensor) and k not in ("step", "ema_average", _ACCUMULATOR))
        return [[(k, k) for k in keys]]

    def get_config(self) -> dict[str, Any]:
        raise ValueError(f"optimizer {self.cls.__name__} given as a torch class cannot be saved in a config; "
                         "use one of the named optimizers to save it with the model")


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
    "nadam": Nadam, "adamax": Adamax, "adadelta": Adadelta, "lion": Lion, "ftrl": Ftrl,
}
_CLASSES = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def get_optimizer(spec: str | Optimizer | type[torch.optim.Optimizer] | dict[str, Any]) -> Optimizer:
    """Resolve an optimizer name, :class:`Optimizer`, config dict or ``torch.optim`` class.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {spec!r}; choose one of {', '.join(sorted(OPTIMIZERS))}")
        return OPTIMIZERS[key]()
    if isinstance(spec, dict) and "class_name" in spec:  # ours, or Keras' serialize() (also "adam")
        cls = _CLASSES.get(spec["class_name"]) or OPTIMIZERS.get(str(spec["class_name"]).lower())
        if cls is None:
            raise ValueError(f"unknown optimizer class {spec['class_name']!r}; choose one of {', '.join(_CLASSES)}")
        return cls.from_config(spec.get("config", {}))
    if isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer):
        return TorchOptimizer(spec)
    if isinstance(spec, torch.optim.Optimizer):
        raise TypeError("pass the optimizer class and its arguments (rnnkit.training.TorchOptimizer(torch.optim.X, "
                        "lr=...)) or a name: a torch optimizer instance is tied to parameters that a lazily built "
                        "model does not have yet")
    raise TypeError(f"optimizer must be a name, an rnnkit Optimizer or a torch.optim class, got {type(spec).__name__}")


def serialize_optimizer(optimizer: Optimizer) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for saving with a model."""
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
