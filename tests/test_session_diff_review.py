"""Edge cases probed in a review of the large-product, adjoint-scan, zoneout and GRU-dispatch changes.

No defect was found in these paths; the tests pin the behaviour the review checked: ``linear`` and
``large_matmul`` on oneDNN equal torch for degenerate and strided shapes, the adjoint log-space scan's
first and second derivatives are exact (both directions, chunked or not, ``b = 0`` included), and the
zoneout keep-mask draws each of its 16-bit lanes with the requested rate.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnkit.scan.engine import _zoneout_keep
from rnnkit.scan.parallel import linear_scan_log, linear_scan_sequential
from rnnkit.scan.step_matmul import large_matmul, linear, step_matmul_backend


@pytest.mark.parametrize("m, k, n", [(1, 5, 7), (5, 1, 7), (5, 7, 1), (1, 1, 1), (3, 4, 5)])
def test_large_matmul_on_onednn_handles_unit_dimensions_and_transposed_views(m: int, k: int, n: int) -> None:
    a, b = torch.randn(m, k), torch.randn(k, n)
    with step_matmul_backend("onednn"):
        for left in (a, a.t().contiguous().t()):
            for right in (b, b.t().contiguous().t()):
                torch.testing.assert_close(large_matmul(left, right), a @ b)


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4), (0, 4), (2, 0, 4)])
def test_linear_on_onednn_matches_f_linear_for_any_leading_shape(shape: tuple[int, ...]) -> None:
    weight, bias = torch.randn(6, 4), torch.randn(6)
    x = torch.randn(*shape)
    with step_matmul_backend("onednn"):
        for b in (None, bias, torch.randn(1).expand(6)):
            torch.testing.assert_close(linear(x, weight, b), F.linear(x, weight, b))
        expanded = torch.randn(1, 4).expand(5, 4)
        torch.testing.assert_close(linear(expanded, weight.t().contiguous().t(), bias), F.linear(expanded, weight, bias))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_linear_on_onednn_gives_the_gradients_asked_for(needs: tuple[bool, bool, bool]) -> None:
    x, weight, bias = torch.randn(2, 3, 4), torch.randn(6, 4), torch.randn(6)
    grad = torch.randn(2, 3, 6)
    got = [t.clone().requires_grad_(r) for t, r in zip((x, weight, bias), needs)]
    expected = [t.clone().requires_grad_(r) for t, r in zip((x, weight, bias), needs)]
    with step_matmul_backend("onednn"):
        g1 = torch.autograd.grad(linear(*got), [t for t in got if t.requires_grad], grad)
    g2 = torch.autograd.grad(F.linear(*expected), [t for t in expected if t.requires_grad], grad)
    for p, q in zip(g1, g2, strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [None, 3])
def test_adjoint_log_scan_first_and_second_derivatives_are_exact(reverse: bool, chunk: int | None) -> None:
    gen = torch.Generator().manual_seed(0)
    log_a = (-2 * torch.rand(2, 7, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    b = torch.randn(2, 7, 3, dtype=torch.float64, generator=gen)
    b[0, 2] = 0.0  # where log |b| has no gradient
    b.requires_grad_()
    h0 = torch.randn(2, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def scan(la: torch.Tensor, bb: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
        return linear_scan_log(la, bb.detach().abs().clamp_min(1e-300).log(), hh, b_sign=bb.detach().sign(),
                               reverse=reverse, chunk_size=chunk, b=bb)

    torch.testing.assert_close(scan(log_a, b, h0), linear_scan_sequential(log_a.exp(), b, h0, reverse=reverse))
    assert torch.autograd.gradcheck(scan, (log_a, b, h0))
    assert torch.autograd.gradgradcheck(scan, (log_a, b, h0))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_zoneout_keep_mask_has_the_rate_in_every_lane(rate: float) -> None:
    torch.manual_seed(0)
    keep = _zoneout_keep(torch.empty(400_000), rate)
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    for lane in range(4):  # the four 16-bit lanes of each 64-bit draw
        assert abs(keep.view(-1, 4)[:, lane].mean().item() - (1 - rate)) < 0.01
    assert _zoneout_keep(torch.empty(0, 3), rate).shape == (0, 3)
