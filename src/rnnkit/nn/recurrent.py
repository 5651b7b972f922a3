"""Recurrent layers: cells run over time, stacked, in one or both directions.

``RNN``, ``LSTM`` and ``GRU`` are drop-in replacements for their ``torch.nn`` namesakes: they
subclass them, take the same constructor arguments, return the same values from
``forward(input, hx)`` and keep identical parameter names, so state dicts load both ways. On top
they accept ``lengths=`` or ``mask=`` (either padding side), any cell (``cell="layernorm_lstm"``
or a cell class), ``return_gates``, variational input and recurrent dropout, zoneout, streaming
``step`` and a stateful mode.

Standard configurations run on ``torch.nn``'s fused kernels (oneDNN, cuDNN) and give the same
numbers; LSTM cells those kernels cannot run (peepholes, recurrent dropout, zoneout, masks with
gaps; layer-norm LSTMs; GRUs with those variants on CPU, and on CUDA with triton) and, on CPU,
projected LSTMs (``proj_size``, which oneDNN lacks: the engine beats torch's generic loop) run on
rnnkit's hand-written-backward engines;
everything else runs the reference scan (``docs/core.md``, "Which path runs a call").
``implementation`` chooses: ``"auto"`` (fused when it computes this call exactly, else the
engine or the reference), ``"fused"`` (fail with the reason when it cannot), ``"engine"``,
``"triton"`` (the engine with one Triton kernel per step for its element-wise math and its
loops replayed as CUDA graphs: CUDA, LSTM, layer-norm LSTM and GRU cells, where ``"auto"``
picks it when triton is installed) or ``"reference"``. Cells whose gates depend only on the input (``"mingru"``, ``"minlstm"``) also run
on element-wise linear scans, ``"sequential"`` or ``"parallel"``; ``"auto"`` picks the sequential
one on CPU (see ``rnnkit.scan.parallel``, ``rnnkit.scan.engine`` and ``docs/speed.md``).

Shapes: ``B`` batch, ``T`` time, ``D`` directions (2 if bidirectional), ``L`` layers,
``P`` output features per direction (``proj_size`` or ``hidden_size``).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..cells import CellSpec, RecurrentCell, make_cell
from ..scan import (
    check_lengths,
    check_mask,
    lengths_to_mask,
    padding_side,
    reference_scan,
    run_fused_masked,
    run_fused_segments,
    select_scan,
    weight_cache,
)
from ..scan._bptt import vmap_active

Hidden = Tensor | tuple[Tensor, ...]
IMPLEMENTATIONS = ("auto", "reference", "fused", "sequential", "parallel", "engine", "triton")


def layer_param_name(cell_param: str, layer: int, reverse: bool) -> str:
    """The ``torch.nn`` name of a cell parameter: ``weight_ih`` of layer 1, reverse -> ``weight_ih_l1_reverse``."""
    return f"{cell_param.replace('.', '_')}_l{layer}{'_reverse' if reverse else ''}"


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


class _RecurrentCore(nn.Module):
    """Sequence plumbing shared by every recurrent layer (the cells hold the math)."""

    # set by the concrete layer
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    training: bool
    _torch_mode: str | None = None
    _cells: list[RecurrentCell]
    _extra_cell_kwargs: dict[str, Any]
    _bindings: list[tuple[nn.Module, str, str, bool]]

    def _setup_recurrent(self, cell: CellSpec, cell_options: dict[str, Any] | None, *, input_dropout: float,
                         recurrent_dropout: float, zoneout: float, implementation: str, stateful: bool,
                         extra_cell_kwargs: dict[str, Any]) -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.implementation = implementation
        self.input_dropout = _check_rate("input_dropout", input_dropout)
        self.recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        self.zoneout = _check_rate("zoneout", zoneout)
        self.stateful = stateful
        self.state: Hidden | None = None
        self._check_stateful()
        self.cell_spec = cell
        self.cell_options = dict(cell_options or {})
        clash = sorted(set(self.cell_options) & {"input_size", "hidden_size", "bias", *extra_cell_kwargs})
        if clash:
            raise ValueError(f"cell_options {clash} are set by the layer's own arguments; pass them to "
                             f"{type(self).__name__}(...) directly, not in cell_options")
        self._extra_cell_kwargs = dict(extra_cell_kwargs)
        ref = next(iter(self.parameters()), None)
        cells: list[RecurrentCell] = []
        bindings: list[tuple[nn.Module, str, str, bool]] = []
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else cells[0].output_size * self.num_directions
            for direction in range(self.num_directions):
                c = self._build_cell(in_size)
                if ref is not None:
                    c = c.to(device=ref.device, dtype=ref.dtype)
                self._check_cell(c, cell, in_size)
                if cells and tuple(c.state_sizes) != tuple(cells[0].state_sizes):
                    raise ValueError(
                        f"cell {getattr(cell, '__name__', cell)!r} carries states of sizes "
                        f"{tuple(cells[0].state_sizes)} in layer 0 but "
                        f"{tuple(c.state_sizes)} in layer {layer} (input_size={in_size}); the layer stacks each state "
                        "as [num_layers*num_directions, batch, size], so state_sizes must not depend on input_size: "
                        "stack layers of different sizes with rnnkit.nn.Stack")
                for name, tensor in list(c.named_parameters()) + list(c.named_buffers()):
                    owner_name, _, leaf = name.rpartition(".")
                    owner = c.get_submodule(owner_name) if owner_name else c
                    lname = layer_param_name(name, layer, direction == 1)
                    is_param = isinstance(tensor, nn.Parameter)
                    if is_param:
                        setattr(self, lname, tensor)
                    else:  # a cell's non-persistent buffer (a constant) stays out of the layer's state_dict too
                        self.register_buffer(lname, tensor, persistent=leaf not in owner._non_persistent_buffers_set)
                    bindings.append((owner, leaf, lname, is_param))
                c.train(self.training)  # cells are not submodules: train()/eval() reach them through train()
                cells.append(c)
        # cells are views on this layer's parameters, not registered submodules: parameter names
        # stay those of torch.nn, and _bind() re-points the cells after .to(), load_state_dict() etc.
        object.__setattr__(self, "_cells", cells)
        object.__setattr__(self, "_bindings", bindings)
        init_flat = getattr(self, "_init_flat_weights", None)
        if callable(init_flat):  # torch.nn.RNNBase: re-point its flat weight list (and weak refs) at the new tensors
            init_flat()
        modes = {c.fused_mode() for c in cells}
        self._fused_cells = self._torch_mode is not None and modes == {self._torch_mode}

    # -- structure -----------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features per direction of the output (``proj_size`` or ``hidden_size``)."""
        return getattr(self, "proj_size", 0) or self.hidden_size

    def _build_cell(self, in_size: int) -> RecurrentCell:
        """A new cell from this layer's ``cell`` and options, for a layer that reads ``in_size`` features."""
        options = {**self._extra_cell_kwargs, **self.cell_options}
        try:
            return make_cell(self.cell_spec, in_size, self.hidden_size, bias=self.bias, **options)
        except TypeError as err:
            raise TypeError(f"cannot build cell {self.cell_spec!r} with arguments (input_size, hidden_size) and "
                            f"options {sorted({'bias', *options})}: {err}; the cell's __init__ must accept them "
                            "(bias=True: ignore it if the cell has no bias)") from None

    def _check_cell(self, cell: RecurrentCell, spec: CellSpec, in_size: int) -> None:
        name = type(cell).__name__
        missing = [a for a in ("input_size", "hidden_size", "output_size")
                   if not isinstance(getattr(cell, a, None), int)]
        if missing:
            raise ValueError(f"cell {name} must set {', '.join('self.' + a for a in missing)} in __init__ (integers: "
                             "features in, state size, features out)")
        for method in ("project_input", "recur"):
            if getattr(type(cell), method) is getattr(RecurrentCell, method):
                raise ValueError(f"cell {name} must implement {method}() (see docs/core.md, 'Writing your own cell')")
        if cell.input_size != in_size:
            raise ValueError(f"cell {name} was built with input_size={in_size} but reports input_size="
                             f"{cell.input_size}; set self.input_size = input_size in __init__")
        sizes = tuple(cell.state_sizes)
        if not sizes or sizes[0] != cell.output_size:
            raise ValueError(f"cell {name} has state_sizes {sizes} and output_size {cell.output_size}: the first state "
                             "is the output h, so state_sizes[0] must equal output_size")
        expected = self._expected_state_sizes()
        if expected is not None and tuple(cell.state_sizes) != expected:
            raise ValueError(f"cell {spec!r} carries states of sizes {tuple(cell.state_sizes)}, but "
                             f"{type(self).__name__} carries {expected}; use the layer that matches the cell "
                             "(rnnkit.nn.LSTM for LSTM-like cells, GRU or RNN for one-state cells) "
                             "or rnnkit.nn.Recurrent")

    def _expected_state_sizes(self) -> tuple[int, ...] | None:
        return None

    def cell(self, layer: int = 0, reverse: bool = False) -> RecurrentCell:
        """The cell of ``layer`` and direction, bound to this layer's current parameters."""
        self._bind()
        return self._cells[layer * self.num_directions + int(reverse)]

    def train(self, mode: bool = True) -> _RecurrentCore:
        """As :meth:`torch.nn.Module.train`; also drops what inference kept from the weights (see
        :mod:`rnnkit.scan.weight_cache`): a switch between training and evaluation re-reads them.
        A call that does not switch (``model.eval()`` before every prediction) keeps them: rebuilding
        and repacking them cost about 0.6 ms a call, 3x a streaming step of one token."""
        for c in getattr(self, "_cells", ()):
            if mode != self.training:
                weight_cache.forget(c)
            c.train(mode)  # a cell's own dropout or batch norm follows the layer (cells are not submodules)
        return super().train(mode)

    def _replicate_for_data_parallel(self) -> _RecurrentCore:
        """A replica with cells of its own (sharing the tensors): ``nn.DataParallel`` copies ``__dict__``
        shallowly, and replicas sharing cells would re-point them at each other's parameters while
        running in parallel threads."""
        replica = super()._replicate_for_data_parallel()
        if hasattr(self, "_cells"):
            memo: dict[int, Any] = {id(t): t for c in self._cells for t in itertools.chain(c.parameters(), c.buffers())}
            cells = copy.deepcopy(self._cells, memo)
            bindings = [(memo[id(owner)], leaf, lname, is_param) for owner, leaf, lname, is_param in self._bindings]
            object.__setattr__(replica, "_cells", cells)
            object.__setattr__(replica, "_bindings", bindings)
        return replica  # type: ignore[no-any-return]

    def _flat_weights_now(self) -> dict[str, Tensor]:
        """``torch.nn.RNNBase``'s flat weights by name, refreshed as its ``forward`` refreshes them.

        A parametrized weight (``weight_norm``, ``spectral_norm``, ``prune``) or one swapped in by
        ``torch.func.functional_call`` is a new tensor on each read: torch's fused path re-reads the
        weights through ``_update_flat_weights()`` and runs on ``_flat_weights``. Every other path takes
        the same tensors, so it computes with the weights torch's kernel would use and reads each
        parametrization as often (spectral norm's power iteration advances once per read in training).
        Empty for layers that are not ``torch.nn.RNNBase`` subclasses (``Recurrent``)."""
        update = getattr(self, "_update_flat_weights", None)
        if not callable(update):
            return {}
        update()
        names: list[str] = getattr(self, "_flat_weights_names")  # noqa: B009  (torch.nn.RNNBase's, untyped here)
        weights: list[Tensor | None] = getattr(self, "_flat_weights")  # noqa: B009
        return {n: w for n, w in zip(names, weights) if w is not None}

    def _bind(self) -> None:
        flat = self._flat_weights_now()
        for owner, leaf, lname, is_param in self._bindings:
            store = owner._parameters if is_param else owner._buffers
            value = flat.get(lname) if is_param else None
            store[leaf] = value if value is not None else getattr(self, lname)  # type: ignore[assignment]

    def reset_parameters(self) -> None:
        """Re-initialise every cell with its own scheme (uniform, forget bias, unit layer-norm gains); a cell
        without ``reset_parameters`` takes the values of a newly built one."""
        if not hasattr(self, "_cells"):
            super().reset_parameters()  # type: ignore[misc]  # torch.nn.RNNBase.__init__ calls this first
            return
        self._bind()
        for index, c in enumerate(self._cells):
            if callable(getattr(c, "reset_parameters", None)):
                c.reset_parameters()  # type: ignore[operator]
                continue
            # a cell without reset_parameters (docs/core.md's example): its own initialisation, from a new one
            layer = index // self.num_directions
            in_size = self.input_size if layer == 0 else self._cells[0].output_size * self.num_directions
            fresh = self._build_cell(in_size)
            c.load_state_dict(fresh.state_dict())  # copies into this layer's tensors (dtype, device kept)

    # -- validation ----------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> tuple[Tensor, bool]:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
        layout = "[batch, time, features]" if self.batch_first else "[time, batch, features]"
        ref = next(iter(self.parameters()), None)
        if not (x.dtype.is_floating_point or x.dtype.is_complex):  # token ids: before the size, which they miss
            raise ValueError(f"{type(self).__name__} expects a floating-point input, got dtype {x.dtype} (shape "
                             f"{list(x.shape)}); embed token ids first (torch.nn.Embedding), or convert the input "
                             f"(x.to({ref.dtype if ref is not None else torch.get_default_dtype()}))")
        if x.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__} expects input of shape {layout} or [time, features] "
                             f"(unbatched), got rank {x.dim()} with shape {list(x.shape)}")
        if x.shape[-1] != self.input_size:
            shown = layout if x.dim() == 3 else "[time, features], unbatched"
            raise ValueError(f"{type(self).__name__} expects {self.input_size} input features (input_size), "
                             f"got {x.shape[-1]} (input shape {list(x.shape)}, layout {shown})")
        # under autocast mixed dtypes are autocast's business, as in torch.nn (a Linear's bfloat16 output feeds an
        # LSTM): torch's kernels and the cells' matmuls cast, the engines and linear scans run in the weights' dtype
        if ref is not None and x.dtype != ref.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"input dtype {x.dtype} does not match the layer's parameters ({ref.dtype}); "
                             f"convert the input (x.to({ref.dtype})) or the layer (layer.to({x.dtype}))")
        if ref is not None and x.device != ref.device:
            raise ValueError(f"input is on {x.device} but the layer is on {ref.device}; move one of them")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0 if self.batch_first else 1)
        return x, unbatched

    def _state_sizes(self) -> tuple[int, ...]:
        return tuple(self._cells[0].state_sizes)

    def _state_dtype(self, like: Tensor) -> torch.dtype:
        """The dtype rnnkit's scans carry states in: the parameters' (``like``'s, the input's, for a layer
        without any). The input's differs only under autocast, where it may be the autocast dtype."""
        ref = next(iter(self.parameters()), None)
        return ref.dtype if ref is not None else like.dtype

    def _zeros(self, batch: int, like: Tensor) -> Hidden:
        """Zero states in ``like``'s dtype, as torch.nn's kernels make them (``_reference`` casts them)."""
        n = self.num_layers * self.num_directions
        states = tuple(like.new_zeros(n, batch, s) for s in self._state_sizes())
        return states if len(states) > 1 else states[0]

    def _check_hx(self, hx: Hidden | None, batch: int, unbatched: bool, like: Tensor) -> Hidden | None:
        if hx is None:
            return None
        sizes = self._state_sizes()
        parts = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        if len(parts) != len(sizes):
            shape = "[num_layers*num_directions, batch, size]"
            raise ValueError(f"{type(self).__name__} expects hx with {len(sizes)} tensor(s) of shape {shape}, "
                             f"got {len(parts)}" + (" (pass (h_0, c_0) as a tuple)" if len(sizes) == 2 else ""))
        n = self.num_layers * self.num_directions
        autocast = torch.is_autocast_enabled(like.device.type)
        out = []
        for k, (h, size) in enumerate(zip(parts, sizes)):
            if not isinstance(h, Tensor):
                raise TypeError(f"hx[{k}] must be a tensor of shape [{n}, {batch}, {size}], got {type(h).__name__}")
            if unbatched:
                if h.dim() != 2:
                    raise ValueError(f"for unbatched input hx[{k}] must be 2-D [{n}, {size}], got {list(h.shape)}")
                h = h.unsqueeze(1)
            if tuple(h.shape) != (n, batch, size):
                raise ValueError(f"hx[{k}] must have shape [num_layers*num_directions, batch, {size}] = "
                                 f"[{n}, {batch}, {size}], got {list(h.shape)}")
            if (h.dtype != like.dtype and not (autocast and h.dtype.is_floating_point)) or h.device != like.device:
                raise ValueError(f"hx[{k}] is {h.dtype} on {h.device} but the input is {like.dtype} on {like.device}")
            out.append(h)  # under autocast also one in the autocast dtype (an encoder's final state), as torch.nn
        return tuple(out) if len(out) > 1 else out[0]

    def fused_unavailable_reason(self, mask: Tensor | None = None, return_gates: bool = False) -> str | None:
        """Why the fused ``torch.nn`` kernel cannot compute this call exactly (``None`` if it can)."""
        if not self._fused_cells:
            return (f"cell {self.cell_spec!r} has no fused torch.nn kernel (only plain 'rnn', 'lstm' and "
                    "'gru' cells without peepholes or layer norm do)")
        if self.zoneout:
            return "torch.nn's kernels have no zoneout (auto runs it on rnnkit's engine or the reference scan)"
        if self.training and (self.input_dropout or self.recurrent_dropout):
            return ("torch.nn's kernels have no variational input/recurrent dropout (auto runs it on rnnkit's engine "
                    "or the reference scan; at inference it is off)")
        if return_gates:
            return "gate activations are recorded only by the reference scan"
        if mask is not None and padding_side(mask) is None:
            return "the mask has gaps: the fused kernel needs each sequence's real steps in one block"
        if vmap_active():
            return ("torch.func.vmap is in force and torch's fused RNN kernels have no batching rule (auto runs "
                    "the reference scan under vmap)")
        return None

    def _use_fused(self, mask: Tensor | None, return_gates: bool, device: torch.device | None = None,
                   batch: int = 0, steps: int = 0) -> bool:
        if self.implementation not in ("auto", "fused"):
            return False
        reason = self.fused_unavailable_reason(mask, return_gates)
        if reason is not None and self.implementation == "fused":
            raise ValueError(f"implementation='fused' cannot run this call: {reason}; "
                             "use implementation='auto' to fall back to rnnkit's engine or the reference scan")
        return reason is None and not (self.implementation == "auto" and device is not None
                                       and self._engine_is_faster(device, batch, steps))

    def _engine_is_faster(self, device: torch.device, batch: int, steps: int) -> bool:
        """Whether ``"auto"`` should run the engine although the fused kernel could run the call.

        ``torch.nn.LSTM`` with ``proj_size`` has no oneDNN kernel: on CPU it runs ATen's generic
        per-step loop, which the engine beats from about 16 steps on at batch 64 (1.25x training,
        1.15x inference at I=128, H=256, P=128, T=100; ``benchmarks/RESULTS.md``). Below that the
        engine's fixed cost per call (weight reordering, buffers: about 0.1 ms in inference, 1 ms
        in training) loses, and at batch 1 the two tie at T=100, so short calls (streaming
        ``step``) and batch 1 stay on torch's kernel. cuDNN has the projection. Under CPU autocast
        torch's kernel stays too: it runs in the autocast dtype, while the engine runs in the
        weights' dtype, so the output's dtype would otherwise depend on the batch and the length.

        ``torch.nn.GRU`` has no oneDNN kernel on CPUs either (only LSTMs do): it runs ATen's generic
        loop, at about 30% of the machine's matrix-multiply speed. The GRU engine
        (:mod:`rnnkit.scan.engine_gru`) trained 1.3-1.7x faster at H=256-1024 from batch 1 and ran
        inference 1.3-2.9x faster from batch 4 (2-core AMD EPYC, I=128, T=8-100, float32), so
        ``"auto"`` runs float32 GRUs with ``hidden_size >= 256`` on it from 8 steps on, in
        inference from batch 4 (at batch 1-2 torch's loop was 10-17% faster there; smaller
        states measured mixed).
        """
        if device.type != "cpu" or torch.is_autocast_enabled(device.type):
            return False
        if torch.jit.is_tracing():  # the engines' autograd.Functions do not trace: torch's kernel, as torch.nn traces
            return False
        if self._torch_mode == "LSTM":
            return bool(getattr(self, "proj_size", 0)) and steps >= 16 and batch > 1
        if self._torch_mode == "GRU":
            weight = next(self.parameters())
            training = torch.is_grad_enabled() and weight.requires_grad
            return (weight.dtype == torch.float32 and self.hidden_size >= 256 and steps >= 8
                    and (training or batch >= 4))
        return False

    # -- running -------------------------------------------------------------------------------
    def forward(self, input: Tensor | PackedSequence, hx: Hidden | None = None, *, lengths: Tensor | None = None,
                mask: Tensor | None = None, return_gates: bool = False) -> Any:
        """Run the layer over a sequence.

        Args:
            input: ``[B, T, I]`` if ``batch_first`` else ``[T, B, I]``; ``[T, I]`` unbatched; or
                a ``PackedSequence``.
            hx: initial state in ``torch.nn`` layout, ``[L*D, B, P]`` (LSTM: a pair with the cell
                state ``[L*D, B, H]``); zeros when omitted (or the carried state if ``stateful``).
            lengths: ``[B]`` number of real steps per sequence (right padding).
            mask: ``[B, T]`` bool, ``True`` on real steps; right or left padding (or, on the
                reference scan, any pattern: masked steps are skipped).
            return_gates: also return the gate activations (reference scan only).

        Returns:
            ``(output, h_n)`` like ``torch.nn``, and a dict of gates keyed ``"l{k}"`` /
            ``"l{k}_reverse"`` when ``return_gates``. Outputs at padded steps are zero and ``h_n``
            is taken at each sequence's last real step.
        """
        self._check_stateful()
        if isinstance(input, PackedSequence):
            if lengths is not None or mask is not None:
                raise ValueError("a PackedSequence already carries its lengths; do not pass lengths= or mask=")
            return self._forward_packed(input, hx, return_gates)
        x, unbatched = self._check_input(input)
        x_bf = x if self.batch_first else x.transpose(0, 1)
        batch, steps = x_bf.shape[0], x_bf.shape[1]
        if batch == 0:
            raise ValueError("empty batch: the input has batch size 0")
        m = self._resolve_mask(lengths, mask, batch, steps, x.device)
        hx = self._check_hx(hx, batch, unbatched, x)
        if hx is None and self.stateful and self.state is not None:
            hx = self._carried_state(batch, x)
        out_bf, h_n, gates = self._run(x, x_bf, hx, m, return_gates)
        if self.stateful:
            self.state = tuple(h.detach() for h in h_n) if isinstance(h_n, tuple) else h_n.detach()
        out = out_bf if self.batch_first else out_bf.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n = tuple(h.squeeze(1) for h in h_n) if isinstance(h_n, tuple) else h_n.squeeze(1)
        return (out, h_n, gates) if return_gates else (out, h_n)

    def _resolve_mask(self, lengths: Tensor | None, mask: Tensor | None, batch: int, steps: int,
                      device: torch.device) -> Tensor | None:
        if lengths is not None and mask is not None:
            raise ValueError("pass either lengths= or mask=, not both")
        if lengths is not None:
            lens = check_lengths(lengths, batch, steps, None)  # checked where they are: no sync for CPU lengths
            return None if bool((lens == steps).all()) else lengths_to_mask(lens.to(device), steps)
        if mask is not None:
            m = check_mask(torch.as_tensor(mask), batch, steps, None)  # checked where it is (no sync on CPU)
            return None if bool(m.all()) else m.to(device)
        return None

    def _run(self, x: Tensor, x_bf: Tensor, hx: Hidden | None, mask: Tensor | None,
             return_gates: bool) -> tuple[Tensor, Hidden, dict[str, dict[str, Tensor]] | None]:
        if x_bf.shape[1] == 0:  # no steps, no math: every path returns an empty output and the initial state
            return self._reference(x_bf, hx, mask, return_gates)  # (torch's fused kernels raise on T=0)
        if self._use_fused(mask, return_gates, x_bf.device, x_bf.shape[0], x_bf.shape[1]):
            fused = super().forward  # type: ignore[misc]  # torch.nn.RNNBase.forward
            if mask is None:
                out, h_n = fused(x, hx)
                return (out if self.batch_first else out.transpose(0, 1)), h_n, None
            initial = hx if hx is not None else self._zeros(x_bf.shape[0], x_bf)
            if x_bf.device.type == "cpu" and (torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")):
                # packed sequences leave oneDNN when training on CPU (9x slower): run equal-activity stretches
                # (also under autocast, which torch's packed CPU kernels ignore: same dtypes as unmasked calls);
                # it reads _flat_weights: refresh them first, as torch's forward does (parametrized weights,
                # functional_call)
                self._flat_weights_now()
                out_bf, h_n = run_fused_segments(self, x_bf, mask, initial)
            else:  # cuDNN runs packed sequences natively; on CPU, packed inference is as fast as padded
                out_bf, h_n = run_fused_masked(fused, x_bf, hx, mask, initial)
            return out_bf, h_n, None
        # cells with input-only gates (minGRU, minLSTM): element-wise linear scans, see rnnkit.scan.parallel
        scan = select_scan(self._cells, self.implementation, x.device, zoneout_rate=self.zoneout,
                           return_gates=return_gates, recurrent_dropout=bool(self.training and self.recurrent_dropout),
                           steps=x_bf.shape[1])
        return self._reference(x_bf, hx, mask, return_gates, scan=scan or reference_scan)

    def _reference(self, x: Tensor, hx: Hidden | None, mask: Tensor | None, return_gates: bool,
                   scan: Any = reference_scan) -> tuple[Tensor, Hidden, dict[str, dict[str, Tensor]] | None]:
        self._bind()
        batch = x.shape[0]
        if mask is not None:  # padding never reaches the math: NaN there would survive ``0 * x`` and lerp
            x = torch.where(mask.unsqueeze(-1).bool(), x, x.new_zeros(()))
        initial = self._zeros(batch, x) if hx is None else hx
        dtype = self._state_dtype(x)  # under autocast hx may be in the autocast dtype: carry the layer's
        parts = tuple(p if p.dtype == dtype else p.to(dtype) for p in (initial if isinstance(initial, tuple)
                                                                         else (initial,)))
        finals: list[tuple[Tensor, ...]] = []
        gates_by_layer: dict[str, dict[str, Tensor]] = {}
        layer_input = x
        for layer in range(self.num_layers):
            if self.training and self.input_dropout:  # one mask for all steps (Gal and Ghahramani 2016)
                keep = 1.0 - self.input_dropout
                layer_input = layer_input * torch.bernoulli(
                    layer_input.new_full((batch, 1, layer_input.shape[-1]), keep)) / keep
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self._cells[index]
                recurrent_mask = None
                if self.training and self.recurrent_dropout:
                    keep = 1.0 - self.recurrent_dropout
                    recurrent_mask = torch.bernoulli(x.new_full((batch, cell.output_size), keep)) / keep
                out, state, gates = scan(
                    cell, layer_input, tuple(p[index] for p in parts), mask=mask, reverse=direction == 1,
                    recurrent_mask=recurrent_mask, zoneout_rate=self.zoneout, training=self.training,
                    return_gates=return_gates)
                outputs.append(out)
                finals.append(state)
                if gates is not None:
                    gates_by_layer[f"l{layer}{'_reverse' if direction else ''}"] = gates
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        if scan is not reference_scan and len(outputs) == 1 and layer_input.requires_grad:
            # the fast scans return a view of their state buffer or a tensor their backward reads: a copy
            # (about 1% of a training step) lets callers edit the output in place (out += residual), as
            # torch.nn's layers and the reference scan allow
            layer_input = layer_input.clone()
        stacked = tuple(torch.stack([f[k] for f in finals], 0) for k in range(len(parts)))
        h_n: Hidden = stacked if len(stacked) > 1 else stacked[0]
        return layer_input, h_n, (gates_by_layer if return_gates else None)

    def _forward_packed(self, packed: PackedSequence, hx: Hidden | None, return_gates: bool) -> Any:
        if self._use_fused(None, return_gates, packed.data.device, int(packed.batch_sizes[0]),
                           len(packed.batch_sizes)):
            if self.stateful and hx is None and self.state is not None:
                hx = self._carried_state(int(packed.batch_sizes[0]), packed.data)
            out, h_n = super().forward(packed, hx)  # type: ignore[misc]
            if self.stateful:
                self.state = tuple(h.detach() for h in h_n) if isinstance(h_n, tuple) else h_n.detach()
            return (out, h_n, None) if return_gates else (out, h_n)
        padded, lengths = pad_packed_sequence(packed, batch_first=True)
        if not self.batch_first:
            padded = padded.transpose(0, 1)
        result = self.forward(padded, hx, lengths=lengths.to(padded.device), return_gates=return_gates)
        out = result[0] if self.batch_first else result[0].transpose(0, 1)
        # repack in the input's own order, as torch.nn does: the output keeps the input's batch_sizes,
        # sorted_indices and unsorted_indices (None stays None), so out.data lines up with packed.data
        # (a residual ``out.data + packed.data``) even where sorting by length again would order ties otherwise
        if packed.sorted_indices is not None:
            out = out.index_select(0, packed.sorted_indices.to(out.device))
            lengths = lengths.index_select(0, packed.sorted_indices.to(lengths.device))
        data = pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=True).data
        repacked = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return (repacked, *result[1:])

    # -- streaming -----------------------------------------------------------------------------
    def step(self, x_t: Tensor, hx: Hidden | None = None) -> tuple[Tensor, Hidden]:
        """Advance one time step: ``x_t`` is ``[B, I]`` (or ``[I]``); returns ``(output [B, P], h)``.

        Running ``step`` T times equals ``forward`` on the T steps. With ``stateful=True`` and no
        ``hx`` the carried state is used and updated.
        """
        if self.bidirectional:
            raise ValueError("step() advances one time step forward; a bidirectional layer needs the whole "
                             "sequence, so call forward() instead")
        time_dim = 1 if self.batch_first else 0
        if x_t.dim() == 1:
            out, h = self.forward(x_t.unsqueeze(0), hx)
            return out.squeeze(0), h
        if x_t.dim() != 2:
            raise ValueError(f"step() expects x_t of shape [batch, {self.input_size}], got {list(x_t.shape)}")
        out, h = self.forward(x_t.unsqueeze(time_dim), hx)
        return out.squeeze(time_dim), h

    def _check_stateful(self) -> None:
        if self.stateful and self.bidirectional:
            raise ValueError(f"{type(self).__name__}(stateful=True) cannot be bidirectional: the backward direction "
                             "of a chunk starts at its last step and needs the steps after it, which the next call "
                             "holds, so its carried state would be wrong; use bidirectional=False to stream, or pass "
                             "the whole sequence to a layer without stateful")

    def _carried_state(self, batch: int, like: Tensor | None = None) -> Hidden:
        assert self.state is not None
        first = self.state[0] if isinstance(self.state, tuple) else self.state
        if first.shape[1] != batch:
            raise ValueError(f"this stateful layer carries state for batch size {first.shape[1]} but got "
                             f"{batch}; call reset_state() before changing the batch size")
        dtype = None if like is None else self._state_dtype(like)
        if like is not None and (first.dtype != dtype or first.device != like.device):
            # the layer was moved or cast (.to(), .double()) since the state was stored: the state follows it
            moved = tuple(p.to(device=like.device, dtype=dtype) for p in
                          (self.state if isinstance(self.state, tuple) else (self.state,)))
            self.state = moved if len(moved) > 1 else moved[0]
        return self.state

    def reset_state(self, samples: Tensor | list[int] | None = None) -> None:
        """Forget the carried state: all of it, or only ``samples`` (indices or a ``[B]`` bool mask)."""
        if samples is None or self.state is None:
            self.state = None
            return
        parts = self.state if isinstance(self.state, tuple) else (self.state,)
        batch = parts[0].shape[1]
        index = torch.as_tensor(samples)
        if not isinstance(samples, Tensor) and index.numel() == 0 and index.dtype != torch.bool:
            return  # an empty selection (no sequence ended): as_tensor([]) is float32, not indices (a bool mask
            # must still cover the batch, as a tensor one must)
        if index.dtype == torch.bool:
            if tuple(index.shape) != (batch,):
                raise ValueError(f"reset_state: a bool mask must have shape [{batch}] (the carried batch size), "
                                 f"got {list(index.shape)}")
        elif index.dtype.is_floating_point or index.dim() > 1:
            raise ValueError(f"reset_state expects sample indices (ints) or a [{batch}] bool mask, "
                             f"got {index.dtype} of shape {list(index.shape)}")
        elif index.numel() and (int(index.min()) < -batch or int(index.max()) >= batch):
            raise ValueError(f"reset_state: sample indices must be in [0, {batch}) (the carried batch size), "
                             f"got {index.tolist()}")
        keep = torch.ones(batch, dtype=torch.bool, device=parts[0].device)
        keep[index.to(keep.device)] = False
        cleared = tuple(torch.where(keep.view(1, -1, 1), p, p.new_zeros(())) for p in parts)  # (NaN * 0 is NaN)
        self.state = cleared if len(cleared) > 1 else cleared[0]

    def extra_repr(self) -> str:
        s = super().extra_repr()  # type: ignore[misc]
        if self.cell_spec not in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
            s += f", cell={getattr(self.cell_spec, '__name__', self.cell_spec)!r}"
        for name in ("input_dropout", "recurrent_dropout", "zoneout"):
            if getattr(self, name):
                s += f", {name}={getattr(self, name)}"
        if self.implementation != "auto":
            s += f", implementation={self.implementation!r}"
        return s + (", stateful=True" if self.stateful else "")


_EXTRA_DOC = """
    rnnkit extras (keyword-only):
        cell: cell name (see ``rnnkit.cells.CELLS``), cell class or factory for every layer and direction.
        cell_options: extra keyword arguments for the cell (e.g. ``{"forget_bias": 1.0}``).
        input_dropout: variational dropout on each layer's input, one mask for all steps.
        recurrent_dropout: variational dropout on ``h_{t-1}`` before the recurrent matmul.
        zoneout: probability that a state unit keeps its previous value (Krueger et al. 2017).
        implementation: ``"auto"``, ``"fused"``, ``"reference"``, or for cells with input-only gates
            (``"mingru"``, ``"minlstm"``) ``"sequential"`` / ``"parallel"`` (see ``rnnkit.scan.parallel``);
            ``"engine"``: the hand-written-backward LSTM engine (``rnnkit.scan.engine``), which
            ``"auto"`` uses for LSTM cells the fused kernel cannot run (peepholes, recurrent dropout,
            zoneout, masks with gaps) and on CPU for ``proj_size`` at batch > 1 from 16 steps on,
            outside autocast (faster than torch's non-oneDNN loop), and for layer-norm LSTM cells.
            ``"triton"``: that engine with each step's element-wise math in one Triton kernel and
            its loops replayed as CUDA graphs (CUDA tensors, ``LSTMCell`` and
            ``LayerNormLSTMCell``, with or without ``proj_size``; ``rnnkit.scan.engine_triton``,
            ``rnnkit.scan.cuda_graph``),
            which ``"auto"`` uses instead of ``"engine"`` on CUDA where triton is installed; on
            GRU cells (``reset_after=True``) the GRU engine of ``rnnkit.scan.engine_gru``, built
            the same way, which ``"auto"`` uses on CUDA for the GRUs cuDNN cannot run.
        stateful: carry the final state into the next call (see ``reset_state``); unidirectional layers only.
"""


class RNN(_RecurrentCore, nn.RNN):
    __doc__ = "Elman RNN layer, a drop-in ``torch.nn.RNN`` with rnnkit's extras.\n" + _EXTRA_DOC

    def __init__(self, *args: Any, cell: CellSpec | None = None, cell_options: dict[str, Any] | None = None,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                 implementation: str = "auto", stateful: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._torch_mode = self.mode
        default = "rnn_tanh" if self.nonlinearity == "tanh" else "rnn_relu"
        self._setup_recurrent(cell or default, cell_options, input_dropout=input_dropout,
                              recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                              implementation=implementation, stateful=stateful, extra_cell_kwargs={})

    def _expected_state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)


class LSTM(_RecurrentCore, nn.LSTM):
    __doc__ = "LSTM layer, a drop-in ``torch.nn.LSTM`` with rnnkit's extras.\n" + _EXTRA_DOC

    def __init__(self, *args: Any, cell: CellSpec | None = None, cell_options: dict[str, Any] | None = None,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                 implementation: str = "auto", stateful: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._torch_mode = "LSTM"
        extra = {"proj_size": self.proj_size} if self.proj_size else {}
        self._setup_recurrent(cell or "lstm", cell_options, input_dropout=input_dropout,
                              recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                              implementation=implementation, stateful=stateful, extra_cell_kwargs=extra)

    def _expected_state_sizes(self) -> tuple[int, ...]:
        return (self.proj_size or self.hidden_size, self.hidden_size)


class GRU(_RecurrentCore, nn.GRU):
    __doc__ = "GRU layer, a drop-in ``torch.nn.GRU`` with rnnkit's extras.\n" + _EXTRA_DOC

    def __init__(self, *args: Any, cell: CellSpec | None = None, cell_options: dict[str, Any] | None = None,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                 implementation: str = "auto", stateful: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._torch_mode = "GRU"
        self._setup_recurrent(cell or "gru", cell_options, input_dropout=input_dropout,
                              recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                              implementation=implementation, stateful=stateful, extra_cell_kwargs={})

    def _expected_state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)


class Recurrent(_RecurrentCore):
    """A recurrent layer for any cell, including your own (reference scan; linear scans for minGRU/minLSTM).

    Write a :class:`rnnkit.cells.RecurrentCell` (parameters in ``__init__``, the math in ``recur``)
    and this layer gives it masks and lengths, reversal, bidirectionality, stacking, initial and
    returned state, streaming ``step`` and stateful mode. The state is a tensor
    ``[L*D, B, size]`` for one-state cells and a tuple of them otherwise.

    Args:
        cell: cell name, class or factory ``(input_size, hidden_size, bias=..., **options)``.
        input_size: features per step.
        hidden_size: the cell's hidden size.
        num_layers: stacked layers.
        bias: passed to the cell.
        batch_first: ``[B, T, I]`` input (the default here; ``torch.nn`` layers default to time-first).
        dropout: dropout between layers.
        bidirectional: run a second stack of cells backwards and concatenate.

    Example:
        >>> layer = Recurrent("layernorm_gru", 8, 16, num_layers=2, bidirectional=True)
        >>> out, h = layer(torch.randn(4, 10, 8), lengths=torch.tensor([10, 7, 3, 0]))
    """

    def __init__(self, cell: CellSpec, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bias: bool = True, batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 cell_options: dict[str, Any] | None = None, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0, implementation: str = "auto",
                 stateful: bool = False) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout = _check_rate("dropout", dropout)
        self._setup_recurrent(cell, cell_options, input_dropout=input_dropout,
                              recurrent_dropout=recurrent_dropout, zoneout=zoneout,
                              implementation=implementation,
                              stateful=stateful, extra_cell_kwargs={})
        if self.implementation == "fused":
            raise ValueError("rnnkit.nn.Recurrent runs the reference scan; use rnnkit.nn.LSTM, GRU or RNN "
                             "for the fused torch.nn kernels")

    @property
    def output_size(self) -> int:
        return self._cells[0].output_size if hasattr(self, "_cells") else self.hidden_size

    def _state_sizes(self) -> tuple[int, ...]:
        return tuple(self._cells[0].state_sizes)

    def extra_repr(self) -> str:
        name = getattr(self.cell_spec, "__name__", self.cell_spec)
        s = (f"{name!r}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
             f"bidirectional={self.bidirectional}, batch_first={self.batch_first}")
        # every option away from its default, as the torch.nn-based layers' repr shows them: a model's
        # printout must tell a stateful, dropped-out or bias-free layer from a plain one
        if not self.bias:
            s += ", bias=False"
        if self.cell_options:
            s += f", cell_options={self.cell_options!r}"
        for key in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
            if getattr(self, key):
                s += f", {key}={getattr(self, key)}"
        if self.implementation != "auto":
            s += f", implementation={self.implementation!r}"
        return s + (", stateful=True" if self.stateful else "")
