"""Custom cells written from docs/core.md ("Writing your own cell"), run through every layer feature.

Each result is compared with an independent plain loop over time that calls the cell one step at a
time with the same weights; malformed cells must fail with one clear line naming the fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rnnkit.nn as rnn
from rnnkit.cells import MinGRUCell, RecurrentCell

D = torch.float64
CORE_MD = Path(__file__).resolve().parents[1] / "docs" / "core.md"


class IndRNNCell(RecurrentCell):
    """IndRNN (Li et al. 2018): ``h_t = relu(W x_t + u * h_{t-1} + b)``. No reset_parameters."""

    gate_names = ("pre_activation",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.weight_ih = torch.nn.Parameter(torch.randn(hidden_size, input_size) * 0.4)
        self.u = torch.nn.Parameter(torch.rand(hidden_size))
        self.bias_ih = torch.nn.Parameter(torch.randn(hidden_size) * 0.1 + 0.2) if bias else None

    def project_input(self, x):
        return F.linear(x, self.weight_ih, self.bias_ih)

    def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
        (h,) = state
        if recurrent_mask is not None:
            h = h * recurrent_mask
        pre = x_proj + self.u * h
        h = torch.relu(pre)
        return h, (h,), ({"pre_activation": pre} if return_gates else None)


class TwoStateCell(RecurrentCell):
    """Two states of different sizes: ``h`` [H] and a memory ``m`` [2H + 1]."""

    gate_names = ("memory",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.memory_size = 2 * hidden_size + 1
        self.weight_im = torch.nn.Parameter(torch.randn(self.memory_size, input_size) * 0.4)
        self.weight_hm = torch.nn.Parameter(torch.randn(self.memory_size, hidden_size) * 0.4)
        self.weight_mh = torch.nn.Parameter(torch.randn(hidden_size, self.memory_size) * 0.4)

    @property
    def state_sizes(self):
        return (self.hidden_size, self.memory_size)

    def project_input(self, x):
        return x @ self.weight_im.T

    def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
        h, m = state
        if recurrent_mask is not None:
            h = h * recurrent_mask
        m = 0.5 * torch.tanh(x_proj + h @ self.weight_hm.T) + 0.5 * m
        h = torch.tanh(m @ self.weight_mh.T)
        return h, (h, m), ({"memory": m} if return_gates else None)


def _loop(cells, x, initial, lengths, num_layers, num_directions):
    """Independent reference: each sequence alone, its real steps only, cell called one step at a time."""
    batch, steps, _ = x.shape
    outputs, finals = [], [[None] * batch for _ in cells]
    for b in range(batch):
        n = int(lengths[b])
        layer_input = x[b, :n]
        for layer in range(num_layers):
            per_direction = []
            for d in range(num_directions):
                k = layer * num_directions + d
                state = tuple(s[k, b:b + 1] for s in initial)
                out = [None] * n
                for t in (range(n - 1, -1, -1) if d else range(n)):
                    y, state = cells[k](layer_input[t:t + 1], state)
                    out[t] = y[0]
                finals[k][b] = state
                per_direction.append(torch.stack(out) if n else layer_input.new_zeros(0, cells[k].output_size))
            layer_input = torch.cat(per_direction, -1)
        padded = x.new_zeros(steps, layer_input.shape[-1])
        padded[:n] = layer_input
        outputs.append(padded)
    states = tuple(torch.stack([torch.cat([finals[k][b][j] for b in range(batch)]) for k in range(len(cells))])
                   for j in range(len(initial)))
    return torch.stack(outputs), states


def _as_tuple(h):
    return h if isinstance(h, tuple) else (h,)


@pytest.mark.parametrize("cell", [IndRNNCell, TwoStateCell])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_custom_cell_layer_equals_a_plain_loop(cell, num_layers, bidirectional, batch_first) -> None:
    torch.manual_seed(0)
    layer = rnn.Recurrent(cell, 3, 4, num_layers, bidirectional=bidirectional, batch_first=batch_first).double()
    nd = 2 if bidirectional else 1
    x = torch.randn(3, 6, 3, dtype=D)
    lengths = torch.tensor([6, 4, 0])
    initial = tuple(torch.randn(num_layers * nd, 3, s, dtype=D) for s in layer.cell(0).state_sizes)
    hx = initial if len(initial) > 1 else initial[0]
    cells = [layer.cell(k // nd, bool(k % nd)) for k in range(num_layers * nd)]
    want_out, want_state = _loop(cells, x, initial, lengths, num_layers, nd)

    out, h_n = layer(x if batch_first else x.transpose(0, 1), hx, lengths=lengths)
    out = out if batch_first else out.transpose(0, 1)
    torch.testing.assert_close(out, want_out, atol=1e-12, rtol=0)
    for got, want in zip(_as_tuple(h_n), want_state, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)

    # left padding: the same real steps at the end of each row
    left = torch.zeros_like(x)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        left[b, 6 - n:], mask[b, 6 - n:] = x[b, :n], True
    out_l, h_l = layer(left if batch_first else left.transpose(0, 1), hx, mask=mask)
    out_l = out_l if batch_first else out_l.transpose(0, 1)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out_l[b, 6 - n:], want_out[b, :n], atol=1e-12, rtol=0)
        assert not out_l[b, :6 - n].any()
    for got, want in zip(_as_tuple(h_l), want_state, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)

    _, _, gates = layer(x if batch_first else x.transpose(0, 1), hx, lengths=lengths, return_gates=True)
    assert set(gates) == {f"l{k // nd}{'_reverse' if k % nd else ''}" for k in range(num_layers * nd)}


@pytest.mark.parametrize("cell", [IndRNNCell, TwoStateCell])
def test_custom_cell_streams_in_chunks_and_gradchecks(cell) -> None:
    torch.manual_seed(0)
    layer = rnn.Recurrent(cell, 3, 4, num_layers=2).double()
    stream = rnn.Recurrent(cell, 3, 4, num_layers=2, stateful=True).double()
    stream.load_state_dict(layer.state_dict())
    x = torch.randn(2, 9, 3, dtype=D)
    lengths = torch.tensor([9, 5])
    whole, h_n = layer(x, lengths=lengths)
    first = stream(x[:, :4], lengths=torch.tensor([4, 4]))[0]
    second = stream(x[:, 4:], lengths=torch.tensor([5, 1]))[0]
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-12, rtol=0)
    for got, want in zip(_as_tuple(stream.state), _as_tuple(h_n), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)

    small = rnn.Recurrent(cell, 3, 2, bidirectional=True).double()
    xs = torch.randn(2, 3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: small(v, lengths=torch.tensor([3, 2]))[0], (xs,))


@pytest.mark.parametrize("cell", [IndRNNCell, TwoStateCell])
def test_zoneout_and_dropouts_train_versus_eval(cell) -> None:
    torch.manual_seed(0)
    layer = rnn.Recurrent(cell, 3, 4, num_layers=2, dropout=0.3, input_dropout=0.2, recurrent_dropout=0.5,
                          zoneout=0.3).double().eval()
    x = torch.randn(2, 5, 3, dtype=D)
    layer_input = x
    for k in range(2):  # at inference: no dropout, zoneout is the expectation
        c = layer.cell(k)
        state, outs = c.initial_state(2, dtype=D), []
        for t in range(5):
            _, new = c(layer_input[:, t], state)
            state = tuple(0.3 * o + 0.7 * n for o, n in zip(state, new))
            outs.append(state[0])
        layer_input = torch.stack(outs, 1)
    torch.testing.assert_close(layer(x)[0], layer_input, atol=1e-12, rtol=0)
    layer.train()
    torch.manual_seed(1)
    a = layer(x)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(layer(x)[0], a)
    assert not torch.allclose(a, layer_input)


# -- defects ---------------------------------------------------------------------------------------

def _doc_namespace() -> dict:
    text = CORE_MD.read_text(encoding="utf-8")
    section = text.split("## Writing your own cell", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    ns: dict = {"__name__": "core_md"}
    exec(compile(block, "docs/core.md", "exec"), ns)
    return ns


def test_docs_cell_example_runs_and_wraps_in_bidirectional() -> None:
    ns = _doc_namespace()
    cell = ns["MinimalGatedCell"]
    assert ns["out"].shape == (4, 10, 128)
    # Bidirectional re-initialises its backward copy: it called cell.reset_parameters(), which a cell written
    # as the docs show does not have (AttributeError)
    wrapped = rnn.Bidirectional(rnn.Recurrent(cell, 32, 16))
    assert not torch.equal(wrapped.forward_layer.weight_ih_l0, wrapped.backward_layer.weight_ih_l0)
    out, (h_f, h_b) = wrapped(torch.randn(2, 5, 32), lengths=torch.tensor([5, 3]))
    assert out.shape == (2, 5, 32) and h_f.shape == h_b.shape == (1, 2, 16)
    layer = rnn.Recurrent(IndRNNCell, 3, 4, num_layers=2, bidirectional=True)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.reset_parameters()  # the cell's own initialisation again (rebuilt from its factory)
    after = layer.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before if not k.startswith("u_"))
    assert all(bool(((after[k] >= 0) & (after[k] <= 1)).all()) for k in after if k.startswith("u_"))


class _DropoutCell(RecurrentCell):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.lin = torch.nn.Linear(input_size, hidden_size)
        self.drop = torch.nn.Dropout(0.5)
        self.register_buffer("scale", torch.full((hidden_size,), 0.5), persistent=False)

    def project_input(self, x):
        return self.lin(x)

    def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
        (h,) = state
        h = torch.tanh(self.drop(x_proj) + h) * self.scale
        return h, (h,), None


def test_eval_and_train_reach_the_cells() -> None:
    layer = rnn.Recurrent(_DropoutCell, 3, 4, num_layers=2).eval()
    assert not layer.cell(1).training and not layer.cell(1).drop.training
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(layer(x)[0], layer(x)[0], atol=0, rtol=0)  # eval: the cell's dropout is off
    layer.train()
    assert layer.cell(0).training and layer.cell(0).drop.training


def test_non_persistent_cell_buffers_stay_out_of_the_state_dict() -> None:
    layer = rnn.Recurrent(_DropoutCell, 3, 4)
    assert "scale_l0" not in layer.state_dict()
    assert set(layer.state_dict()) == {"lin_weight_l0", "lin_bias_l0"}
    assert torch.equal(layer.scale_l0, torch.full((4,), 0.5))
    layer.double()
    assert layer.cell(0).scale.dtype == torch.float64


def _cell(**overrides):
    class MyCell(RecurrentCell):
        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__()
            self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
            self.w = torch.nn.Parameter(torch.randn(hidden_size, input_size))

        def project_input(self, x):
            return x @ self.w.T

        def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
            (h,) = state
            h = torch.tanh(x_proj + h)
            return h, (h,), None

    for name, value in overrides.items():
        setattr(MyCell, name, value)
    return MyCell


def _returns(make):
    def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
        h = torch.tanh(x_proj + state[0])
        return make(h)
    return recur


class _NoOutputSize(RecurrentCell):
    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.w = torch.nn.Parameter(torch.randn(hidden_size, input_size))


MALFORMED = {
    "two_values": (dict(recur=_returns(lambda h: (h, (h,)))), {}, r"recur must return \(output, new_state, gates\)"),
    "bare_state": (dict(recur=_returns(lambda h: (h, h, None))), {}, r"as the new state.*tuple of 1 tensor"),
    "extra_state": (dict(recur=_returns(lambda h: (h, (h, h), None))), {}, r"2 state tensors.*state_sizes"),
    "state_shape": (dict(recur=_returns(lambda h: (h, (h[:, :2],), None))), {},
                    r"state\[0\] of shape \[2, 2\].*\[2, 5\]"),
    "output_shape": (dict(recur=_returns(lambda h: (h[:, :3], (h,), None))), {},
                     r"output of shape \[2, 3\].*output_size"),
    "first_state_not_output": (dict(state_sizes=property(lambda s: (s.hidden_size + 1,))), {},
                               r"state_sizes\[0\] must equal output_size"),
    "state_sizes_depend_on_input": (dict(state_sizes=property(lambda s: (s.hidden_size, s.input_size)),
                                         recur=_returns(lambda h: (h, (h, h), None))), {"num_layers": 2},
                                    r"in layer 0 but .* in layer 1.*must not depend on input_size"),
    "no_project_input": (dict(project_input=RecurrentCell.project_input), {}, r"MyCell must implement project_input"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_cells_fail_with_one_clear_line(name) -> None:
    overrides, kwargs, message = MALFORMED[name]
    with pytest.raises(ValueError, match=message) as info:
        rnn.Recurrent(_cell(**overrides), 4, 5, **kwargs)(torch.randn(2, 3, 4))
    assert "\n" not in str(info.value)


def test_cell_without_output_size_or_bias_argument_says_what_to_add() -> None:
    with pytest.raises(ValueError, match=r"must set self.output_size in __init__"):
        rnn.Recurrent(_NoOutputSize, 4, 5)
    with pytest.raises(TypeError, match=r"'bias'.*accept"):
        rnn.Recurrent(lambda i, h: _cell()(i, h), 4, 5)


def test_a_cell_called_directly_checks_what_recur_returns() -> None:
    cell = _cell(recur=_returns(lambda h: (h, (h[:, :2],), None)))(4, 5)
    with pytest.raises(ValueError, match=r"state\[0\] of shape \[2, 2\]"):
        cell(torch.randn(2, 4))


class _TanhMinGRU(MinGRUCell):
    """A researcher's variant: minGRU with a tanh candidate, written in ``recur`` only."""

    def recur(self, x_proj, state, *, recurrent_mask=None, return_gates=False):
        (h,) = state
        k_z, k_h = x_proj.chunk(2, -1)
        z = torch.sigmoid(k_z)
        h = (1 - z) * h + z * torch.tanh(k_h)
        return h, (h,), ({"update": z} if return_gates else None)


def test_linear_cell_subclass_that_rewrites_recur_runs_its_own_math() -> None:
    # "auto" picked the sequential linear scan, which runs the parent's scan_terms: silently other numbers
    torch.manual_seed(0)
    layer = rnn.Recurrent(_TanhMinGRU, 3, 4).double()
    x = torch.randn(2, 6, 3, dtype=D)
    want, _ = _loop([layer.cell(0)], x, (torch.zeros(1, 2, 4, dtype=D),), torch.tensor([6, 6]), 1, 1)
    torch.testing.assert_close(layer(x)[0], want, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="overrides recur"):
        rnn.Recurrent(_TanhMinGRU, 3, 4, implementation="sequential").double()(x)


@pytest.mark.parametrize("cell", [TwoStateCell, "lstm", "rnn_relu"])
def test_gates_of_an_empty_sequence_have_the_names_and_sizes_of_a_long_one(cell) -> None:
    layer = rnn.Recurrent(cell, 3, 4)
    x = torch.randn(2, 3, 3)
    long = layer(x, return_gates=True)[2]["l0"]
    empty = layer(x[:, :0], return_gates=True)[2]["l0"]
    assert {k: (v.shape[0], v.shape[2]) for k, v in empty.items()} == {
        k: (v.shape[0], v.shape[2]) for k, v in long.items()}
    assert all(v.shape[1] == 0 for v in empty.values())


def test_a_cell_registered_under_a_capitalised_or_hyphenated_name_is_found() -> None:
    # register_cell stored the name as given, make_cell looks up lower-case with "_": "unknown cell 'IndRNN';
    # choose one of IndRNN, ..."
    from rnnkit.cells import CELLS, register_cell
    from rnnkit.nn.factory import recurrent_layer

    try:
        register_cell("IndRNN-Review", IndRNNCell)
        for name in ("IndRNN-Review", "indrnn_review"):
            assert isinstance(rnn.Recurrent(name, 3, 4).cell(0), IndRNNCell)
            assert isinstance(recurrent_layer(name, 3, 4).cell(0), IndRNNCell)
        with pytest.raises(TypeError, match="pass its class"):
            register_cell("bad", IndRNNCell(3, 4))
    finally:
        CELLS.pop("indrnn_review", None)
        CELLS.pop("IndRNN-Review", None)
