"""``Model`` (functional and subclassed) and ``Sequential``: Keras' model API on ``torch.nn``.

* ``Sequential([...])`` or ``.add(layer)``: a stack of single-input, single-output layers; it
  builds as soon as the input shape is known (``Input(...)``, ``input_shape=`` or
  ``Embedding(input_length=...)``) or on the first batch.
* ``Model(inputs, outputs)``: a graph wired by calling layers on ``Input(...)`` tensors; any
  number of inputs and outputs (lists or dicts), shared layers, nested models, ``initial_state``
  passed between recurrent layers (encoder-decoder).
* Subclass ``Model`` and write ``call(self, inputs, mask=None)`` for anything else.

Training (``compile``, ``fit``, ``evaluate``, ``predict``) lives in :mod:`rnnkit.training`,
imported on first use: ``import rnnkit.models`` does not import Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..layers.base import (
    LAYERS,
    Layer,
    Node,
    SymbolicTensor,
    _split_masks,
    automatic_mask,
    deserialize_layer,
    dtype_name,
    flatten,
    from_numpy,
    make_example,
    map_structure,
    module_mode,
    register_layer,
    reset_states,
    serialize_layer,
    to_torch_dtype,
    unique_name,
)
from ..layers.core import Embedding, InputLayer


def _to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        t = from_numpy(np.ascontiguousarray(x))
        return t.float() if t.dtype == torch.float64 else t
    return x


def _adjust_rank(x: Any, shape: tuple[int | None, ...]) -> Any:
    """Keras' rank adjustment of an input declared with a last axis of 1 (functional ``_adjust_input_rank``): a
    univariate series ``[B, T]`` for ``Input(shape=(T, 1))`` gains that axis, ``[B, T, 1]`` for ``shape=(T,)`` loses
    it. Only when the other sizes match the declared ones (Keras looks at the rank alone)."""
    if not isinstance(x, Tensor) or not shape:
        return x

    def fits(sizes: tuple[int, ...]) -> bool:
        return len(sizes) == len(shape) and all(d is None or d == n for d, n in zip(shape, sizes))

    if x.dim() == len(shape) and shape[-1] == 1 and fits((*x.shape[1:], 1)):
        return x.unsqueeze(-1)
    if x.dim() == len(shape) + 2 and x.shape[-1] == 1 and fits(tuple(x.shape[1:-1])):
        return x.squeeze(-1)
    return x


_FIT_OPTIONS = {"seed", "tbptt_steps", "clipnorm", "clipvalue", "global_clipnorm", "accelerator", "devices",
                "strategy", "precision", "checkpoint_dir", "resume_from", "num_workers", "trainer_kwargs"}
_KERAS2_LOADER_ARGS = {"workers", "use_multiprocessing", "max_queue_size"}


def _check_options(method: str, options: dict[str, Any], allowed: set[str]) -> None:
    """Refuse keyword arguments ``method`` does not take, saying what to use instead."""
    unknown = sorted(set(options) - allowed)
    if not unknown:
        return
    name = unknown[0]
    if name in _KERAS2_LOADER_ARGS:
        hint = ("Keras 2 data-loading arguments are gone (as in Keras 3); "
                + ("use num_workers=N for DataLoader workers" if method == "fit" else "remove them"))
    elif name == "callbacks":
        hint = f"rnnkit runs callbacks during fit() only; remove callbacks from {method}()"
    else:
        import difflib
        import inspect

        known = [p for p in inspect.signature(getattr(Model, method)).parameters if p not in ("self", "options")]
        close = difflib.get_close_matches(name, [*known, *sorted(allowed)], n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"see help(Model.{method}) for its arguments"
    raise TypeError(f"{method}() got an unexpected keyword argument {name!r}: {hint}")


def keras_layer_order(order: list[Node], outputs: list[SymbolicTensor], inputs: list[Layer]) -> list[Layer]:
    """The layers of a functional graph in Keras' ``model.layers`` order (``keras.ops.function.map_graph``).

    A call's depth is the length of the longest path from it to an output (the outputs' calls are at
    0, a call feeding one at depth ``d`` is at least at ``d + 1``); a layer's depth is the largest of
    its calls'. Layers come by decreasing depth, ties in the order a depth-first walk from the
    outputs (each call's inputs in argument order) first meets them; an input nothing reads is at
    depth 0, ahead of the other layers there. ``order`` is the graph's calls, each after its inputs.
    """
    first_seen: dict[int, int] = {}
    walked: set[int] = set()

    def walk(node: Node) -> None:
        if id(node) in walked:
            return
        walked.add(id(node))
        first_seen.setdefault(id(node.layer), len(first_seen))
        for parent in node.inputs:
            assert parent.node is not None
            walk(parent.node)

    for t in outputs:
        assert t.node is not None
        walk(t.node)
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    layers: dict[int, Layer] = {}
    for node in reversed(order):  # every call after all the calls that read it
        depth = max(node_depth.get(id(node), 0), layer_depth.get(id(node.layer), 0))
        node_depth[id(node)] = layer_depth[id(node.layer)] = depth
        layers[id(node.layer)] = node.layer
        for parent in node.inputs:
            assert parent.node is not None
            node_depth[id(parent.node)] = max(depth + 1, node_depth.get(id(parent.node), 0))
    for layer in inputs:  # unused inputs
        if id(layer) not in layer_depth:
            layer_depth[id(layer)], first_seen[id(layer)], layers[id(layer)] = 0, -1, layer
    return sorted(layers.values(), key=lambda layer: (-layer_depth[id(layer)], first_seen[id(layer)]))


class Model(Layer):
    """A trainable model: functional (``Model(inputs, outputs)``), subclassed, or ``Sequential``.

    Args:
        inputs: ``Input(...)`` tensor(s): one, a list, or a dict by name.
        outputs: the symbolic tensor(s) computed from them: one, a list, or a dict by name.
        name: model name.

    Example (encoder-decoder)::

        enc_in = Input(shape=(None,), dtype="int64")
        _, h, c = LSTM(64, return_state=True)(Embedding(5000, 32, mask_zero=True)(enc_in))
        dec_in = Input(shape=(None,), dtype="int64")
        dec = LSTM(64, return_sequences=True)(Embedding(5000, 32, mask_zero=True)(dec_in),
                                              initial_state=[h, c])
        model = Model([enc_in, dec_in], TimeDistributed(Dense(5000, activation="softmax"))(dec))
    """

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None, trainable: bool = True,
                 **kwargs: Any) -> None:
        default = "functional" if inputs is not None else type(self).__name__.lower()
        super().__init__(name=name or unique_name(default), trainable=trainable, **kwargs)
        self._init_training_state()
        self._graph = False
        self.input_names, self.output_names = ["input"], ["output"]  # a functional graph names them below
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError("a functional Model needs both inputs= and outputs=")
            self._init_graph(inputs, outputs)

    def _init_training_state(self) -> None:
        self.stop_training = False
        self.history: Any = None
        self.compiled: Any = None

    # -- functional graph ----------------------------------------------------------------------
    def _init_graph(self, inputs: Any, outputs: Any) -> None:
        in_list, out_list = flatten(inputs), flatten(outputs)
        for t in in_list + out_list:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"Model inputs and outputs must be symbolic tensors (from Input() and layer calls), "
                                f"got {type(t).__name__}")
        for t in in_list:
            if t.node is None or not isinstance(t.node.layer, InputLayer):
                raise ValueError("every Model input must be an Input(...) tensor")
        order: list[Node] = []
        seen: set[int] = set()

        def visit(node: Node) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            for parent in node.inputs:
                assert parent.node is not None
                visit(parent.node)
            order.append(node)

        for t in out_list:
            assert t.node is not None
            visit(t.node)
        input_ids = {id(t) for t in in_list}
        for node in order:
            if isinstance(node.layer, InputLayer) and id(node.outputs[0]) not in input_ids:
                raise ValueError(f"the outputs depend on Input {node.layer.name!r}, which is not in inputs=")
        layers: list[Layer] = []
        for t in in_list:
            assert t.node is not None
            if t.node.layer not in layers:
                layers.append(t.node.layer)
        for node in order:
            if node.layer not in layers:
                layers.append(node.layer)
        self._graph = True
        self._input_struct, self._output_struct = inputs, outputs
        self._inputs, self._outputs = in_list, out_list
        self._nodes = [n for n in order if not isinstance(n.layer, InputLayer)]
        # positions of the inputs read by Embeddings only: their integer ids keep their dtype
        self._id_inputs = [i for i, t in enumerate(in_list)
                           if (users := [n.layer for n in self._nodes if any(u is t for u in n.inputs)])
                           and all(isinstance(layer, Embedding) for layer in users)]
        self.layer_list = nn.ModuleList(layers)
        # ``layers`` lists them in Keras' order; the modules stay registered in call order, which
        # names the saved weights (``layer_list.<i>``), so models saved before keep loading.
        keras_order = keras_layer_order(order, out_list, [t.node.layer for t in in_list])  # type: ignore[union-attr]
        self._layer_order = [layers.index(layer) for layer in keras_order]
        self.input_names = [t.node.layer.name for t in in_list]  # type: ignore[union-attr]
        if isinstance(outputs, dict):
            self.output_names = list(outputs)
        else:
            names: list[str] = []
            for t in out_list:
                base = t.node.layer.name  # type: ignore[union-attr]
                name, k = base, 1
                while name in names:
                    name, k = f"{base}_{k}", k + 1
                names.append(name)
            self.output_names = names
        self.built = True

    @property
    def layers(self) -> list[Layer]:
        """The model's layers: a functional model's in Keras' order (:func:`keras_layer_order`: by
        decreasing depth, Input layers first), a Sequential's in call order."""
        if hasattr(self, "layer_list"):
            order = getattr(self, "_layer_order", None)
            if order is not None and len(order) == len(self.layer_list):
                return [self.layer_list[i] for i in order]  # type: ignore[misc]
            return list(self.layer_list)  # type: ignore[arg-type]
        return [m for m in self.children() if isinstance(m, Layer)]

    def keras_parameters(self) -> list[nn.Parameter]:
        """The Keras weights (see :meth:`Layer.keras_parameters`), layer by layer in :attr:`layers` order,
        so ``weights`` lines up with ``get_weights()`` as in Keras."""
        if not self._graph:
            return super().keras_parameters()
        out: list[nn.Parameter] = []
        seen: set[int] = set()
        for layer in self.layers:
            for p in layer.keras_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by name or position.

        Raises:
            ValueError: when no layer matches (the message lists the names).
        """
        layers = self.layers
        if name is not None and index is not None:
            raise ValueError(f"pass only a layer name or a layer index to get_layer, got name={name!r}, index={index}")
        if name is None and index is None:
            raise ValueError("pass a layer name or a layer index to get_layer")
        if index is not None:
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"asked for the layer at index {index}, but the model has only {len(layers)} layers")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[layer.name for layer in layers]}")

    @property
    def inputs(self) -> list[SymbolicTensor]:
        """The symbolic inputs of a functional model."""
        return list(getattr(self, "_inputs", []))

    @property
    def outputs(self) -> list[SymbolicTensor]:
        """The symbolic outputs of a functional model."""
        return list(getattr(self, "_outputs", []))

    def _input_list(self, inputs: Any) -> list[Any]:
        n = len(self._inputs)
        if isinstance(inputs, dict):
            missing = [k for k in self.input_names if k not in inputs]
            if missing:
                raise ValueError(f"inputs dict lacks {missing}; the model's inputs are {self.input_names}")
            return [_to_tensor(inputs[k]) for k in self.input_names]
        if n == 1:
            if isinstance(inputs, list | tuple) and len(inputs) == 1:
                return [_to_tensor(inputs[0])]
            return [_to_tensor(inputs)]
        if not isinstance(inputs, list | tuple) or len(inputs) != n:
            raise ValueError(f"the model has {n} inputs {self.input_names}; pass a list of {n} tensors or a dict")
        return [_to_tensor(x) for x in inputs]

    def _mask_list(self, mask: Any, n: int) -> list[Tensor | None]:
        if mask is None:
            return [None] * n
        if isinstance(mask, Tensor):
            return [mask] + [None] * (n - 1)
        if isinstance(mask, dict):
            return [mask.get(k) for k in self.input_names]
        masks = list(mask)
        if len(masks) != n:
            raise ValueError(f"pass one mask (or None) per input: {n}, got {len(masks)}")
        return masks

    def _run_graph(self, inputs: Any, mask: Any) -> tuple[Any, Any]:
        xs = self._input_list(inputs)
        masks = self._mask_list(mask, len(xs))
        values: dict[int, tuple[Any, Any]] = {}
        for i, (sym, x, m) in enumerate(zip(self._inputs, xs, masks)):
            layer = sym.node.layer  # type: ignore[union-attr]
            if isinstance(x, Tensor) and x.dtype == torch.float64 and layer.input_dtype == torch.float32:
                x = x.float()
            elif isinstance(x, Tensor) and not x.dtype.is_floating_point and layer.input_dtype.is_floating_point \
                    and i not in self._id_inputs:
                x = x.to(layer.input_dtype)  # int or bool data for a float Input: Keras casts to the Input's dtype
            values[id(sym)] = (_adjust_rank(x, tuple(layer.shape)), m)

        def value(s: Any) -> Any:
            return values[id(s)][0] if isinstance(s, SymbolicTensor) else s

        for node in self._nodes:
            args = map_structure(value, node.args)
            kwargs = map_structure(value, node.kwargs)
            if "mask" not in node.kwargs:
                kwargs["mask"] = automatic_mask(node.args[0], lambda s: values[id(s)][1])
            out, out_mask = node.layer.forward_with_mask(*args, **kwargs)
            for sym, o, m in zip(node.outputs, flatten(out), _split_masks(out, out_mask)):
                values[id(sym)] = (o, m)
        outs = map_structure(lambda s: values[id(s)][0], self._output_struct)
        out_masks = map_structure(lambda s: values[id(s)][1], self._output_struct)
        return outs, out_masks

    # -- running -------------------------------------------------------------------------------
    def forward_with_mask(self, inputs: Any, *args: Any, mask: Any = None, training: bool | None = None,
                          **kwargs: Any) -> tuple[Any, Any]:
        """Run the model and return ``(outputs, output_masks)``.

        Args:
            inputs: a tensor, or a list / dict of tensors for several inputs.
            mask: optional ``[B, T]`` mask per input (``True`` on real steps).
            training: run in training mode (dropout on) or inference mode.

        Returns:
            Outputs and their masks, in the structure of the model's outputs.
        """
        with module_mode(self, training):
            if self._graph:
                return self._run_graph(inputs, mask)
            return super().forward_with_mask(_to_tensor(inputs), *args, mask=mask, **kwargs)

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
        if self._graph:
            return self._run_graph(inputs, mask)[0]
        raise NotImplementedError(f"{type(self).__name__} has no graph: build it with Model(inputs, outputs) or "
                                  "override call(self, inputs, mask=None)")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._graph and args and not isinstance(args[0], SymbolicTensor) and not any(
                isinstance(a, SymbolicTensor) for a in flatten(args)):
            training = kwargs.pop("training", None)
            with module_mode(self, training):
                return nn.Module.__call__(self, *args, **kwargs)
        return super().__call__(*args, **kwargs)

    def forward(self, inputs: Any, *args: Any, mask: Any = None, training: bool | None = None, **kwargs: Any) -> Any:
        if self._graph:
            with module_mode(self, training):
                return self._run_graph(inputs, mask)[0]
        return super().forward(_to_tensor(inputs), *args, mask=mask, training=training, **kwargs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if self._graph:
            return self._run_graph(inputs, mask)[1]
        return super().compute_mask(inputs, mask)

    def maybe_build(self, inputs: Any) -> None:
        if not self.built and not self._graph and not isinstance(self, Sequential):
            # a subclassed model's first inputs (Keras' build_config): load_model runs one call like it so that the
            # lazily built layers exist before the saved weights are loaded
            leaves = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
            if leaves and all(isinstance(t, Tensor) and t.dim() >= 1 for t in leaves):
                self.__dict__["_build_inputs"] = {
                    "list": isinstance(inputs, list | tuple),
                    "inputs": [{"shape": list(t.shape[1:]), "dtype": dtype_name(t.dtype)} for t in leaves]}
        super().maybe_build(inputs)

    def _build_from_record(self, record: dict[str, Any]) -> None:
        """Build a subclassed model by calling it once on zeros shaped as its first inputs were."""
        xs = [torch.zeros((1, *[int(d) for d in spec["shape"]]), dtype=to_torch_dtype(spec["dtype"]))
              for spec in record["inputs"]]
        with torch.no_grad(), module_mode(self, False):
            self(xs if record.get("list") else xs[0])
        self.reset_states()

    # -- structure used by the engine ------------------------------------------------------------
    def output_layers(self) -> list[Layer | None]:
        """Per output, the layer that produces it if it may emit logits (used once in the graph)."""
        if not self._graph:
            return [None] * len(self.output_names)
        result: list[Layer | None] = []
        for t in self._outputs:
            layer = t.node.layer  # type: ignore[union-attr]
            uses = sum(1 for n in self._nodes if n.layer is layer)
            single = uses == 1 and len(t.node.outputs) == 1  # type: ignore[union-attr]
            result.append(layer if single and hasattr(layer, "output_activation") else None)
        return result

    def reset_states(self) -> None:
        """Forget the carried state of every stateful recurrent layer."""
        for module in self.modules():
            if module is not self and isinstance(module, Layer) and hasattr(module, "reset_states") \
                    and not isinstance(module, Model):
                module.reset_states()  # type: ignore[operator]

    # -- weights -------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """All weights in Keras order and layout (layer by layer)."""
        self._require_built("get_weights")
        out: list[np.ndarray] = []
        for layer in self.layers:
            out.extend(layer.get_weights())
        return out

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load weights in Keras order and layout, e.g. ``keras_model.get_weights()``.

        This is how a trained Keras 3 model is imported: build the same architecture here,
        then ``model.set_weights(keras_model.get_weights())``.

        Raises:
            ValueError: when the count or a shape does not match (naming the layer).
        """
        self._require_built("set_weights")
        weights = list(weights)
        # Check the count and every shape before anything is written, so a bad list leaves the
        # model as it was (and the error names the model's own layer, not one nested in it).
        plan: list[tuple[Layer, int, int]] = []
        position = 0
        for layer in self.layers:
            shapes = [tuple(np.shape(w)) for w in layer.get_weights()]
            plan.append((layer, position, len(shapes)))
            for k, shape in enumerate(shapes):
                index = position + k
                if index < len(weights) and tuple(np.shape(weights[index])) != shape:
                    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) weight {k} must have shape "
                                     f"{list(shape)}, got {list(np.shape(weights[index]))} (array {index} of the list)")
            position += len(shapes)
        if position != len(weights):
            short = next(((layer, start, n) for layer, start, n in plan if start + n > len(weights)), None)
            where = "" if short is None else (f" (layer {short[0].name!r} needs arrays {short[1]}..{short[1] + short[2] - 1})")
            raise ValueError(f"the model takes {position} weight arrays, got {len(weights)}{where}")
        for layer, start, n in plan:
            if n:
                layer.set_weights(weights[start:start + n])

    def count_params(self) -> int:
        self._require_built("count_params")
        return sum(p.numel() for p in self.keras_parameters())

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"the model is not built yet, so {what}() has nothing to work on: give it an Input "
                             "(or input_shape=/Embedding(input_length=)), call model.build(input_shape), or fit it")

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        if not self._graph:
            raise NotImplementedError(f"{type(self).__name__} is a subclassed model: implement get_config() and "
                                      "from_config() to save it (or save only its weights with save_weights)")
        names = [layer.name for layer in self.layers]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"layer names must be unique to save a model, repeated: {sorted(duplicates)}")
        local: dict[int, tuple[str, int]] = {}
        node_index: dict[str, list[Node]] = {layer.name: [] for layer in self.layers}
        for t in self._inputs:
            local[id(t.node)] = (t.node.layer.name, 0)  # type: ignore[union-attr]
        for node in self._nodes:
            local[id(node)] = (node.layer.name, len(node_index[node.layer.name]))
            node_index[node.layer.name].append(node)

        def encode(value: Any) -> Any:
            if isinstance(value, SymbolicTensor):
                lname, idx = local[id(value.node)]
                return {"__ref__": [lname, idx, value.index]}
            if isinstance(value, tuple):
                return {"__tuple__": [encode(v) for v in value]}
            if isinstance(value, list):
                return [encode(v) for v in value]
            if isinstance(value, dict):
                return {"__dict__": {str(k): encode(v) for k, v in value.items()}}
            if value is None or isinstance(value, bool | int | float | str):
                return value
            raise ValueError(f"cannot save a call argument of type {type(value).__name__} in a model config")

        layers = []
        for layer in self.layers:
            entry = serialize_layer(layer)
            entry["name"] = layer.name
            entry["nodes"] = [[encode(list(n.args)), encode(n.kwargs)] for n in node_index[layer.name]]
            layers.append(entry)
        return {"name": self.name, "trainable": self._trainable, "layers": layers,
                "node_order": [list(local[id(n)]) for n in self._nodes],
                "inputs": encode(self._input_struct), "outputs": encode(self._output_struct)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Model:  # type: ignore[override]
        """Rebuild a functional model from :meth:`get_config` output (layers are rebuilt by replaying the calls).

        A config without a graph (a subclassed model's own ``get_config``) is passed to the constructor,
        ``cls(**config)``, as Keras does.
        """
        from .saving import custom_object_scope

        if not all(key in config for key in ("layers", "node_order", "inputs", "outputs")):
            try:
                return cls(**config)
            except TypeError as err:
                raise TypeError(f"cannot rebuild {cls.__name__} from its config ({err}): its get_config() must return "
                                "the arguments of its constructor, or it must override from_config()") from None
        with custom_object_scope(custom_objects):
            return cls._from_graph_config(config, custom_objects)

    @classmethod
    def _from_graph_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None) -> Model:
        by_name: dict[str, Layer] = {}
        entries: dict[str, dict[str, Any]] = {}
        tensors: dict[tuple[str, int, int], Any] = {}
        for entry in config["layers"]:
            layer = deserialize_layer(entry, custom_objects)
            by_name[entry["name"]] = layer
            entries[entry["name"]] = entry
            if isinstance(layer, InputLayer):
                tensors[(entry["name"], 0, 0)] = layer.output

        def decode(value: Any) -> Any:
            if isinstance(value, dict):
                if "__ref__" in value:
                    key = tuple(value["__ref__"])
                    if key not in tensors:
                        raise ValueError(f"model config refers to tensor {list(key)} before it is computed")
                    return tensors[key]  # type: ignore[index]
                if "__tuple__" in value:
                    return tuple(decode(v) for v in value["__tuple__"])
                if "__dict__" in value:
                    return {k: decode(v) for k, v in value["__dict__"].items()}
            if isinstance(value, list):
                return [decode(v) for v in value]
            return value

        for lname, idx in config["node_order"]:
            args, kwargs = entries[lname]["nodes"][idx]
            out = by_name[lname](*decode(args), **decode(kwargs))
            for k, t in enumerate(flatten(out)):
                tensors[(lname, idx, k)] = t
        return cls(decode(config["inputs"]), decode(config["outputs"]), name=config.get("name"),
                   trainable=config.get("trainable", True))

    # -- training API (rnnkit.training, imported on use) -----------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, loss_weights: Any = None, metrics: Any = None,
                *, clipnorm: float | None = None, clipvalue: float | None = None,
                global_clipnorm: float | None = None, **ignored: Any) -> None:
        """Choose the optimizer, loss(es) and metrics (Keras ``compile``).

        Args:
            optimizer: name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``, ``"nadam"``,
                ``"adamax"``, ``"adadelta"``, ``"lion"``, ``"ftrl"``), an
                ``rnnkit.training`` optimizer object, or a ``torch.optim`` class.
            loss: name, ``rnnkit.training`` loss object or function ``(y_true, y_pred)``; for
                several outputs a list or dict by output name (one loss for all is allowed).
            loss_weights: list or dict of weights of each output's loss in the total.
            metrics: names or objects; for several outputs a list (applied to all), a list of
                lists, or a dict by output name.
            clipnorm: per-parameter gradient norm limit (overrides the optimizer's).
            clipvalue: element-wise gradient limit.
            global_clipnorm: limit on the global gradient norm.
            **ignored: Keras arguments without effect here (``run_eagerly``, ``jit_compile``,
                ``steps_per_execution``, ``weighted_metrics``...).

        Raises:
            ValueError: for unknown names (listing the valid ones) or a missing loss.
        """
        from ..training.compile import CompileState

        allowed = {"run_eagerly", "jit_compile", "steps_per_execution", "weighted_metrics", "auto_scale_loss"}
        unknown = set(ignored) - allowed
        if unknown:
            raise TypeError(f"compile() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        self.compiled = CompileState(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
                                     clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm)
        if self._graph or isinstance(self, Sequential):
            self.compiled.resolve(self.output_names)

    @property
    def optimizer(self) -> Any:
        """The compiled optimizer (``model.optimizer.learning_rate`` reads or sets the rate)."""
        return None if self.compiled is None else self.compiled.optimizer

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1, verbose: int | str = "auto",
            callbacks: list[Any] | None = None, validation_split: float = 0.0, validation_data: Any = None,
            shuffle: bool = True, class_weight: dict[int, float] | None = None, sample_weight: Any = None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None, validation_steps: int | None = None,
            validation_batch_size: int | None = None, validation_freq: int = 1, **options: Any) -> Any:
        """Train the model (Keras ``fit``) on Lightning; returns a ``History``.

        Args:
            x: inputs: arrays, tensors, ragged lists of sequences, a list/dict of those for
                several inputs, a ``torch.utils.data.Dataset`` or ``DataLoader``.
            y: targets in the same forms (not with a Dataset/DataLoader, which carry them).
            batch_size: samples per step (default 32; not with a DataLoader).
            epochs: index of the last epoch (train ``epochs - initial_epoch`` epochs).
            verbose: 0 silent, 1 progress bar, 2 one line per epoch, ``"auto"`` = 1.
            callbacks: ``rnnkit.training.callbacks`` objects and/or Lightning callbacks.
            validation_split: fraction of the arrays (the last samples) held out for validation.
            validation_data: ``(x_val, y_val)``, ``(x_val, y_val, sample_weight_val)``, a Dataset or
                a DataLoader.
            shuffle: reshuffle the training data every epoch (reproducibly with ``seed``).
            class_weight: ``{class_id: weight}`` multiplying each sample's loss by its class's weight.
            sample_weight: ``[N]`` per-sample (or ``[N, T]`` per-step) loss weights.
            initial_epoch: epoch to start counting from (to continue a previous fit).
            steps_per_epoch: limit the batches per epoch.
            validation_steps: limit the validation batches.
            validation_batch_size: batch size for validation (default: ``batch_size``).
            validation_freq: validate every this many epochs.
            **options: rnnkit engine options: ``seed``, ``tbptt_steps``, ``clipnorm``,
                ``clipvalue``, ``global_clipnorm``, ``accelerator``, ``devices``, ``strategy``,
                ``precision``, ``checkpoint_dir``, ``resume_from``, ``num_workers``,
                ``trainer_kwargs`` (see :func:`rnnkit.training.engine.fit_model`).

        Returns:
            The ``History`` (``history.history["val_loss"]``...), also kept as ``model.history``.
        """
        from ..training.engine import fit_model

        _check_options("fit", options, _FIT_OPTIONS)
        return fit_model(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                         validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                         class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
                         steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                         validation_batch_size=validation_batch_size, validation_freq=validation_freq, **options)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
                 sample_weight: Any = None, steps: int | None = None, return_dict: bool = False,
                 **options: Any) -> Any:
        """Loss and metrics on data (Keras ``evaluate``), without Lightning.

        Returns:
            The loss if there are no metrics, else ``[loss, metric...]``; a dict with
            ``return_dict=True``.
        """
        from ..training.evaluation import evaluate_model

        _check_options("evaluate", options, set())
        return evaluate_model(self, x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                              steps=steps, return_dict=return_dict, **options)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto", steps: int | None = None,
                **options: Any) -> Any:
        """Outputs for ``x`` in batches, in input order (Keras ``predict``), as NumPy arrays.

        Ragged inputs are padded to the longest sequence; sequence outputs are ``[N, T_max, ...]``.
        Several outputs give a list (or dict, like the model's outputs).
        """
        from ..training.evaluation import predict_model

        _check_options("predict", options, set())
        if isinstance(self, Sequential) and isinstance(x, np.ndarray | Tensor):
            self._check_rank(tuple(x.shape))
        return predict_model(self, x, batch_size=batch_size, verbose=verbose, steps=steps, **options)

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: dict[int, float] | None = None, return_dict: bool = False) -> Any:
        """One optimizer step on one batch (Keras ``train_on_batch``).

        The batch goes through the same loss, weighting and metric code as ``fit`` (training
        mode, the compiled optimizer and gradient clipping); recurrent state is not reset between
        calls, so stateful models carry it from batch to batch.

        Returns:
            The batch's loss (before the step) if there are no metrics, else ``[loss, metric...]``
            in the order of :attr:`metrics_names`; a dict with ``return_dict=True``. Metrics are
            for this batch only.
        """
        from ..training.evaluation import batch_step

        return batch_step(self, x, y, train=True, sample_weight=sample_weight, class_weight=class_weight,
                          return_dict=return_dict)

    def test_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False) -> Any:
        """Loss and metrics on one batch, without training (Keras ``test_on_batch``).

        Returns:
            Like :meth:`evaluate`: the loss, ``[loss, metric...]``, or a dict with ``return_dict=True``.
        """
        from ..training.evaluation import batch_step

        return batch_step(self, x, y, train=False, sample_weight=sample_weight, return_dict=return_dict)

    def predict_on_batch(self, x: Any) -> Any:
        """Outputs for one batch (all of ``x`` at once) as NumPy arrays, like :meth:`predict`."""
        from ..training.evaluation import predict_model

        if isinstance(self, Sequential) and isinstance(x, np.ndarray | Tensor):
            self._check_rank(tuple(x.shape))
        return predict_model(self, x, verbose=0, one_batch=True)

    def predict_classes(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Keras 2's ``predict_classes``, removed in Keras 2.6 and 3: an error that names the replacement."""
        raise AttributeError("predict_classes was removed in Keras 2.6 (and 3); use np.argmax(model.predict(x), "
                             "axis=-1), or (model.predict(x) > 0.5).astype('int32') for a sigmoid output")

    def predict_proba(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Keras 2's ``predict_proba``, removed in Keras 2.6 and 3: an error that names the replacement."""
        raise AttributeError("predict_proba was removed in Keras 2.6 (and 3); use model.predict(x), which returns "
                             "the output layer's probabilities")

    @property
    def metrics_names(self) -> list[str]:
        """Names of the values :meth:`evaluate`/:meth:`test_on_batch`/:meth:`train_on_batch` return.

        Keras 2 style, in order: ``"loss"``, ``"<output>_loss"`` for each output of a model with
        several, then the metrics (``"<output>_<metric>"`` with several outputs), e.g.
        ``["loss", "accuracy"]``. Empty before ``compile``.
        """
        if self.compiled is None:
            return []
        from ..training.evaluation import output_names

        self.compiled.resolve(output_names(self))
        return list(self.compiled.log_names())

    # -- shapes (Keras convention: None for the batch dimension) -------------------------------
    def _not_built(self, what: str) -> ValueError:
        if self._graph or isinstance(self, Sequential):
            return ValueError(f"the model is not built yet, so its {what} is unknown: give it an Input (or "
                              "input_shape=/Embedding(input_length=)), call model.build((None, ...)), or fit it first")
        return ValueError(f"a subclassed model has no fixed {what} (its call() takes what it is given); "
                          "use a Sequential or functional model (Model(inputs, outputs)) for one")

    @property
    def input_shape(self) -> Any:
        """The input shape, ``(None, ...)`` (a list of shapes for several inputs).

        Raises:
            ValueError: if the model is not built yet, or for a subclassed model.
        """
        if self._graph:
            shapes = [tuple(t.shape) for t in self._inputs]
            return shapes[0] if len(shapes) == 1 else shapes
        spec = getattr(self, "input_spec", None)
        if isinstance(self, Sequential) and spec is not None:
            return (None, *spec[0])
        raise self._not_built("input shape")

    @property
    def output_shape(self) -> Any:
        """The output shape, ``(None, ...)`` (a list of shapes for several outputs).

        Raises:
            ValueError: if the model is not built yet, or for a subclassed model never called on
            an ``Input``.
        """
        if self._graph:
            shapes = [tuple(t.shape) for t in self._outputs]
            return shapes[0] if len(shapes) == 1 else shapes
        if isinstance(self, Sequential) and self.input_spec is not None and len(self.layer_list):
            if self._examples is None:
                self._build_examples()
            return cast(Layer, self.layer_list[-1]).output_shape
        recorded = self.__dict__.get("_recorded_output_shape")
        if recorded is not None:  # a nested model: its output shape where it was called
            return recorded
        if isinstance(self, Sequential) and self.input_spec is not None:
            raise ValueError("the Sequential model has no layers, so it has no output shape; add some first")
        raise self._not_built("output shape")

    @output_shape.setter
    def output_shape(self, value: Any) -> None:
        self.__dict__["_recorded_output_shape"] = value

    # -- saving --------------------------------------------------------------------------------
    def save(self, filepath: str, overwrite: bool = True, include_optimizer: bool | None = None) -> None:
        """Save architecture, weights and compile settings: a folder, or one ``.safetensors`` file.

        Args:
            filepath: a folder (``config.json`` + ``model.safetensors``), or a path ending in
                ``.safetensors`` (the config is stored in the file's metadata).
            overwrite: replace an existing save (refused otherwise).
            include_optimizer: save the optimizer state (``optimizer.safetensors`` in a folder
                save), so a loaded model trains on with its moments and step count, as in Keras 3.
                ``None`` (default): where it can be restored (a folder save of a trained model
                whose compile settings are saved); ``True``: required; ``False``: left out.

        Files are written to a temporary name and moved in place, so a crash never leaves a
        half-written model. Weights are safetensors; nothing is pickled.
        """
        from .saving import save_model

        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)

    def save_weights(self, filepath: str, overwrite: bool = True) -> None:
        """Save only the weights (a ``.safetensors`` file)."""
        from .saving import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath: str, strict: bool = True) -> None:
        """Load weights saved by :meth:`save_weights` or :meth:`save` (a file or a model folder)."""
        from .saving import load_weights

        load_weights(self, filepath, strict=strict)

    def to_json(self) -> str:
        """The architecture as JSON (``rnnkit.models.model_from_json`` rebuilds it)."""
        import json

        return json.dumps(serialize_layer(self))

    def summary(self, line_length: int | None = None, positions: Any = None,
                print_fn: Callable[[str], Any] | None = None, expand_nested: bool = False,
                show_trainable: bool = False, layer_range: Any = None) -> None:
        """Print the layers with output shapes and parameter counts (Keras ``summary``).

        Keras 3's arguments, in its order: ``line_length`` (at least 90 by default; wider when
        the cells need it), ``positions`` (accepted and ignored: columns fit their cells),
        ``print_fn`` (called once per line; default ``print``), ``expand_nested`` (list the
        layers of nested models too), ``show_trainable`` (a ``Trainable`` column) and
        ``layer_range`` (two layer names: the first and last rows).
        """
        from .summary import summary_lines

        if callable(line_length) and print_fn is None:  # rnnkit's former order: summary(print_fn)
            line_length, print_fn = None, line_length
        lines = summary_lines(self, line_length, expand_nested=expand_nested, show_trainable=show_trainable,
                              layer_range=layer_range)
        for line in lines:
            (print_fn or print)(line)


@register_layer
class Sequential(Model):
    """A linear stack of layers (Keras ``Sequential``).

    Args:
        layers: initial layers (an ``Input(...)`` may come first).
        name: model name.

    The model builds as soon as the input shape is known: from an ``Input``, from
    ``input_shape=`` on the first layer, from ``Embedding(input_length=...)``, from
    ``build(input_shape)``, or from the first batch of ``fit``/``predict``.

    Example:
        >>> model = Sequential()
        >>> model.add(Embedding(10000, 128, input_length=100))
        >>> model.add(LSTM(256))
        >>> model.add(Dense(10, activation="softmax"))
    """

    def __init__(self, layers: list[Any] | None = None, name: str | None = None, trainable: bool = True) -> None:
        Layer.__init__(self, name=name or unique_name("sequential"), trainable=trainable)
        self._init_training_state()
        self._graph = False
        self.layer_list = nn.ModuleList()
        self.input_spec: tuple[tuple[int | None, ...], torch.dtype] | None = None
        self._input_layer_name = "input"
        self._examples: list[tuple[Tensor, Tensor | None]] | None = None
        self._input_layer: InputLayer | None = None
        self._symbols: list[SymbolicTensor] = []  # Keras' graph of a built Sequential: input, then each output
        self._symbol_nodes: list[tuple[Layer, Node]] = []
        for layer in layers or []:
            self.add(layer)

    @property
    def input_names(self) -> list[str]:  # type: ignore[override]
        return [self._input_layer_name]

    @property
    def output_names(self) -> list[str]:  # type: ignore[override]
        return [cast(Layer, self.layer_list[-1]).name] if len(self.layer_list) else ["output"]

    def add(self, layer: Any) -> None:
        """Append a layer (or set the input with ``Input(...)`` / ``InputLayer``).

        Raises:
            TypeError: for something that is not an rnnkit layer.
            ValueError: for an input after layers, or a layer with several outputs.
        """
        if isinstance(layer, SymbolicTensor):
            if layer.node is None or not isinstance(layer.node.layer, InputLayer):
                raise ValueError("Sequential.add takes layers or an Input(...); for graphs use Model(inputs, outputs)")
            layer = layer.node.layer
        if isinstance(layer, InputLayer):
            if len(self.layer_list):
                raise ValueError("an Input must come before the first layer of a Sequential model")
            self._input_layer_name = layer.name
            self._input_layer = layer
            self._set_spec(layer.shape, layer.input_dtype)
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes rnnkit layers, got {type(layer).__name__}; wrap torch modules in a "
                            "Layer subclass")
        if not len(self.layer_list) and self.input_spec is None and layer.input_shape_arg is not None:
            dtype = torch.int64 if isinstance(layer, Embedding) else torch.float32
            self.input_spec = (tuple(layer.input_shape_arg), dtype)
        self.layer_list.append(layer)
        if self.input_spec is not None:
            self._extend_examples(layer)

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not len(self.layer_list):
            raise ValueError("the model has no layers to pop")
        layer = self.layer_list[-1]
        del self.layer_list[-1]
        self._examples = None
        if self.input_spec is not None:
            self._build_examples()
        return layer  # type: ignore[return-value]

    @property
    def layers(self) -> list[Layer]:
        return list(self.layer_list)  # type: ignore[arg-type]

    def _built_symbols(self) -> list[SymbolicTensor]:
        if self.input_spec is not None and len(self.layer_list) and self._examples is None:
            self._build_examples()
        return self._symbols if len(self._symbols) == len(self.layer_list) + 1 else []

    @property
    def inputs(self) -> list[SymbolicTensor]:
        """The symbolic input of a built model (Keras': ``Model(seq.inputs, seq.layers[-2].output)``)."""
        return self._built_symbols()[:1]

    @property
    def outputs(self) -> list[SymbolicTensor]:
        """The symbolic output of a built model (``[]`` before it is built)."""
        return self._built_symbols()[-1:]

    def _first_node_tensors(self, what: str) -> Any:
        symbols = self._built_symbols()
        if symbols:  # Keras 2's seq.input / seq.output: the model's own
            return symbols[0] if what == "input" else symbols[-1]
        return super()._first_node_tensors(what)

    # -- building ------------------------------------------------------------------------------
    def _set_spec(self, shape: tuple[int | None, ...], dtype: torch.dtype) -> None:
        self.input_spec = (tuple(shape), dtype)
        self._examples = None
        if len(self.layer_list):
            self._build_examples()

    def build(self, input_shape: Any = None, dtype: str | torch.dtype | None = None) -> None:
        """Build for inputs of ``input_shape`` (with the batch dimension, Keras style: ``(None, 100)``).

        Args:
            input_shape: full input shape; ``None`` dimensions are dynamic.
            dtype: input dtype (default int64 when the first layer is an Embedding, else float32).
        """
        if input_shape is None:
            if self.input_spec is None:
                raise ValueError("build() needs input_shape, e.g. model.build((None, 100))")
            self._build_examples()
            return
        shape = tuple(None if d is None else int(d) for d in tuple(input_shape)[1:])
        if dtype is None:
            first = self.layer_list[0] if len(self.layer_list) else None
            torch_dtype = torch.int64 if isinstance(first, Embedding) else torch.float32
        else:
            torch_dtype = to_torch_dtype(dtype)
        self._set_spec(shape, torch_dtype)

    def build_from_batch(self, x: Tensor, *, dynamic_time: bool = False) -> None:
        """Record the input spec from a real batch (time made dynamic for ragged data) and build."""
        if self.input_spec is None:
            shape: tuple[int | None, ...] = tuple(int(d) for d in x.shape[1:])
            if dynamic_time and shape:
                shape = (None, *shape[1:])
            first = self.layer_list[0] if len(self.layer_list) else None
            # Keras builds on float32 whatever the first batch holds; ids stay integers for an Embedding (and for
            # a layer of the user's own, which may read them)
            keep = not x.dtype.is_floating_point and (
                isinstance(first, Embedding) or not type(first).__module__.startswith("rnnkit.layers"))
            self.input_spec = (shape, x.dtype if keep else torch.float32)
        if self._examples is None or len(self._examples) == 0:
            self._build_examples()

    def _build_examples(self) -> None:
        assert self.input_spec is not None
        shape, dtype = self.input_spec
        for owner, node in self._symbol_nodes:  # forget the graph of an earlier build
            if node in owner.inbound_nodes:
                owner.inbound_nodes.remove(node)
        self._symbol_nodes = []
        given = self._input_layer
        if given is None or given.shape != tuple(shape) or given.input_dtype != dtype:
            given = InputLayer(tuple(shape), dtype=dtype_name(dtype), name=self._input_layer_name)
        self._symbols = [given.output]
        self._examples = [(make_example(shape, dtype, v), None) for v in (0, 1)]
        for layer in self.layer_list:
            self._run_example(layer)  # type: ignore[arg-type]
        self.built = True

    def _extend_examples(self, layer: Layer) -> None:
        if self._examples is None:
            self._build_examples()
        else:
            self._run_example(layer)

    def _run_example(self, layer: Layer) -> None:
        assert self._examples is not None
        try:
            with module_mode(layer, False), torch.no_grad():
                results = []
                for x, m in self._examples:
                    reset_states(layer)  # the examples differ in batch size: no state may carry over
                    dev = next((p.device for p in layer.parameters()), None)
                    if dev is not None and x.device != dev:
                        x = x.to(dev)
                        m = None if m is None else m.to(dev)
                    out, out_mask = layer.forward_with_mask(x, mask=m)
                    if not isinstance(out, Tensor):
                        raise ValueError(f"layer {layer.name!r} returns {len(flatten(out))} tensors (e.g. "
                                         "return_state=True); a Sequential model needs one output per layer: use "
                                         "the functional API (Model(inputs, outputs))")
                    results.append((out, out_mask if isinstance(out_mask, Tensor) or out_mask is None else None))
        finally:
            reset_states(layer)
        self._examples = results
        if self._symbols:  # record the call as a functional model would (layer.output, model.outputs)
            symbol = SymbolicTensor((results[0][0], results[1][0]), (results[0][1], results[1][1]))
            node = Node(layer, (self._symbols[-1],), {}, symbol)
            symbol.node = node
            layer.inbound_nodes.append(node)
            self._symbol_nodes.append((layer, node))
            self._symbols.append(symbol)
        a, b = results[0][0], results[1][0]
        layer.output_shape = (None, *(int(p) if p == q else None for p, q in zip(a.shape[1:], b.shape[1:])))
        self.built = True

    # -- running -------------------------------------------------------------------------------
    def forward_with_mask(self, inputs: Any, *args: Any, mask: Any = None, training: bool | None = None,
                          **kwargs: Any) -> tuple[Any, Any]:
        if not len(self.layer_list):
            raise ValueError("the Sequential model has no layers; add some first")
        x = inputs[0] if isinstance(inputs, list | tuple) and len(inputs) == 1 else inputs
        x = _to_tensor(x)
        if isinstance(x, Tensor) and x.dtype == torch.float64:
            x = x.float()
        elif isinstance(x, Tensor) and not x.dtype.is_floating_point and self.input_spec is not None \
                and self.input_spec[1].is_floating_point and not isinstance(self.layer_list[0], Embedding):
            x = x.to(self.input_spec[1])  # int or bool data for float inputs: Keras casts to the Input's dtype
        if isinstance(x, Tensor) and self.input_spec is not None:
            x = _adjust_rank(x, self.input_spec[0])  # first: a last batch of one value of a [N] column is [1]
            self._check_rank(tuple(x.shape))
        if isinstance(mask, list | tuple):
            mask = mask[0]
        with module_mode(self, training):
            for layer in self.layer_list:
                x, mask = layer.forward_with_mask(x, mask=mask)  # type: ignore[operator]
        if not self.built:
            self.built = all(layer.built for layer in self.layer_list)  # type: ignore[union-attr]
        return x, mask

    def _check_rank(self, got_shape: tuple[int, ...]) -> None:
        """Refuse one sample without its batch axis, naming the fix (other mismatches: the layers say)."""
        if self.input_spec is None:
            return
        shape = self.input_spec[0]
        if len(got_shape) == len(shape) and all(d is None or d == n for d, n in zip(shape, got_shape)):
            raise ValueError(f"model {self.name!r} expects batches of shape {(None, *shape)}, got one sample of shape "
                             f"{tuple(got_shape)}: add the batch axis with x[None] (or np.expand_dims(x, 0))")

    def call(self, inputs: Any, mask: Any = None, **kwargs: Any) -> Any:
        return self.forward_with_mask(inputs, mask=mask)[0]

    def forward(self, inputs: Any, *args: Any, mask: Any = None, training: bool | None = None, **kwargs: Any) -> Any:
        return self.forward_with_mask(inputs, mask=mask, training=training)[0]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, SymbolicTensor) for a in flatten((args, kwargs))):
            return Layer.__call__(self, *args, **kwargs)
        training = kwargs.pop("training", None)
        with module_mode(self, training):
            return nn.Module.__call__(self, *args, **kwargs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return self.forward_with_mask(inputs, mask=mask)[1]

    def output_layers(self) -> list[Layer | None]:
        last = self.layer_list[-1] if len(self.layer_list) else None
        return [last if last is not None and hasattr(last, "output_activation") else None]  # type: ignore[list-item]

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name, "trainable": self._trainable,
                                  "layers": [serialize_layer(layer) for layer in self.layer_list]}  # type: ignore[arg-type]
        if self.input_spec is not None:
            shape, dtype = self.input_spec
            config["input_spec"] = {"shape": list(shape), "dtype": dtype_name(dtype), "name": self._input_layer_name}
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Sequential:  # type: ignore[override]
        from .saving import custom_object_scope

        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        spec = config.get("input_spec")
        if spec is not None:
            model._input_layer_name = spec.get("name", "input")
            model.input_spec = (tuple(spec["shape"]), to_torch_dtype(spec["dtype"]))
        with custom_object_scope(custom_objects):
            for entry in config.get("layers", []):
                model.add(deserialize_layer(entry, custom_objects))
        return model


LAYERS["Model"] = Model


def model_from_json(text: str, custom_objects: dict[str, Any] | None = None) -> Model:
    """Rebuild a model (untrained) from :meth:`Model.to_json` output."""
    import json

    from .saving import custom_object_scope

    with custom_object_scope(custom_objects):
        layer = deserialize_layer(json.loads(text), custom_objects)
    if not isinstance(layer, Model):
        raise ValueError(f"the JSON describes a {type(layer).__name__}, not a model")
    return layer


def clone_model(model: Model, input_tensors: Any = None, clone_function: Callable[[Layer], Layer] | None = None,
                call_function: Any = None, recursive: bool = False) -> Model:
    """A new model of the same architecture with fresh weights (Keras ``keras.models.clone_model``).

    Layers keep their names and settings (``trainable`` included) but are new objects with newly
    initialised weights; copy them with ``clone.set_weights(model.get_weights())``.

    Args:
        model: a ``Sequential`` or functional model (a subclassed one needs ``get_config``/``from_config``).
        input_tensors: ``Input(...)`` tensor(s) to build the clone on instead of new ones.
        clone_function: makes each new layer from the old one (default:
            ``type(layer).from_config(layer.get_config())``); return the layer itself to share it.
        recursive: also clone the layers inside nested models with ``clone_function``.
    """
    if call_function is not None:
        raise ValueError("clone_model(call_function=...) is not supported; rebuild the graph with the layers instead")
    if clone_function is None:
        def clone_function(layer: Layer) -> Layer:
            return type(layer).from_config(layer.get_config())

    def clone(layer: Layer) -> Layer:
        if recursive and isinstance(layer, Model) and (layer._graph or isinstance(layer, Sequential)):
            return clone_model(layer, clone_function=clone_function, recursive=True)
        return clone_function(layer)  # type: ignore[misc]

    given = None if input_tensors is None else flatten(input_tensors)
    if isinstance(model, Sequential):
        new = Sequential(name=model.name, trainable=model.trainable)
        if given:
            new.add(given[0])
        elif model.input_spec is not None:
            new._input_layer_name = model._input_layer_name
            new.input_spec = model.input_spec
        for layer in model.layers:
            new.add(clone(layer))
        return new
    if not model._graph:
        return type(model).from_config(model.get_config())
    if given is not None and len(given) != len(model._inputs):
        raise ValueError(f"the model has {len(model._inputs)} inputs, got {len(given)} input_tensors")
    tensors: dict[int, Any] = {}
    for k, sym in enumerate(model._inputs):
        old = cast(InputLayer, sym.node.layer)  # type: ignore[union-attr]
        tensors[id(sym)] = given[k] if given is not None else InputLayer(
            old.shape, dtype=dtype_name(old.input_dtype), batch_size=old.batch_size, name=old.name).output
    new_layers: dict[int, Layer] = {}

    def sub(value: Any) -> Any:
        return tensors[id(value)] if isinstance(value, SymbolicTensor) else value

    for node in model._nodes:
        if id(node.layer) not in new_layers:  # a shared layer stays shared
            new_layers[id(node.layer)] = clone(node.layer)
        layer = new_layers[id(node.layer)]
        out = layer(*map_structure(sub, node.args), **map_structure(sub, node.kwargs))
        for old_out, new_out in zip(node.outputs, flatten(out)):
            tensors[id(old_out)] = new_out
    return Model(map_structure(sub, model._input_struct), map_structure(sub, model._output_struct),
                 name=model.name, trainable=model.trainable)
