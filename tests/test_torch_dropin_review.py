"""A torch.nn user's script with ``torch.nn.LSTM/GRU/RNN`` swapped for ``rnnkit.nn``'s: the same numbers.

Covers what such scripts touch beyond a plain forward: parametrizations and pruning on
``weight_hh_l0`` (torch refreshes ``_flat_weights``), ``functional_call``, ``PackedSequence`` outputs,
``torch.jit.trace``, copies and state dicts, on the fused kernel and on the engines that ``"auto"``
picks instead of it on CPU (projected LSTMs from 16 steps at batch > 1, float32 GRUs with
``hidden_size >= 256``).
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch.nn.utils import parametrize, prune
from torch.nn.utils.parametrizations import spectral_norm, weight_norm
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rnn

# name -> (class, constructor keywords, steps, batch); "engine" configurations run rnnkit's engines on CPU
CONFIGS = {
    "lstm": ("LSTM", {"input_size": 4, "hidden_size": 5, "num_layers": 2, "bidirectional": True}, 7, 3),
    "lstm_proj_engine": ("LSTM", {"input_size": 4, "hidden_size": 6, "proj_size": 3, "num_layers": 2}, 20, 3),
    "gru": ("GRU", {"input_size": 4, "hidden_size": 5, "num_layers": 2}, 7, 3),
    "gru_engine": ("GRU", {"input_size": 4, "hidden_size": 256}, 10, 4),
    "rnn": ("RNN", {"input_size": 4, "hidden_size": 5, "num_layers": 2, "nonlinearity": "relu"}, 7, 3),
}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", message=".*projections is not supported with oneDNN.*")


def _pair(name: str, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    kind, kwargs, steps, batch = CONFIGS[name]
    torch.manual_seed(0)
    reference = getattr(torch.nn, kind)(**kwargs, dtype=dtype)
    layer = getattr(rnn, kind)(**kwargs, dtype=dtype)
    layer.load_state_dict(reference.state_dict(), strict=True)
    return reference, layer, torch.randn(steps, batch, kwargs["input_size"], dtype=dtype)


def _diff(a: object, b: object) -> float:
    if isinstance(a, (tuple, list)):
        return max(_diff(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, PackedSequence):
        assert isinstance(b, PackedSequence)
        return _diff(a.data, b.data)
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return float((a.double() - b.double()).abs().max())


def _packed_reference(reference: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple:
    out, h = reference(pack_padded_sequence(x, lengths, enforce_sorted=False))
    return pad_packed_sequence(out, total_length=x.shape[0])[0], h


# -- defects found in this review (each test failed before the fix) ----------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_lengths_in_training_reads_parametrized_weights(kind: str) -> None:
    """lengths= on CPU with gradients runs torch's kernel stretch by stretch on ``_flat_weights``, which
    were never refreshed: after weight_norm's ``g`` changed the output was off by 0.1 (silently)."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, kind)(4, 5, 2, bidirectional=True, dtype=torch.float64)
    layer = getattr(rnn, kind)(4, 5, 2, bidirectional=True, dtype=torch.float64)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 2])
    weight_norm(reference, "weight_hh_l0")
    weight_norm(layer, "weight_hh_l0")
    with torch.no_grad():
        reference.parametrizations.weight_hh_l0.original0.mul_(2)
        layer.parametrizations.weight_hh_l0.original0.mul_(2)
    assert _diff(_packed_reference(reference, x, lengths), layer(x, lengths=lengths)) < 1e-10
    # and pruning, whose mask changes the weight the same way
    prune.l1_unstructured(reference, "weight_ih_l0", amount=0.5)
    prune.l1_unstructured(layer, "weight_ih_l0", amount=0.5)
    assert _diff(_packed_reference(reference, x, lengths), layer(x, lengths=lengths)) < 1e-10


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_functional_call_with_lengths_uses_the_given_weights(kind: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torch.nn, kind)(4, 5, 2, bidirectional=True, dtype=torch.float64)
    layer = getattr(rnn, kind)(4, 5, 2, bidirectional=True, dtype=torch.float64)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 2])
    params = {k: v * 1.5 for k, v in reference.named_parameters()}
    out, _ = torch.func.functional_call(reference, params, (pack_padded_sequence(x, lengths, enforce_sorted=False),))
    got, _ = torch.func.functional_call(layer, params, (x,), {"lengths": lengths})
    assert _diff(pad_packed_sequence(out, total_length=6)[0], got) < 1e-10
    # the layer's own weights are back afterwards
    assert _diff(_packed_reference(reference, x, lengths), layer(x, lengths=lengths)) < 1e-10


@pytest.mark.parametrize("name", ["lstm_proj_engine", "gru_engine"])
def test_engine_paths_read_parametrizations_as_torch_does(name: str) -> None:
    """spectral_norm advances its power iteration on each read of the weight: torch's forward reads it
    twice, the engines read it once, so the outputs drifted apart (3e-5 in float32 after one call)."""
    dtype = torch.float64 if name == "lstm_proj_engine" else torch.float32  # "auto" runs float32 GRUs only there
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    reference, layer, x = _pair(name, dtype)
    reference.train()
    layer.train()
    torch.manual_seed(1)
    spectral_norm(reference, "weight_hh_l0")
    torch.manual_seed(1)
    spectral_norm(layer, "weight_hh_l0")
    for _ in range(3):
        assert _diff(reference(x), layer(x)) < tol
    sn_ref = reference.parametrizations.weight_hh_l0[0]
    sn = layer.parametrizations.weight_hh_l0[0]
    assert _diff(sn_ref._u, sn._u) < tol


class _CountReads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self.reads += 1
        return weight


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_parametrized_weight_is_read_as_often_as_torch_reads_it(name: str) -> None:
    reference, layer, x = _pair(name)
    counters = []
    for module in (reference, layer):
        counter = _CountReads()
        parametrize.register_parametrization(module, "weight_hh_l0", counter)
        counters.append(counter)
    for grad in (True, False):
        for counter in counters:
            counter.reads = 0
        with torch.set_grad_enabled(grad):
            assert _diff(reference(x), layer(x)) < 1e-5
        assert counters[0].reads == counters[1].reads, (grad, counters[0].reads, counters[1].reads)


@pytest.mark.parametrize("sorted_indices", [None, [3, 1, 2, 0]])
def test_packed_output_keeps_the_input_order_on_the_engine(sorted_indices: list[int] | None) -> None:
    """torch returns a PackedSequence with the input's sorted_indices (None for enforce_sorted=True);
    the engine path re-sorted by length: tensor([0, 1, 2, 3]) for a sorted input, and for ties another
    order than the input's, so ``out.data + packed.data`` (a residual) mixed up sequences."""
    reference, layer, _ = _pair("gru_engine")
    torch.manual_seed(2)
    x = torch.randn(10, 4, 4)
    lengths = torch.tensor([10, 10, 10, 10])
    if sorted_indices is None:
        packed = pack_padded_sequence(x, lengths)
    else:
        order = torch.tensor(sorted_indices)
        data = pack_padded_sequence(x[:, order], lengths).data
        packed = PackedSequence(data, pack_padded_sequence(x, lengths).batch_sizes, order, order.argsort())
    expected, h_expected = reference(packed)
    got, h = layer(packed)
    assert (got.sorted_indices is None) == (expected.sorted_indices is None)
    if expected.sorted_indices is not None:
        assert torch.equal(got.sorted_indices, expected.sorted_indices)
        assert torch.equal(got.unsorted_indices, expected.unsorted_indices)
    assert torch.equal(got.batch_sizes, expected.batch_sizes)
    assert _diff(expected.data, got.data) < 1e-5
    assert _diff(expected.data + packed.data.sum(-1, keepdim=True), got.data + packed.data.sum(-1, keepdim=True)) < 1e-5
    assert _diff(h_expected, h) < 1e-5


def test_packed_unsorted_lengths_on_the_engine_round_trip() -> None:
    reference, layer, _ = _pair("lstm_proj_engine", torch.float64)
    x = torch.randn(20, 4, 4, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([12, 20, 5, 12]), enforce_sorted=False)
    expected, h_expected = reference(packed)
    got, h = layer(packed)
    assert torch.equal(got.sorted_indices, expected.sorted_indices)
    assert _diff(expected, got) < 1e-10 and _diff(h_expected, h) < 1e-10
    padded, lengths = pad_packed_sequence(got)
    assert lengths.tolist() == [12, 20, 5, 12]
    assert _diff(pad_packed_sequence(expected)[0], padded) < 1e-10


@pytest.mark.parametrize("name", ["lstm_proj_engine", "gru_engine"])
def test_jit_trace_of_configurations_auto_runs_on_an_engine(name: str) -> None:
    """torch.jit.trace of a projected LSTM (16+ steps) or a GRU with hidden_size >= 256 stopped with
    'unsupported input list type: Scalar?' from the engine's autograd.Function."""
    reference, layer, x = _pair(name)
    traced = torch.jit.trace(layer, (x,), check_trace=False)
    other = torch.randn_like(x)
    assert _diff(reference(other), traced(other)) < 1e-5


def test_jit_trace_of_rnnkit_only_cells_runs_the_reference_scan() -> None:
    layer = rnn.LSTM(4, 6, cell="peephole_lstm")
    x = torch.randn(12, 3, 4)
    traced = torch.jit.trace(layer, (x,), check_trace=False)
    other = torch.randn_like(x)
    assert _diff(layer(other), traced(other)) < 1e-5
    explicit = rnn.LSTM(4, 6, cell="peephole_lstm", implementation="engine")
    with pytest.raises(ValueError, match="torch.jit.trace"):
        torch.jit.trace(explicit, (x,), check_trace=False)


# -- what already held (kept as regression tests) ------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pruning_and_weight_norm_follow_torch(name: str, mode: str) -> None:
    reference, layer, x = _pair(name)
    reference.train(mode == "train")
    layer.train(mode == "train")
    initial = copy.deepcopy(reference.state_dict())
    layer(x)  # weights cached at inference must not survive the edits below
    prune.l1_unstructured(reference, "weight_hh_l0", amount=0.5)
    prune.l1_unstructured(layer, "weight_hh_l0", amount=0.5)
    assert _diff(reference(x), layer(x)) < 1e-5
    with torch.no_grad():
        reference.weight_hh_l0_mask.zero_()
        layer.weight_hh_l0_mask.zero_()
    assert _diff(reference(x), layer(x)) < 1e-5
    prune.remove(reference, "weight_hh_l0")
    prune.remove(layer, "weight_hh_l0")
    assert list(reference.state_dict()) == list(layer.state_dict())
    reference.load_state_dict(initial)  # the pruned weight is zero: weight_norm of it is NaN in both
    layer.load_state_dict(initial)
    weight_norm(reference, "weight_hh_l0")
    weight_norm(layer, "weight_hh_l0")
    with torch.no_grad():
        reference.parametrizations.weight_hh_l0.original0.mul_(2)
        layer.parametrizations.weight_hh_l0.original0.mul_(2)
    assert _diff(reference(x), layer(x)) < 1e-5
    reference.train()
    layer.train()
    reference(x)[0].sum().backward()
    layer(x)[0].sum().backward()
    assert _diff(reference.parametrizations.weight_hh_l0.original1.grad,
                 layer.parametrizations.weight_hh_l0.original1.grad) < 1e-4
    assert list(reference.state_dict()) == list(layer.state_dict())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_frozen_weights_get_no_gradient(name: str) -> None:
    reference, layer, x = _pair(name)
    for module in (reference, layer):
        module.weight_ih_l0.requires_grad_(False)
        module.bias_hh_l0.requires_grad_(False)
    reference(x)[0].square().sum().backward()
    layer(x)[0].square().sum().backward()
    for (pname, a), b in zip(reference.named_parameters(), layer.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), pname
        if a.grad is not None:
            assert _diff(a.grad, b.grad) < 1e-4, pname


@pytest.mark.parametrize("name", list(CONFIGS))
def test_copies_state_dicts_and_flat_weights(name: str) -> None:
    reference, layer, x = _pair(name)
    assert [n for n, _ in reference.named_parameters()] == [n for n, _ in layer.named_parameters()]
    assert {k: v.shape for k, v in reference.state_dict().items()} == {k: v.shape for k, v in layer.state_dict().items()}
    reference.load_state_dict(layer.state_dict(), strict=True)
    assert layer._flat_weights_names == reference._flat_weights_names
    assert all(w is getattr(layer, n) for w, n in zip(layer._flat_weights, layer._flat_weights_names, strict=True))
    assert [[tuple(w.shape) for w in ws] for ws in layer.all_weights] == \
        [[tuple(w.shape) for w in ws] for ws in reference.all_weights]
    layer.flatten_parameters()
    expected = reference(x)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)), torch.load(buffer, weights_only=False)):
        assert type(clone) is type(layer)
        assert _diff(expected, clone(x)) < 1e-5
        with torch.no_grad():
            clone.weight_hh_l0.add_(1.0)
        assert _diff(expected, clone(x)) > 1e-3  # the clone's cells follow its own weights
    assert _diff(expected, layer(x)) < 1e-5


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_dtype_casts_and_repr(kind: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torch.nn, kind)(4, 5, 2, dropout=0.5, bidirectional=True)
    layer = getattr(rnn, kind)(4, 5, 2, dropout=0.5, bidirectional=True)
    layer.load_state_dict(reference.state_dict())
    assert repr(layer) == repr(reference)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        a, b = reference.to(dtype).eval(), layer.to(dtype).eval()
        x = torch.randn(7, 3, 4, dtype=dtype)
        out_a, out_b = a(x), b(x)
        assert out_b[0].dtype == dtype and layer._flat_weights[0].dtype == dtype
        assert _diff(out_a, out_b) == 0.0


def test_wrong_hx_raises_value_error_where_torch_raises() -> None:
    layer = rnn.LSTM(4, 5, 2)
    x = torch.randn(6, 3, 4)
    for hx in (torch.zeros(2, 3, 5), (torch.zeros(1, 3, 5), torch.zeros(2, 3, 5)), (torch.zeros(2, 3, 5),),
               (torch.zeros(2, 3, 5),) * 3):
        with pytest.raises(ValueError):
            layer(x, hx)
    with pytest.raises(ValueError, match="2-D"):
        layer(torch.randn(6, 4), (torch.zeros(2, 1, 5), torch.zeros(2, 1, 5)))
