"""tanh through sigmoid (rnnkit.scan.elementwise) against torch.tanh, on both routes, and where each is used."""

from __future__ import annotations

import pytest
import torch

from rnnkit import nn as rnn
from rnnkit.nn.attention import BahdanauAttention
from rnnkit.nn.pooling import AttentionPooling
from rnnkit.scan import elementwise
from rnnkit.scan.step_matmul import step_matmul_backend


@pytest.fixture(params=[True, False], ids=["via_sigmoid", "torch_tanh"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Force the measured choice either way for float32 and float64 at this thread count."""
    for dtype in (torch.float32, torch.float64):
        monkeypatch.setitem(elementwise._CHOICES, (dtype, torch.get_num_threads()), request.param)
    return bool(request.param)


def _wide(dtype: torch.dtype) -> torch.Tensor:
    # tails where tanh saturates, a dense middle, and exact zeros
    x = torch.cat([torch.linspace(-40, 40, 6001, dtype=dtype), torch.linspace(-1e-3, 1e-3, 4001, dtype=dtype),
                   torch.zeros(7, dtype=dtype)])
    return x


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-7), (torch.float64, 1e-15)])
def test_tanh_into_matches_torch(route: bool, dtype: torch.dtype, tol: float) -> None:
    x = _wide(dtype)
    assert elementwise.uses_sigmoid(x) is route
    out = torch.empty_like(x)
    assert elementwise.tanh_into(x, out) is out
    torch.testing.assert_close(out, torch.tanh(x), rtol=0, atol=tol)
    assert out.abs().max() <= 1.0
    assert torch.equal(out[x == 0], torch.zeros_like(out[x == 0]))


def test_tanh_in_place_and_strided_views(route: bool) -> None:
    base = torch.randn(64, 3 * 128)
    expected = torch.tanh(base[:, 256:])
    view = base[:, 256:]  # a GRU engine's n block: rows strided by 3H
    assert not view.is_contiguous()
    assert elementwise.tanh_(view) is view
    torch.testing.assert_close(base[:, 256:], expected, rtol=0, atol=3e-7)
    x = torch.randn(128, 80).t()  # transposed input, contiguous output
    out = torch.empty(80, 128)
    torch.testing.assert_close(elementwise.tanh_into(x, out), torch.tanh(x), rtol=0, atol=3e-7)


def test_differentiable_tanh_gradients(route: bool) -> None:
    x = torch.randn(64, 80, dtype=torch.float64, requires_grad=True)  # 5120 elements: over MIN_ELEMENTS
    y = elementwise.tanh(x)
    torch.testing.assert_close(y, torch.tanh(x), rtol=0, atol=1e-15)
    (g,) = torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)
    (g_ref,) = torch.autograd.grad(torch.tanh(x).pow(3).sum(), x, create_graph=True)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)
    (gg,) = torch.autograd.grad(g.sum(), x)  # second derivative through the saved output
    (gg_ref,) = torch.autograd.grad(g_ref.sum(), x)
    torch.testing.assert_close(gg, gg_ref, rtol=1e-10, atol=1e-12)
    small = torch.randn(4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(elementwise.tanh, (small,))  # under MIN_ELEMENTS: torch.tanh itself
    wide = torch.randn(8, 600, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(elementwise._Tanh.apply, (wide[:2, :40].detach().requires_grad_(),))
    assert torch.autograd.gradgradcheck(elementwise._Tanh.apply, (wide[:2, :40].detach().requires_grad_(),))
    with torch.no_grad():
        torch.testing.assert_close(elementwise.tanh(wide), torch.tanh(wide), rtol=0, atol=1e-15)


def test_torch_func_transforms_work_through_it(route: bool) -> None:
    x = torch.randn(3, 64, 80, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: elementwise.tanh(v * 2.0).sum(0)))(x)
    expected = torch.func.vmap(torch.func.jacrev(lambda v: torch.tanh(v * 2.0).sum(0)))(x)
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-14)
    with torch.no_grad():  # the path without autograd too
        torch.testing.assert_close(torch.func.vmap(elementwise.tanh)(x), torch.tanh(x), rtol=0, atol=1e-15)


def test_where_torch_tanh_runs_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(elementwise._CHOICES, (torch.float32, torch.get_num_threads()), True)
    small = torch.randn(elementwise.MIN_ELEMENTS - 1)
    assert not elementwise.uses_sigmoid(small)  # per-op dispatch dominates: one tanh call
    assert torch.equal(elementwise.tanh(small), torch.tanh(small))
    half = torch.randn(8192).half()
    assert not elementwise.uses_sigmoid(half)
    assert torch.equal(elementwise.tanh(half), torch.tanh(half))
    big = torch.randn(8192)
    assert elementwise.uses_sigmoid(big)
    with step_matmul_backend("torch"):  # the bit-for-bit switch keeps torch's kernels
        assert not elementwise.uses_sigmoid(big)
        assert torch.equal(elementwise.tanh(big), torch.tanh(big))
    monkeypatch.setenv("RNNKIT_STEP_MATMUL", "torch")
    assert not elementwise.uses_sigmoid(big)


def test_choice_is_measured_once_per_dtype_and_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elementwise, "_CHOICES", {})
    calls: list[torch.dtype] = []
    measure = elementwise._measure

    def counting(dtype: torch.dtype) -> bool:
        calls.append(dtype)
        return measure(dtype)

    monkeypatch.setattr(elementwise, "_measure", counting)
    x = torch.randn(8192)
    first = elementwise.uses_sigmoid(x)
    for _ in range(3):
        assert elementwise.uses_sigmoid(x) is first
    elementwise.uses_sigmoid(x.double())
    assert calls == [torch.float32, torch.float64]
    assert isinstance(first, bool)


def test_probe_leaves_the_random_stream_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elementwise, "_CHOICES", {})
    torch.manual_seed(3)
    expected = torch.rand(5)
    torch.manual_seed(3)
    elementwise.uses_sigmoid(torch.empty(8192))  # measures here
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("make", [
    lambda: rnn.LSTM(8, 80, batch_first=True, cell="peephole_lstm", implementation="engine"),
    lambda: rnn.LSTM(8, 80, batch_first=True, cell="layernorm_lstm", implementation="engine"),
    lambda: rnn.GRU(8, 80, batch_first=True, zoneout=0.0, implementation="engine"),
], ids=["peephole", "layernorm", "gru"])
def test_engines_on_both_routes_match_the_reference(route: bool, make) -> None:  # type: ignore[no-untyped-def]
    """Batch 64 x H 80 puts the step's tanh (5120 elements) on the routed side of MIN_ELEMENTS."""
    torch.manual_seed(0)
    layer = make()
    reference = make()
    reference.load_state_dict(layer.state_dict())
    reference.implementation = "reference"
    x = torch.randn(64, 7, 8, requires_grad=True)
    out, _ = layer(x)
    out_ref, _ = reference(x)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=2e-6)
    g, = torch.autograd.grad(out.square().sum(), x)
    g_ref, = torch.autograd.grad(out_ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=2e-5)
    layer.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], reference(x)[0], rtol=0, atol=2e-6)


def test_attention_modules_on_both_routes(route: bool) -> None:
    torch.manual_seed(0)
    attention = BahdanauAttention(16, 24, 64).double()
    keys = torch.randn(8, 12, 24, dtype=torch.float64)  # hidden [8, 12, 64]: 6144 elements
    mask = torch.ones(8, 12, dtype=torch.bool)
    mask[0, 9:] = False
    query = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)
    context, weights = attention(query, keys, mask)
    hidden = attention.key_proj(keys) + attention.query_proj(query).unsqueeze(1)
    scores = attention.v(torch.tanh(hidden)).squeeze(-1).masked_fill(~mask, float("-inf"))
    expected = torch.softmax(scores, -1)
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda q: attention(q, keys, mask)[0], (query,))
    pooling = AttentionPooling(64, 96).double()
    outputs = torch.randn(4, 20, 64, dtype=torch.float64)  # projected [4, 20, 96]: 7680 elements
    pooled, w = pooling(outputs)
    ref_w = torch.softmax(pooling.score(torch.tanh(pooling.project(outputs))).squeeze(-1), -1)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-14)
    torch.testing.assert_close(pooled, torch.einsum("bt,btf->bf", ref_w, outputs), rtol=0, atol=1e-13)
