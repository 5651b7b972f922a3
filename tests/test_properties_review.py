"""Property-based tests (hypothesis) of the invariants users rely on: masks and per-row runs,
padding sides, streaming, fast paths against the reference scan, gradients, and data round trips.

Sizes are small and ``max_examples`` low so the file runs in well under a minute on one thread.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rnn

SETTINGS = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
# RNNKIT_PROPERTY_SCALE=10 runs ten times the examples (a longer hunt); the default keeps the file under a minute
SCALE = max(1, int(os.environ.get("RNNKIT_PROPERTY_SCALE", "1")))


def _n(examples: int) -> int:
    return examples * SCALE


TOL = {"atol": 1e-10, "rtol": 1e-10}
KINDS = {"rnn": rnn.RNN, "lstm": rnn.LSTM, "gru": rnn.GRU}
TORCH_KINDS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


# -- helpers ---------------------------------------------------------------------------------------------
def _parts(h: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return h if isinstance(h, tuple) else (h,)


def _close(a: torch.Tensor | tuple[torch.Tensor, ...], b: torch.Tensor | tuple[torch.Tensor, ...],
           what: str = "") -> None:
    for x, y in zip(_parts(a), _parts(b), strict=True):
        assert x.shape == y.shape, f"{what}: shape {tuple(x.shape)} != {tuple(y.shape)}"
        torch.testing.assert_close(x, y, **TOL, msg=lambda m: f"{what}: {m}")


def _mask(lengths: list[int], steps: int, side: str) -> torch.Tensor:
    t = torch.arange(steps)
    lens = torch.tensor(lengths).unsqueeze(1)
    return t < lens if side == "right" else t >= steps - lens


def _place(rows: list[torch.Tensor], steps: int, side: str, features: int) -> torch.Tensor:
    """Pad ``[n_b, I]`` rows into ``[B, T, I]`` (garbage, not zeros, in the padding: it must never matter)."""
    out = torch.full((len(rows), steps, features), 7.5, dtype=torch.float64)
    for b, r in enumerate(rows):
        n = r.shape[0]
        if n:
            if side == "right":
                out[b, :n] = r
            else:
                out[b, steps - n:] = r
    return out


def _hx(kind: str, layer: torch.nn.Module, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...] | torch.Tensor:
    n = layer.num_layers * (2 if layer.bidirectional else 1)
    out_size = getattr(layer, "proj_size", 0) or layer.hidden_size
    h = torch.randn(n, batch, out_size, dtype=torch.float64, generator=gen)
    if kind == "lstm":
        return h, torch.randn(n, batch, layer.hidden_size, dtype=torch.float64, generator=gen)
    return h


def _row_hx(hx: torch.Tensor | tuple[torch.Tensor, ...] | None, rows: list[int] | slice):
    if hx is None:
        return None
    parts = tuple(p[:, rows].contiguous() for p in _parts(hx))
    return parts if len(parts) > 1 else parts[0]


def _to_bf(out: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return out if batch_first else out.transpose(0, 1)


def _from_bf(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return x if batch_first else x.transpose(0, 1).contiguous()


@st.composite
def layer_configs(draw: st.DrawFn, kinds: tuple[str, ...] = ("rnn", "lstm", "gru")) -> dict:
    kind = draw(st.sampled_from(kinds))
    hidden = draw(st.integers(1, 3))
    cfg = {
        "kind": kind,
        "input_size": draw(st.integers(1, 3)),
        "hidden_size": hidden,
        "num_layers": draw(st.integers(1, 2)),
        "bidirectional": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "proj_size": draw(st.integers(0, hidden - 1)) if kind == "lstm" and hidden > 1 else 0,
    }
    if kind == "rnn":
        cfg["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return cfg


def _build(cfg: dict, **extra) -> torch.nn.Module:
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "input_size", "hidden_size")}
    if cfg["kind"] != "lstm" or not kw.get("proj_size"):
        kw.pop("proj_size", None)
    torch.manual_seed(0)
    return KINDS[cfg["kind"]](cfg["input_size"], cfg["hidden_size"], **kw, **extra).double().eval()


@st.composite
def batches(draw: st.DrawFn, max_batch: int = 4, max_steps: int = 6, min_len: int = 0) -> tuple[list[int], int]:
    batch = draw(st.integers(1, max_batch))
    lengths = draw(st.lists(st.integers(min_len, max_steps), min_size=batch, max_size=batch))
    steps = draw(st.integers(max(max(lengths), 1), max_steps))
    return lengths, steps


# -- 1. a masked batch equals each row run alone (and torch.nn) -----------------------------------------
@settings(max_examples=_n(180), **SETTINGS)
@given(cfg=layer_configs(), shape=batches(), mode=st.sampled_from(["lengths", "mask_right", "mask_left"]),
       with_hx=st.booleans(), impl=st.sampled_from(["auto", "reference"]), seed=st.integers(0, 2**16))
def test_masked_batch_equals_rows_alone(cfg, shape, mode, with_hx, impl, seed) -> None:
    lengths, steps = shape
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg, implementation=impl)
    rows = [torch.randn(n, cfg["input_size"], dtype=torch.float64, generator=gen) for n in lengths]
    side = "left" if mode == "mask_left" else "right"
    x = _place(rows, steps, side, cfg["input_size"])
    hx = _hx(cfg["kind"], layer, len(lengths), gen) if with_hx else None
    bf = cfg["batch_first"]
    with torch.no_grad():
        if mode == "lengths":
            out, h_n = layer(_from_bf(x, bf), hx, lengths=torch.tensor(lengths))
        else:
            out, h_n = layer(_from_bf(x, bf), hx, mask=_mask(lengths, steps, side))
    out = _to_bf(out, bf)
    mask = _mask(lengths, steps, side)
    assert torch.all(out[~mask] == 0), "outputs at padded steps must be zero"
    for b, (r, n) in enumerate(zip(rows, lengths)):
        with torch.no_grad():
            o_b, h_b = layer(_from_bf(r.unsqueeze(0), bf), _row_hx(hx, [b]))
        o_b = _to_bf(o_b, bf)[0]
        _close(out[b][mask[b]], o_b, f"row {b} outputs")
        _close(tuple(p[:, b:b + 1] for p in _parts(h_n)), h_b, f"row {b} final state")
        if n == 0:  # a zero-length sequence keeps its initial state
            init = _row_hx(hx, [b]) if hx is not None else tuple(torch.zeros_like(p[:, b:b + 1]) for p in _parts(h_n))
            _close(tuple(p[:, b:b + 1] for p in _parts(h_n)), init, f"row {b} zero-length state")


@settings(max_examples=_n(120), **SETTINGS)
@given(cfg=layer_configs(), shape=batches(min_len=1), with_hx=st.booleans(), seed=st.integers(0, 2**16))
def test_masked_batch_equals_torch_nn_packed(cfg, shape, with_hx, seed) -> None:
    lengths, steps = shape
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg)
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "input_size", "hidden_size")}
    if cfg["kind"] != "lstm":
        kw.pop("proj_size")
    ref = TORCH_KINDS[cfg["kind"]](cfg["input_size"], cfg["hidden_size"], **kw).double().eval()
    ref.load_state_dict(layer.state_dict())
    rows = [torch.randn(n, cfg["input_size"], dtype=torch.float64, generator=gen) for n in lengths]
    x = _place(rows, steps, "right", cfg["input_size"])
    hx = _hx(cfg["kind"], layer, len(lengths), gen) if with_hx else None
    bf = cfg["batch_first"]
    lens = torch.tensor(lengths)
    with torch.no_grad():
        out, h_n = layer(_from_bf(x, bf), hx, lengths=lens)
        packed = pack_padded_sequence(_from_bf(x, bf), lens, batch_first=bf, enforce_sorted=False)
        ref_out, ref_h = ref(packed, hx)
        ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=steps)
        # rnnkit with a PackedSequence gives torch.nn's packed result
        p_out, p_h = layer(packed, hx)
        p_out, _ = pad_packed_sequence(p_out, batch_first=True, total_length=steps)
    _close(_to_bf(out, bf), ref_out, "outputs vs torch.nn packed")
    _close(h_n, ref_h, "final state vs torch.nn packed")
    _close(p_out, ref_out, "PackedSequence outputs vs torch.nn")
    _close(p_h, ref_h, "PackedSequence final state vs torch.nn")


# -- 2. left padding equals right padding --------------------------------------------------------------
@settings(max_examples=_n(120), **SETTINGS)
@given(cfg=layer_configs(), shape=batches(), with_hx=st.booleans(), impl=st.sampled_from(["auto", "reference"]),
       seed=st.integers(0, 2**16))
def test_left_padding_equals_right_padding(cfg, shape, with_hx, impl, seed) -> None:
    lengths, steps = shape
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg, implementation=impl)
    rows = [torch.randn(n, cfg["input_size"], dtype=torch.float64, generator=gen) for n in lengths]
    hx = _hx(cfg["kind"], layer, len(lengths), gen) if with_hx else None
    bf = cfg["batch_first"]
    results = {}
    with torch.no_grad():
        for side in ("right", "left"):
            m = _mask(lengths, steps, side)
            out, h = layer(_from_bf(_place(rows, steps, side, cfg["input_size"]), bf), hx, mask=m)
            results[side] = (_to_bf(out, bf)[m], h)
    _close(results["left"][0], results["right"][0], "real-step outputs")
    _close(results["left"][1], results["right"][1], "final states")


# -- 1b. gappy masks: masked steps are skipped (reference scan and the engines) -------------------------
@settings(max_examples=_n(120), **SETTINGS)
@given(cfg=layer_configs(), data=st.data(), impl=st.sampled_from(["reference", "auto", "engine"]),
       seed=st.integers(0, 2**16))
def test_gappy_mask_equals_rows_with_gaps_removed(cfg, data, impl, seed) -> None:
    if impl == "engine" and cfg["kind"] == "rnn":
        impl = "reference"
    batch = data.draw(st.integers(1, 3))
    steps = data.draw(st.integers(1, 10))
    mask = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps),
                                           min_size=batch, max_size=batch)))
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg, implementation=impl)
    x = torch.randn(batch, steps, cfg["input_size"], dtype=torch.float64, generator=gen)
    bf = cfg["batch_first"]
    with torch.no_grad():
        out, h_n = layer(_from_bf(x, bf), mask=mask)
    out = _to_bf(out, bf)
    assert torch.all(out[~mask] == 0)
    for b in range(batch):
        with torch.no_grad():
            o_b, h_b = layer(_from_bf(x[b:b + 1, mask[b]], bf))
        _close(out[b][mask[b]], _to_bf(o_b, bf)[0], f"row {b} outputs")
        _close(tuple(p[:, b:b + 1] for p in _parts(h_n)), h_b, f"row {b} state")


# -- 3. streaming in chunks equals one call -------------------------------------------------------------
@st.composite
def chunkings(draw: st.DrawFn, max_steps: int = 9) -> list[int]:
    steps = draw(st.integers(1, max_steps))
    cuts = sorted(draw(st.sets(st.integers(1, steps - 1), max_size=steps - 1))) if steps > 1 else []
    bounds = [0, *cuts, steps]
    return [b - a for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=_n(120), **SETTINGS)
@given(cfg=layer_configs(), chunks=chunkings(), batch=st.integers(1, 3), with_hx=st.booleans(),
       seed=st.integers(0, 2**16))
def test_chunks_with_returned_state_equal_one_call(cfg, chunks, batch, with_hx, seed) -> None:
    cfg = {**cfg, "bidirectional": False}
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg)
    steps = sum(chunks)
    x = torch.randn(batch, steps, cfg["input_size"], dtype=torch.float64, generator=gen)
    hx = _hx(cfg["kind"], layer, batch, gen) if with_hx else None
    bf = cfg["batch_first"]
    with torch.no_grad():
        whole, h_whole = layer(_from_bf(x, bf), hx)
        outs, h, t = [], hx, 0
        for n in chunks:
            o, h = layer(_from_bf(x[:, t:t + n], bf), h)
            outs.append(_to_bf(o, bf))
            t += n
        # step() one time step at a time
        steps_out, hs = [], hx
        for k in range(steps):
            o, hs = layer.step(x[:, k], hs)
            steps_out.append(o)
    _close(torch.cat(outs, 1), _to_bf(whole, bf), "chunked outputs")
    _close(h, h_whole, "chunked final state")
    _close(torch.stack(steps_out, 1), _to_bf(whole, bf), "step() outputs")
    _close(hs, h_whole, "step() final state")


@settings(max_examples=_n(90), **SETTINGS)
@given(cfg=layer_configs(), chunks=chunkings(), batch=st.integers(1, 3), seed=st.integers(0, 2**16),
       cell=st.sampled_from([None, "peephole_lstm", "layernorm_lstm", "layernorm_gru", "mingru", "minlstm"]))
def test_stateful_nn_layer_chunks_equal_one_call(cfg, chunks, batch, seed, cell) -> None:
    cfg = {**cfg, "bidirectional": False}
    if cell is not None:
        lstm_like = cell in ("peephole_lstm", "layernorm_lstm")
        cfg = {**cfg, "kind": "lstm" if lstm_like else "gru", "proj_size": 0}
        cfg.pop("nonlinearity", None)
    gen = torch.Generator().manual_seed(seed)
    extra = {"cell": cell} if cell else {}
    plain = _build(cfg, **extra)
    stream = _build(cfg, stateful=True, **extra)
    stream.load_state_dict(plain.state_dict())
    x = torch.randn(batch, sum(chunks), cfg["input_size"], dtype=torch.float64, generator=gen)
    bf = cfg["batch_first"]
    with torch.no_grad():
        whole, h_whole = plain(_from_bf(x, bf))
        outs, t = [], 0
        for n in chunks:
            o, h = stream(_from_bf(x[:, t:t + n], bf))
            outs.append(_to_bf(o, bf))
            t += n
    _close(torch.cat(outs, 1), _to_bf(whole, bf), "stateful chunked outputs")
    _close(h, h_whole, "stateful final state")
    _close(stream.state, h_whole, "carried state")
    stream.reset_state()
    with torch.no_grad():
        again, _ = stream(_from_bf(x, bf))
    _close(again, whole, "after reset_state")


@settings(max_examples=_n(90), **SETTINGS)
@given(kind=st.sampled_from(["LSTM", "GRU", "SimpleRNN"]), chunks=chunkings(), batch=st.integers(1, 3),
       units=st.integers(1, 3), features=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_keras_stateful_layer_chunks_equal_one_call(kind, chunks, batch, units, features, seed) -> None:
    import rnnkit.layers as L

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sum(chunks), features, generator=gen)
    torch.manual_seed(0)
    stream = getattr(L, kind)(units, stateful=True, return_sequences=True, return_state=True)
    torch.manual_seed(0)
    plain = getattr(L, kind)(units, return_sequences=True, return_state=True)
    with torch.no_grad():
        stream(x[:, :1])  # build, then forget
        plain(x[:, :1])
        plain.set_weights(stream.get_weights())
        stream.reset_states()
        whole = plain(x)
        outs, t = [], 0
        for n in chunks:
            res = stream(x[:, t:t + n])
            outs.append(res[0])
            t += n
    torch.testing.assert_close(torch.cat(outs, 1), whole[0], atol=1e-6, rtol=1e-5)
    for got, want in zip(res[1:], whole[1:], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for got, want in zip(stream.states, whole[1:], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


# -- 4. fast paths equal the reference scan -------------------------------------------------------------
FAST_VARIANTS = [
    # (layer kind, cell, layer options, implementations to compare with "reference")
    ("lstm", "lstm", {}, ("auto", "engine", "fused")),
    ("lstm", "peephole_lstm", {}, ("auto", "engine")),
    ("lstm", "layernorm_lstm", {}, ("auto", "engine")),
    ("lstm", "lstm", {"zoneout": 0.3}, ("auto", "engine")),
    ("lstm", "peephole_lstm", {"zoneout": 0.2, "recurrent_dropout": 0.4, "input_dropout": 0.3}, ("auto", "engine")),
    ("lstm", "lstm", {"recurrent_dropout": 0.5}, ("auto", "engine", "fused")),
    ("gru", "gru", {}, ("auto", "engine", "fused")),
    ("gru", "gru", {"zoneout": 0.25}, ("auto", "engine")),
    ("gru", "gru", {"recurrent_dropout": 0.5}, ("auto", "engine", "fused")),
    ("gru", "layernorm_gru", {}, ("auto",)),
    ("gru", "gru_reset_before", {}, ("auto",)),
    ("gru", "mingru", {}, ("auto", "sequential", "parallel")),
    ("gru", "minlstm", {}, ("auto", "sequential", "parallel")),
    ("rnn", "rnn_tanh", {"zoneout": 0.1}, ("auto",)),
]


@settings(max_examples=_n(240), **SETTINGS)
@given(variant=st.sampled_from(FAST_VARIANTS), data=st.data(), seed=st.integers(0, 2**16))
def test_fast_paths_equal_reference_scan(variant, data, seed) -> None:
    kind, cell, options, impls = variant
    impl = data.draw(st.sampled_from(impls), label="implementation")
    hidden = data.draw(st.integers(1, 3), label="hidden")
    proj = data.draw(st.integers(0, hidden - 1), label="proj") if kind == "lstm" and hidden > 1 else 0
    if cell == "layernorm_lstm" and impl == "fused":
        impl = "auto"
    cfg = {"kind": kind, "input_size": data.draw(st.integers(1, 3), label="input"), "hidden_size": hidden,
           "num_layers": data.draw(st.integers(1, 2), label="layers"),
           "bidirectional": data.draw(st.booleans(), label="bidirectional"),
           "batch_first": data.draw(st.booleans(), label="batch_first"), "proj_size": proj}
    batch = data.draw(st.integers(1, 3), label="batch")
    steps = data.draw(st.integers(1, 20), label="steps")
    mask_kind = data.draw(st.sampled_from(["none", "right", "left", "gappy"]), label="mask")
    if impl == "fused" and mask_kind == "gappy":
        mask_kind = "left"
    if mask_kind == "gappy":
        mask = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps),
                                               min_size=batch, max_size=batch), label="mask values"))
    elif mask_kind == "none":
        mask = None
    else:
        lengths = data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch), label="lengths")
        mask = _mask(lengths, steps, mask_kind)
    gen = torch.Generator().manual_seed(seed)
    fast = _build(cfg, cell=cell, implementation=impl, **options)
    ref = _build(cfg, cell=cell, implementation="reference", **options)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(batch, steps, cfg["input_size"], dtype=torch.float64, generator=gen)
    hx = _hx(kind, fast, batch, gen) if data.draw(st.booleans(), label="with_hx") else None
    bf = cfg["batch_first"]
    with torch.no_grad():
        got = fast(_from_bf(x, bf), hx, mask=mask)
        want = ref(_from_bf(x, bf), hx, mask=mask)
    _close(got[0], want[0], f"{cell} {options} {impl}: outputs")
    _close(got[1], want[1], f"{cell} {options} {impl}: final state")
    # and with gradients recorded (the engines' training-mode code paths, still at inference rates)
    xg = _from_bf(x, bf).requires_grad_(True)
    out_g, h_g = fast(xg, hx, mask=mask)
    _close(out_g.detach(), want[0], f"{cell} {options} {impl}: outputs with autograd")
    _close(tuple(p.detach() for p in _parts(h_g)), want[1], f"{cell} {options} {impl}: state with autograd")


@settings(max_examples=_n(120), **SETTINGS)
@given(cell=st.sampled_from(["mingru", "minlstm"]), data=st.data(), seed=st.integers(0, 2**16))
def test_min_rnn_parallel_sequential_reference_agree_with_gradients(cell, data, seed) -> None:
    hidden = data.draw(st.integers(1, 3))
    cfg = {"kind": "gru", "input_size": data.draw(st.integers(1, 3)), "hidden_size": hidden,
           "num_layers": data.draw(st.integers(1, 2)), "bidirectional": data.draw(st.booleans()),
           "batch_first": True, "proj_size": 0}
    batch, steps = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12))
    lengths = data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
    side = data.draw(st.sampled_from(["right", "left"]))
    mask = _mask(lengths, steps, side)
    gen = torch.Generator().manual_seed(seed)
    layers = {impl: _build(cfg, cell=cell, implementation=impl) for impl in ("reference", "sequential", "parallel")}
    for m in layers.values():
        m.load_state_dict(layers["reference"].state_dict())
    x = torch.randn(batch, steps, cfg["input_size"], dtype=torch.float64, generator=gen)
    hx = _hx("gru", layers["reference"], batch, gen) * 3  # a large, non-zero initial state
    res = {}
    for impl, m in layers.items():
        xi, hi = x.clone().requires_grad_(True), hx.clone().requires_grad_(True)
        out, h = m(xi, hi, mask=mask)
        (out.sin().sum() + (h * 1.7).sum()).backward()
        res[impl] = (out.detach(), h.detach(), xi.grad, hi.grad,
                     [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in m.parameters()])
    for impl in ("sequential", "parallel"):
        tol = TOL if impl == "sequential" else {"atol": 1e-9, "rtol": 1e-9}
        for k, name in enumerate(("outputs", "state", "input grad", "hx grad")):
            torch.testing.assert_close(res[impl][k], res["reference"][k], **tol, msg=lambda m, n=name, i=impl: f"{i} {n}: {m}")
        for g, w in zip(res[impl][4], res["reference"][4], strict=True):
            torch.testing.assert_close(g, w, **tol)


# -- 5. gradients of a masked batch equal each row's ------------------------------------------------
@settings(max_examples=_n(120), **SETTINGS)
@given(cfg=layer_configs(), shape=batches(max_batch=3, max_steps=10), side=st.sampled_from(["right", "left"]),
       cell=st.sampled_from([None, "variant"]), impl=st.sampled_from(["auto", "reference"]),
       seed=st.integers(0, 2**16))
def test_masked_gradients_equal_per_row_gradients(cfg, shape, side, cell, impl, seed) -> None:
    lengths, steps = shape
    extra = {}
    if cell == "variant":
        extra["cell"] = {"lstm": "peephole_lstm", "gru": "layernorm_gru", "rnn": "rnn_relu"}[cfg["kind"]]
        if cfg["kind"] == "rnn":
            cfg = {**cfg, "nonlinearity": "relu"}
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg, implementation=impl, **extra)
    rows = [torch.randn(n, cfg["input_size"], dtype=torch.float64, generator=gen) for n in lengths]
    x = _place(rows, steps, side, cfg["input_size"]).requires_grad_(True)
    hx = tuple(p.requires_grad_(True) for p in _parts(_hx(cfg["kind"], layer, len(lengths), gen)))
    hx_arg = hx if len(hx) > 1 else hx[0]
    mask = _mask(lengths, steps, side)
    bf = cfg["batch_first"]
    w_out = torch.randn(len(lengths), steps, layer.output_size * (2 if cfg["bidirectional"] else 1),
                        dtype=torch.float64, generator=gen)
    out, h_n = layer(_from_bf(x, bf), hx_arg, mask=mask)
    loss = (_to_bf(out, bf) * w_out).sum() + sum((p ** 2).sum() for p in _parts(h_n))
    loss.backward()
    assert torch.all(x.grad[~mask] == 0), "no gradient may reach padded inputs"
    weight_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    total = [torch.zeros_like(g) for g in weight_grads]
    for b, n in enumerate(lengths):
        xb = rows[b].unsqueeze(0).clone().requires_grad_(True)
        hb = tuple(p[:, b:b + 1].detach().clone().requires_grad_(True) for p in hx)
        o_b, h_b = layer(_from_bf(xb, bf), hb if len(hb) > 1 else hb[0])
        w_b = w_out[b:b + 1][:, mask[b]]
        loss_b = (_to_bf(o_b, bf) * w_b).sum() + sum((p ** 2).sum() for p in _parts(h_b))
        layer.zero_grad()
        loss_b.backward()
        if n:
            _close(x.grad[b][mask[b]], xb.grad[0], f"row {b} input gradient")
        for k, p in enumerate(hb):
            _close(hx[k].grad[:, b:b + 1], p.grad, f"row {b} hx[{k}] gradient")
        for t, p in zip(total, layer.parameters()):
            if p.grad is not None:
                t += p.grad
    for g, t in zip(weight_grads, total, strict=True):
        torch.testing.assert_close(g, t, atol=1e-9, rtol=1e-9)


# -- 3b. streaming with padding: a row that ends (or starts) inside a chunk ---------------------------------
@settings(max_examples=_n(120), **SETTINGS)
@given(cfg=layer_configs(), chunks=chunkings(), data=st.data(), seed=st.integers(0, 2**16),
       cell=st.sampled_from([None, "peephole_lstm", "layernorm_gru", "mingru"]))
def test_stateful_chunks_with_masks_equal_one_masked_call(cfg, chunks, data, seed, cell) -> None:
    cfg = {**cfg, "bidirectional": False}
    if cell is not None:
        cfg = {**cfg, "kind": "lstm" if cell == "peephole_lstm" else "gru", "proj_size": 0}
        cfg.pop("nonlinearity", None)
    steps = sum(chunks)
    batch = data.draw(st.integers(1, 3))
    lengths = data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
    side = data.draw(st.sampled_from(["right", "left"]))
    mask = _mask(lengths, steps, side)
    gen = torch.Generator().manual_seed(seed)
    extra = {"cell": cell} if cell else {}
    plain = _build(cfg, **extra)
    stream = _build(cfg, stateful=True, **extra)
    stream.load_state_dict(plain.state_dict())
    x = torch.randn(batch, steps, cfg["input_size"], dtype=torch.float64, generator=gen)
    bf = cfg["batch_first"]
    with torch.no_grad():
        whole, h_whole = plain(_from_bf(x, bf), mask=mask)
        outs, t = [], 0
        for n in chunks:
            o, h = stream(_from_bf(x[:, t:t + n], bf), mask=mask[:, t:t + n])
            outs.append(_to_bf(o, bf))
            t += n
    _close(torch.cat(outs, 1), _to_bf(whole, bf), "stateful masked chunk outputs")
    _close(h, h_whole, "stateful masked final state")


@settings(max_examples=_n(75), **SETTINGS)
@given(cfg=layer_configs(), batch=st.integers(2, 4), data=st.data(), seed=st.integers(0, 2**16))
def test_reset_state_of_some_samples_restarts_only_them(cfg, batch, data, seed) -> None:
    cfg = {**cfg, "bidirectional": False}
    reset = data.draw(st.lists(st.integers(0, batch - 1), unique=True, min_size=1))  # [] -> see the xfail below
    t1, t2 = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(seed)
    stream = _build(cfg, stateful=True)
    x = torch.randn(batch, t1 + t2, cfg["input_size"], dtype=torch.float64, generator=gen)
    bf = cfg["batch_first"]
    with torch.no_grad():
        stream(_from_bf(x[:, :t1], bf))
        stream.reset_state(reset)
        out2, h2 = stream(_from_bf(x[:, t1:], bf))
        stream.reset_state()
        cont, h_cont = stream(_from_bf(x, bf))
        stream.reset_state()
        fresh, h_fresh = stream(_from_bf(x[:, t1:], bf))
    out2 = _to_bf(out2, bf)
    for b in range(batch):
        want_out = _to_bf(fresh, bf)[b] if b in reset else _to_bf(cont, bf)[b, t1:]
        want_h = h_fresh if b in reset else h_cont
        _close(out2[b], want_out, f"sample {b} outputs")
        _close(tuple(p[:, b] for p in _parts(h2)), tuple(p[:, b] for p in _parts(want_h)), f"sample {b} state")


# -- 1c. unbatched input, PackedSequence on the non-fused paths ---------------------------------------------
@settings(max_examples=_n(90), **SETTINGS)
@given(cfg=layer_configs(), steps=st.integers(0, 6), seed=st.integers(0, 2**16),
       impl=st.sampled_from(["auto", "reference"]), with_hx=st.booleans())
def test_unbatched_input_equals_batch_of_one(cfg, steps, seed, impl, with_hx) -> None:
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg, implementation=impl)
    x = torch.randn(steps, cfg["input_size"], dtype=torch.float64, generator=gen)
    hx = _hx(cfg["kind"], layer, 1, gen) if with_hx else None
    hx_unbatched = None if hx is None else tuple(p[:, 0] for p in _parts(hx))
    if hx_unbatched is not None and len(hx_unbatched) == 1:
        hx_unbatched = hx_unbatched[0]
    bf = cfg["batch_first"]
    with torch.no_grad():
        out, h = layer(x, hx_unbatched)
        out1, h1 = layer(x.unsqueeze(0 if bf else 1), hx)
    _close(out, out1.squeeze(0 if bf else 1), "unbatched outputs")
    _close(h, tuple(p[:, 0] for p in _parts(h1)), "unbatched state")


@settings(max_examples=_n(90), **SETTINGS)
@given(shape=batches(min_len=1), seed=st.integers(0, 2**16), bidirectional=st.booleans(),
       batch_first=st.booleans(), num_layers=st.integers(1, 2),
       cell=st.sampled_from(["peephole_lstm", "layernorm_lstm", "lstm"]),
       options=st.sampled_from([{}, {"zoneout": 0.3}]))
def test_packed_sequence_equals_lengths_on_every_path(shape, seed, bidirectional, batch_first, num_layers, cell,
                                                      options) -> None:
    lengths, steps = shape
    gen = torch.Generator().manual_seed(seed)
    cfg = {"kind": "lstm", "input_size": 2, "hidden_size": 3, "num_layers": num_layers,
           "bidirectional": bidirectional, "batch_first": batch_first, "proj_size": 0}
    layer = _build(cfg, cell=cell, **options)
    rows = [torch.randn(n, 2, dtype=torch.float64, generator=gen) for n in lengths]
    x = _from_bf(_place(rows, steps, "right", 2), batch_first)
    hx = _hx("lstm", layer, len(lengths), gen)
    lens = torch.tensor(lengths)
    with torch.no_grad():
        out, h = layer(x, hx, lengths=lens)
        p_out, p_h = layer(pack_padded_sequence(x, lens, batch_first=batch_first, enforce_sorted=False), hx)
    p_out, p_lens = pad_packed_sequence(p_out, batch_first=batch_first, total_length=steps)
    assert p_lens.tolist() == lengths
    _close(p_out, out, "packed outputs")
    _close(p_h, h, "packed state")


# -- 1d. wrappers: Bidirectional and Stack over masked batches equal each row alone ----------------------
@settings(max_examples=_n(90), **SETTINGS)
@given(shape=batches(), seed=st.integers(0, 2**16), merge=st.sampled_from(["concat", "sum", "mul", "ave"]),
       mask_kind=st.sampled_from(["right", "left", "gappy"]), data=st.data(),
       cell=st.sampled_from(["lstm", "gru", "mingru", "layernorm_lstm"]))
def test_bidirectional_wrapper_and_stack_equal_rows_alone(shape, seed, merge, mask_kind, data, cell) -> None:
    lengths, steps = shape
    batch = len(lengths)
    if mask_kind == "gappy":
        mask = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps),
                                               min_size=batch, max_size=batch)))
    else:
        mask = _mask(lengths, steps, mask_kind)
    torch.manual_seed(seed)
    inner = rnn.Recurrent(cell, 2, 3).double().eval()
    bi = rnn.Bidirectional(inner, merge=merge).double().eval()
    stack = rnn.Stack([rnn.Recurrent(cell, 2, 3), rnn.GRU(3, 2, batch_first=True)]).double().eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, 2, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        out, (sf, sb) = bi(x, mask=mask)
        s_out, s_states = stack(x, mask=mask)
    assert torch.all(out[~mask] == 0) and torch.all(s_out[~mask] == 0)
    for b in range(batch):
        xb = x[b:b + 1, mask[b]]
        with torch.no_grad():
            o_b, (f_b, b_b) = bi(xb)
            so_b, ss_b = stack(xb)
        _close(out[b][mask[b]], o_b[0], f"row {b} Bidirectional outputs")
        _close(tuple(p[:, b:b + 1] for p in _parts(sf)), f_b, f"row {b} forward state")
        _close(tuple(p[:, b:b + 1] for p in _parts(sb)), b_b, f"row {b} backward state")
        _close(s_out[b][mask[b]], so_b[0], f"row {b} Stack outputs")
        for k, (s, s1) in enumerate(zip(s_states, ss_b, strict=True)):
            _close(tuple(p[:, b:b + 1] for p in _parts(s)), s1, f"row {b} Stack layer {k} state")


# -- 1e. Keras-style layers: masks (and go_backwards) equal each row alone ------------------------------
@settings(max_examples=_n(90), **SETTINGS)
@given(kind=st.sampled_from(["LSTM", "GRU", "SimpleRNN"]), shape=batches(max_batch=3),
       side=st.sampled_from(["right", "left"]), go_backwards=st.booleans(), bidirectional=st.booleans(),
       reset_after=st.booleans(), seed=st.integers(0, 2**16))
def test_keras_layers_mask_equals_rows_alone(kind, shape, side, go_backwards, bidirectional, reset_after,
                                             seed) -> None:
    import rnnkit.layers as L

    lengths, steps = shape
    go_backwards = go_backwards and not bidirectional  # the wrapper's halves then read in opposite orders
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randn(n, 2, generator=gen) for n in lengths]
    x = _place(rows, steps, side, 2).float()
    mask = _mask(lengths, steps, side)
    torch.manual_seed(seed)
    extra = {"reset_after": reset_after} if kind == "GRU" else {}
    layer = getattr(L, kind)(3, return_sequences=True, return_state=True, go_backwards=go_backwards, **extra)
    if bidirectional:
        layer = L.Bidirectional(layer)
    with torch.no_grad():
        full = layer(x, mask=mask)
        for b, n in enumerate(lengths):
            if n == 0:
                continue
            alone = layer(rows[b].unsqueeze(0))
            seq = full[0][b]
            real = mask[b].flip(0) if go_backwards and not bidirectional else mask[b]
            torch.testing.assert_close(seq[real], alone[0][0], atol=1e-6, rtol=1e-5)
            assert torch.all(seq[~real] == 0)
            for got, want in zip(full[1:], alone[1:], strict=True):
                torch.testing.assert_close(got[b:b + 1], want, atol=1e-6, rtol=1e-5)


# -- 1f. training mode without dropout equals evaluation (the CPU training path: fused segments) --------
@settings(max_examples=_n(90), **SETTINGS)
@given(cfg=layer_configs(), shape=batches(), side=st.sampled_from(["right", "left"]), seed=st.integers(0, 2**16))
def test_training_mode_without_dropout_equals_eval(cfg, shape, side, seed) -> None:
    lengths, steps = shape
    gen = torch.Generator().manual_seed(seed)
    layer = _build(cfg)
    x = _place([torch.randn(n, cfg["input_size"], dtype=torch.float64, generator=gen) for n in lengths], steps,
               side, cfg["input_size"])
    mask = _mask(lengths, steps, side)
    bf = cfg["batch_first"]
    with torch.no_grad():
        want = layer(_from_bf(x, bf), mask=mask)
    layer.train()
    got = layer(_from_bf(x, bf).requires_grad_(True), mask=mask)
    _close(got[0].detach(), want[0], "training-mode outputs")
    _close(tuple(p.detach() for p in _parts(got[1])), want[1], "training-mode state")


# -- 6. data: round trips, padding, windows, scalers, bucketing -----------------------------------------
import rnnkit.data as rd  # noqa: E402

WORDS = st.text(alphabet="abcxyzé", min_size=1, max_size=4)


@settings(max_examples=_n(120), **SETTINGS)
@given(texts=st.lists(st.text(alphabet="ab c\tdé\n.,!'Z", max_size=12), min_size=1, max_size=5),
       add_bos=st.booleans(), add_eos=st.booleans())
def test_char_text_encoder_roundtrip(texts, add_bos, add_eos) -> None:
    enc = rd.TextEncoder.fit(texts, rd.CharTokenizer(), min_freq=1, add_bos=add_bos, add_eos=add_eos)
    same = rd.TextEncoder.from_config(enc.to_config())
    for t in texts:
        ids = enc.encode(t)
        assert len(ids) == len(t) + add_bos + add_eos
        assert enc.decode(ids) == t
        assert same.encode(t) == ids


@settings(max_examples=_n(120), **SETTINGS)
@given(texts=st.lists(st.lists(WORDS, max_size=8), min_size=1, max_size=5), add_bos=st.booleans(),
       add_eos=st.booleans(), max_length=st.integers(3, 8), truncation=st.sampled_from(["post", "pre"]))
def test_word_text_encoder_truncation_keeps_specials(texts, add_bos, add_eos, max_length, truncation) -> None:
    joined = [" ".join(t) for t in texts]
    tok = rd.WordTokenizer(pattern=None, lowercase=False, normalization=None)
    enc = rd.TextEncoder.fit(joined, tok, min_freq=1, add_bos=add_bos, add_eos=add_eos, max_length=max_length,
                             truncation=truncation)
    room = max_length - add_bos - add_eos
    cut = 0
    for words, text in zip(texts, joined):
        ids = enc.encode(text)
        assert len(ids) <= max_length
        if add_bos:
            assert ids[0] == enc.vocab.bos_id
        if add_eos:
            assert ids[-1] == enc.vocab.eos_id
        kept = words[:room] if truncation == "post" else words[max(len(words) - room, 0):]
        assert enc.decode(ids) == " ".join(kept)
        cut += len(words) - len(kept)
    assert enc.tokens_dropped == cut
    assert enc.num_truncated == sum(len(w) > room for w in texts)


@settings(max_examples=_n(120), **SETTINGS)
@given(token_lists=st.lists(st.lists(WORDS, max_size=6), min_size=1, max_size=5), min_freq=st.integers(1, 2),
       specials=st.fixed_dictionaries({k: st.booleans() for k in ("pad", "unk", "bos", "eos")}))
def test_vocabulary_roundtrip(token_lists, min_freq, specials) -> None:
    kw = {f"{k}_token": (f"<{k}>" if on else None) for k, on in specials.items()}
    vocab = rd.Vocabulary.build(token_lists, min_freq=min_freq, **kw)
    again = rd.Vocabulary.from_config(vocab.to_config())
    counts: dict[str, int] = {}
    for tokens in token_lists:
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
    for tokens in token_lists:
        known = [t for t in tokens if counts[t] >= min_freq]
        assert vocab.decode(vocab.encode(known)) == known
        assert again.encode(known) == vocab.encode(known)
        if vocab.unk_id is not None:
            ids = vocab.encode(tokens)
            assert [i == vocab.unk_id for i in ids] == [counts[t] < min_freq for t in tokens]
    assert len(vocab) == len({t for t, c in counts.items() if c >= min_freq}) + sum(specials.values())


@settings(max_examples=_n(120), **SETTINGS)
@given(labels=st.lists(st.one_of(WORDS, st.integers(-5, 30).map(str)), min_size=1, max_size=10))
def test_label_encoder_roundtrip(labels) -> None:
    enc = rd.LabelEncoder.fit(labels)
    ids = enc.encode(labels)
    assert sorted(set(ids)) == list(range(len(set(labels))))
    assert enc.decode(ids) == labels
    assert rd.LabelEncoder.from_config(enc.to_config()).encode(labels) == ids


@settings(max_examples=_n(150), **SETTINGS)
@given(seqs=st.lists(st.lists(st.integers(1, 99), max_size=7), min_size=1, max_size=6),
       max_length=st.one_of(st.none(), st.integers(1, 8)), padding=st.sampled_from(["post", "pre"]),
       truncation=st.sampled_from(["post", "pre"]))
def test_pad_batch_and_pad_sequences_record_lengths(seqs, max_length, padding, truncation) -> None:
    pb = rd.pad_batch(seqs, max_length=max_length, padding=padding, truncation=truncation)
    longest = max(len(s) for s in seqs)
    total = longest if max_length is None else min(max_length, longest)
    assert tuple(pb.padded.shape) == (len(seqs), total)
    kept = [s if len(s) <= total else (s[:total] if truncation == "post" else s[len(s) - total:]) for s in seqs]
    assert pb.lengths.tolist() == [len(k) for k in kept]
    assert pb.num_truncated == sum(len(s) > total for s in seqs)
    assert pb.tokens_dropped == sum(max(len(s) - total, 0) for s in seqs)
    assert pb.mask.sum(1).tolist() == pb.lengths.tolist()
    for row, k, m in zip(pb.padded.tolist(), kept, pb.mask.tolist()):
        assert [v for v, r in zip(row, m) if r] == k
        assert all(v == 0 for v, r in zip(row, m) if not r)
        if k:
            assert m == ([True] * len(k) + [False] * (total - len(k)) if padding == "post"
                         else [False] * (total - len(k)) + [True] * len(k))
    keras = rd.pad_sequences(seqs, maxlen=max_length, padding="pre" if padding == "pre" else "post",
                             truncating="pre" if truncation == "pre" else "post")
    width = max_length if max_length is not None else longest
    assert keras.shape == (len(seqs), width)
    for row, s in zip(keras.tolist(), seqs):
        k = s if len(s) <= width else (s[:width] if truncation == "post" else s[len(s) - width:])
        assert row == (k + [0] * (width - len(k)) if padding == "post" else [0] * (width - len(k)) + k)


@settings(max_examples=_n(150), **SETTINGS)
@given(n=st.integers(2, 60), lookback=st.integers(1, 6), horizon=st.integers(1, 5), stride=st.integers(1, 4),
       lo=st.integers(0, 60), span=st.integers(0, 60), into_previous=st.booleans())
def test_window_starts_cover_every_target_once(n, lookback, horizon, stride, lo, span, into_previous) -> None:
    hi = min(lo + span, n)
    starts = rd.window_starts(n, lookback, horizon, stride, (lo, hi), into_previous)
    targets = starts + lookback
    assert np.all(targets >= lo) and np.all(targets + horizon <= hi), "targets stay inside the range"
    assert np.all(starts >= (0 if into_previous else lo)), "inputs stay inside the series (or the split)"
    assert np.all(np.diff(starts) == stride)
    first = max(lo, lookback) if into_previous else lo + lookback
    expected = list(range(first, hi - horizon + 1, stride))
    assert targets.tolist() == expected
    if stride == horizon and len(targets):  # non-overlapping windows tile the targets: each step at most once
        covered = np.concatenate([np.arange(t, t + horizon) for t in targets])
        assert len(np.unique(covered)) == len(covered)
        assert covered.min() == first and hi - covered.max() - 1 < horizon


@settings(max_examples=_n(90), **SETTINGS)
@given(n=st.integers(30, 80), lookback=st.integers(1, 5), horizon=st.integers(1, 4), seed=st.integers(0, 99))
def test_forecasting_splits_targets_partition_without_leaks(n, lookback, horizon, seed) -> None:
    values = np.random.default_rng(seed).normal(size=n)
    ts = rd.TimeSeries.from_arrays(values)
    splits = rd.make_forecasting_splits(ts, lookback=lookback, horizon=horizon, train=0.6, val=0.2, test=0.2,
                                        stride=1)
    b = splits.bounds["0"]
    seen = {}
    for name in ("train", "val", "test"):
        ds = getattr(splits, name)
        lo, hi = getattr(b, name)
        steps = sorted({t for _, s, e in ds.target_ranges() for t in range(s, e)})
        assert steps == list(range(max(lo, lookback), hi)), name
        seen[name] = steps
    assert not (set(seen["train"]) & set(seen["val"])) and not (set(seen["val"]) & set(seen["test"]))


@settings(max_examples=_n(150), **SETTINGS)
@given(data=st.data(), kind=st.sampled_from(["standard", "minmax", "robust"]), rows=st.integers(1, 8),
       features=st.integers(1, 3), constant=st.booleans(), as_tensor=st.booleans())
def test_scaler_inverse_transform_roundtrip(data, kind, rows, features, constant, as_tensor) -> None:
    x = np.array(data.draw(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=features, max_size=features),
                                    min_size=rows, max_size=rows)))
    if constant:
        x[:, 0] = x[0, 0]
    scaler = {"standard": rd.StandardScaler(), "minmax": rd.MinMaxScaler(feature_range=(-1, 2)),
              "robust": rd.RobustScaler()}[kind]
    scaler.fit(x)
    y = np.array(data.draw(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=features, max_size=features),
                                    min_size=1, max_size=5)))
    for z in (x, y):
        zz = torch.as_tensor(z) if as_tensor else z
        back = scaler.inverse_transform(scaler.transform(zz))
        assert type(back) is type(zz)
        np.testing.assert_allclose(np.asarray(back), z, rtol=1e-9, atol=1e-9)
    again = type(scaler).from_config(scaler.to_config())
    np.testing.assert_allclose(again.transform(y), scaler.transform(y), rtol=1e-12, atol=0)
    if kind == "minmax" and rows > 1:
        t = scaler.transform(x)
        assert t.min() >= -1 - 1e-9 and t.max() <= 2 + 1e-9


@settings(max_examples=_n(120), **SETTINGS)
@given(data=st.data(), lag=st.integers(1, 3), order=st.integers(1, 2), offset=st.floats(0.5, 5))
def test_log_and_difference_transforms_invert(data, lag, order, offset) -> None:
    n = data.draw(st.integers(lag * order + 1, 15))
    x = np.array(data.draw(st.lists(st.floats(0, 1e3), min_size=n, max_size=n)))
    diff = rd.DifferenceTransform(lag=lag, order=order)
    d = diff.transform(x)
    assert d.shape[0] == n - lag * order
    np.testing.assert_allclose(diff.inverse_transform(d, x[:lag * order]), x[lag * order:], rtol=1e-9, atol=1e-6)
    log = rd.LogTransform(offset=offset)
    np.testing.assert_allclose(log.inverse_transform(log.transform(x)), x, rtol=1e-9, atol=1e-9)


@settings(max_examples=_n(150), **SETTINGS)
@given(lengths=st.lists(st.integers(0, 50), max_size=60), batch_size=st.integers(1, 8), pool=st.integers(1, 4),
       seed=st.integers(0, 9), epoch=st.integers(0, 3), shuffle=st.booleans(), drop_last=st.booleans())
def test_bucketing_yields_each_index_once_per_epoch(lengths, batch_size, pool, seed, epoch, shuffle,
                                                    drop_last) -> None:
    sampler = rd.BucketBatchSampler(lengths, batch_size, seed=seed, pool_factor=pool, shuffle=shuffle,
                                    drop_last=drop_last)
    sampler.set_epoch(epoch)
    batches_ = list(sampler)
    flat = [i for b in batches_ for i in b]
    assert len(flat) == len(set(flat)), "an index repeated within an epoch"
    assert len(batches_) == len(sampler)
    if drop_last:
        assert all(len(b) == batch_size for b in batches_)
    else:
        assert sorted(flat) == list(range(len(lengths)))
        assert all(0 < len(b) <= batch_size for b in batches_)
    assert batches_ == list(sampler), "the same epoch gives the same batches"


# -- 1g. gates and Hierarchical over masked batches ------------------------------------------------------
@settings(max_examples=_n(75), **SETTINGS)
@given(cell=st.sampled_from(["lstm", "peephole_lstm", "layernorm_lstm", "gru", "layernorm_gru", "mingru",
                             "minlstm", "rnn_tanh"]),
       shape=batches(max_batch=3), side=st.sampled_from(["right", "left"]), bidirectional=st.booleans(),
       seed=st.integers(0, 2**16))
def test_return_gates_of_masked_batch_equal_rows_alone(cell, shape, side, bidirectional, seed) -> None:
    lengths, steps = shape
    torch.manual_seed(seed)
    layer = rnn.Recurrent(cell, 2, 3, num_layers=2, bidirectional=bidirectional).double().eval()
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randn(n, 2, dtype=torch.float64, generator=gen) for n in lengths]
    mask = _mask(lengths, steps, side)
    with torch.no_grad():
        out, h, gates = layer(_place(rows, steps, side, 2), mask=mask, return_gates=True)
        for b, r in enumerate(rows):
            o_b, h_b, g_b = layer(r.unsqueeze(0), return_gates=True)
            _close(out[b][mask[b]], o_b[0], f"row {b} outputs")
            for key, named in gates.items():
                for name, g in named.items():
                    assert torch.all(g[b][~mask[b]] == 0), f"{key}/{name} non-zero at padding"
                    _close(g[b][mask[b]], g_b[key][name][0], f"row {b} gate {key}/{name}")


@settings(max_examples=_n(75), **SETTINGS)
@given(data=st.data(), seed=st.integers(0, 2**16), pool=st.sampled_from(["last", "mean", "max"]),
       bidirectional=st.booleans())
def test_hierarchical_skips_empty_segments(data, seed, pool, bidirectional) -> None:
    batch, segments, units = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    unit_lengths = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, units), min_size=segments,
                                                            max_size=segments), min_size=batch, max_size=batch)))
    torch.manual_seed(seed)
    inner = rnn.Recurrent("gru", 2, 3, bidirectional=bidirectional)
    outer = rnn.Recurrent("lstm", 6 if bidirectional else 3, 2)
    hier = rnn.Hierarchical(inner, outer, pool=pool).double().eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, segments, units, 2, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        out, (h, c), vectors = hier(x, unit_lengths)
        for b in range(batch):
            kept = []
            for s in range(segments):
                n = int(unit_lengths[b, s])
                if n == 0:
                    assert torch.all(vectors[b, s] == 0)
                    continue
                o_s, st_s = inner(x[b:b + 1, s, :n])
                if pool == "last":
                    v = st_s[-2:].transpose(0, 1).reshape(1, -1) if bidirectional else st_s[-1]
                elif pool == "mean":
                    v = o_s.mean(1)
                else:
                    v = o_s.max(1).values
                _close(vectors[b, s:s + 1], v, f"sample {b} segment {s} vector")
                kept.append(v)
            real = unit_lengths[b] > 0
            if kept:
                o_b, (h_b, c_b) = outer(torch.stack(kept, 1))
                _close(out[b][real], o_b[0], f"sample {b} outer outputs")
                _close((h[:, b:b + 1], c[:, b:b + 1]), (h_b, c_b), f"sample {b} outer state")
            assert torch.all(out[b][~real] == 0)


# -- defects found (fixed) ---------------------------------------------------------------------------
@settings(max_examples=_n(10), **SETTINGS)
@given(kind=st.sampled_from(["rnn", "lstm", "gru"]), batch=st.integers(1, 3))
def test_reset_state_with_no_samples_is_a_no_op(kind, batch) -> None:
    layer = KINDS[kind](2, 3, batch_first=True, stateful=True).double()
    x = torch.randn(batch, 3, 2, dtype=torch.float64)
    layer(x)
    before = tuple(p.clone() for p in _parts(layer.state))
    layer.reset_state([])  # e.g. [i for i in range(batch) if finished[i]] with none finished
    _close(layer.state, before, "state after resetting no sample")


def test_reset_state_clears_a_diverged_sample() -> None:
    """A sample whose carried state went NaN or inf (a diverged stream) restarts from zeros; the
    others keep theirs (``state * keep`` left NaN * 0 = NaN)."""
    layer = KINDS["lstm"](2, 3, batch_first=True, stateful=True)
    layer(torch.randn(2, 3, 2))
    h, c = layer.state
    layer.state = (h.clone().index_fill_(1, torch.tensor([0]), float("nan")),
                   c.clone().index_fill_(1, torch.tensor([0]), float("inf")))
    layer.reset_state([0])
    assert torch.equal(layer.state[0][:, 0], torch.zeros_like(h[:, 0]))
    assert torch.equal(layer.state[1][:, 0], torch.zeros_like(c[:, 0]))
    assert torch.equal(layer.state[0][:, 1], h[:, 1]) and torch.equal(layer.state[1][:, 1], c[:, 1])
