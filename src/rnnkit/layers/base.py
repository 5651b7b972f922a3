"""The Keras-style layer protocol: lazy build, masks, configs, and symbolic calls.

Every layer here is a ``torch.nn.Module`` with four extra habits:

* **Lazy build.** Sizes that depend on the input (``input_size`` of a recurrent layer, the
  fan-in of ``Dense``) are read from the first tensor the layer sees; ``build(input_shape)``
  creates the parameters then. ``built`` tells whether that happened.
* **Masks travel beside tensors.** ``layer(x, mask=m)`` returns the output only;
  ``layer.compute_mask(x, m)`` returns the output's mask (``[B, T]`` bool, ``True`` on real
  steps, or ``None``); :meth:`Layer.forward_with_mask` does both. ``Embedding(mask_zero=True)``
  and ``Masking`` create masks, recurrent layers with ``return_sequences=True``, ``Dense``,
  ``Dropout``, the normalization layers and ``TimeDistributed`` pass them on, pooling and
  last-step recurrent layers consume them, and layers that change the time axis (``Conv1D``,
  ``MaxPooling1D``, ``Reshape``...) drop them.
* **Configs.** ``get_config()`` returns JSON-friendly constructor arguments and
  ``from_config(config)`` rebuilds the layer; :func:`serialize_layer` and
  :func:`deserialize_layer` add the class name (looked up in :data:`LAYERS`).
* **Symbolic calls.** Calling a layer on a :class:`SymbolicTensor` (what
  ``rnnkit.layers.Input`` returns) records a :class:`Node` instead of computing, which is how
  functional models are wired. Shapes are inferred by running the layer on two small example
  tensors of different batch and time sizes: the dimensions that differ are dynamic (``None``).
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

Shape = tuple[int | None, ...]

LAYERS: dict[str, type[Layer]] = {}

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}


def to_torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"int64"`` (or a ``torch.dtype``, or ``None`` for float32) to a ``torch.dtype``.

    Raises:
        ValueError: for an unknown name.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).replace("torch.", "")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.int64`` -> ``"int64"``."""
    return str(dtype).replace("torch.", "")


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make ``cls`` loadable by name from saved configs."""
    LAYERS[cls.__name__] = cls
    return cls


_NAME_COUNTS: dict[str, int] = {}


def snake_case(name: str) -> str:
    """``GlobalAveragePooling1D`` -> ``global_average_pooling1d``."""
    name = name.replace("1D", "1d")
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    """``lstm``, then ``lstm_1``, ``lstm_2``... (per process, as Keras names layers)."""
    count = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


# -- nested structures (lists, tuples, dicts of leaves) -------------------------------------------
def flatten(struct: Any) -> list[Any]:
    """The leaves of a nested list/tuple/dict structure, depth first (dict values in key order)."""
    if isinstance(struct, list | tuple):
        return [leaf for item in struct for leaf in flatten(item)]
    if isinstance(struct, dict):
        return [leaf for key in struct for leaf in flatten(struct[key])]
    return [struct]


def map_structure(fn: Callable[[Any], Any], struct: Any) -> Any:
    """Apply ``fn`` to every leaf, keeping the structure."""
    if isinstance(struct, list):
        return [map_structure(fn, s) for s in struct]
    if isinstance(struct, tuple):
        return tuple(map_structure(fn, s) for s in struct)
    if isinstance(struct, dict):
        return {k: map_structure(fn, v) for k, v in struct.items()}
    return fn(struct)


def has_symbolic(struct: Any) -> bool:
    """Whether any leaf is a :class:`SymbolicTensor`."""
    return any(isinstance(leaf, SymbolicTensor) for leaf in flatten(struct))


def shape_of(struct: Any) -> Any:
    """The shape of every tensor leaf (other leaves become ``None``)."""
    return map_structure(lambda t: tuple(t.shape) if isinstance(t, Tensor) else None, struct)


def first_tensor(struct: Any) -> Tensor | None:
    """The first tensor leaf of a structure, if any."""
    for leaf in flatten(struct):
        if isinstance(leaf, Tensor):
            return leaf
    return None


# -- symbolic tensors -----------------------------------------------------------------------------
EXAMPLE_SIZES = ((2, 24), (3, 37))  # (batch, every dynamic dimension) of the two example runs: lengths
# long enough for "valid" windows of up to 24 steps, and far enough apart that strided layers (pooling 2, 3, 4, and
# chains of them) still map them to different lengths, so a dynamic length stays dynamic (None)


def to_numpy(t: Tensor) -> np.ndarray:
    """A NumPy copy of ``t``; bfloat16, which NumPy lacks, as float32 (as Keras converts it)."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy().copy()


def from_numpy(array: np.ndarray) -> Tensor:
    """``torch.from_numpy`` (shared memory, no copy), without torch's warning for a read-only array
    (pandas' ``to_numpy()`` under copy-on-write, ``np.load(mmap_mode="r")``): rnnkit never writes
    into the data it is given."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _walk_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """``module.parameters()`` without its bookkeeping (a few times cheaper to its first parameter; duplicates
    of shared parameters are not removed): :attr:`Layer.param_dtype` reads it on every call."""
    for p in module._parameters.values():
        if p is not None:
            yield p
    for child in module._modules.values():
        if child is not None:
            yield from _walk_parameters(child)


def make_example(shape: Shape, dtype: torch.dtype, variant: int) -> Tensor:
    """A small concrete tensor for shape inference: ``shape`` without the batch dimension.

    Integers are ones (a valid token id that is not padding), floats 0.5, booleans ``True``.
    """
    batch, dynamic = EXAMPLE_SIZES[variant]
    full = (batch, *[dynamic if d is None else int(d) for d in shape])
    if dtype == torch.bool:
        return torch.ones(full, dtype=torch.bool)
    if dtype.is_floating_point:
        return torch.full(full, 0.5, dtype=dtype)
    return torch.ones(full, dtype=dtype)


class SymbolicTensor:
    """A placeholder for a tensor while a functional model is wired (Keras' ``KerasTensor``).

    Attributes:
        shape: ``(None, ...)``: batch first; ``None`` where the size is dynamic.
        dtype: the ``torch.dtype`` the tensor will have.
        node: the :class:`Node` that produces it (an ``InputLayer``'s for model inputs).
        index: its position among that node's outputs.
    """

    def __init__(self, examples: tuple[Tensor, Tensor], masks: tuple[Tensor | None, Tensor | None],
                 node: Node | None = None, index: int = 0) -> None:
        a, b = examples
        if a.dim() != b.dim():
            raise ValueError(f"the layer returned tensors of different ranks for different input sizes "
                             f"({list(a.shape)} and {list(b.shape)}); it cannot be used in a functional model")
        self._examples = examples
        self._masks = masks
        self.shape: Shape = (None, *(int(x) if x == y else None for x, y in zip(a.shape[1:], b.shape[1:])))
        self.dtype: torch.dtype = a.dtype
        self.node = node
        self.index = index

    @property
    def ndim(self) -> int:
        """Number of dimensions, batch included."""
        return len(self.shape)

    @property
    def has_mask(self) -> bool:
        """Whether a mask travels with this tensor."""
        return self._masks[0] is not None

    def __repr__(self) -> str:
        origin = f", from {self.node.layer.name!r}" if self.node is not None else ""
        return f"<SymbolicTensor shape={self.shape} dtype={dtype_name(self.dtype)}{origin}>"

    def __bool__(self) -> bool:
        raise TypeError("a SymbolicTensor has no value while the model is being wired; "
                        "it cannot be used in an `if` or `and`")


class Node:
    """One call of a layer in a functional model: the layer, its (symbolic) arguments, its outputs."""

    def __init__(self, layer: Layer, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
        self.layer = layer
        self.args = args
        self.kwargs = kwargs
        self.output_structure = outputs
        self.outputs: list[SymbolicTensor] = flatten(outputs)

    @property
    def inputs(self) -> list[SymbolicTensor]:
        """The symbolic tensors this call reads (arguments and keyword arguments)."""
        return [s for s in flatten((self.args, self.kwargs)) if isinstance(s, SymbolicTensor)]


def automatic_mask(first_arg: Any, lookup: Callable[[SymbolicTensor], Tensor | None]) -> Any:
    """The mask a layer receives when none is passed: the mask of its first argument.

    For a list of tensors (``Concatenate``) a list of masks, or ``None`` when none has one.
    """
    if isinstance(first_arg, SymbolicTensor):
        return lookup(first_arg)
    if isinstance(first_arg, list | tuple) and first_arg and all(isinstance(a, SymbolicTensor) for a in first_arg):
        masks = [lookup(a) for a in first_arg]
        return masks if any(m is not None for m in masks) else None
    return None


def _split_masks(outputs: Any, masks: Any) -> list[Tensor | None]:
    n = len(flatten(outputs))
    if masks is None:
        return [None] * n
    if isinstance(masks, Tensor):
        return [masks] + [None] * (n - 1)
    flat = flatten(masks)
    if len(flat) != n:
        raise ValueError(f"compute_mask returned {len(flat)} masks for {n} outputs")
    return flat


@contextlib.contextmanager
def module_mode(module: nn.Module, training: bool | None) -> Iterator[None]:
    """Run the block with ``module`` and everything below it in training (``True``) or inference
    (``False``) mode; ``None`` leaves the modes alone. Each submodule gets its own mode back after
    the block, not the top module's: a ``BatchNormalization`` the user froze with ``.eval()`` inside
    a model in train mode stays frozen after ``predict`` or ``fit``."""
    if training is None or (bool(training) == module.training
                            and all(m.training == bool(training) for m in module.modules())):
        yield
        return
    restore = capture_modes(module)
    module.train(bool(training))
    try:
        yield
    finally:
        restore()


def capture_modes(module: nn.Module) -> Callable[[], None]:
    """Record the mode of ``module`` and every module below it; the returned function puts them
    back. A module that was not there when the modes were recorded (built lazily, or made in a
    layer's ``call``, while the block ran in another mode) takes its parent's restored mode, as
    one made outside the block would have: it must not stay in the block's mode (an LSTM first
    called with ``training=True`` would otherwise keep its dropout on in later inference calls)."""
    modes = {id(m): (m, m.training) for m in module.modules()}

    def restore() -> None:
        def walk(parent: nn.Module) -> None:
            for child in parent.children():
                known = modes.get(id(child))
                child.training = known[1] if known is not None and known[0] is child else parent.training
                walk(child)

        module.training = modes[id(module)][1]
        walk(module)

    return restore


def reset_states(module: nn.Module) -> None:
    """Forget the carried state of a stateful layer or model (no-op for others)."""
    reset = getattr(module, "reset_states", None)
    if callable(reset):
        reset()


_TAKES_MASK: dict[type, bool] = {}
_MISSING = object()


def _takes_mask(cls: type[Layer]) -> bool:
    """Whether ``cls.call`` accepts ``mask`` (by name or ``**kwargs``); Keras passes it only then."""
    known = _TAKES_MASK.get(cls)
    if known is None:
        try:
            params = inspect.signature(cls.call).parameters.values()
            known = any(p.name == "mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        except (TypeError, ValueError):
            known = True
        _TAKES_MASK[cls] = known
    return known


def _attach_mask(outputs: Any, masks: Any) -> None:
    """Keras 3's ``tensor._keras_mask``: the output mask rides on an eager output tensor."""
    outs = outputs if isinstance(outputs, list | tuple) else [outputs]
    ms = masks if isinstance(masks, list | tuple) else [masks]
    for out, m in zip(outs, ms):
        if isinstance(out, Tensor) and isinstance(m, Tensor):
            with contextlib.suppress(AttributeError, RuntimeError):  # a tensor subclass that takes no attributes
                out._keras_mask = m  # type: ignore[attr-defined]


# -- the base class -------------------------------------------------------------------------------
class Layer(nn.Module):
    """Base class of Keras-style layers (see the module docstring for the protocol).

    Subclasses implement ``build(input_shape)`` (create parameters; shapes include the batch
    dimension) and ``call(inputs, mask=None, **kwargs)``; they override ``compute_mask`` when
    they create or consume masks and extend ``get_config`` with their constructor arguments.

    Args:
        name: layer name (unique per process by default: ``lstm``, ``lstm_1``...).
        trainable: whether the parameters receive gradients.
        dtype: parameter dtype (``"float32"`` by default).
        input_shape: shape without the batch dimension; on the first layer of a
            ``Sequential`` model it lets the model build before seeing data (Keras 2 style).
        input_dim: ``input_shape=(input_dim,)`` (Keras 2 style).
    """

    supports_masking: ClassVar[bool] = False
    """Whether the layer passes its input mask on unchanged (the default ``compute_mask``)."""

    def __init__(self, *, name: str | None = None, trainable: bool = True, dtype: str | None = None,
                 input_shape: Shape | list[int | None] | None = None, input_dim: int | None = None,
                 batch_input_shape: Shape | list[int | None] | None = None, **unknown: Any) -> None:
        super().__init__()
        for key in [k for k in unknown if k.endswith(("_regularizer", "_constraint"))]:
            if unknown.pop(key) is not None:
                raise ValueError(f"{key} is not supported by rnnkit layers; use the optimizer's weight_decay "
                                 "(e.g. optimizer=AdamW(weight_decay=...)) instead")
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) "
                            f"{', '.join(sorted(unknown))}")
        self.name: str = name or unique_name(snake_case(type(self).__name__))
        self.built = False
        self._trainable = bool(trainable)
        self._dtype_name = dtype_name(to_torch_dtype(dtype))
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        if input_dim is not None and input_shape is None:
            input_shape = (int(input_dim),)
        self.input_shape_arg: Shape | None = None if input_shape is None else tuple(input_shape)
        self._emit_logits = False
        self.inbound_nodes: list[Node] = []
        self.output_shape: Any = None
        # As Keras: a layer runs in inference mode (dropout off, normalization on its moving
        # statistics) unless called with training=True, inside fit/train_on_batch, or after .train()
        self.training = False

    # -- properties ----------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        """Whether the layer's parameters are updated by training."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for module in self.modules():  # statistics (BatchNormalization's moving mean) are never trained
            if isinstance(module, Layer):  # as Keras: the nested layers follow (also those built later)
                module._trainable = self._trainable
            frozen = getattr(module, "non_trainable_parameter_names", ())
            for name, p in module.named_parameters(recurse=False):
                p.requires_grad_(self._trainable and name not in frozen)

    def _own_attribute(self, name: str) -> Any:
        """A value the layer itself holds under ``name`` (``self.output = Dense(2)`` in a subclass, as
        PyTorch code names its last layer): it wins over the Keras ``input``/``output`` property."""
        d = self.__dict__
        if name in d:
            return d[name]
        for store in ("_modules", "_parameters", "_buffers"):
            values = d.get(store)
            if values is not None and name in values:
                return values[name]
        return _MISSING

    def _set_own_attribute(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module):
            self.__dict__.pop(name, None)
            nn.Module.__setattr__(self, name, value)  # registered in _modules (no object.__setattr__)
        else:
            self.__dict__[name] = value

    def _del_own_attribute(self, name: str) -> None:
        # nn.Module.__delattr__ removes a module, parameter or buffer itself before it reaches this deleter;
        # handing anything else back to it came straight back here (RecursionError). As Keras: AttributeError.
        if name not in self.__dict__:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        del self.__dict__[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module) and "training" in self.__dict__ and value.training != self.training:
            value.train(self.training)  # a module made in __init__ or build() (torch's start in train mode) follows
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # A property that raises AttributeError makes Python fall back to __getattr__, and nn.Module's would replace
        # the reason (``layer.output`` of a layer never called symbolically) with "object has no attribute"
        if name in ("input", "output"):
            return self._first_node_tensors(name)
        return super().__getattr__(name)

    def _first_node_tensors(self, what: str) -> Any:
        own = self._own_attribute(what)
        if own is not _MISSING:
            return own
        if getattr(self, "_graph", False):  # a functional model: the structures it was built from (as Keras)
            return self.__dict__.get("_input_struct" if what == "input" else "_output_struct")
        if not self.inbound_nodes:
            # AttributeError, as Keras: hasattr(layer, "output") and getattr(..., None) keep working
            raise AttributeError(f"{type(self).__name__} {self.name!r} has never been called on a symbolic tensor "
                                 f"(Input(...) or another layer's output), so it has no {what}")
        node = self.inbound_nodes[0]
        values = node.inputs if what == "input" else node.outputs
        return values[0] if len(values) == 1 else list(values)

    @property
    def input(self) -> Any:
        """The symbolic input(s) of the layer's first call in a functional model (Keras ``layer.input``).

        One tensor, or a list when that call read several (an ``initial_state`` included); for a
        functional ``Model``, the ``inputs`` it was built from. A layer never called on a symbolic
        tensor raises ``AttributeError`` (as Keras). A value the layer sets itself
        under this name (``self.input = ...`` in a subclass) is returned instead.
        """
        return self._first_node_tensors("input")

    @input.setter
    def input(self, value: Any) -> None:
        self._set_own_attribute("input", value)

    @input.deleter
    def input(self) -> None:
        self._del_own_attribute("input")

    @property
    def output(self) -> Any:
        """The symbolic output(s) of the layer's first call (Keras ``layer.output``).

        A list for several outputs (``[output, h, c]`` for ``LSTM(return_state=True)``); for a
        functional ``Model``, the ``outputs`` it was built from.
        """
        return self._first_node_tensors("output")

    @output.setter
    def output(self, value: Any) -> None:
        self._set_own_attribute("output", value)

    @output.deleter
    def output(self) -> None:
        self._del_own_attribute("output")

    def keras_parameters(self) -> list[nn.Parameter]:
        """The parameters Keras would have: all of them but the constant-zero ``bias_hh`` that a
        single-bias recurrent layer (``LSTM``, ``SimpleRNN``, ``GRU(reset_after=False)``) keeps
        for torch's kernels, which Keras has no weight for (listed by the inner module's
        ``keras_hidden_parameter_names``). ``weights``, the counts and ``summary`` use these."""
        hidden = self._hidden_parameter_ids()
        return [p for p in self.parameters() if id(p) not in hidden]

    def _hidden_parameter_ids(self) -> set[int]:
        """``id`` of each parameter Keras has no weight for (see :meth:`keras_parameters`)."""
        return {id(getattr(m, n)) for m in self.modules() for n in getattr(m, "keras_hidden_parameter_names", ())}

    @property
    def weights(self) -> list[nn.Parameter]:
        """All parameters, as Keras counts them (``layer.weights``; ``get_weights()`` gives them as
        NumPy arrays in Keras layout); see :meth:`keras_parameters`."""
        return self.keras_parameters()

    @property
    def trainable_weights(self) -> list[nn.Parameter]:
        """The parameters that training updates."""
        return [p for p in self.keras_parameters() if p.requires_grad]

    @property
    def non_trainable_weights(self) -> list[nn.Parameter]:
        """The parameters that training leaves alone (frozen layers, normalization statistics)."""
        return [p for p in self.keras_parameters() if not p.requires_grad]

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the layer computes in: its parameters' (which ``model.to(torch.float64)`` or a
        ``precision="bf16-true"`` fit changes), or before it has any, the dtype it was made with.

        Parameters of several float dtypes (a model of layers made with their own ``dtype=``) leave the
        dtype it was made with, so each layer inside casts to its own; a layer without parameters
        follows the conversion of the model around it (:meth:`_apply`)."""
        made = to_torch_dtype(self._dtype_name)
        found = None
        for p in _walk_parameters(self):  # (stops at the first parameter unless the layer was converted)
            if not p.dtype.is_floating_point or p.dtype == found:
                continue
            if found is not None or p.dtype == made:
                return made
            found = p.dtype
        return found if found is not None else self.__dict__.get("_converted_dtype", made)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        before = {p.dtype for p in self.parameters() if p.dtype.is_floating_point}
        result = super()._apply(fn, recurse)
        after = {p.dtype for p in self.parameters() if p.dtype.is_floating_point}
        if len(after) == 1 and after != before:  # model.to(torch.float64), .double(), a bf16-true fit
            # the layers inside without parameters (Activation, Dropout, pooling) compute in the new dtype too,
            # or they would cast the model's float64 activations back to float32 between its layers
            dtype = next(iter(after))
            for m in self.modules():
                if isinstance(m, Layer) and not any(p.dtype.is_floating_point for p in m.parameters()):
                    m.__dict__["_converted_dtype"] = dtype
        return result

    # -- build ---------------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        """Create the parameters for inputs of ``input_shape`` (batch dimension included)."""

    def maybe_build(self, inputs: Any) -> None:
        """Build from the shapes of ``inputs`` unless already built."""
        if self.built:
            return
        existing = {id(m) for m in self.modules()}
        self.build(shape_of(inputs))
        self.built = True
        for m in self.modules():  # the modules build() made follow the layer's mode (those before keep theirs)
            if id(m) not in existing:
                m.training = self.training
        if self._dtype_name != "float32":
            self.to(to_torch_dtype(self._dtype_name))
        if not self._trainable:
            for p in self.parameters():
                p.requires_grad_(False)
        ref = first_tensor(inputs)
        if ref is not None and ref.device.type != "cpu":
            self.to(ref.device)

    def count_params(self) -> int:
        """Number of parameters (trainable or not).

        Raises:
            ValueError: if the layer is not built yet.
        """
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet, so it has no parameters; call it on "
                             "data first (or give the model an Input)")
        return sum(p.numel() for p in self.keras_parameters())

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if has_symbolic(args) or has_symbolic(kwargs):
            if not args and "inputs" in kwargs:  # Keras' layer(inputs=x)
                kwargs = dict(kwargs)
                args = (kwargs.pop("inputs"),)
            return self._call_symbolic(args, kwargs)
        return super().__call__(*args, **kwargs)

    def forward(self, inputs: Any, *args: Any, mask: Any = None, training: bool | None = None, **kwargs: Any) -> Any:
        """Build if needed, then run :meth:`call` (in train or eval mode as ``training`` says).

        Args:
            inputs: the input tensor (or list of tensors for merge layers).
            mask: optional mask of the input: ``[B, T]`` bool, ``True`` on real steps.
            training: run in training (dropout on) or inference mode; default: the module's mode.

        Returns:
            The layer's output (a tensor, or a list for layers with several outputs).
        """
        inputs = self._autocast(inputs)
        if mask is None and isinstance(inputs, Tensor):  # Keras: a tensor carries its mask (``_keras_mask``)
            mask = getattr(inputs, "_keras_mask", None)
        self.maybe_build(inputs)
        if _takes_mask(type(self)):
            kwargs["mask"] = mask  # a custom ``call(self, inputs)`` without a mask argument gets none (as Keras)
        if training is None:
            out = self.call(inputs, *args, **kwargs)
        else:  # as Keras: training= applies to every layer inside, as Model.__call__ does (a few µs a call)
            with module_mode(self, bool(training)):
                out = self.call(inputs, *args, **kwargs)
        if (mask is not None or type(self).compute_mask is not Layer.compute_mask) \
                and not torch.compiler.is_compiling():
            _attach_mask(out, self.compute_mask(inputs, mask))
        return out

    def _autocast(self, inputs: Any) -> Any:
        # numpy users pass float64; layers compute in their parameter dtype (as Keras casts to floatx). A layer
        # made with another float dtype (``dtype="float64"``) casts its floating inputs to it, as Keras autocasts;
        # float32 layers leave lower-precision inputs alone (mixed precision runs under torch.autocast).
        param_dtype = self.param_dtype

        def cast(t: Any) -> Any:
            if isinstance(t, np.ndarray):
                t = torch.from_numpy(t)
            if isinstance(t, Tensor) and t.dtype.is_floating_point and param_dtype.is_floating_point \
                    and t.dtype != param_dtype and (t.dtype == torch.float64 or param_dtype != torch.float32):
                return t.to(param_dtype)
            return t
        return map_structure(cast, inputs)

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
        """The computation; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement call()")

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """The mask of the output: the input mask if ``supports_masking``, else ``None``."""
        return mask if self.supports_masking else None

    def forward_with_mask(self, inputs: Any, *args: Any, mask: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        """Run the layer and return ``(output, output_mask)``."""
        out = self(inputs, *args, mask=mask, **kwargs)
        return out, self.compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape: Any) -> Any:
        """The output shape for inputs of ``input_shape`` (Keras ``compute_output_shape``).

        Args:
            input_shape: the input's shape with the batch axis first (``None`` for any size),
                e.g. ``(None, 100, 8)``; a list of shapes for merge layers.

        Returns:
            A tuple, or a list of tuples for layers with several outputs (``return_state``).
            Found as functional models find shapes: by running the layer on two small examples
            (builds the layer if needed; a ``stateful`` layer forgets its carried state).
        """
        several = isinstance(input_shape, list | tuple) and bool(input_shape) \
            and all(isinstance(s, list | tuple) for s in input_shape)
        shapes = [tuple(s) for s in input_shape] if several else [tuple(input_shape)]
        if any(not s for s in shapes):
            raise ValueError(f"{type(self).__name__} {self.name!r}: compute_output_shape needs the input shape with "
                             f"its batch axis, e.g. (None, 100, 8), got {input_shape!r}")
        symbols = [SymbolicTensor((make_example(s[1:], torch.float32, 0), make_example(s[1:], torch.float32, 1)),
                                  (None, None)) for s in shapes]
        (out_a, _), (out_b, _) = self._run_examples((symbols if several else symbols[0],), {})
        batch = shapes[0][0]
        outputs = [(batch, *(int(x) if x == y else None for x, y in zip(a.shape[1:], b.shape[1:])))
                   for a, b in zip(flatten(out_a), flatten(out_b))]
        return outputs if isinstance(out_a, list | tuple) else outputs[0]

    def _run_examples(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
        """``(output, mask)`` of the layer on both example variants of symbolic ``args``, in inference mode."""
        results = []
        with module_mode(self, False), contextlib.ExitStack() as cleanup:
            cleanup.callback(reset_states, self)  # no example state may leak into real calls, error or not
            with torch.no_grad():
                for variant in (0, 1):
                    reset_states(self)  # the examples differ in batch size: no state may carry over
                    def concrete(s: Any, v: int = variant) -> Any:
                        return s._examples[v] if isinstance(s, SymbolicTensor) else s
                    a = map_structure(concrete, args)
                    k = map_structure(concrete, kwargs)
                    if "mask" not in kwargs:
                        def example_mask(s: SymbolicTensor, v: int = variant) -> Tensor | None:
                            return s._masks[v]
                        k["mask"] = automatic_mask(args[0], example_mask)
                    try:
                        results.append(self.forward_with_mask(*a, **k))
                    except ValueError as err:  # e.g. Dense after Flatten of a dynamic length
                        dynamic = [s.shape for s in flatten(args) if isinstance(s, SymbolicTensor)
                                   and len(s.shape) > 1 and s.shape[-1] is None]
                        if variant == 0 or not dynamic:
                            raise
                        raise ValueError(f"{type(self).__name__} {self.name!r} needs a fixed last dimension, and its "
                                         f"input's is dynamic (shape {dynamic[0]}); fix: give the model input a fixed "
                                         "length, e.g. Input(shape=(maxlen, ...)) or Embedding(input_length=maxlen), "
                                         "or pool over time (GlobalMaxPooling1D) instead of Flatten") from err
        return results

    def _call_symbolic(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not args:
            raise TypeError(f"{type(self).__name__} needs its input as the first positional argument")
        (out_a, mask_a), (out_b, mask_b) = self._run_examples(args, kwargs)
        flat_a, flat_b = flatten(out_a), flatten(out_b)
        masks_a, masks_b = _split_masks(out_a, mask_a), _split_masks(out_b, mask_b)
        for t in flat_a:
            if not isinstance(t, Tensor):
                raise TypeError(f"{type(self).__name__} returned {type(t).__name__}; layers must return tensors")
        symbols = [SymbolicTensor((ta, tb), (ma, mb)) for ta, tb, ma, mb in zip(flat_a, flat_b, masks_a, masks_b)]
        it = iter(symbols)
        structure = map_structure(lambda _: next(it), out_a)
        node = Node(self, args, kwargs, structure)
        for i, s in enumerate(symbols):
            s.node, s.index = node, i
        self.inbound_nodes.append(node)
        self.output_shape = map_structure(lambda s: s.shape, structure)
        return structure

    # -- weights in Keras layout ---------------------------------------------------------------
    def _weight_parts(self) -> list[nn.Parameter | Layer]:
        """What :meth:`get_weights` lists, in order (as Keras: the layer's own weights, then each
        nested layer's, in the order they were assigned): a parameter of this layer or of a plain
        torch module inside it (not the hidden ``bias_hh``, see :meth:`keras_parameters`), or a
        nested Keras layer, which gives its weights in its own Keras layout (an ``LSTM``'s kernel
        ``[in, 4 * units]``, not torch's ``weight_ih``)."""
        hidden = self._hidden_parameter_ids()
        parts: list[nn.Parameter | Layer] = []
        seen: set[int] = set()

        def walk(module: nn.Module) -> None:
            for p in module.parameters(recurse=False):
                if id(p) not in seen and id(p) not in hidden:
                    seen.add(id(p))
                    parts.append(p)
            for child in module.children():
                if id(child) in seen:
                    continue
                seen.add(id(child))
                if isinstance(child, Layer):
                    parts.append(child)
                    seen.update(id(p) for p in child.parameters())
                else:
                    walk(child)

        walk(self)
        return parts

    def get_weights(self) -> list[np.ndarray]:
        """The parameters as NumPy arrays, in Keras order and layout (``Dense``: kernel ``[in, out]``)."""
        out: list[np.ndarray] = []
        for part in self._weight_parts():
            if isinstance(part, Layer):
                out.extend(part.get_weights())
            else:
                out.append(to_numpy(part))
        return out

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load NumPy arrays in Keras order and layout (what ``keras_layer.get_weights()`` returns).

        Raises:
            ValueError: when the count or a shape does not match (checked before anything is written).
        """
        parts = self._weight_parts()
        sizes: list[int] = []
        shapes: list[tuple[int, ...]] = []
        for part in parts:
            part_shapes = [tuple(np.shape(w)) for w in part.get_weights()] if isinstance(part, Layer) \
                else [tuple(part.shape)]
            sizes.append(len(part_shapes))
            shapes.extend(part_shapes)
        weights = list(weights)
        check_weight_list(self, weights, shapes)
        position = 0
        with torch.no_grad():
            for part, size in zip(parts, sizes):
                chunk = weights[position: position + size]
                position += size
                if isinstance(part, Layer):
                    part.set_weights(chunk)
                else:
                    part.copy_(torch.as_tensor(np.asarray(chunk[0]), dtype=part.dtype))

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-friendly dict."""
        config: dict[str, Any] = {"name": self.name, "trainable": self._trainable}
        if self._dtype_name != "float32":
            config["dtype"] = self._dtype_name
        if self.input_shape_arg is not None:
            config["input_shape"] = list(self.input_shape_arg)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """Rebuild a layer from :meth:`get_config` output."""
        return cls(**config)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def check_weight_list(layer: Layer, weights: list[Any], shapes: list[tuple[int, ...]]) -> None:
    """Raise a one-line error unless ``weights`` match ``shapes`` in count and shape."""
    if not layer.built:
        raise ValueError(f"layer {layer.name!r} is not built yet; call it on data (or build the model) "
                         "before set_weights")
    if len(weights) != len(shapes):
        raise ValueError(f"layer {layer.name!r} expects {len(shapes)} weight arrays with shapes {shapes}, "
                         f"got {len(weights)}")
    for k, (w, s) in enumerate(zip(weights, shapes)):
        if tuple(np.shape(w)) != tuple(s):
            raise ValueError(f"layer {layer.name!r} weight {k} must have shape {list(s)}, got {list(np.shape(w))}")


def serialize_layer(layer: Layer) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for a layer registered in :data:`LAYERS`."""
    name = type(layer).__name__
    config = layer.get_config()
    if LAYERS.get(name) is not type(layer):
        raise ValueError(f"layer class {name} is not registered, so it cannot be saved; decorate it with "
                         "@rnnkit.layers.register_layer")
    return {"class_name": name, "config": config}


def deserialize_layer(data: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Layer:
    """Rebuild a layer from :func:`serialize_layer` output.

    Args:
        data: ``{"class_name": ..., "config": ...}``.
        custom_objects: extra classes by name (for layers not registered in this process).
    """
    name = data.get("class_name")
    registry = {**LAYERS, **(custom_objects or {})}
    if name not in registry:
        raise ValueError(f"unknown layer class {name!r}; known: {', '.join(sorted(LAYERS))}. Register custom "
                         "layers with @rnnkit.layers.register_layer or pass custom_objects={name: cls}")
    cls = registry[name]
    return cls.from_config(dict(data.get("config", {})))
