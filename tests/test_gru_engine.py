"""The GRU engine (rnnkit.scan.engine_gru) against the reference scan, with torch and with Triton kernels.

Without a GPU the Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set in
conftest.py before triton is imported); their cases are skipped where triton is not installed.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.cells import GRUCell
from rnnkit.scan import reference_scan, select_scan
from rnnkit.scan.engine_gru import gru_engine_scan
from rnnkit.scan.step_matmul import step_matmul_backend

I, H, B, T = 3, 5, 4, 6
ScanMask = Callable[..., torch.Tensor | None]  # the scan_mask fixture (conftest.py)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (it ships with CUDA builds of PyTorch)")


@pytest.fixture(params=["torch", pytest.param("triton", marks=needs_triton)])
def engine(request: pytest.FixtureRequest) -> Callable[..., object]:
    """The GRU engine scan with each kernel set."""
    return functools.partial(gru_engine_scan, kernels=request.param)


def _case(bias: bool = True) -> tuple[GRUCell, torch.Tensor, tuple[torch.Tensor]]:
    cell = GRUCell(I, H, bias).double().to(DEVICE)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(B, T, I, dtype=torch.float64, device=DEVICE)
    return cell, x, (torch.randn(B, H, dtype=torch.float64, device=DEVICE),)


def _run(scan: Callable[..., object], cell: GRUCell, x: torch.Tensor, state: tuple[torch.Tensor],
         **kw: object) -> list[torch.Tensor]:
    cell.zero_grad()
    xx = x.clone().requires_grad_()
    h0 = state[0].clone().requires_grad_()
    out, (h_n,), _ = scan(cell, xx, (h0,), **kw)  # type: ignore[misc]
    weights = torch.linspace(-1, 1, h_n.shape[-1], dtype=x.dtype, device=x.device)
    (out.pow(2).sum() + (h_n * weights).sum()).backward()
    assert xx.grad is not None and h0.grad is not None
    return [out.detach(), h_n.detach(), xx.grad, h0.grad, *[p.grad for p in cell.parameters() if p.grad is not None]]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_engine_matches_reference_float64(engine: Callable[..., object], scan_mask: ScanMask,
                                              reverse: bool, mask_kind: str, recurrent_dropout: bool,
                                              bias: bool) -> None:
    torch.manual_seed(0)
    cell, x, state = _case(bias)
    rec = (torch.rand(B, H, device=DEVICE) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "reverse": reverse, "recurrent_mask": rec}
    expected = _run(reference_scan, cell, x, state, **kw)
    got = _run(engine, cell, x, state, **kw)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    with torch.no_grad():  # the torch kernels' inference loop: nothing saved
        out, (h_n,), _ = engine(cell, x, state, **kw)  # type: ignore[operator]
    for e, g in zip(expected[:2], (out, h_n)):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_gru_zoneout_in_training_matches_reference_given_the_same_draws(
        engine: Callable[..., object], same_zoneout_draws: Callable[[torch.Tensor], None], scan_mask: ScanMask,
        mask_kind: str) -> None:
    torch.manual_seed(1)
    rate = 0.3
    same_zoneout_draws(torch.rand(T, 2, B, H, dtype=torch.float64, device=DEVICE))
    cell, x, state = _case()
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "zoneout_rate": rate, "training": True}
    expected = _run(reference_scan, cell, x, state, **kw)
    got = _run(engine, cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_gru_zoneout_at_inference_uses_the_expectation_like_the_reference(engine: Callable[..., object],
                                                                          scan_mask: ScanMask) -> None:
    torch.manual_seed(2)
    cell, x, state = _case()
    kw = {"zoneout_rate": 0.25, "training": False, "mask": scan_mask("right", B, T, DEVICE)}
    expected = _run(reference_scan, cell, x, state, **kw)
    got = _run(engine, cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("implementation", ["engine", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("backend", ["torch", "onednn"])
def test_gru_layer_on_the_engine_matches_the_reference_layer_in_float32(implementation: str, backend: str) -> None:
    torch.manual_seed(3)
    kw = {"bidirectional": True, "num_layers": 2, "batch_first": True, "zoneout": 0.1}
    ref = rnn.GRU(I, H, implementation="reference", **kw).to(DEVICE).eval()  # type: ignore[arg-type]
    tri = rnn.GRU(I, H, implementation=implementation, **kw).to(DEVICE).eval()  # type: ignore[arg-type]
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I, device=DEVICE)
    lengths = torch.tensor([T, 4, 2, 1])
    with step_matmul_backend(backend):
        (y_ref, h_ref), (y_tri, h_tri) = ref(x, lengths=lengths), tri(x, lengths=lengths)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_tri, h_ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.pow(2).sum(), list(ref.parameters()))
    with step_matmul_backend(backend):
        g_tri = torch.autograd.grad(y_tri.pow(2).sum(), list(tri.parameters()))
    for a, b in zip(g_ref, g_tri):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_gru_engine_is_refused_clearly_where_it_cannot_run(engine: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match="reset_after=True"):
        engine(GRUCell(I, H, reset_after=False).to(DEVICE), torch.randn(B, T, I, device=DEVICE),
               (torch.zeros(B, H, device=DEVICE),))
    with pytest.raises(ValueError, match="gate activations are recorded only by the reference scan"):
        engine(GRUCell(I, H).to(DEVICE), torch.randn(B, T, I, device=DEVICE),
               (torch.zeros(B, H, device=DEVICE),), return_gates=True)
    with pytest.raises(ValueError, match="reset_after=True"):
        rnn.GRU(I, H, implementation="engine", cell_options={"reset_after": False})(torch.randn(B, T, I))
    with pytest.raises(ValueError, match="kernels must be"):
        gru_engine_scan(GRUCell(I, H), torch.randn(B, T, I), (torch.zeros(B, H),), kernels="cuda")


@needs_triton
def test_triton_gru_engine_refuses_half_weights() -> None:
    with pytest.raises(ValueError, match="float32 or float64 weights"):
        gru_engine_scan(GRUCell(I, H).half().to(DEVICE), torch.randn(B, T, I, device=DEVICE).half(),
                        (torch.zeros(B, H, device=DEVICE).half(),), kernels="triton")


def test_auto_runs_gru_variants_on_the_engine_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert select_scan([GRUCell(I, H)], "auto", cpu) is gru_engine_scan
    assert select_scan([GRUCell(I, H)], "auto", cpu, return_gates=True) is None
    assert select_scan([GRUCell(I, H, reset_after=False)], "auto", cpu) is None
    layer = rnn.GRU(I, H, batch_first=True, recurrent_dropout=0.2)
    out, _ = layer(torch.randn(B, T, I))
    assert any("GRUEngine" in type(f).__name__ for f in _graph_functions(out))


def _graph_functions(t: torch.Tensor) -> list[object]:
    seen, todo, found = set(), [t.grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        found.append(fn)
        todo.extend(f for f, _ in fn.next_functions)
    return found


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("kw", [{}, {"recurrent_dropout": True, "holes": True}, {"zoneout": True}])
def test_gru_graph_replays_equal_the_eager_loop(check_graph_replays: Callable[..., None],
                                               engine: Callable[..., object],
                                               graph_case_options: Callable[..., dict[str, object]],
                                               kw: dict[str, bool]) -> None:
    torch.manual_seed(5)
    cell, _, _ = _case()

    def inputs(call: int) -> tuple[torch.Tensor, tuple[torch.Tensor], dict[str, object]]:
        x = torch.randn(B, T, I, dtype=torch.float64, device=DEVICE)
        return x, (torch.randn(B, H, dtype=torch.float64, device=DEVICE),), graph_case_options(kw, B, T, H, DEVICE)

    def run(case: tuple[torch.Tensor, tuple[torch.Tensor], dict[str, object]]) -> list[torch.Tensor]:
        x, state, options = case
        return _run(engine, cell, x, state, **options)

    check_graph_replays(cell, inputs, run, str(kw))


def test_gru_engine_with_many_programs_per_step_and_ragged_tiles(engine: Callable[..., object]) -> None:
    """B and H that fill neither the batch nor the hidden tiles, several programs per step."""
    torch.manual_seed(6)
    cell = GRUCell(4, 130).double().to(DEVICE)
    x = torch.randn(37, 3, 4, dtype=torch.float64, device=DEVICE)
    state = (torch.randn(37, 130, dtype=torch.float64, device=DEVICE),)
    mask = (torch.rand(37, 3) > 0.3).to(DEVICE)
    rec = (torch.rand(37, 130, device=DEVICE) > 0.3).double() / 0.7
    for kw in ({}, {"mask": mask, "recurrent_mask": rec}, {"mask": mask, "zoneout_rate": 0.2, "training": False}):
        expected = _run(reference_scan, cell, x, state, **kw)
        got = _run(engine, cell, x, state, **kw)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_torch_kernels_gradcheck() -> None:
    torch.manual_seed(7)
    cell = GRUCell(2, 3).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, False, True, True]])
    rec = (torch.rand(2, 3) > 0.3).double() / 0.7

    def f(x: torch.Tensor, h0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h_n,), _ = gru_engine_scan(cell, x, (h0,), mask=mask, recurrent_mask=rec, reverse=True)
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *cell.parameters()))


@pytest.mark.parametrize("backend", ["torch", "onednn"])
@pytest.mark.parametrize("variant", ["plain", "mask", "recurrent_dropout", "zoneout_eval"])
def test_gru_recomputed_gates_give_the_same_gradients_with_less_saved(
        variant_kwargs: Callable[..., dict[str, object]], saved_bytes: Callable[..., tuple[list[torch.Tensor], int]],
        variant: str, backend: str) -> None:
    from rnnkit.scan import recompute_gates

    torch.manual_seed(3)
    cell, x, state = _case()
    dtype = torch.float64 if backend == "torch" else torch.float32  # oneDNN runs float32 only
    cell, x, state = cell.to(dtype), x.to(dtype), (state[0].to(dtype),)
    tight, loose = (1e-12, 1e-10) if dtype == torch.float64 else (1e-6, 1e-5)
    kw = variant_kwargs(variant, B, T, H, dtype)
    if DEVICE.type != "cpu" and "recurrent_mask" in kw:
        kw["recurrent_mask"] = kw["recurrent_mask"].to(DEVICE)  # type: ignore[attr-defined]
    if DEVICE.type != "cpu" and "mask" in kw:
        kw["mask"] = kw["mask"].to(DEVICE)  # type: ignore[attr-defined]
    engine = functools.partial(gru_engine_scan, kernels="torch")

    with step_matmul_backend(backend):
        kept, kept_bytes = saved_bytes(lambda: _run(engine, cell, x, state, **kw))
        with recompute_gates():
            again, again_bytes = saved_bytes(lambda: _run(engine, cell, x, state, **kw))
    for a, b in zip(kept, again):
        torch.testing.assert_close(b, a, rtol=0, atol=tight)
    assert again_bytes < 0.8 * kept_bytes
    expected = _run(reference_scan, cell, x, state, **kw)
    for e, g in zip(expected, again):
        torch.testing.assert_close(g, e, rtol=loose, atol=loose)


def test_gru_recomputed_gates_gradcheck() -> None:
    from rnnkit.scan import recompute_gates

    torch.manual_seed(4)
    cell = GRUCell(2, 3).double().to(DEVICE)
    x = torch.randn(2, 4, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [True, True, True, False]], device=DEVICE)
    rec = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]], dtype=torch.float64, device=DEVICE)

    def f(x: torch.Tensor, h0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with recompute_gates():
            out, (h_n,), _ = gru_engine_scan(cell, x, (h0,), mask=mask, reverse=True, recurrent_mask=rec,
                                             zoneout_rate=0.3, training=False)
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *cell.parameters()))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_recomputed_gates_match_reference_float64(engine: Callable[..., object], scan_mask: ScanMask,
                                                      reverse: bool, mask_kind: str, recurrent_dropout: bool,
                                                      bias: bool) -> None:
    """Every variant with the gates rebuilt in backward (the Triton kernels ignore the request)."""
    from rnnkit.scan import recompute_gates

    torch.manual_seed(5)
    cell, x, state = _case(bias)
    rec = (torch.rand(B, H, device=DEVICE) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "reverse": reverse, "recurrent_mask": rec,
          "zoneout_rate": 0.2, "training": False}
    expected = _run(reference_scan, cell, x, state, **kw)
    with recompute_gates():
        got = _run(engine, cell, x, state, **kw)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_gru_recomputed_gates_with_zoneout_in_training_match_reference(
        engine: Callable[..., object], same_zoneout_draws: Callable[[torch.Tensor], None], scan_mask: ScanMask,
        mask_kind: str) -> None:
    from rnnkit.scan import recompute_gates

    torch.manual_seed(6)
    same_zoneout_draws(torch.rand(T, 2, B, H, dtype=torch.float64, device=DEVICE))
    cell, x, state = _case()
    kw = {"mask": scan_mask(mask_kind, B, T, DEVICE), "zoneout_rate": 0.3, "training": True, "reverse": True}
    expected = _run(reference_scan, cell, x, state, **kw)
    with recompute_gates():
        got = _run(engine, cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_gru_layer_with_recomputed_gates_matches_the_reference_layer_float64() -> None:
    from rnnkit.scan import recompute_gates

    torch.manual_seed(8)
    kw = {"bidirectional": True, "num_layers": 2, "batch_first": True, "zoneout": 0.1}
    ref = rnn.GRU(I, H, implementation="reference", **kw).double().eval()  # type: ignore[arg-type]
    layer = rnn.GRU(I, H, **kw).double().eval()  # type: ignore[arg-type]  # auto: the engine from 4 steps
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(B, 9, I, dtype=torch.float64)
    lengths = torch.tensor([9, 5, 2, 1])
    y_ref, h_ref = ref(x, lengths=lengths)
    with recompute_gates():
        y, h = layer(x, lengths=lengths)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    loss_ref = y_ref.pow(2).sum() + h_ref.sum()
    loss = y.pow(2).sum() + h.sum()
    for a, b in zip(torch.autograd.grad(loss_ref, list(ref.parameters())),
                    torch.autograd.grad(loss, list(layer.parameters())), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10)


@pytest.mark.parametrize("hidden, batch, steps, grad, dtype, engine", [
    (256, 1, 8, True, torch.float32, True),  # training: from batch 1
    (256, 4, 8, False, torch.float32, True),  # inference: from batch 4
    (256, 2, 100, False, torch.float32, False),  # inference at batch 1-2: torch's loop
    (256, 4, 7, True, torch.float32, False),  # short calls: torch's kernel
    (128, 16, 50, True, torch.float32, False),  # small states: torch's kernel
    (256, 4, 8, True, torch.float64, False),  # float64: torch's kernel
])
def test_auto_runs_plain_grus_on_the_engine_on_cpu_where_it_measured_faster(
        monkeypatch: pytest.MonkeyPatch, hidden: int, batch: int, steps: int, grad: bool, dtype: torch.dtype,
        engine: bool) -> None:
    """torch.nn.GRU has no oneDNN kernel on CPUs (ATen's generic loop): "auto" takes the GRU engine for
    float32 states of 256 and more from 8 steps, in inference from batch 4; the result equals the
    fused kernel's, bidirectional and with a padded batch too."""
    import rnnkit.scan.parallel as parallel

    calls: list[int] = []
    real = parallel.gru_engine_scan

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel, "gru_engine_scan", spy)
    torch.manual_seed(0)
    layer = rnn.GRU(5, hidden, batch_first=True, bidirectional=True).to(dtype)
    fused = rnn.GRU(5, hidden, batch_first=True, bidirectional=True, implementation="fused").to(dtype)
    fused.load_state_dict(layer.state_dict())
    x = torch.randn(batch, steps, 5, dtype=dtype)
    lengths = torch.full((batch,), steps)
    lengths[0] = max(1, steps - 3)
    with torch.set_grad_enabled(grad):
        out, h = layer(x, lengths=lengths)
        expected, expected_h = fused(x, lengths=lengths)
    assert bool(calls) == engine
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h, expected_h, rtol=1e-4, atol=1e-5)
