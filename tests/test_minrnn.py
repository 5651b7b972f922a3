"""minGRU / minLSTM (Feng et al. 2024) and the element-wise linear scans in rnnkit.scan.parallel.

Oracles: the paper's equations written out here with explicit weights, and the reference scan
(step by step through ``recur``). The parallel (log-space) and sequential scans must agree with
both, forward and backward, under initial states, masks of every padding side, and reversal.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import rnnkit.nn as rnn
from rnnkit.cells import CELLS, LinearRecurrentCell, MinGRUCell, MinLSTMCell, make_cell
from rnnkit.cells.minrnn import g, log_g
from rnnkit.scan import (
    engine_scan,
    linear_scan_log,
    linear_scan_sequential,
    parallel_scan,
    reference_scan,
    select_scan,
    sequential_scan,
)
from rnnkit.scan.engine_gru import gru_engine_scan

I, H, B, T = 3, 5, 4, 7
CELL_CLASSES = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}
SCANS = {"reference": reference_scan, "sequential": sequential_scan, "parallel": parallel_scan}


def _mask(kind: str, batch: int = B, steps: int = T) -> torch.Tensor | None:
    lengths = torch.tensor([steps, 4, 1, 0, 6, 2][:batch])
    ar = torch.arange(steps)
    if kind == "none":
        return None
    if kind == "right":
        return ar < lengths[:, None]
    if kind == "left":
        return ar >= (steps - lengths)[:, None]
    if kind == "holes":
        m = torch.rand(batch, steps) > 0.4
        m[0] = True
        return m
    raise AssertionError(kind)


def _run(scan_name: str, cell: LinearRecurrentCell, x: torch.Tensor, h0: torch.Tensor,
         mask: torch.Tensor | None, reverse: bool) -> list[torch.Tensor]:
    """Outputs, final state and the gradients of a loss touching both."""
    cell.zero_grad()
    xx = x.clone().requires_grad_()
    hh = h0.clone().requires_grad_()
    out, (h_n,), _ = SCANS[scan_name](cell, xx, (hh,), mask=mask, reverse=reverse)
    weights = torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)
    (out.pow(2).sum() + (h_n * weights).sum()).backward()
    assert xx.grad is not None and hh.grad is not None
    grads = [p.grad.clone() for p in cell.parameters() if p.grad is not None]
    return [out.detach(), h_n.detach(), xx.grad, hh.grad, *grads]


# -- the cells -------------------------------------------------------------------------------
def test_g_and_log_g() -> None:
    x = torch.tensor([-50.0, -2.0, -1e-3, 0.0, 1e-3, 3.0], dtype=torch.float64)
    expected = torch.tensor([torch.sigmoid(torch.tensor(-50.0, dtype=torch.float64)).item(),
                             1 / (1 + 2.718281828459045**2), torch.sigmoid(torch.tensor(-1e-3)).item(),
                             0.5, 0.501, 3.5], dtype=torch.float64)
    torch.testing.assert_close(g(x), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(log_g(x), torch.log(g(x)), rtol=1e-12, atol=1e-12)
    assert bool((g(x) > 0).all())


def test_mingru_step_matches_paper_equations() -> None:
    cell = MinGRUCell(I, H).double()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    w_z, w_h = cell.weight_ih.chunk(2)
    assert cell.bias_ih is not None
    b_z, b_h = cell.bias_ih.chunk(2)
    z = torch.sigmoid(x @ w_z.T + b_z)
    pre = x @ w_h.T + b_h
    h_tilde = torch.where(pre >= 0, pre + 0.5, torch.sigmoid(pre))
    out, (state,), gates = cell(x, h, return_gates=True)
    torch.testing.assert_close(out, (1 - z) * h + z * h_tilde, rtol=0, atol=1e-14)
    torch.testing.assert_close(gates["update"], z)
    assert state is out


def test_minlstm_step_matches_paper_equations() -> None:
    cell = MinLSTMCell(I, H, candidate_activation="linear").double()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    w_f, w_i, w_h = cell.weight_ih.chunk(3)
    assert cell.bias_ih is not None
    b_f, b_i, b_h = cell.bias_ih.chunk(3)
    f = torch.sigmoid(x @ w_f.T + b_f)
    i = torch.sigmoid(x @ w_i.T + b_i)
    h_tilde = x @ w_h.T + b_h
    expected = f / (f + i) * h + i / (f + i) * h_tilde
    out, _ = cell(x, h)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("activation", ["g", "linear"])
def test_log_space_terms_are_logs_of_linear_terms(name: str, activation: str) -> None:
    cell = CELL_CLASSES[name](I, H, candidate_activation=activation).double()
    x_proj = cell.project_input(torch.randn(B, T, I, dtype=torch.float64) * 4)
    a, b, none = cell.scan_terms(x_proj)
    log_a, log_b, sign = cell.scan_terms(x_proj, log_space=True)
    assert none is None
    torch.testing.assert_close(log_a.exp(), a, rtol=1e-12, atol=0)
    signed = log_b.exp() * (1 if sign is None else sign)
    torch.testing.assert_close(signed, b, rtol=1e-12, atol=1e-300)
    assert (sign is None) == (activation == "g")
    assert bool(((a > 0) & (a < 1)).all())


def test_recur_matches_scan_terms() -> None:
    cell = MinLSTMCell(I, H).double()
    x_proj = cell.project_input(torch.randn(B, I, dtype=torch.float64))
    h = torch.randn(B, H, dtype=torch.float64)
    a, b, _ = cell.scan_terms(x_proj)
    out, _, _ = cell.recur(x_proj, (h,))
    torch.testing.assert_close(out, a * h + b, rtol=0, atol=1e-14)


def test_registered_and_buildable() -> None:
    assert CELLS["mingru"] is MinGRUCell and CELLS["minlstm"] is MinLSTMCell
    cell = make_cell("MinLSTM", I, H, candidate_activation="linear")
    assert isinstance(cell, MinLSTMCell) and cell.state_sizes == (H,)
    assert isinstance(rnn.recurrent_layer("mingru", I, H), rnn.Recurrent)
    with pytest.raises(ValueError, match="candidate_activation must be one of"):
        MinGRUCell(I, H, candidate_activation="tanh")


# -- scans agree: parallel == sequential == reference -------------------------------------------
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("activation", ["g", "linear"])
@pytest.mark.parametrize("mask_kind", ["none", "right", "left", "holes"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("initial", ["zero", "random"])
def test_scans_agree_float64(name: str, activation: str, mask_kind: str, reverse: bool, initial: str) -> None:
    cell = CELL_CLASSES[name](I, H, candidate_activation=activation).double()
    x = torch.randn(B, T, I, dtype=torch.float64) * 2
    h0 = torch.zeros(B, H, dtype=torch.float64) if initial == "zero" else torch.randn(B, H, dtype=torch.float64)
    mask = _mask(mask_kind)
    expected = _run("reference", cell, x, h0, mask, reverse)
    for scan_name in ("sequential", "parallel"):
        got = _run(scan_name, cell, x, h0, mask, reverse)
        assert len(got) == len(expected)
        for k, (e, g_) in enumerate(zip(expected, got)):
            torch.testing.assert_close(g_, e, rtol=0, atol=1e-10, msg=lambda m, k=k, s=scan_name: f"{s} item {k}: {m}")


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("mask_kind", ["none", "left"])
def test_scans_agree_float32(name: str, mask_kind: str) -> None:
    cell = CELL_CLASSES[name](I, H)
    x, h0 = torch.randn(B, T, I), torch.randn(B, H)
    mask = _mask(mask_kind)
    expected = _run("reference", cell, x, h0, mask, True)
    for scan_name in ("sequential", "parallel"):
        for e, got in zip(expected, _run(scan_name, cell, x, h0, mask, True)):
            torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-5)


def test_masked_rows_keep_initial_state_and_zero_outputs() -> None:
    cell = MinGRUCell(I, H).double()
    x, h0 = torch.randn(B, T, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    mask = _mask("right")
    assert mask is not None and not bool(mask[3].any())
    for scan in (sequential_scan, parallel_scan):
        out, (h_n,), _ = scan(cell, x, (h0,), mask=mask)
        torch.testing.assert_close(h_n[3], h0[3], rtol=0, atol=0)
        assert bool((out[~mask] == 0).all())


def test_zero_length_sequence() -> None:
    cell = MinLSTMCell(I, H)
    h0 = torch.randn(B, H)
    for scan in (sequential_scan, parallel_scan):
        out, (h_n,), _ = scan(cell, torch.randn(B, 0, I), (h0,))
        assert out.shape == (B, 0, H) and h_n is h0


def test_recurrent_dropout_mask_on_sequential_matches_reference() -> None:
    cell = MinGRUCell(I, H).double()
    x, h0 = torch.randn(B, T, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    drop = (torch.rand(B, H) > 0.5).double() / 0.5
    ref, (ref_h,), _ = reference_scan(cell, x, (h0,), mask=_mask("left"), recurrent_mask=drop)
    seq, (seq_h,), _ = sequential_scan(cell, x, (h0,), mask=_mask("left"), recurrent_mask=drop)
    torch.testing.assert_close(seq, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(seq_h, ref_h, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="log-space scan cannot represent"):
        parallel_scan(cell, x, (h0,), recurrent_mask=drop)


def test_log_scan_is_stable_on_long_saturated_sequences() -> None:
    """Products of 4000 gates underflow (a naive cumprod gives 0 / NaN); the log form does not."""
    torch.manual_seed(1)
    steps, batch, hidden = 4000, 2, 8
    log_a = -F.softplus(torch.randn(batch, steps, hidden) * 6)  # many gates near 0 and near 1
    b = torch.rand(batch, steps, hidden) + 0.01
    h0 = torch.randn(batch, hidden)
    assert float(log_a.sum(1).min()) < -1000  # the running product is far below float32's range
    got = linear_scan_log(log_a, b.log(), h0)
    expected = linear_scan_sequential(log_a.double().exp(), b.double(), h0.double())
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got.double(), expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_parallel_scan_keeps_float32_precision_under_huge_pre_activations(name: str) -> None:
    """|log a_t| in the hundreds once cost every later step of its block its precision (1e-3 relative at T=5000)."""
    torch.manual_seed(0)
    fast = rnn.Recurrent(name, 8, 16, batch_first=True, implementation="parallel")
    exact = rnn.Recurrent(name, 8, 16, batch_first=True, implementation="sequential").double()
    exact.load_state_dict(fast.state_dict())
    x = torch.randn(2, 5000, 8) * 1000
    with torch.no_grad():
        expected = exact(x.double())[0]
        error = (fast(x)[0].double() - expected).abs().max() / expected.abs().max()
    assert float(error) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_log_a_floor_keeps_half_precision_resets_small(dtype: torch.dtype) -> None:
    """A gate that resets a state of 1000 (log a = -200) leaves h_2 = b = 0.01; the dtype's own floor kept 7x that."""
    log_a = torch.tensor([[[0.0], [-200.0]]], dtype=dtype)
    b = torch.tensor([[[1000.0], [0.01]]], dtype=dtype)
    h = linear_scan_log(log_a, b.log(), torch.zeros(1, 1, dtype=dtype))
    assert abs(float(h[0, 1, 0]) - 0.01) < 0.002


@pytest.mark.parametrize("implementation", ["sequential", "parallel", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_minlstm_stays_finite_when_both_gates_underflow(implementation: str, dtype: torch.dtype) -> None:
    """f / (f + i) is 0/0 once both sigmoids underflow; every form must give the normalised gates' limit."""
    layer = rnn.Recurrent("minlstm", 1, 1, bias=False, implementation=implementation).to(dtype)
    layer.weight_ih_l0.data.fill_(1.0)
    x = torch.full((1, 3, 1), -120.0 if dtype == torch.float32 else -20.0, dtype=dtype)
    with torch.no_grad():
        out = layer(x, torch.ones(1, 1, 1, dtype=dtype))[0]
    # k_f = k_i: f' = i' = 1/2, and the candidate g(x) = sigmoid(x) is 0 to float precision
    tolerance = 1e-5 if dtype == torch.float32 else 1e-3  # float16 carries 11 significant bits
    torch.testing.assert_close(out.flatten().float(), torch.tensor([0.5, 0.25, 0.125]), rtol=0, atol=tolerance)


@pytest.mark.parametrize("steps", [1, 9, 16, 23])
@pytest.mark.parametrize("signed", [False, True])
def test_chunked_log_scan_equals_one_block(steps: int, signed: bool) -> None:
    log_a = -F.softplus(torch.randn(3, steps, 4, dtype=torch.float64))
    log_b = torch.randn(3, steps, 4, dtype=torch.float64)
    sign = torch.sign(torch.randn(3, steps, 4, dtype=torch.float64)) if signed else None
    h0 = torch.randn(3, 4, dtype=torch.float64)
    for reverse in (False, True):
        whole = linear_scan_log(log_a, log_b, h0, b_sign=sign, reverse=reverse, chunk_size=None)
        for chunk in (1, 4, 8):
            got = linear_scan_log(log_a, log_b, h0, b_sign=sign, reverse=reverse, chunk_size=chunk)
            torch.testing.assert_close(got, whole, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size must be"):
        linear_scan_log(log_a, log_b, h0, chunk_size=0)


# -- gradients: gradcheck in float64 on tiny cases -----------------------------------------------
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_tensor_scans(reverse: bool) -> None:
    kw = {"dtype": torch.float64, "requires_grad": True}
    a = torch.rand(2, 4, 3, **kw)
    b = torch.randn(2, 4, 3, **kw)
    h0 = torch.randn(2, 3, **kw)
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan_sequential(a, b, h0, reverse=reverse), (a, b, h0))
    log_a = torch.randn(2, 4, 3, **kw)
    log_b = torch.randn(2, 4, 3, **kw)
    sign = torch.sign(torch.randn(2, 4, 3, dtype=torch.float64))
    for chunk in (None, 2):  # T = 4 in blocks of 2, and T = 5 padded to 6
        assert torch.autograd.gradcheck(
            lambda la, lb, h0, c=chunk: linear_scan_log(la, lb, h0, b_sign=sign, reverse=reverse, chunk_size=c),
            (log_a, log_b, h0))
    log_a5, log_b5 = torch.randn(2, 5, 3, **kw), torch.randn(2, 5, 3, **kw)
    assert torch.autograd.gradcheck(
        lambda la, lb, h0: linear_scan_log(la, lb, h0, reverse=reverse, chunk_size=2), (log_a5, log_b5, h0))


@pytest.mark.parametrize("scan", [sequential_scan, parallel_scan])
def test_gradcheck_cell_scans(scan: object) -> None:
    cell = MinLSTMCell(2, 3).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, True], [False, True, True, False]])
    params = tuple(cell.parameters())

    def f(x: torch.Tensor, h0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, (h_n,), _ = scan(cell, x, (h0,), mask=mask, reverse=True)  # type: ignore[operator]
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *params))


# -- layers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
@pytest.mark.parametrize("mask_kind", ["right", "left"])
def test_layer_bidirectional_stacked_implementations_agree(name: str, mask_kind: str) -> None:
    layers = {impl: rnn.Recurrent(name, I, H, num_layers=2, bidirectional=True, implementation=impl).double()
              for impl in ("reference", "sequential", "parallel", "auto")}
    state = layers["reference"].state_dict()
    for layer in layers.values():
        layer.load_state_dict(state)
    x = torch.randn(B, T, I, dtype=torch.float64)
    h0 = torch.randn(4, B, H, dtype=torch.float64)
    results = {}
    for impl, layer in layers.items():
        out, h_n = layer(x, h0, mask=_mask(mask_kind))
        (out.pow(2).sum() + h_n.sum()).backward()
        results[impl] = [out.detach(), h_n.detach(), *[p.grad for p in layer.parameters()]]
    for impl in ("sequential", "parallel", "auto"):
        for e, got in zip(results["reference"], results[impl]):
            torch.testing.assert_close(got, e, rtol=0, atol=1e-10)


def test_step_matches_forward_on_the_fast_path() -> None:
    layer = rnn.Recurrent("mingru", I, H, num_layers=2).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, h_n = layer(x)
    h = None
    for t in range(T):
        y, h = layer.step(x[:, t], h)
        torch.testing.assert_close(y, out[:, t], rtol=0, atol=1e-12)
    assert h is not None
    torch.testing.assert_close(h, h_n, rtol=0, atol=1e-12)


def test_auto_picks_sequential_on_cpu_and_falls_back() -> None:
    cells = [MinGRUCell(I, H)]
    cpu = torch.device("cpu")
    assert select_scan(cells, "auto", cpu) is sequential_scan
    assert select_scan(cells, "auto", cpu, return_gates=True) is None
    assert select_scan(cells, "auto", cpu, zoneout_rate=0.1) is None
    assert select_scan(cells, "reference", cpu) is None
    assert select_scan([make_cell("lstm", I, H)], "auto", cpu) is engine_scan  # when the fused kernel cannot run
    assert select_scan([make_cell("layernorm_lstm", I, H)], "auto", cpu) is engine_scan  # faster on CPU
    assert select_scan([make_cell("layernorm_lstm", I, H)], "auto", cpu, return_gates=True) is None


def test_auto_runs_lstm_layernorm_and_gru_variants_on_the_triton_engines_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnkit.scan import engine_triton

    cuda = torch.device("cuda")  # only the choice is made here: nothing runs
    if not torch.cuda.is_available():
        assert not engine_triton.chosen_by_auto(cuda)
    monkeypatch.setattr(engine_triton, "chosen_by_auto", lambda device: device.type == "cuda")  # a recent GPU
    monkeypatch.setattr(engine_triton, "triton_unavailable_reason", lambda device: None)  # triton installed
    chosen = select_scan([make_cell("lstm", I, H)], "auto", cuda)
    assert isinstance(chosen, functools.partial) and chosen.func is engine_scan
    assert chosen.keywords == {"kernels": "triton"}
    half = make_cell("lstm", I, H).half()  # the Triton kernels take float32/float64 weights: the engine runs it
    assert select_scan([half], "auto", cuda) is engine_scan
    assert select_scan([make_cell("lstm", I, H)], "auto", torch.device("cpu")) is engine_scan
    for name in ("layernorm_lstm", "gru"):  # measured 1.22x and 1.3-1.7x cuDNN on an H100 (RESULTS.md)
        chosen = select_scan([make_cell(name, I, H)], "auto", cuda)
        assert isinstance(chosen, functools.partial) and chosen.keywords == {"kernels": "triton"}
        assert chosen.func is (engine_scan if name == "layernorm_lstm" else gru_engine_scan)
        assert select_scan([make_cell(name, I, H)], "auto", cuda, return_gates=True) is None
    for name in ("lstm", "layernorm_lstm"):  # LSTMP variants (plain LSTMP runs cuDNN)
        chosen = select_scan([make_cell(name, I, H, proj_size=2)], "auto", cuda)
        assert isinstance(chosen, functools.partial) and chosen.keywords == {"kernels": "triton"}
    assert select_scan([make_cell("gru", I, H).half()], "auto", cuda) is None  # Triton needs float32/64 weights
    assert select_scan([make_cell("gru", I, H, reset_after=False)], "auto", cuda) is None  # not torch's GRU form
    monkeypatch.setattr(engine_triton, "chosen_by_auto", lambda device: False)  # an older GPU, or no triton
    assert select_scan([make_cell("lstm", I, H)], "auto", cuda) is engine_scan
    assert select_scan([make_cell("layernorm_lstm", I, H)], "auto", cuda) is engine_scan  # 7.4x the reference
    assert select_scan([make_cell("gru", I, H)], "auto", cuda) is None  # the torch-kernel GRU engine: untimed there
    assert select_scan([make_cell("gru", I, H)], "auto", torch.device("cpu")) is gru_engine_scan
    layer = rnn.Recurrent("minlstm", I, H)
    out, h, gates = layer(torch.randn(B, T, I), return_gates=True)  # auto: reference scan records gates
    assert set(gates["l0"]) == {"forget", "input", "candidate"}


def test_explicit_implementation_fails_loudly() -> None:
    x = torch.randn(B, T, I)
    with pytest.raises(ValueError, match="needs a cell whose gates depend only on the input"):
        rnn.Recurrent("lstm", I, H, implementation="sequential")(x)
    with pytest.raises(ValueError, match="needs a cell whose gates depend only on the input"):
        rnn.LSTM(I, H, batch_first=True, implementation="parallel")(x)
    with pytest.raises(ValueError, match="zoneout runs only in the reference scan"):
        rnn.Recurrent("mingru", I, H, zoneout=0.1, implementation="parallel")(x)
    with pytest.raises(ValueError, match="gate activations"):
        rnn.Recurrent("mingru", I, H, implementation="sequential")(x, return_gates=True)
    layer = rnn.Recurrent("mingru", I, H, recurrent_dropout=0.3, implementation="parallel")
    layer.eval()
    layer(x)  # no dropout at inference: fine
    layer.train()
    with pytest.raises(ValueError, match="recurrent dropout"):
        layer(x)


def test_training_with_recurrent_dropout_runs_sequential() -> None:
    layer = rnn.Recurrent("mingru", I, H, recurrent_dropout=0.3)
    out, _ = layer(torch.randn(B, T, I))
    out.sum().backward()
    assert layer.weight_ih_l0.grad is not None
