"""The recurrent layers' fast paths under the modes and transforms users apply to whole models.

Every path either gives the reference scan's numbers (float64 to 1e-10, float32 to 1e-5) or
refuses with a one-line error naming the fix: ``torch.compile``, ``torch.func`` (``grad``,
``vmap`` per-sample gradients, ``jvp``), forward-mode AD, inference and no-grad modes, autocast,
deterministic algorithms, double backward, odd input layouts, copies and state dicts.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.func as tf
from torch import Tensor, nn

from rnnkit.nn import GRU, LSTM, RNN, Recurrent

I, H, B, T = 4, 5, 3, 10

# name -> factory(**overrides); the default implementation of each is the path under test
LAYERS: dict[str, Callable[..., nn.Module]] = {
    "lstm_fused": lambda **k: LSTM(I, H, batch_first=True, **k),
    "lstm_fused_bi2": lambda **k: LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, **k),
    "lstm_engine": lambda **k: LSTM(I, H, batch_first=True, **{"implementation": "engine", **k}),
    "lstm_peephole": lambda **k: LSTM(I, H, batch_first=True, cell="peephole_lstm", **k),
    "lstm_proj_engine": lambda **k: LSTM(I, H, proj_size=3, batch_first=True, **{"implementation": "engine", **k}),
    "lstm_layernorm": lambda **k: LSTM(I, H, batch_first=True, cell="layernorm_lstm", **k),
    "lstm_zoneout": lambda **k: LSTM(I, H, batch_first=True, zoneout=0.3, **k),
    "gru_fused": lambda **k: GRU(I, H, batch_first=True, **k),
    "gru_engine": lambda **k: GRU(I, H, batch_first=True, **{"implementation": "engine", **k}),
    "gru_zoneout": lambda **k: GRU(I, H, batch_first=True, zoneout=0.3, **k),
    "rnn_fused": lambda **k: RNN(I, H, batch_first=True, **k),
    "mingru_sequential": lambda **k: Recurrent("mingru", I, H, **{"implementation": "sequential", **k}),
    "minlstm_parallel": lambda **k: Recurrent("minlstm", I, H, **{"implementation": "parallel", **k}),
    "recurrent_lstm_auto": lambda **k: Recurrent("lstm", I, H, **k),
}
# the layers whose default runs rnnkit's hand-written autograd Functions (engines, linear scans)
EXPLICIT_FAST = ("lstm_engine", "lstm_proj_engine", "gru_engine", "mingru_sequential", "minlstm_parallel")
AUTO_FAST = ("lstm_peephole", "lstm_layernorm", "lstm_zoneout", "gru_zoneout", "recurrent_lstm_auto")


def pair(name: str, dtype: torch.dtype = torch.float64, **kw: Any) -> tuple[nn.Module, nn.Module]:
    """The layer under test and a reference-scan twin with the same weights, both in eval mode."""
    torch.manual_seed(0)
    layer = LAYERS[name](**kw).to(dtype).eval()
    ref = LAYERS[name](**{**kw, "implementation": "reference"}).to(dtype).eval()
    ref.load_state_dict(layer.state_dict())
    return layer, ref


def states(out: tuple[Any, ...]) -> tuple[Tensor, ...]:
    return out[1] if isinstance(out[1], tuple) else (out[1],)


def loss_of(out: tuple[Any, ...]) -> Tensor:
    return out[0].pow(2).sum() + sum(0.5 * s.pow(2).sum() for s in states(out))


def assert_close(got: list[Tensor], want: list[Tensor], tol: float) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, (k, a.shape, b.shape)
        scale = max(1.0, b.detach().abs().max().item())
        err = (a.detach().double() - b.detach().double()).abs().max().item()
        assert err <= tol * scale, f"tensor {k}: max error {err:.3g}"


def outputs_and_grads(layer: nn.Module, x: Tensor, hx: Any = None, wrt: list[Tensor] | None = None) -> list[Tensor]:
    x = x.detach().clone().requires_grad_()
    out = layer(x, hx)
    grads = torch.autograd.grad(loss_of(out), [x, *(wrt or []), *layer.parameters()])
    return [out[0], *states(out), *grads]


# -- torch.compile -------------------------------------------------------------------------------
@pytest.fixture
def fresh_dynamo() -> Any:
    import torch._dynamo

    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["lstm_engine", "lstm_peephole", "lstm_proj_engine", "recurrent_lstm_auto",
                                  "gru_engine", "mingru_sequential"])
def test_compiled_fast_paths_match_the_reference(name: str, fresh_dynamo: None) -> None:
    """With backend="aot_eager" the LSTM engine returned uninitialised memory (outputs of 1e29):
    dynamo traced its Function's loop of ``out=`` writes into buffer views. The engines now run
    eagerly inside compiled models."""
    layer, ref = pair(name, torch.float32)
    x = torch.randn(B, T, I)
    compiled = torch.compile(layer, backend="aot_eager")
    got = outputs_and_grads(compiled, x)
    assert_close(got, outputs_and_grads(ref, x), 1e-5)
    with torch.no_grad():
        assert_close([compiled(x)[0]], [ref(x)[0]], 1e-5)


def test_fullgraph_compile_of_a_fast_path_names_the_traceable_implementation(fresh_dynamo: None) -> None:
    layer = Recurrent("lstm", I, H)
    x = torch.randn(B, T, I)
    layer(x)  # eager first
    with pytest.raises(Exception, match="implementation='reference'"):
        torch.compile(layer, backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()
    ref = Recurrent("lstm", I, H, implementation="reference")
    ref.load_state_dict(layer.state_dict())
    out = torch.compile(ref, backend="eager", fullgraph=True)(x)[0]
    assert_close([out], [layer(x)[0]], 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm_engine", "gru_engine"])
def test_inductor_compiled_engines_match_the_reference(name: str, fresh_dynamo: None) -> None:
    """Inductor failed to lower the GRU engine's inference loop (LoweringException)."""
    layer, ref = pair(name, torch.float32)
    x = torch.randn(B, T, I)
    compiled = torch.compile(layer)
    with torch.no_grad():
        assert_close([compiled(x)[0]], [ref(x)[0]], 1e-5)
    assert_close(outputs_and_grads(compiled, x), outputs_and_grads(ref, x), 1e-5)


# -- torch.func and forward-mode AD --------------------------------------------------------------
def _functional_grads(layer: nn.Module, x: Tensor) -> list[Tensor]:
    params = {k: v.detach().clone() for k, v in layer.named_parameters()}
    grads = tf.grad(lambda p: loss_of(tf.functional_call(layer, p, (x,))))(params)
    return list(grads.values())


def _per_sample_grads(layer: nn.Module, x: Tensor) -> list[Tensor]:
    params = {k: v.detach().clone() for k, v in layer.named_parameters()}

    def loss(p: dict[str, Tensor], sample: Tensor) -> Tensor:
        return loss_of(tf.functional_call(layer, p, (sample.unsqueeze(0),)))

    return list(tf.vmap(tf.grad(loss), in_dims=(None, 0))(params, x).values())


@pytest.mark.parametrize("name", ["lstm_fused", "lstm_fused_bi2", "gru_fused", "rnn_fused", *AUTO_FAST])
def test_auto_runs_under_torch_func_grad_vmap_and_jvp(name: str) -> None:
    """Per-sample gradients (vmap over grad, as Opacus does): torch's fused kernels have no batching
    rule and the engines' autograd Functions no functorch rules; "auto" now runs the reference scan."""
    layer, ref = pair(name)
    x = torch.randn(B, T, I, dtype=torch.float64)
    assert_close(_functional_grads(layer, x), _functional_grads(ref, x), 1e-10)
    per_sample = _per_sample_grads(layer, x)
    assert_close(per_sample, _per_sample_grads(ref, x), 1e-10)
    one = _functional_grads(ref, x[1:2])  # sample 1 alone, by plain autograd
    assert_close([g[1] for g in per_sample], one, 1e-10)
    xs = torch.randn(2, B, T, I, dtype=torch.float64)
    assert_close([tf.vmap(lambda xi: layer(xi)[0])(xs)], [torch.stack([ref(xi)[0] for xi in xs])], 1e-10)
    v = torch.randn_like(x)
    _, tangent = tf.jvp(lambda xi: layer(xi)[0], (x,), (v,))
    _, want = tf.jvp(lambda xi: ref(xi)[0], (x,), (v,))
    assert_close([tangent], [want], 1e-10)


@pytest.mark.parametrize("name", EXPLICIT_FAST)
def test_explicit_fast_implementations_name_the_transform_and_the_fix(name: str) -> None:
    layer, ref = pair(name)
    x = torch.randn(B, T, I, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"torch\.func\.grad.*implementation='reference'"):
        _functional_grads(layer, x)
    with pytest.raises(ValueError, match=r"torch\.func\.vmap.*implementation='reference'"):
        _per_sample_grads(layer, x)
    with pytest.raises(ValueError, match="forward-mode AD"), fwAD.dual_level():
        layer(fwAD.make_dual(x, torch.randn_like(x)))
    auto = LAYERS[name](implementation="auto").double().eval()
    auto.load_state_dict(layer.state_dict())
    assert_close(_per_sample_grads(auto, x), _per_sample_grads(ref, x), 1e-10)


def test_explicit_fused_under_vmap_names_the_missing_batching_rule() -> None:
    layer, _ = pair("lstm_fused", implementation="fused")
    with pytest.raises(ValueError, match="vmap.*no batching rule"):
        tf.vmap(lambda xi: layer(xi)[0])(torch.randn(2, B, T, I, dtype=torch.float64))
    assert layer.fused_unavailable_reason() is None  # outside vmap


@pytest.mark.parametrize("name", ["lstm_fused", "lstm_peephole", "gru_zoneout", "recurrent_lstm_auto"])
def test_auto_runs_under_forward_mode_ad(name: str) -> None:
    layer, ref = pair(name)
    x, v = torch.randn(B, T, I, dtype=torch.float64), torch.randn(B, T, I, dtype=torch.float64)
    tangents = []
    for m in (layer, ref):
        with fwAD.dual_level():
            tangents.append(fwAD.unpack_dual(m(fwAD.make_dual(x, v))[0]).tangent)
    assert_close(tangents[:1], tangents[1:], 1e-10)


def test_functional_call_swaps_weights_on_every_path_in_inference() -> None:
    """The engines keep reordered weights between no-gradient calls; functional_call's weights must win."""
    for name in ("lstm_engine", "lstm_proj_engine", "gru_engine", "lstm_layernorm"):
        layer, ref = pair(name)
        x = torch.randn(B, T, I, dtype=torch.float64)
        for k in range(3):
            params = {n: p.detach() + 0.1 * k * torch.randn_like(p) for n, p in layer.named_parameters()}
            with torch.inference_mode():
                got = tf.functional_call(layer, params, (x,))[0]
                want = tf.functional_call(ref, params, (x,))[0]
            assert_close([got], [want], 1e-10)
        with torch.no_grad():
            assert_close([layer(x)[0]], [ref(x)[0]], 1e-10)


# -- grad modes, dtypes, determinism -------------------------------------------------------------
@pytest.mark.parametrize("name", list(LAYERS))
def test_float64_outputs_and_gradients_and_grad_modes(name: str) -> None:
    layer, ref = pair(name)
    x = torch.randn(B, T, I, dtype=torch.float64)
    want = outputs_and_grads(ref, x)
    assert_close(outputs_and_grads(layer, x), want, 1e-10)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            out = layer(x.clone().requires_grad_())
        assert not out[0].requires_grad
        assert_close([out[0], *states(out)], want[:len(states(out)) + 1], 1e-10)
    # training after an inference-mode call (the engines keep tensors made there)
    assert_close(outputs_and_grads(layer, x), want, 1e-10)


@pytest.mark.parametrize("name", ["lstm_fused", "lstm_engine", "lstm_layernorm", "gru_engine", "mingru_sequential"])
def test_float32_and_deterministic_algorithms(name: str) -> None:
    layer, ref = pair(name, torch.float32)
    x = torch.randn(B, T, I)
    want = outputs_and_grads(ref, x)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert_close(outputs_and_grads(layer, x), want, 1e-5)
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("name", ["lstm_engine", "lstm_peephole", "lstm_layernorm", "gru_engine", "gru_fused",
                                  "mingru_sequential", "minlstm_parallel"])
def test_autocast_and_low_precision_weights(name: str) -> None:
    layer, ref = pair(name, torch.float32)
    x = torch.randn(B, T, I)
    want = outputs_and_grads(ref, x)
    xx = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(xx)
        loss = loss_of(out)
    grads = torch.autograd.grad(loss.float(), [xx, *layer.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    assert_close([out[0].float(), *[g.float() for g in grads]], [want[0], *want[-len(grads):]], 0.05)
    for dtype in (torch.bfloat16, torch.float16):
        low = copy.deepcopy(layer).to(dtype)
        out = low(x.to(dtype))
        assert out[0].dtype == dtype
        assert_close([out[0].float()], [want[0]], 0.05)


def test_double_backward_works_on_fused_and_reference_and_names_the_fix_elsewhere() -> None:
    x = torch.randn(B, T, I, dtype=torch.float64)

    def penalty_grads(layer: nn.Module) -> list[Tensor]:
        xx = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(loss_of(layer(xx)), xx, create_graph=True)
        return list(torch.autograd.grad(gx.pow(2).sum(), list(layer.parameters())))

    for name in ("lstm_fused", "gru_fused", "minlstm_parallel"):
        layer, ref = pair(name)
        assert_close(penalty_grads(layer), penalty_grads(ref), 1e-9)
    for name in ("lstm_engine", "lstm_peephole", "gru_engine", "mingru_sequential"):
        layer, _ = pair(name)
        with pytest.raises(RuntimeError, match="implementation='reference'"):
            penalty_grads(layer)


@pytest.mark.parametrize("name", ["lstm_engine", "lstm_proj_engine", "lstm_layernorm", "gru_engine",
                                  "mingru_sequential"])
def test_gradcheck_float64(name: str) -> None:
    layer, _ = pair(name)
    x = torch.randn(2, 4, I, dtype=torch.float64, requires_grad=True)

    def run(inp: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        out = tf.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], params)), (inp,))
        return (out[0], *states(out))

    assert torch.autograd.gradcheck(run, (x, *layer.parameters()), eps=1e-6, atol=1e-6)


# -- input layouts and shapes --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lstm_fused", "lstm_engine", "lstm_proj_engine", "lstm_layernorm", "gru_engine",
                                  "gru_zoneout", "mingru_sequential", "minlstm_parallel"])
def test_non_contiguous_inputs_state_only_gradients_and_tiny_shapes(name: str) -> None:
    layer, ref = pair(name)
    x = torch.randn(T, B, 2 * I, dtype=torch.float64)
    strided = x.transpose(0, 1)[..., ::2]  # transposed and sliced
    assert not strided.is_contiguous()
    assert_close(outputs_and_grads(layer, strided), outputs_and_grads(ref, strided.contiguous()), 1e-10)
    # gradients through the initial state only (frozen weights, plain input), from an expanded parameter
    for m in (layer, ref):
        m.requires_grad_(False)
    results = []
    for m in (layer, ref):
        base = [torch.randn(1, 1, s, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
                for s in m._state_sizes()]
        hx = tuple(b.expand(1, B, -1) for b in base)
        out = m(x.transpose(0, 1)[..., :I], hx if len(hx) > 1 else hx[0])
        results.append([out[0], *torch.autograd.grad(loss_of(out), base)])
    assert_close(results[0], results[1], 1e-10)
    for m in (layer, ref):
        m.requires_grad_(True)
    for batch, steps in ((1, T), (B, 1), (1, 1)):
        xs = torch.randn(batch, steps, I, dtype=torch.float64)
        assert_close(outputs_and_grads(layer, xs), outputs_and_grads(ref, xs), 1e-10)


# -- copies and state dicts ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lstm_fused", "lstm_engine", "lstm_proj_engine", "lstm_layernorm", "gru_engine",
                                  "gru_zoneout", "mingru_sequential"])
def test_copies_pickles_and_state_dicts_across_implementations(name: str) -> None:
    layer, ref = pair(name)
    x = torch.randn(B, T, I, dtype=torch.float64)
    with torch.no_grad():
        layer(x)  # the inference caches are filled
    want = ref(x)[0]
    copied, unpickled = copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for m in (copied, unpickled, loaded):
        with torch.no_grad():
            assert_close([m(x)[0]], [want], 1e-10)
    with torch.no_grad():
        for p in copied.parameters():
            p.add_(0.3 * torch.randn_like(p))
        assert_close([layer(x)[0]], [want], 1e-10)  # the original keeps its weights
        assert (copied(x)[0] - want).abs().max() > 1e-6  # the copy runs on its own
    # train on the fast path, load into the reference, and back (state_dict through weights_only=True)
    layer.train()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss_of(layer(x)).backward()
        opt.step()
    layer.eval()
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    ref.load_state_dict(torch.load(buf, weights_only=True))
    assert_close(outputs_and_grads(layer, x), outputs_and_grads(ref, x), 1e-10)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt.zero_grad()
    loss_of(ref(x)).backward()
    opt.step()
    ref.eval()
    layer.load_state_dict(ref.state_dict())
    assert_close(outputs_and_grads(layer, x), outputs_and_grads(ref, x), 1e-10)
