"""The Triton kernels of :mod:`rnnkit.scan.engine_triton` (imported only when they are used).

Triton resolves a kernel's helpers through the module's globals, and ``TRITON_INTERPRET=1`` takes
effect when a kernel is decorated, so the kernels live here, at module level, and this module is
imported on first use: set ``TRITON_INTERPRET`` before that to run them on the CPU.
"""
# ruff: noqa
# mypy: ignore-errors

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):  # type: ignore[no-untyped-def]
    return 1.0 / (1.0 + tl.exp(-x))

@triton.jit
def _tile(batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    """This program's ``[BLOCK_B, 1]`` rows, ``[1, BLOCK_H]`` columns and in-bounds mask."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :]
    return rows, cols, (rows < batch) & (cols < hidden)


@triton.jit
def _load_gates(ptr, hidden, ok):  # type: ignore[no-untyped-def]
    """The four gate blocks ``o, i, f, g`` of a ``[B, 4H]`` row tile."""
    return (tl.load(ptr, mask=ok, other=0.0), tl.load(ptr + hidden, mask=ok, other=0.0),
            tl.load(ptr + 2 * hidden, mask=ok, other=0.0), tl.load(ptr + 3 * hidden, mask=ok, other=0.0))


@triton.jit
def _store_gates(ptr, hidden, ok, o, i, f, g):  # type: ignore[no-untyped-def]
    tl.store(ptr, o, mask=ok)
    tl.store(ptr + hidden, i, mask=ok)
    tl.store(ptr + 2 * hidden, f, mask=ok)
    tl.store(ptr + 3 * hidden, g, mask=ok)


@triton.jit
def _cell(zo, zi, zf, zg, c, peep, cols, hidden, HAS_PEEP: tl.constexpr):  # type: ignore[no-untyped-def]
    """Gate activations and ``c~ = f c + i g`` from the pre-activations (``g`` rows doubled:
    ``tanh(a) = 2 sigmoid(2a) - 1``), with peepholes on ``c_{t-1}`` (``i``, ``f``) and ``c~`` (``o``)."""
    if HAS_PEEP:
        zi += tl.load(peep + cols, mask=cols < hidden, other=0.0) * c
        zf += tl.load(peep + hidden + cols, mask=cols < hidden, other=0.0) * c
    i = _sigmoid(zi)
    f = _sigmoid(zf)
    sg = _sigmoid(zg)
    cc = f * c + i * (2.0 * sg - 1.0)
    if HAS_PEEP:
        zo += tl.load(peep + 2 * hidden + cols, mask=cols < hidden, other=0.0) * cc
    return _sigmoid(zo), i, f, sg, cc


@triton.jit
def _store_state(rows, cols, ok, h, c, cc, h_prev, h_prev_row, h_next, h_next_row, c_next, c_next_row, h_in,
        h_in_row, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, rec, rec_row, rec_col,
        HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr, HAS_REC: tl.constexpr,
        CARRIED: tl.constexpr):  # type: ignore[no-untyped-def]
    """The new state from the cell's ``h~ = h`` and ``c~ = cc``: lerped by the update weights, and the next
    matmul input ``h_t * rec``. Without ``UPDATE_H`` only ``c`` is lerped and ``h~`` is stored as it is
    (a projected cell: its ``h`` is updated after the projection, outside the kernel)."""
    if HAS_UPDATES:
        if UPDATE_H:
            hp = tl.load(h_prev + rows * h_prev_row + cols, mask=ok, other=0.0)
            uh = tl.load(u_h + rows * u_h_row + cols * u_h_col, mask=ok, other=0.0)
            h = hp + uh * (h - hp)
        uc = tl.load(u_c + rows * u_c_row + cols * u_c_col, mask=ok, other=0.0)
        tl.store(c_next + rows * c_next_row + cols, c + uc * (cc - c), mask=ok)
    tl.store(h_next + rows * h_next_row + cols, h, mask=ok)
    if HAS_REC:
        h = h * tl.load(rec + rows * rec_row + cols * rec_col, mask=ok, other=0.0)
    if CARRIED:
        tl.store(h_in + rows * h_in_row + cols, h, mask=ok)


@triton.jit
def _reaching(rows, cols, ok, g_h, g_c, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col,
        HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr):  # type: ignore[no-untyped-def]
    """What of ``dL/dh_t`` and ``dL/dc_t`` reaches the cell (the rest skipped it through the update weights;
    without ``UPDATE_H``, ``g_h`` already is what reaches the cell's ``h~``)."""
    if HAS_UPDATES:
        gck = g_c * tl.load(u_c + rows * u_c_row + cols * u_c_col, mask=ok, other=0.0)
        dh = g_h
        if UPDATE_H:
            dh = g_h * tl.load(u_h + rows * u_h_row + cols * u_h_col, mask=ok, other=0.0)
        return dh, gck
    return g_h, g_c


@triton.jit
def _cell_backward(rows, cols, ok, hidden, dc, dzo, i, f, sg, c, cc, g_h, g_c, dh, gck, peep, peep_if, peep_o,
        dz, dz_row, gc_next, gc_next_row, skip, skip_row, g_prev, g_prev_row,
        HAS_PEEP: tl.constexpr, HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr,
        HAS_GPREV: tl.constexpr):  # type: ignore[no-untyped-def]
    """From ``dL/dc~`` through the tanh (``dc``) and ``dL/d a_o`` (``dzo``): the other gates' gradients, ``dL/dc_{t-1}``,
    the peephole sums, what skips the recurrent matmul; stores ``dz`` and returns ``(dzi, dzf, dzg)``."""
    if HAS_PEEP:
        dc += dzo * tl.load(peep + 2 * hidden + cols, mask=cols < hidden, other=0.0)
    dc += gck
    dzi = dc * (2.0 * sg - 1.0) * i * (1.0 - i)
    dzf = dc * c * f * (1.0 - f)
    dzg = dc * 2.0 * i * sg * (1.0 - sg)
    nxt = dc * f
    if HAS_PEEP:
        nxt += dzi * tl.load(peep + cols, mask=cols < hidden, other=0.0)
        nxt += dzf * tl.load(peep + hidden + cols, mask=cols < hidden, other=0.0)
        pif = peep_if + rows * (2 * hidden) + cols
        tl.store(pif, tl.load(pif, mask=ok, other=0.0) + dzi * c, mask=ok)
        tl.store(pif + hidden, tl.load(pif + hidden, mask=ok, other=0.0) + dzf * c, mask=ok)
        po = peep_o + rows * hidden + cols
        tl.store(po, tl.load(po, mask=ok, other=0.0) + dzo * cc, mask=ok)
    if HAS_UPDATES:
        nxt += g_c - gck  # what skipped the cell: (1 - u_c) dL/dc_t
    _store_gates(dz + rows * dz_row + cols, hidden, ok, dzo, dzi, dzf, dzg)
    tl.store(gc_next + rows * gc_next_row + cols, nxt, mask=ok)
    if HAS_UPDATES:  # the part of dL/dh_{t-1} that does not pass through the recurrent matmul
        if UPDATE_H:
            s = g_h - dh
            if HAS_GPREV:
                s += tl.load(g_prev + rows * g_prev_row + cols, mask=ok, other=0.0)
            tl.store(skip + rows * skip_row + cols, s, mask=ok)
    return dzi, dzf, dzg


@triton.jit
def lstm_forward_step(z, z_row, c_prev, c_prev_row, c_cand, c_cand_row, tanh_c, tanh_c_row, h_prev, h_prev_row,
        h_next, h_next_row, c_next, c_next_row, h_in, h_in_row, peep, u_h, u_h_row, u_h_col, u_c, u_c_row,
        u_c_col, rec, rec_row, rec_col, batch, hidden,
        HAS_PEEP: tl.constexpr, HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr, HAS_REC: tl.constexpr,
        CARRIED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    rows, cols, ok = _tile(batch, hidden, BLOCK_B, BLOCK_H)
    zp = z + rows * z_row + cols
    zo, zi, zf, zg = _load_gates(zp, hidden, ok)
    c = tl.load(c_prev + rows * c_prev_row + cols, mask=ok, other=0.0)
    o, i, f, sg, cc = _cell(zo, zi, zf, zg, c, peep, cols, hidden, HAS_PEEP)
    tc = 2.0 * _sigmoid(2.0 * cc) - 1.0
    _store_gates(zp, hidden, ok, o, i, f, sg)
    tl.store(c_cand + rows * c_cand_row + cols, cc, mask=ok)
    tl.store(tanh_c + rows * tanh_c_row + cols, tc, mask=ok)
    _store_state(rows, cols, ok, o * tc, c, cc, h_prev, h_prev_row, h_next, h_next_row, c_next, c_next_row, h_in,
                 h_in_row, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, rec, rec_row, rec_col,
                 HAS_UPDATES, UPDATE_H, HAS_REC, CARRIED)

@triton.jit
def lstm_backward_step(a, a_row, tanh_c, tanh_c_row, c_cand, c_cand_row, c_prev, c_prev_row, gh, gh_row, gc, gc_row,
        dz, dz_row, gc_next, gc_next_row, skip, skip_row, g_prev, g_prev_row, peep, peep_if, peep_o,
        u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, batch, hidden,
        HAS_PEEP: tl.constexpr, HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr, HAS_GPREV: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    rows, cols, ok = _tile(batch, hidden, BLOCK_B, BLOCK_H)
    o, i, f, sg = _load_gates(a + rows * a_row + cols, hidden, ok)
    tc = tl.load(tanh_c + rows * tanh_c_row + cols, mask=ok, other=0.0)
    c = tl.load(c_prev + rows * c_prev_row + cols, mask=ok, other=0.0)
    g_h = tl.load(gh + rows * gh_row + cols, mask=ok, other=0.0)
    g_c = tl.load(gc + rows * gc_row + cols, mask=ok, other=0.0)
    dh, gck = _reaching(rows, cols, ok, g_h, g_c, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, HAS_UPDATES, UPDATE_H)
    dzo = dh * tc * o * (1.0 - o)
    cc = c  # c~ is read only for the peephole sums
    if HAS_PEEP:
        cc = tl.load(c_cand + rows * c_cand_row + cols, mask=ok, other=0.0)
    _cell_backward(rows, cols, ok, hidden, dh * o * (1.0 - tc * tc), dzo, i, f, sg, c, cc, g_h, g_c, dh, gck, peep,
                   peep_if, peep_o, dz, dz_row, gc_next, gc_next_row, skip, skip_row, g_prev, g_prev_row,
                   HAS_PEEP, HAS_UPDATES, UPDATE_H, HAS_GPREV)


@triton.jit
def _load3(ptr, hidden, ok):  # type: ignore[no-untyped-def]
    """The three gate blocks ``r, z, n`` of a ``[B, 3H]`` row tile."""
    return (tl.load(ptr, mask=ok, other=0.0), tl.load(ptr + hidden, mask=ok, other=0.0),
            tl.load(ptr + 2 * hidden, mask=ok, other=0.0))


@triton.jit
def _store3(ptr, hidden, ok, a, b, c):  # type: ignore[no-untyped-def]
    tl.store(ptr, a, mask=ok)
    tl.store(ptr + hidden, b, mask=ok)
    tl.store(ptr + 2 * hidden, c, mask=ok)


@triton.jit
def gru_forward_step(xw, xw_row, hw, hw_row, gates, gates_row, h_prev, h_prev_row, h_next, h_next_row, h_in,
        h_in_row, u_h, u_h_row, u_h_col, rec, rec_row, rec_col, batch, hidden,
        HAS_UPDATES: tl.constexpr, HAS_REC: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    rows, cols, ok = _tile(batch, hidden, BLOCK_B, BLOCK_H)
    xr, xz, xn = _load3(xw + rows * xw_row + cols, hidden, ok)
    hr, hz, hn = _load3(hw + rows * hw_row + cols, hidden, ok)
    r = _sigmoid(xr + hr)
    z = _sigmoid(xz + hz)
    n = 2.0 * _sigmoid(2.0 * (xn + r * hn)) - 1.0  # tanh
    hp = tl.load(h_prev + rows * h_prev_row + cols, mask=ok, other=0.0)
    h = (1.0 - z) * n + z * hp
    if HAS_UPDATES:
        h = hp + tl.load(u_h + rows * u_h_row + cols * u_h_col, mask=ok, other=0.0) * (h - hp)
    _store3(gates + rows * gates_row + cols, hidden, ok, r, z, n)
    tl.store(h_next + rows * h_next_row + cols, h, mask=ok)
    if HAS_REC:
        tl.store(h_in + rows * h_in_row + cols, h * tl.load(rec + rows * rec_row + cols * rec_col, mask=ok, other=0.0),
                 mask=ok)


@triton.jit
def gru_backward_step(gates, gates_row, hw, hw_row, h_prev, h_prev_row, gh, gh_row, dxw, dxw_row, dhw, dhw_row,
        skip, skip_row, g_prev, g_prev_row, u_h, u_h_row, u_h_col, batch, hidden,
        HAS_UPDATES: tl.constexpr, HAS_GPREV: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    rows, cols, ok = _tile(batch, hidden, BLOCK_B, BLOCK_H)
    r, z, n = _load3(gates + rows * gates_row + cols, hidden, ok)
    hn = tl.load(hw + rows * hw_row + 2 * hidden + cols, mask=ok, other=0.0)
    hp = tl.load(h_prev + rows * h_prev_row + cols, mask=ok, other=0.0)
    g = tl.load(gh + rows * gh_row + cols, mask=ok, other=0.0)
    dh = g
    if HAS_UPDATES:
        dh = g * tl.load(u_h + rows * u_h_row + cols * u_h_col, mask=ok, other=0.0)
    dan = dh * (1.0 - z) * (1.0 - n * n)  # through n = tanh(a_n)
    daz = dh * (hp - n) * z * (1.0 - z)
    dar = dan * hn * r * (1.0 - r)
    _store3(dxw + rows * dxw_row + cols, hidden, ok, dar, daz, dan)
    _store3(dhw + rows * dhw_row + cols, hidden, ok, dar, daz, dan * r)
    s = dh * z  # h_{t-1}'s own share of h_t, then what the update weights let skip the cell
    if HAS_UPDATES:
        s += g - dh
    if HAS_GPREV:
        s += tl.load(g_prev + rows * g_prev_row + cols, mask=ok, other=0.0)
    tl.store(skip + rows * skip_row + cols, s, mask=ok)


@triton.jit
def _row_tile(batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    """This program's ``[BLOCK_B, 1]`` rows and all ``[1, BLOCK_H]`` columns of a gate block (whole rows)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    cols = tl.arange(0, BLOCK_H)[None, :]
    return rows, cols, (rows < batch) & (cols < hidden)


@triton.jit
def ln_lstm_forward_step(xw, xw_row, y, y_row, z, z_row, gain_hh, stats, stats_row, c_prev, c_prev_row, c_cand,
        c_cand_row, tanh_c, tanh_c_row, h_prev, h_prev_row, h_next, h_next_row, c_next, c_next_row, h_in, h_in_row,
        peep, gain_c, bias_c, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, rec, rec_row, rec_col, batch, hidden,
        eps_hh: tl.constexpr, eps_c: tl.constexpr,
        HAS_PEEP: tl.constexpr, HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr, HAS_REC: tl.constexpr,
        CARRIED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    rows, cols, ok = _row_tile(batch, hidden, BLOCK_B, BLOCK_H)
    cok = cols < hidden
    # LN_hh over the whole 4H row of y = W_hh h_in (gate blocks o, i, f, 2g; the gain has the g block doubled)
    yo, yi, yf, yg = _load_gates(y + rows * y_row + cols, hidden, ok)
    # eps_* are compile-time constants: a float kernel argument would be float32 on a GPU, and float32(1e-5)
    # put float64 gradients 1e-9 off the reference on an H100 (the interpreter keeps arguments in float64)
    mean_hh = ((tl.sum(yo, axis=1) + tl.sum(yi, axis=1) + tl.sum(yf, axis=1) + tl.sum(yg, axis=1))
               / (4.0 * hidden))[:, None]
    vo = tl.where(ok, yo - mean_hh, 0.0)
    vi = tl.where(ok, yi - mean_hh, 0.0)
    vf = tl.where(ok, yf - mean_hh, 0.0)
    vg = tl.where(ok, yg - mean_hh, 0.0)
    var_hh = ((tl.sum(vo * vo, axis=1) + tl.sum(vi * vi, axis=1) + tl.sum(vf * vf, axis=1)
               + tl.sum(vg * vg, axis=1)) / (4.0 * hidden))[:, None]
    rstd_hh = 1.0 / tl.sqrt(var_hh + eps_hh)
    go, gi, gf, gg = _load_gates(gain_hh + cols, hidden, cok)
    xo, xi, xf, xg = _load_gates(xw + rows * xw_row + cols, hidden, ok)
    zo = xo + (yo - mean_hh) * rstd_hh * go
    zi = xi + (yi - mean_hh) * rstd_hh * gi
    zf = xf + (yf - mean_hh) * rstd_hh * gf
    zg = xg + (yg - mean_hh) * rstd_hh * gg
    c = tl.load(c_prev + rows * c_prev_row + cols, mask=ok, other=0.0)
    o, i, f, sg, cc = _cell(zo, zi, zf, zg, c, peep, cols, hidden, HAS_PEEP)
    # LN_c over the H entries of c~, then tanh
    mean_c = (tl.sum(tl.where(ok, cc, 0.0), axis=1) / hidden)[:, None]
    dc_ = tl.where(ok, cc - mean_c, 0.0)
    rstd_c = 1.0 / tl.sqrt((tl.sum(dc_ * dc_, axis=1) / hidden)[:, None] + eps_c)
    nc = dc_ * rstd_c * tl.load(gain_c + cols, mask=cok, other=0.0) + tl.load(bias_c + cols, mask=cok, other=0.0)
    tc = 2.0 * _sigmoid(2.0 * nc) - 1.0
    zp = z + rows * z_row + cols
    _store_gates(zp, hidden, ok, o, i, f, sg)
    tl.store(c_cand + rows * c_cand_row + cols, cc, mask=ok)
    tl.store(tanh_c + rows * tanh_c_row + cols, tc, mask=ok)
    sp = stats + rows * stats_row  # [B, 4]: mean and 1/std of LN_hh, then of LN_c
    rok = rows < batch
    tl.store(sp, mean_hh, mask=rok)
    tl.store(sp + 1, rstd_hh, mask=rok)
    tl.store(sp + 2, mean_c, mask=rok)
    tl.store(sp + 3, rstd_c, mask=rok)
    _store_state(rows, cols, ok, o * tc, c, cc, h_prev, h_prev_row, h_next, h_next_row, c_next, c_next_row, h_in,
                 h_in_row, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, rec, rec_row, rec_col,
                 HAS_UPDATES, UPDATE_H, HAS_REC, CARRIED)


@triton.jit
def ln_lstm_backward_step(a, a_row, y, y_row, stats, stats_row, tanh_c, tanh_c_row, c_cand, c_cand_row, c_prev,
        c_prev_row, gh, gh_row, gc, gc_row, dz, dz_row, dy, dy_row, gc_next, gc_next_row, skip, skip_row, g_prev,
        g_prev_row, gain_hh, gain_c, acc_gain_hh, acc_gain_c, acc_bias_c, peep, peep_if, peep_o,
        u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, batch, hidden,
        HAS_PEEP: tl.constexpr, HAS_UPDATES: tl.constexpr, UPDATE_H: tl.constexpr, HAS_GPREV: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):  # type: ignore[no-untyped-def]
    rows, cols, ok = _row_tile(batch, hidden, BLOCK_B, BLOCK_H)
    cok = cols < hidden
    rok = rows < batch
    o, i, f, sg = _load_gates(a + rows * a_row + cols, hidden, ok)
    tc = tl.load(tanh_c + rows * tanh_c_row + cols, mask=ok, other=0.0)
    cc = tl.load(c_cand + rows * c_cand_row + cols, mask=ok, other=0.0)
    c = tl.load(c_prev + rows * c_prev_row + cols, mask=ok, other=0.0)
    g_h = tl.load(gh + rows * gh_row + cols, mask=ok, other=0.0)
    g_c = tl.load(gc + rows * gc_row + cols, mask=ok, other=0.0)
    sp = stats + rows * stats_row
    mean_hh = tl.load(sp, mask=rok, other=0.0)
    rstd_hh = tl.load(sp + 1, mask=rok, other=0.0)
    mean_c = tl.load(sp + 2, mask=rok, other=0.0)
    rstd_c = tl.load(sp + 3, mask=rok, other=0.0)
    dh, gck = _reaching(rows, cols, ok, g_h, g_c, u_h, u_h_row, u_h_col, u_c, u_c_row, u_c_col, HAS_UPDATES, UPDATE_H)
    dzo = dh * tc * o * (1.0 - o)
    d_nc = tl.where(ok, dh * o * (1.0 - tc * tc), 0.0)  # dL/d LN_c(c~)
    # LN_c backward over H: dc~ = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = d_nc gain_c
    xhat_c = tl.where(ok, (cc - mean_c) * rstd_c, 0.0)
    dxhat_c = d_nc * tl.load(gain_c + cols, mask=cok, other=0.0)
    m1 = (tl.sum(dxhat_c, axis=1) / hidden)[:, None]
    m2 = (tl.sum(dxhat_c * xhat_c, axis=1) / hidden)[:, None]
    dc = rstd_c * (dxhat_c - m1 - xhat_c * m2)
    agc = acc_gain_c + rows * hidden + cols
    tl.store(agc, tl.load(agc, mask=ok, other=0.0) + d_nc * xhat_c, mask=ok)
    abc = acc_bias_c + rows * hidden + cols
    tl.store(abc, tl.load(abc, mask=ok, other=0.0) + d_nc, mask=ok)
    dzi, dzf, dzg = _cell_backward(rows, cols, ok, hidden, dc, dzo, i, f, sg, c, cc, g_h, g_c, dh, gck, peep,
                                   peep_if, peep_o, dz, dz_row, gc_next, gc_next_row, skip, skip_row, g_prev,
                                   g_prev_row, HAS_PEEP, HAS_UPDATES, UPDATE_H, HAS_GPREV)
    # LN_hh backward over the 4H row: its output's gradient is dz
    yo, yi, yf, yg = _load_gates(y + rows * y_row + cols, hidden, ok)
    xo = tl.where(ok, (yo - mean_hh) * rstd_hh, 0.0)
    xi = tl.where(ok, (yi - mean_hh) * rstd_hh, 0.0)
    xf = tl.where(ok, (yf - mean_hh) * rstd_hh, 0.0)
    xg = tl.where(ok, (yg - mean_hh) * rstd_hh, 0.0)
    go, gi, gf, gg = _load_gates(gain_hh + cols, hidden, cok)
    do = tl.where(ok, dzo * go, 0.0)
    di = tl.where(ok, dzi * gi, 0.0)
    df = tl.where(ok, dzf * gf, 0.0)
    dg = tl.where(ok, dzg * gg, 0.0)
    n1 = ((tl.sum(do, axis=1) + tl.sum(di, axis=1) + tl.sum(df, axis=1) + tl.sum(dg, axis=1))
          / (4.0 * hidden))[:, None]
    n2 = ((tl.sum(do * xo, axis=1) + tl.sum(di * xi, axis=1) + tl.sum(df * xf, axis=1) + tl.sum(dg * xg, axis=1))
          / (4.0 * hidden))[:, None]
    _store_gates(dy + rows * dy_row + cols, hidden, ok, rstd_hh * (do - n1 - xo * n2), rstd_hh * (di - n1 - xi * n2),
                 rstd_hh * (df - n1 - xf * n2), rstd_hh * (dg - n1 - xg * n2))
    agh = acc_gain_hh + rows * (4 * hidden) + cols
    ao, ai, af, ag = _load_gates(agh, hidden, ok)
    _store_gates(agh, hidden, ok, ao + dzo * xo, ai + dzi * xi, af + dzf * xf, ag + dzg * xg)
