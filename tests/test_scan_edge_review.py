"""Edge cases of the fast recurrent paths against the reference scan (a review of rnnkit.scan).

Each test pins one defect found in that review: the fast path gave other numbers, other dtypes or
an error where ``implementation="reference"`` did not.
"""

from __future__ import annotations

import copy

import pytest
import torch

import rnnkit.nn as rnn

I, H = 3, 5


def _reference(layer: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(layer)
    ref.implementation = "reference"  # type: ignore[assignment]
    return ref


# -- linear scans under autocast -----------------------------------------------------------------
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
@pytest.mark.parametrize("implementation", ["sequential", "parallel"])
def test_linear_scans_under_cpu_autocast_keep_the_states_dtype_and_precision(cell: str, implementation: str) -> None:
    """Under bfloat16 autocast the projection is bfloat16; the scans ran their coefficients and running
    sums in it too: the sequential scan returned bfloat16 outputs and final state (the reference scan:
    float32), and the log-space scan's error was 0.08-0.36 where the reference scan's was 0.007-0.013."""
    layer = rnn.Recurrent(cell, 16, 32)
    x = torch.randn(2, 200, 16)
    h0 = torch.randn(1, 2, 32)
    truth = copy.deepcopy(layer).double()
    truth.implementation = "reference"
    with torch.no_grad():
        exact, exact_h = truth(x.double(), h0.double())
    fast = copy.deepcopy(layer)
    fast.implementation = implementation
    ref = _reference(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = fast(x, h0)
        ref_out, ref_h = ref(x, h0)
    assert (out.dtype, h_n.dtype) == (ref_out.dtype, ref_h.dtype) == (torch.float32, torch.float32)
    ref_err = (ref_out.double() - exact).abs().max().item()
    assert (out.double() - exact).abs().max().item() <= 1.5 * ref_err
    assert (h_n.double() - exact_h).abs().max().item() <= 1.5 * (ref_h.double() - exact_h).abs().max().item() + 1e-3
    with torch.autocast("cpu", dtype=torch.bfloat16):  # and it still trains there
        out, h_n = fast(x[:, :20], h0.requires_grad_())
    (out.sum() + h_n.sum()).backward()
    assert h0.grad is not None and all(p.grad is not None for p in fast.parameters())


# -- fused path, every sequence empty ------------------------------------------------------------
@pytest.mark.parametrize("cls, kw", [(rnn.LSTM, {}), (rnn.GRU, {}), (rnn.RNN, {}), (rnn.LSTM, {"proj_size": 2})])
@pytest.mark.parametrize("hx_given", [False, True])
def test_fused_batch_of_empty_sequences_backpropagates_like_the_reference(cls: type, kw: dict[str, int],
                                                                          hx_given: bool) -> None:
    """All lengths zero on CPU with autograd on (the fused kernel per stretch of equal activity): the
    outputs were fresh zeros outside the graph, so ``out.sum().backward()`` raised "does not require
    grad" where the reference scan's ran, and ``x.grad`` stayed None (the reference: zeros)."""
    layer = cls(I, H, num_layers=2, bidirectional=True, batch_first=True, **kw).double()
    ref = _reference(layer)
    x = torch.randn(3, 6, I, dtype=torch.float64)
    x[:, 2:] = float("nan")  # padding never reaches the math
    lengths = torch.zeros(3, dtype=torch.long)
    sizes = (layer.proj_size or H, H) if cls is rnn.LSTM else (H,)
    hx = tuple(torch.randn(4, 3, s, dtype=torch.float64) for s in sizes) if hx_given else None
    results = []
    for module in (ref, layer):
        xx = x.clone().requires_grad_()
        h = None if hx is None else tuple(t.clone().requires_grad_() for t in hx)
        out, h_n = module(xx, None if h is None else (h if len(h) > 1 else h[0]), lengths=lengths)
        finals = h_n if isinstance(h_n, tuple) else (h_n,)
        (out.sum() + sum((f * torch.linspace(-1, 1, f.shape[-1], dtype=f.dtype)).sum() for f in finals)).backward()
        grads = [xx.grad, *(t.grad for t in h or ()), *(p.grad for p in module.parameters())]
        results.append([out.detach(), *(f.detach() for f in finals), *grads])
    for e, g in zip(*results, strict=True):
        assert g is not None and e is not None
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
    assert all(bool(torch.isfinite(t).all()) for t in results[1])


# -- guards: what was found right, kept right ----------------------------------------------------
@pytest.mark.parametrize("implementation, cls, kw", [
    ("engine", rnn.LSTM, {"cell": "peephole_lstm"}), ("engine", rnn.LSTM, {"proj_size": 2}),
    ("engine", rnn.LSTM, {"cell": "layernorm_lstm"}), ("engine", rnn.GRU, {}),
    ("sequential", None, {"cell": "mingru"}), ("parallel", None, {"cell": "minlstm"})])
@pytest.mark.parametrize("masked", [False, True])
def test_an_in_place_edit_of_the_output_never_gives_silently_wrong_gradients(implementation: str, cls: type | None,
                                                                             kw: dict[str, object],
                                                                             masked: bool) -> None:
    """The engines and the sequential scan return (views of) buffers their backward reads: editing the
    output in place (``relu_``, in-place dropout) must raise, never corrupt the gradients. (It raises
    where the reference scan runs: a known limitation, see the review report.)"""
    options = dict(kw)
    layer = (rnn.Recurrent(str(options.pop("cell")), I, H, implementation=implementation) if cls is None
             else cls(I, H, batch_first=True, implementation=implementation, **options)).double()
    x = torch.randn(2, 9, I, dtype=torch.float64)
    lengths = {"lengths": torch.tensor([9, 4])} if masked else {}
    grads = []
    for module in (_reference(layer), layer):
        module.zero_grad()
        out, _ = module(x, **lengths)
        try:  # torch refuses the edit itself (a custom Function's view) or the backward (a saved tensor changed)
            out.mul_(torch.linspace(-2, 2, out.shape[-1], dtype=out.dtype))
            out.pow(2).sum().backward()
        except RuntimeError as err:
            assert module is layer and "inplace" in str(err).replace("in-place", "inplace")
            return
        grads.append([p.grad for p in module.parameters()])
    for e, g in zip(*grads, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("implementation, kw", [("engine", {"cell": "peephole_lstm"}), ("engine", {"proj_size": 2}),
                                                ("engine", {"cell": "layernorm_lstm"})])
@pytest.mark.parametrize("steps", [1, 2])
def test_engines_on_one_or_two_steps_of_a_batch_of_one_match_the_reference(implementation: str,
                                                                           kw: dict[str, object], steps: int) -> None:
    """T=1 and T=2 at B=1, bidirectional and stacked, with gradients for the input, h0, c0 and every weight."""
    layer = rnn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, implementation=implementation,
                     **kw).double()  # type: ignore[arg-type]
    sizes = (layer.proj_size or H, H)
    x = torch.randn(1, steps, I, dtype=torch.float64)
    hx = tuple(torch.randn(4, 1, s, dtype=torch.float64) for s in sizes)
    results = []
    for module in (_reference(layer), layer):
        xx = x.clone().requires_grad_()
        h = tuple(t.clone().requires_grad_() for t in hx)
        out, (h_n, c_n) = module(xx, h)
        (out.pow(2).sum() + h_n.sum() + (c_n * 0.5).sum()).backward()
        results.append([out.detach(), h_n.detach(), c_n.detach(), xx.grad, *(t.grad for t in h),
                        *(p.grad for p in module.parameters())])
    for e, g in zip(*results, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


# -- gradients where b_t = 0 exactly: the log-space scan takes them from the adjoint recurrence --
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_parallel_scan_gradient_at_an_exactly_zero_linear_candidate(cell: str) -> None:
    """``candidate_activation="linear"``, an input step of zeros and no bias: ``k_h = 0`` exactly, so
    ``b_t = 0`` and its log-space form ``log max(|k|, tiny)`` has zero gradient; the reference scan's
    ``dL/dx_t`` there is ``z_t W_h^T dL/dh~_t`` (about 0.5 off in this case)."""
    layer = rnn.Recurrent(cell, I, 4, bias=False, implementation="parallel",
                          cell_options={"candidate_activation": "linear"}).double()
    x = torch.randn(2, 10, I, dtype=torch.float64)
    x[:, 4] = 0.0
    grads = []
    for module in (_reference(layer), layer):
        xx = x.clone().requires_grad_()
        out, _ = module(xx)
        out.pow(2).sum().backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_adjoint_log_scan_first_and_second_derivatives(reverse: bool, chunk_size: int | None) -> None:
    """``linear_scan_log(..., b=b)`` (the adjoint backward) against autograd's own derivatives by
    finite differences: gradcheck and gradgradcheck in float64, signed ``b`` with exact zeros, a
    non-zero ``h0``, blocks of 4 over 11 steps."""
    from rnnkit.scan.parallel import linear_scan_log

    gen = torch.Generator().manual_seed(0)
    log_a = (-torch.rand(2, 11, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(2, 11, 3, generator=gen, dtype=torch.float64)
    b[:, 5, 1] = 0.0
    b.requires_grad_()
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64).requires_grad_()

    def scan(log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        log_b = b.detach().abs().clamp_min(torch.finfo(b.dtype).tiny).log()
        return linear_scan_log(log_a, log_b, h0, b_sign=b.detach().sign(), reverse=reverse,
                               chunk_size=chunk_size, b=b)

    assert torch.autograd.gradcheck(scan, (log_a, b, h0))
    assert torch.autograd.gradgradcheck(scan, (log_a, b, h0))


def test_parallel_scan_gradients_with_masks_and_state_match_the_sequential_form() -> None:
    """minGRU with a signed candidate, gaps in the mask, a non-zero initial state, both directions:
    the parallel scan's adjoint gradients equal the sequential scan's (weights, inputs, state)."""
    for bidirectional in (False, True):
        base = rnn.Recurrent("mingru", I, H, implementation="sequential", bidirectional=bidirectional,
                             cell_options={"candidate_activation": "linear"}).double()
        par = copy.deepcopy(base)
        par.implementation = "parallel"
        x = torch.randn(3, 9, I, dtype=torch.float64)
        x[1, 2] = 0.0
        mask = torch.ones(3, 9, dtype=torch.bool)
        mask[0, 3:5] = False
        mask[2, 7:] = False
        h0 = torch.randn(1 + bidirectional, 3, H, dtype=torch.float64)
        results = []
        for module in (base, par):
            xx, hh = x.clone().requires_grad_(), h0.clone().requires_grad_()
            out, h_n = module(xx, hh, mask=mask)
            (out.sin().sum() + h_n.pow(2).sum()).backward()
            results.append([out, h_n, xx.grad, hh.grad, *(p.grad for p in module.parameters())])
            module.zero_grad()
        for e, g in zip(*results, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-10)
