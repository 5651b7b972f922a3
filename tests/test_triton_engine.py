"""The LSTM engine with Triton kernels (rnnkit.scan.engine_triton) against the reference scan.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set here before the
kernels are first imported), which executes them on the CPU with the same semantics. Skipped
where the triton package is not installed (it ships with CUDA builds of PyTorch).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (it ships with CUDA builds of PyTorch)")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import rnnkit.nn as rnn  # noqa: E402
from rnnkit.cells import GRUCell, LayerNormLSTMCell, LSTMCell  # noqa: E402
from rnnkit.scan import cuda_graph, engine_scan, recompute_gates, reference_scan  # noqa: E402
from rnnkit.scan.engine_triton import triton_unavailable_reason  # noqa: E402

I, H, B, T = 3, 5, 4, 6
ScanMask = Callable[..., torch.Tensor | None]  # the scan_mask fixture (conftest.py)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _run(kernels: str | None, cell: LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
         **kw: object) -> list[torch.Tensor]:
    cell.zero_grad()
    xx = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    if kernels is None:
        out, (h_n, c_n), _ = reference_scan(cell, xx, (h0, c0), **kw)  # type: ignore[arg-type]
    else:
        out, (h_n, c_n), _ = engine_scan(cell, xx, (h0, c0), kernels=kernels, **kw)  # type: ignore[arg-type]
    weights = torch.linspace(-1, 1, h0.shape[-1], dtype=x.dtype, device=x.device)
    (out.pow(2).sum() + (h_n * weights).sum() + c_n.pow(2).sum()).backward()
    assert xx.grad is not None and h0.grad is not None and c0.grad is not None
    return [out.detach(), h_n.detach(), c_n.detach(), xx.grad, h0.grad, c0.grad,
            *[p.grad for p in cell.parameters() if p.grad is not None]]


def _assert_inference_matches(expected: list[torch.Tensor], cell: LSTMCell, x: torch.Tensor,
                              state: tuple[torch.Tensor, ...], kw: dict[str, object]) -> None:
    """The no-gradient path (nothing saved) gives the outputs and states of the training run."""
    with torch.no_grad():
        out, (h_n, c_n), _ = engine_scan(cell, x, state, kernels="triton", **kw)  # type: ignore[arg-type]
    for e, g in zip(expected[:3], (out, h_n, c_n)):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def _case(peephole: bool, bias: bool = True,
          layernorm: bool = False) -> tuple[LSTMCell, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    cell = (LayerNormLSTMCell if layernorm else LSTMCell)(I, H, bias, peephole=peephole).double().to(DEVICE)
    with torch.no_grad():  # layer-norm gains start at 1 and biases at 0: make every parameter matter
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(B, T, I, dtype=torch.float64, device=DEVICE)
    state = (torch.randn(B, H, dtype=torch.float64, device=DEVICE),
             torch.randn(B, H, dtype=torch.float64, device=DEVICE))
    return cell, x, state


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layernorm", [False, True])
def test_triton_engine_matches_reference_float64(scan_mask: ScanMask, peephole: bool, reverse: bool,
                                                 mask_kind: str, recurrent_dropout: bool, bias: bool,
                                                 layernorm: bool) -> None:
    """LSTMCell, and LayerNormLSTMCell (LN_hh over the 4H gate row and LN_c over the cell inside the kernels)."""
    torch.manual_seed(0)
    cell, x, state = _case(peephole, bias, layernorm)
    rec = (torch.rand(B, H, device=DEVICE) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "reverse": reverse, "recurrent_mask": rec}
    expected = _run(None, cell, x, state, **kw)
    got = _run("triton", cell, x, state, **kw)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mask_kind", ["none", "holes"])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("layernorm", [False, True])
def test_triton_zoneout_in_training_matches_reference_given_the_same_draws(
        same_zoneout_draws: Callable[[torch.Tensor], None], scan_mask: ScanMask, mask_kind: str,
        peephole: bool, layernorm: bool) -> None:
    torch.manual_seed(1)
    rate = 0.3
    same_zoneout_draws(torch.rand(T, 2, B, H, dtype=torch.float64, device=DEVICE))
    cell, x, state = _case(peephole, layernorm=layernorm)
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "zoneout_rate": rate, "training": True}
    expected = _run(None, cell, x, state, **kw)
    got = _run("triton", cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("peephole", [False, True])
def test_triton_engine_with_recomputed_gates_and_without_gradients(scan_mask: ScanMask, peephole: bool) -> None:
    torch.manual_seed(2)
    cell, x, state = _case(peephole)
    kw = {"mask": scan_mask("holes", B, T, DEVICE)}
    expected = _run(None, cell, x, state, **kw)
    with recompute_gates():
        got = _run("triton", cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    _assert_inference_matches(expected, cell, x, state, kw)


def test_layer_with_implementation_triton_matches_the_reference_layer_in_float32() -> None:
    torch.manual_seed(3)
    kw = {"cell": "peephole_lstm", "bidirectional": True, "num_layers": 2, "batch_first": True}
    ref = rnn.LSTM(I, H, implementation="reference", **kw).to(DEVICE)  # type: ignore[arg-type]
    tri = rnn.LSTM(I, H, implementation="triton", **kw).to(DEVICE)  # type: ignore[arg-type]
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, device=DEVICE)
    lengths = torch.tensor([T, 4, 2, 1])
    (y_ref, _), (y_tri, _) = ref(x, lengths=lengths), tri(x, lengths=lengths)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.pow(2).sum(), list(ref.parameters()))
    g_tri = torch.autograd.grad(y_tri.pow(2).sum(), list(tri.parameters()))
    for a, b in zip(g_ref, g_tri):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_triton_is_refused_clearly_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="supports LSTMCell and LayerNormLSTMCell .* only; got GRUCell"):
        engine_scan(GRUCell(I, H), torch.randn(B, T, I), (torch.zeros(B, H),), kernels="triton")
    with pytest.raises(ValueError, match="kernels must be 'torch' or 'triton'"):
        engine_scan(LSTMCell(I, H), torch.randn(B, T, I), (torch.zeros(B, H), torch.zeros(B, H)), kernels="cuda")
    with pytest.raises(ValueError, match="runs float32 or float64 weights, got torch.float16"):
        engine_scan(LSTMCell(I, H).half().to(DEVICE), torch.randn(B, T, I, device=DEVICE).half(),
                    (torch.zeros(B, H, device=DEVICE).half(),) * 2, kernels="triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "runs on CUDA tensors, got cpu" in (triton_unavailable_reason(torch.device("cpu")) or "")


# -- projected LSTMs (LSTMP, proj_size): the kernel writes o tanh c, the projection and h's update run in torch --
P = 2


def _projected_case(peephole: bool, bias: bool = True,
                    layernorm: bool = False) -> tuple[LSTMCell, torch.Tensor, tuple[torch.Tensor, ...]]:
    kind = LayerNormLSTMCell if layernorm else LSTMCell
    cell = kind(I, H, bias, peephole=peephole, proj_size=P).double().to(DEVICE)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(B, T, I, dtype=torch.float64, device=DEVICE)
    return cell, x, (torch.randn(B, P, dtype=torch.float64, device=DEVICE),
                     torch.randn(B, H, dtype=torch.float64, device=DEVICE))


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("layernorm", [False, True])
def test_projected_triton_engine_matches_reference_float64(scan_mask: ScanMask, peephole: bool, reverse: bool,
                                                           mask_kind: str, recurrent_dropout: bool,
                                                           recompute: bool, layernorm: bool) -> None:
    torch.manual_seed(5)
    cell, x, state = _projected_case(peephole, bias=not recurrent_dropout, layernorm=layernorm)
    rec = (torch.rand(B, P, device=DEVICE) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "reverse": reverse, "recurrent_mask": rec}
    expected = _run(None, cell, x, state, **kw)
    with recompute_gates(recompute):
        got = _run("triton", cell, x, state, **kw)
    # out, h_n, c_n, three input gradients, W_ih, W_hh, (biases), (peepholes), W_hr (, the layer norms' gains and
    # LN_c's bias)
    assert len(got) == len(expected) == 6 + 3 + 2 * (not recurrent_dropout) + peephole + 4 * layernorm
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    _assert_inference_matches(expected, cell, x, state, kw)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("layernorm", [False, True])
def test_projected_triton_zoneout_in_training_matches_reference_given_the_same_draws(
        same_zoneout_draws: Callable[[torch.Tensor], None], recompute: bool, peephole: bool, layernorm: bool) -> None:
    """Zoneout draws one mask of h's size (P) and one of c's (H): h is updated after the projection."""
    torch.manual_seed(6)
    same_zoneout_draws(torch.rand(T, 2, B, H, dtype=torch.float64, device=DEVICE))
    cell, x, state = _projected_case(peephole, layernorm=layernorm)
    kw = {"mask": torch.rand(B, T, device=DEVICE) > 0.3, "zoneout_rate": 0.3, "training": True, "reverse": True,
          "recurrent_mask": (torch.rand(B, P, device=DEVICE) > 0.3).double() / 0.7}
    expected = _run(None, cell, x, state, **kw)
    with recompute_gates(recompute):
        got = _run("triton", cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_projected_triton_gradcheck(kind: type[LSTMCell]) -> None:
    torch.manual_seed(7)
    cell = kind(2, 3, peephole=True, proj_size=2).double().to(DEVICE)
    x = torch.randn(2, 4, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    h0 = torch.randn(2, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]], device=DEVICE)
    rec = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64, device=DEVICE)

    def f(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h_n, c_n), _ = engine_scan(cell, x, (h0, c0), mask=mask, reverse=True, recurrent_mask=rec,
                                         zoneout_rate=0.3, training=False, kernels="triton")
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *cell.parameters()))


@pytest.mark.parametrize("cell", ["peephole_lstm", "layernorm_lstm"])
def test_projected_layer_with_implementation_triton_matches_the_reference_layer_in_float32(cell: str) -> None:
    torch.manual_seed(8)
    kw = {"cell": cell, "bidirectional": True, "num_layers": 2, "batch_first": True, "proj_size": P,
          "recurrent_dropout": 0.2}
    ref = rnn.LSTM(I, H, implementation="reference", **kw).to(DEVICE)  # type: ignore[arg-type]
    tri = rnn.LSTM(I, H, implementation="triton", **kw).to(DEVICE)  # type: ignore[arg-type]
    tri.load_state_dict(ref.state_dict())
    ref.eval()
    tri.eval()
    x = torch.randn(B, T, I, device=DEVICE)
    lengths = torch.tensor([T, 4, 2, 1])
    (y_ref, (h_ref, c_ref)), (y_tri, (h_tri, c_tri)) = ref(x, lengths=lengths), tri(x, lengths=lengths)
    assert y_tri.shape == (B, T, 2 * P) and h_tri.shape == (4, B, P) and c_tri.shape == (4, B, H)
    for e, g in ((y_ref, y_tri), (h_ref, h_tri), (c_ref, c_tri)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.pow(2).sum(), list(ref.parameters()))
    g_tri = torch.autograd.grad(y_tri.pow(2).sum(), list(tri.parameters()))
    for a, b in zip(g_ref, g_tri):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(B, 1), (1, H)])
def test_triton_broadcasts_a_recurrent_mask_like_the_reference(shape: tuple[int, int]) -> None:
    torch.manual_seed(4)
    cell, x, state = _case(True)
    rec = (torch.rand(*shape, device=DEVICE) > 0.3).double() / 0.7
    expected = _run(None, cell, x, state, recurrent_mask=rec)
    got = _run("triton", cell, x, state, recurrent_mask=rec)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_triton_kernels_stay_in_use_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    import rnnkit.scan.engine_triton as kernels

    monkeypatch.setenv("RNNKIT_CUDA_GRAPHS", "0")  # count the launches themselves, not a graph's replays
    calls = []
    real = kernels.forward_step
    monkeypatch.setattr(kernels, "forward_step", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    cell = LSTMCell(I, H).to(DEVICE)
    x = torch.randn(B, T, I, device=DEVICE)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out, _, _ = engine_scan(cell, x, (torch.zeros(B, H, device=DEVICE),) * 2, kernels="triton")
    assert len(calls) == T and out.dtype == torch.float32


# -- CUDA graphs (the loops recorded once per shape and replayed; GPU only) ----------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_graphs_are_used_only_where_they_can_be_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not cuda_graph.graphs_enabled(torch.device("cpu"))
    monkeypatch.setenv("RNNKIT_CUDA_GRAPHS", "0")
    assert not cuda_graph.graphs_enabled(torch.device("cuda"))
    key = cuda_graph.shape_key({"x": torch.zeros(2, 3), "bias": None})
    assert key == (("x", ((2, 3), torch.float32, torch.device("cpu"))), ("bias", None))
    cuda_graph.clear()
    outputs, recorded = cuda_graph.run_captured("test", lambda x: {"y": x + 1}, {"x": torch.zeros(2)})
    assert not recorded and outputs["y"] is not None and outputs["y"].tolist() == [1.0, 1.0]  # first sighting: eager


def _graph_case(kind: str, mask: ScanMask) -> tuple[dict[str, object], bool]:
    """engine_scan keyword arguments and whether gates are recomputed, for one configuration (``mask``: the
    ``scan_mask`` fixture)."""
    rec = (torch.rand(B, H, dtype=torch.float64, device=DEVICE) > 0.3).double() / 0.7
    cases: dict[str, tuple[dict[str, object], bool]] = {
        "plain": ({}, False),
        "masked, recurrent dropout, reverse": (
            {"mask": mask("holes", B, T, DEVICE), "recurrent_mask": rec, "reverse": True}, False),
        "zoneout in training": (
            {"zoneout_rate": 0.25, "training": True, "mask": mask("right", B, T, DEVICE)}, False),
        "recomputed gates": ({"mask": mask("holes", B, T, DEVICE)}, True),
    }
    return cases[kind]


class _FakeRecording:
    """Stands in for a CUDA graph on the CPU: runs the function on each call."""

    def __init__(self, fn: Callable[..., cuda_graph.Outputs], inputs: cuda_graph.Inputs) -> None:
        self.fn, self.nbytes = fn, 100

    def __call__(self, inputs: cuda_graph.Inputs) -> cuda_graph.Outputs:
        return self.fn(**inputs)


def test_recordings_are_made_on_a_shapes_second_call_evicted_least_recent_first_and_made_again_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_graph, "CapturedLoop", _FakeRecording)
    monkeypatch.setattr(cuda_graph, "CACHE_SIZE", 2)
    monkeypatch.setattr(cuda_graph, "REWAIT", 3)
    cuda_graph.clear()

    def call(n: int) -> bool:
        outputs, recorded = cuda_graph.run_captured("k", lambda x: {"y": x * 2}, {"x": torch.ones(n)})
        assert outputs["y"] is not None and outputs["y"].tolist() == [2.0] * n
        return recorded

    assert [call(1), call(1), call(1)] == [False, True, True]  # eager once, then recorded and replayed
    assert [call(2), call(2), call(3), call(3)] == [False, True, False, True]
    assert len(cuda_graph._CACHE) == 2
    # shape 1's recording was evicted: eager for REWAIT calls, then recorded again (evicting shape 2)
    assert [call(1) for _ in range(5)] == [False, False, False, True, True]
    assert [call(2) for _ in range(4)] == [False, False, False, True]  # evicts shape 3
    assert [call(3) for _ in range(4)] == [False, False, False, True]  # evicts shape 1 a second time
    assert [call(1) for _ in range(7)] == [False] * 6 + [True]  # its wait doubled
    monkeypatch.setattr(cuda_graph, "CACHE_BYTES", 150)  # room for one recording of 100 bytes
    call(4), call(4)
    assert len(cuda_graph._CACHE) == 1
    with torch.inference_mode():  # its tensors cannot be written outside it: a recording of its own
        assert [call(4), call(4)] == [False, True]
    monkeypatch.setattr(cuda_graph, "CACHE_BYTES", 50)  # a recording too large to keep: eager
    assert [call(5), call(5), call(5)] == [False, False, False]

    class Failing(_FakeRecording):
        def __init__(self, fn: Callable[..., cuda_graph.Outputs], inputs: cuda_graph.Inputs) -> None:
            raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(cuda_graph, "CapturedLoop", Failing)
    monkeypatch.setattr(cuda_graph, "CACHE_BYTES", 1000)
    assert not call(6)
    with pytest.warns(RuntimeWarning, match="recording a CUDA graph failed .*out of memory"):
        assert not call(6)  # the failure is reported once, and the call still computes
    assert not call(6)
    cuda_graph.clear()


@pytest.mark.parametrize("shapes", [3, 6, 12])
def test_more_shapes_in_turn_than_the_cache_keeps_replay_as_often_as_the_cache_allows(
        monkeypatch: pytest.MonkeyPatch, shapes: int) -> None:
    """Shapes in turn through a cache of two (the default REWAIT and REPAID): about as many calls replay as if
    two shapes were kept for good (2 / shapes of them), and few calls pay for a recording."""
    recordings = []

    class Counting(_FakeRecording):
        def __init__(self, fn: Callable[..., cuda_graph.Outputs], inputs: cuda_graph.Inputs) -> None:
            super().__init__(fn, inputs)
            recordings.append(len(next(iter(inputs.values()))))  # type: ignore[arg-type]

    monkeypatch.setattr(cuda_graph, "CapturedLoop", Counting)
    monkeypatch.setattr(cuda_graph, "CACHE_SIZE", 2)
    cuda_graph.clear()
    calls = replayed = 0
    for _ in range(3000 // shapes):
        for n in range(1, shapes + 1):
            outputs, recorded = cuda_graph.run_captured("k", lambda x: {"y": x + 1}, {"x": torch.zeros(n)})
            assert outputs["y"] is not None and outputs["y"].tolist() == [1.0] * n
            calls, replayed = calls + 1, replayed + recorded
    assert sorted(set(recordings)) == list(range(1, shapes + 1))
    assert replayed >= 0.9 * (2 / shapes) * calls  # measured: 0.68, 0.36, 0.19 of the calls
    assert len(recordings) <= 0.05 * calls  # measured: 3.3-4.3%; without waits, a recording every other call
    cuda_graph.clear()


def test_a_shape_pushed_out_every_epoch_is_replayed_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training calls of one shape, then a dev pass whose two shapes push its recording out, every epoch:
    a recording that paid for itself (REPAID replays) waits REWAIT calls after each eviction, not longer."""
    monkeypatch.setattr(cuda_graph, "CapturedLoop", _FakeRecording)
    monkeypatch.setattr(cuda_graph, "CACHE_SIZE", 2)
    monkeypatch.setattr(cuda_graph, "REWAIT", 3)
    cuda_graph.clear()

    def call(n: int) -> bool:
        return cuda_graph.run_captured("k", lambda x: {"y": x * 2}, {"x": torch.ones(n)})[1]

    evicted = 0
    for epoch in range(12):
        train = [call(1) for _ in range(20)]
        evicted += epoch > 0 and not train[0]
        eager = train.index(True)  # evicted or not, it runs eagerly for at most REWAIT calls, then replays
        assert eager <= (1 if epoch == 0 else 3) and all(train[eager:]), (epoch, train)
        for n in (2, 3):  # the dev pass: its two shapes fill the cache of two
            for _ in range(5):
                call(n)
    assert evicted >= 3  # the dev pass did push it out, again and again (measured: in 4 of the 11 later epochs)
    cuda_graph.clear()


@needs_cuda
@pytest.mark.parametrize("kind", ["plain", "masked, recurrent dropout, reverse", "zoneout in training",
                                  "recomputed gates"])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("layernorm", [False, True])
def test_graph_replays_equal_the_eager_loop_across_calls_and_weight_updates(
        check_graph_replays: Callable[..., None], scan_mask: ScanMask, kind: str, peephole: bool,
        layernorm: bool) -> None:
    torch.manual_seed(5)
    cell, _, _ = _case(peephole, layernorm=layernorm)

    def inputs(call: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, object], bool]:
        x = torch.randn(B, T, I, dtype=torch.float64, device=DEVICE)
        state = (torch.randn(B, H, dtype=torch.float64, device=DEVICE),
                 torch.randn(B, H, dtype=torch.float64, device=DEVICE))
        return (x, state, *_graph_case(kind, scan_mask))

    def run(case: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, object], bool]) -> list[torch.Tensor]:
        x, state, kw, recompute = case
        with recompute_gates(recompute):
            return _run("triton", cell, x, state, **kw)

    check_graph_replays(cell, inputs, run, kind)


@needs_cuda
def test_layers_sharing_one_recording_keep_their_own_activations() -> None:
    """Both directions of both layers have the same shapes, so they replay one recording each way:
    every forward must keep its own copies until its backward runs."""
    torch.manual_seed(6)
    cuda_graph.clear()
    kw = {"cell": "peephole_lstm", "bidirectional": True, "num_layers": 2, "batch_first": True,
          "recurrent_dropout": 0.2}
    ref = rnn.LSTM(2 * H, H, implementation="reference", **kw).double().to(DEVICE)  # type: ignore[arg-type]
    tri = rnn.LSTM(2 * H, H, implementation="triton", **kw).double().to(DEVICE)  # type: ignore[arg-type]
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, 2 * H, dtype=torch.float64, device=DEVICE)
    torch.manual_seed(7)
    y_ref, _ = ref(x)
    torch.manual_seed(7)  # the same recurrent-dropout masks
    y_tri, _ = tri(x)
    torch.testing.assert_close(y_tri, y_ref, rtol=0, atol=1e-10)
    g_ref = torch.autograd.grad(y_ref.pow(2).sum(), list(ref.parameters()))
    g_tri = torch.autograd.grad(y_tri.pow(2).sum(), list(tri.parameters()))
    for a, b in zip(g_ref, g_tri):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-9)


def test_layernorm_layer_with_implementation_triton_matches_the_reference_layer_in_float32() -> None:
    torch.manual_seed(13)
    kw = {"cell": "layernorm_lstm", "bidirectional": True, "num_layers": 2, "batch_first": True,
          "recurrent_dropout": 0.2}
    ref = rnn.LSTM(I, 2 * H, implementation="reference", **kw).to(DEVICE)  # type: ignore[arg-type]
    tri = rnn.LSTM(I, 2 * H, implementation="triton", **kw).to(DEVICE)  # type: ignore[arg-type]
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, device=DEVICE)
    torch.manual_seed(14)
    y_ref, _ = ref(x)
    torch.manual_seed(14)  # the same recurrent-dropout masks
    y_tri, _ = tri(x)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.pow(2).sum(), list(ref.parameters()))
    g_tri = torch.autograd.grad(y_tri.pow(2).sum(), list(tri.parameters()))
    for a, b in zip(g_ref, g_tri):
        # float32 rounding, amplified by the layer norms' backward, scales with the gradients (up to ~40 here):
        # without dropout the float32 reference itself is up to 9e-5 (5e-6 * max|grad|) off float64 on CPU; on an
        # H100 the engine was 3.6e-5 off it at one element of 400, under a fixed 1e-5 bound
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))


def test_triton_layernorm_engine_with_many_programs_per_step_and_ragged_rows() -> None:
    """B and H that fill neither the row blocks nor the power-of-two columns, several programs per step."""
    torch.manual_seed(15)
    cell = LayerNormLSTMCell(4, 130, peephole=True).double().to(DEVICE)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(37, 3, 4, dtype=torch.float64, device=DEVICE)
    state = (torch.randn(37, 130, dtype=torch.float64, device=DEVICE),
             torch.randn(37, 130, dtype=torch.float64, device=DEVICE))
    mask = (torch.rand(37, 3) > 0.3).to(DEVICE)
    rec = (torch.rand(37, 130, device=DEVICE) > 0.3).double() / 0.7

    def run(kernels: str | None, **kw: object) -> list[torch.Tensor]:
        cell.zero_grad()
        xx, h0, c0 = x.clone().requires_grad_(), state[0].clone().requires_grad_(), state[1].clone().requires_grad_()
        scan = reference_scan if kernels is None else engine_scan
        extra = {} if kernels is None else {"kernels": kernels}
        out, (h_n, c_n), _ = scan(cell, xx, (h0, c0), **kw, **extra)  # type: ignore[operator]
        (out.pow(2).sum() + h_n.sum() + c_n.pow(2).sum()).backward()
        return [out.detach(), xx.grad, h0.grad, c0.grad, *[p.grad for p in cell.parameters()]]  # type: ignore[list-item]

    for kw in ({}, {"mask": mask, "recurrent_mask": rec}, {"mask": mask, "zoneout_rate": 0.2, "training": False}):
        for e, g in zip(run(None, **kw), run("triton", **kw)):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_layer_norm_epsilons_are_compile_time_constants_of_the_kernels() -> None:
    """A float kernel argument is float32 on a GPU, while the interpreter these tests run in keeps it in
    float64: float32(1e-5) as the epsilon put float64 gradients 1.6e-9 off the reference on an H100, which no
    interpreter run can show. Constants take the dtype of the tensors they meet."""
    import inspect

    import triton.language as tl

    from rnnkit.scan import _triton_kernels

    kernels = [k for k in vars(_triton_kernels).values() if hasattr(k, "fn") and callable(k.fn)]
    eps = {(k.fn.__name__, name): p.annotation for k in kernels
           for name, p in inspect.signature(k.fn).parameters.items() if name.startswith("eps")}
    assert eps, "no kernel takes an epsilon: update this test"
    assert all(annotation is tl.constexpr for annotation in eps.values()), eps
