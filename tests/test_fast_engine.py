"""The hand-written-backward LSTM engine (rnnkit.scan.engine) against the reference scan."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.cells import LayerNormLSTMCell, LSTMCell
from rnnkit.scan import engine_scan, reference_scan

I, H, B, T = 3, 5, 4, 8  # T >= SHORT_STEPS["lstm"]: "auto" runs the engine
ScanMask = Callable[..., torch.Tensor | None]  # the scan_mask fixture (conftest.py)


def _run(scan: object, cell: LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
         **kw: object) -> list[torch.Tensor]:
    cell.zero_grad()
    xx = x.clone().requires_grad_()
    h0, c0 = (s.clone().requires_grad_() for s in state)
    out, (h_n, c_n), _ = scan(cell, xx, (h0, c0), **kw)  # type: ignore[operator]
    weights = torch.linspace(-1, 1, h_n.shape[-1], dtype=x.dtype, device=x.device)
    (out.pow(2).sum() + (h_n * weights).sum() + c_n.pow(2).sum()).backward()
    assert xx.grad is not None and h0.grad is not None and c0.grad is not None
    return [out.detach(), h_n.detach(), c_n.detach(), xx.grad, h0.grad, c0.grad,
            *[p.grad for p in cell.parameters() if p.grad is not None]]


def _randomise(cell: LSTMCell) -> LSTMCell:
    with torch.no_grad():  # layer-norm gains and biases start at 1 and 0: make every parameter matter
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return cell


def _assert_engine_matches_reference(cell: LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
                                     **kw: object) -> int:
    """Engine and reference scan agree to 1e-10 in float64 (outputs, states, every gradient), and so
    does the engine's inference path; returns how many tensors were compared with gradients."""
    expected = _run(reference_scan, cell, x, state, **kw)
    got = _run(engine_scan, cell, x, state, **kw)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    with torch.no_grad():  # the inference path: nothing saved
        out, (h_n, c_n), _ = engine_scan(cell, x, state, **kw)  # type: ignore[arg-type]
    for e, g in zip(expected[:3], (out, h_n, c_n)):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
    return len(got)


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "left", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_engine_matches_reference_float64(scan_mask: ScanMask, peephole: bool, reverse: bool,
                                          mask_kind: str, recurrent_dropout: bool, bias: bool,
                                          kind: type[LSTMCell]) -> None:
    cell = _randomise(kind(I, H, bias, peephole=peephole).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    mask = scan_mask(mask_kind, B, T)
    rec = (torch.rand(B, H) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": mask, "reverse": reverse, "recurrent_mask": rec}
    _assert_engine_matches_reference(cell, x, state, **kw)


P = 3  # projection size for the LSTMP cases


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "left", "holes"])
@pytest.mark.parametrize("recurrent_dropout", [False, True])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_projected_engine_matches_reference_float64(scan_mask: ScanMask, peephole: bool, reverse: bool,
                                                    mask_kind: str, recurrent_dropout: bool,
                                                    kind: type[LSTMCell]) -> None:
    cell = _randomise(kind(I, H, proj_size=P, peephole=peephole).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, P, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    rec = (torch.rand(B, P) > 0.3).double() / 0.7 if recurrent_dropout else None
    kw = {"mask": scan_mask(mask_kind, B, T), "reverse": reverse, "recurrent_mask": rec}
    compared = _assert_engine_matches_reference(cell, x, state, **kw)
    # out, h_n, c_n, 3 input grads, parameter grads with W_hr (and the layer norms' gains and LN_c's bias)
    assert compared == 11 + peephole + (4 if kind is LayerNormLSTMCell else 0)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_projected_engine_gradcheck(recompute: bool, kind: type[LSTMCell]) -> None:
    from rnnkit.scan import recompute_gates

    cell = _randomise(kind(2, 3, proj_size=2, peephole=True).double())
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    rec = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)

    def f(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with recompute_gates(recompute):
            out, (h_n, c_n), _ = engine_scan(cell, x, (h0, c0), mask=mask, reverse=True, recurrent_mask=rec,
                                             zoneout_rate=0.3, training=False)
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *cell.parameters()))


@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_engine_float32_close(kind: type[LSTMCell]) -> None:
    cell = kind(I, H, peephole=True)
    steps = 6  # the length this float32 bound was set on (engine_scan is called directly: no dispatch by length)
    x, state = torch.randn(B, steps, I), (torch.randn(B, H), torch.randn(B, H))
    for e, g in zip(_run(reference_scan, cell, x, state), _run(engine_scan, cell, x, state)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_engine_gradcheck(reverse: bool, kind: type[LSTMCell]) -> None:
    cell = _randomise(kind(2, 3, peephole=True).double())
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    rec = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]], dtype=torch.float64)

    def f(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h_n, c_n), _ = engine_scan(cell, x, (h0, c0), mask=mask, reverse=reverse, recurrent_mask=rec)
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *cell.parameters()))


def test_layer_opt_in_matches_reference() -> None:
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "cell": "peephole_lstm"}
    ref = rnn.LSTM(I, H, implementation="reference", **kw).double()
    eng = rnn.LSTM(I, H, implementation="engine", **kw).double()
    _assert_layers_agree(ref, eng, torch.randn(B, T, I, dtype=torch.float64), torch.tensor([T, 4, 2, 1]))


def _assert_layers_agree(ref: torch.nn.Module, eng: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> None:
    """``eng`` with ``ref``'s weights gives its outputs, states and parameter gradients to 1e-10."""
    eng.load_state_dict(ref.state_dict())
    results = []
    for layer in (ref, eng):
        out, (h, c) = layer(x, lengths=lengths)
        (out.sum() + h.pow(2).sum() + c.sum()).backward()
        results.append([out.detach(), h.detach(), c.detach(), *[p.grad for p in layer.parameters()]])
    for e, g in zip(*results):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def _graph_names(t: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``t``."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("kw, engine", [
    ({"cell": "peephole_lstm"}, True),
    ({"recurrent_dropout": 0.2}, True),
    ({"zoneout": 0.1}, True),
    ({}, False),  # the fused torch.nn kernel
    ({"cell": "layernorm_lstm"}, True),  # on CUDA with triton, its Triton form
    ({"proj_size": 2}, False),  # the engine beats torch's non-oneDNN proj_size loop only on longer sequences
    ({"proj_size": 2, "recurrent_dropout": 0.2}, True),
    ({"proj_size": 2, "cell": "peephole_lstm"}, True),
    ({"proj_size": 2, "cell": "layernorm_lstm"}, True),
])
def test_auto_picks_the_engine_where_the_fused_kernel_cannot_run(kw: dict[str, object], engine: bool) -> None:
    layer = rnn.LSTM(I, H, batch_first=True, **kw)  # type: ignore[arg-type]
    assert layer.implementation == "auto"
    long_enough = 8  # rnnkit.scan.parallel.SHORT_STEPS["lstm"]: shorter calls run the reference scan on CPU
    out, _ = layer(torch.randn(B, long_enough, I))
    assert any("LSTMEngine" in n for n in _graph_names(out)) == engine
    short, _ = layer(torch.randn(B, long_enough - 1, I))
    assert not any("LSTMEngine" in n for n in _graph_names(short))
    gated, _, gates = layer(torch.randn(B, long_enough, I), return_gates=True)  # only the reference scan records gates
    assert gates and not any("LSTMEngine" in n for n in _graph_names(gated))


@pytest.mark.parametrize("batch, steps, engine", [(4, 16, True), (4, 15, False), (1, 100, False)])
def test_auto_runs_projected_lstms_on_the_engine_for_batched_long_sequences(batch: int, steps: int,
                                                                            engine: bool) -> None:
    layer = rnn.LSTM(I, H, proj_size=2, batch_first=True)  # torch.nn has no oneDNN kernel for proj_size on CPU
    out, _ = layer(torch.randn(batch, steps, I))
    assert any("LSTMEngine" in n for n in _graph_names(out)) == engine
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(batch, steps, I), torch.full((batch,), steps),
                                                     batch_first=True)
    assert any("LSTMEngine" in n for n in _graph_names(layer(packed)[0].data)) == engine


def test_auto_keeps_a_projected_lstm_under_cpu_autocast_in_one_dtype() -> None:
    """torch's proj_size kernel runs in the autocast dtype and the engine in the weights' dtype: under
    autocast ``"auto"`` keeps torch's kernel, so the output's dtype does not depend on the batch or length."""
    layer = rnn.LSTM(I, H, proj_size=2, batch_first=True)
    expected = torch.nn.LSTM(I, H, proj_size=2, batch_first=True)
    expected.load_state_dict(layer.state_dict())
    dtypes = set()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for batch, steps in ((1, 20), (4, 15), (4, 20)):
            x = torch.randn(batch, steps, I)
            for grad in (True, False):
                with torch.set_grad_enabled(grad):
                    out, (h, c) = layer(x)
                    want, _ = expected(x)
                dtypes.add((out.dtype, h.dtype))
                torch.testing.assert_close(out, want)
    assert dtypes == {(torch.bfloat16, torch.bfloat16)}


def test_auto_uses_the_engine_for_masks_with_gaps() -> None:
    layer = rnn.LSTM(I, H, batch_first=True)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 2] = False
    out, _ = layer(torch.randn(B, T, I), mask=mask)
    assert any("LSTMEngine" in n for n in _graph_names(out))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right", "holes"])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_engine_zoneout_in_training_matches_reference_given_the_same_draws(
        same_zoneout_draws: Callable[[torch.Tensor], None], scan_mask: ScanMask, reverse: bool,
        mask_kind: str, peephole: bool, kind: type[LSTMCell]) -> None:
    rate = 0.3
    same_zoneout_draws(torch.rand(T, 2, B, H, dtype=torch.float64))
    cell = _randomise(kind(I, H, peephole=peephole).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    mask = scan_mask(mask_kind, B, T)
    kw = {"mask": mask, "reverse": reverse, "zoneout_rate": rate, "training": True}
    expected = _run(reference_scan, cell, x, state, **kw)
    got = _run(engine_scan, cell, x, state, **kw)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_projected_engine_zoneout_in_training_matches_reference_given_the_same_draws(
        same_zoneout_draws: Callable[[torch.Tensor], None], kind: type[LSTMCell], recompute: bool) -> None:
    from rnnkit.scan import recompute_gates

    same_zoneout_draws(torch.rand(T, 2, B, H, dtype=torch.float64))
    cell = _randomise(kind(I, H, proj_size=P, peephole=True).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, P, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    kw = {"mask": torch.rand(B, T) > 0.3, "zoneout_rate": 0.3, "training": True, "reverse": True,
          "recurrent_mask": (torch.rand(B, P) > 0.3).double() / 0.7}
    expected = _run(reference_scan, cell, x, state, **kw)
    with recompute_gates(recompute):
        got = _run(engine_scan, cell, x, state, **kw)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_projected_layer_on_the_engine_matches_reference() -> None:
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "proj_size": P, "zoneout": 0.2}
    ref = rnn.LSTM(I, H, implementation="reference", **kw).double().eval()  # type: ignore[arg-type]
    eng = rnn.LSTM(I, H, **kw).double().eval()  # type: ignore[arg-type]
    x = torch.randn(B, T, I, dtype=torch.float64)
    lengths = torch.tensor([T, 4, 2, 1])
    _assert_layers_agree(ref, eng, x, lengths)
    out, (h, c) = eng(x, lengths=lengths)
    assert out.shape == (B, T, 2 * P) and h.shape == (4, B, P) and c.shape == (4, B, H)
    assert any("LSTMEngine" in n for n in _graph_names(out))


def test_zoneout_inference_path_against_reference() -> None:
    cell = _randomise(LSTMCell(I, H, peephole=True).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    mask = torch.rand(B, T) > 0.3
    kw = {"mask": mask, "zoneout_rate": 0.3, "training": False, "reverse": True}
    with torch.no_grad():
        expected = reference_scan(cell, x, state, **kw)  # type: ignore[arg-type]
        got = engine_scan(cell, x, state, **kw)  # type: ignore[arg-type]
    for e, g in zip((expected[0], *expected[1]), (got[0], *got[1])):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("training", [False, True])
def test_zoneout_layer_engine_against_reference(training: bool) -> None:
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, "zoneout": 0.25}
    ref = rnn.LSTM(I, H, implementation="reference", **kw).double()
    eng = rnn.LSTM(I, H, implementation="engine", **kw).double()
    eng.load_state_dict(ref.state_dict())
    ref.train(training)
    eng.train(training)
    x = torch.randn(B, T, I, dtype=torch.float64)
    if not training:  # the expectation rate * old + (1 - rate) * new: deterministic, equal
        for a, b in zip(ref(x, lengths=torch.tensor([T, 4, 2, 1]))[0], eng(x, lengths=torch.tensor([T, 4, 2, 1]))[0]):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
        return
    frac = []
    eng = rnn.LSTM(I, H, implementation="engine", batch_first=True, zoneout=0.4).double().train()
    for _ in range(20):  # from the zero state, a unit that is not zoned out leaves 0
        out, _ = eng(torch.randn(64, 1, I, dtype=torch.float64))
        frac.append(float((out == 0).double().mean()))
    assert abs(sum(frac) / len(frac) - 0.4) < 0.03


def test_engine_rejects_gate_recording_and_other_cells() -> None:
    with pytest.raises(ValueError, match="gate activations"):
        rnn.LSTM(I, H, batch_first=True, implementation="engine")(torch.randn(B, T, I), return_gates=True)
    with pytest.raises(ValueError, match="supports LSTMCell"):
        rnn.RNN(I, H, batch_first=True, implementation="engine")(torch.randn(B, T, I))


@pytest.mark.parametrize("kw", [{"cell": "peephole_lstm"}, {"zoneout": 0.1},
                                {"cell": "layernorm_lstm", "implementation": "engine"}])
def test_engine_under_cpu_autocast_runs_in_the_weights_dtype(kw: dict[str, object]) -> None:
    layer = rnn.LSTM(I, H, batch_first=True, **kw)  # type: ignore[arg-type]
    x = torch.randn(B, T, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x)
    out.sum().backward()
    layer.eval()
    with torch.no_grad():
        expected, _ = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = layer(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("variant", ["plain", "mask", "recurrent_dropout", "zoneout_eval"])
def test_recomputed_gates_give_the_same_gradients_with_less_saved(
        variant_kwargs: Callable[..., dict[str, object]], saved_bytes: Callable[..., tuple[list[torch.Tensor], int]],
        peephole: bool, variant: str, kind: type[LSTMCell]) -> None:
    from rnnkit.scan import recompute_gates

    cell = _randomise(kind(I, H, peephole=peephole).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    kw = variant_kwargs(variant, B, T, H, torch.float64)

    kept, kept_bytes = saved_bytes(lambda: _run(engine_scan, cell, x, state, **kw))
    with recompute_gates():
        again, again_bytes = saved_bytes(lambda: _run(engine_scan, cell, x, state, **kw))
    for a, b in zip(kept, again):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    # the layer-norm engine keeps xw [T, B, 4H] in place of z, W_hh h (2 x [T, B, 4H]) and tanh c~; its input
    # side's layer norm keeps W_ih x either way (measured: 0.68-0.69 of the bytes, the LSTM engine 0.51-0.54)
    assert again_bytes < (0.75 if kind is LayerNormLSTMCell else 0.6) * kept_bytes


@pytest.mark.parametrize("kind", [LSTMCell, LayerNormLSTMCell])
def test_recomputed_gates_gradcheck(kind: type[LSTMCell]) -> None:
    from rnnkit.scan import recompute_gates

    cell = _randomise(kind(2, 3, peephole=True).double())
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def f(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with recompute_gates():
            out, (h_n, c_n), _ = engine_scan(cell, x, (h0, c0), mask=torch.tensor([[True] * 4, [True, True, False, True]]))
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *cell.parameters()))


def test_inference_weight_cache_follows_weight_changes() -> None:
    cell = _randomise(LSTMCell(I, H, peephole=True).double())
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = (torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    for change in (None, "in-place", "load_state_dict", "replace"):
        with torch.no_grad():
            if change == "in-place":
                cell.weight_hh.mul_(1.5)  # what an optimizer step does
            elif change == "load_state_dict":
                cell.load_state_dict({k: v + 0.1 for k, v in cell.state_dict().items()})
            elif change == "replace":
                cell.bias_ih = torch.nn.Parameter(torch.randn_like(cell.bias_ih))
            expected = reference_scan(cell, x, state)[0]
            got = engine_scan(cell, x, state)[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("kw", [{}, {"peephole": True, "holes": True, "recurrent_dropout": True},
                                {"zoneout": True}])
def test_layernorm_engine_graph_replays_equal_the_eager_loop(check_graph_replays: Callable[..., None],
                                                             graph_case_options: Callable[..., dict[str, object]],
                                                             kw: dict[str, bool]) -> None:
    """On CUDA the layer-norm engine records its loops (rnnkit.scan.cuda_graph) from a shape's second call."""
    cuda = torch.device("cuda")
    torch.manual_seed(8)
    cell = _randomise(LayerNormLSTMCell(I, H, peephole=kw.get("peephole", False)).double()).to(cuda)

    def inputs(call: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, object]]:
        x = torch.randn(B, T, I, dtype=torch.float64, device=cuda)
        state = (torch.randn(B, H, dtype=torch.float64, device=cuda), torch.randn(B, H, dtype=torch.float64, device=cuda))
        return x, state, graph_case_options(kw, B, T, H, cuda)

    def run(case: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, object]]) -> list[torch.Tensor]:
        x, state, options = case
        return _run(engine_scan, cell, x, state, **options)

    check_graph_replays(cell, inputs, run, str(kw))


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.9])
def test_zoneout_keep_masks_have_the_rate_in_every_lane(rate: float) -> None:
    """The CPU draw splits each 64-bit number into four 16-bit lanes: every lane position (the
    sign-carrying top lane too) zones out at ``rate`` within sampling error, a second mask drawn for
    the cell state is independent of the first, and the mask is the state's dtype."""
    from rnnkit.scan.engine import _update_weights

    torch.manual_seed(0)
    steps, batch = 50, 64
    like = torch.empty(0, dtype=torch.float64)
    update_h, update_c, out_mask = _update_weights(None, rate, True, steps, batch, (256, 256), like)
    assert update_h is not None and update_c is not None and out_mask is None
    assert update_h.dtype == torch.float64 and update_h.shape == (steps, batch, 256)
    tol = 5 * (rate * (1 - rate) / (update_h.numel() / 4)) ** 0.5
    for lane in range(4):
        assert abs(1 - update_h.reshape(-1)[lane::4].mean().item() - rate) < tol
    both = ((update_h == 0) & (update_c == 0)).double().mean().item()
    assert abs(both - rate * rate) < 5 * (rate * rate / update_h.numel()) ** 0.5 + 1e-4
    assert set(update_h.unique().tolist()) == {0.0, 1.0}
    mask = torch.rand(batch, steps) > 0.5  # padded steps never update
    update_h, _, _ = _update_weights(mask, rate, True, steps, batch, (256, 256), like)
    assert update_h is not None and not update_h[~mask.t()].any()
