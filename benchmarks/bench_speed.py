"""Speed of every recurrent path, side by side in one interleaved run ("no speed cliffs").

    python benchmarks/bench_speed.py                  # full tables (quiet machine, ~10 min)
    python benchmarks/bench_speed.py --quick          # smoke run (seconds): checks the script works
    python benchmarks/bench_speed.py --write          # also replace this section of RESULTS.md

Paths: torch.nn.LSTM/GRU, rnnkit fused, engine and reference, the LSTM variants torch.nn has no
kernel for (peephole, recurrent dropout, zoneout: "auto" runs them on the hand-written-backward
engine, each also timed on the reference scan; layer norm on both), and minGRU/minLSTM (Feng et
al. 2024) on the sequential and the log-space parallel scan; then two layers bidirectional,
projected LSTMs (LSTMP, ``proj_size = H/2``, against ``torch.nn.LSTM`` with the same projection),
and minGRU against nn.GRU on long sequences.

What is measured, per path:

* train tokens/s: ``B*T`` / time of forward + backward of ``sum(outputs)``, the best of the
  interleaved rounds (every round runs every path once; ``--stat median`` reports the median).
  Background load only ever slows a run down, and on this shared 2-core machine it came and went
  within a table (torch.nn.LSTM's median moved between 47k and 77k tokens/s across runs), so the
  fastest round is the closest to each path's own speed and the ratios move less between runs;
* inference tokens/s: forward under ``torch.no_grad`` in eval mode;
* latency: inference at batch 1, microseconds per token (per-op dispatch dominates there);
* GFLOP/s: the path's matrix-multiply FLOPs (``2*G*H*(I + H_rec)`` per token forward, times 3
  for training; element-wise work not counted) per second of training, and that as a percentage
  of a large fp32 matrix multiply measured at the start of the run with the same threads;
* peak MiB: the high-water mark of bytes allocated through torch's CPU allocator during one
  training step, above what was live before it, read from ``torch.profiler`` memory events
  (tensors only: no Python objects, no allocator caching, no oneDNN scratch outside torch tensors);
  on a GPU (``--device cuda``), ``torch.cuda.max_memory_allocated`` over the step;
* page faults / train step: minor page faults of the process during a timed training step (the
  median over rounds): first writes to pages the C library had handed back to the system. By
  default the run keeps freed memory for reuse, as the ``rnnkit`` command does
  (:func:`rnnkit.runtime.reuse_freed_memory`); ``--freed-memory return`` leaves glibc's default,
  under which ``torch.nn.LSTM`` took about 16k faults a step at H=256 and the paths' speeds moved
  with the allocator's history.

On a GPU the Triton paths replay their loops as CUDA graphs (``rnnkit.scan.cuda_graph``); the run
raises the recording cache's limits so that every path of a table keeps its recordings, as a
process training one model does (under the default limits, sized for one model, the H=1024
table's later paths evicted the first ones' recordings, which then ran eagerly: 0.37x instead
of 1.27x cuDNN on 2026-11-28), and clears the cache between tables.

Keras 3 (torch backend) is timed only if ``import keras`` works with ``KERAS_BACKEND=torch``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from results_md import write_section  # benchmarks/results_md.py
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

import rnnkit.nn as rnn
from rnnkit.runtime import reuse_freed_memory
from rnnkit.scan import cuda_graph, engine_triton, recompute_gates, step_matmul

SECTION = "## Speed: every recurrent path, training and inference"
GPU_SECTION = "## Speed on a GPU: every recurrent path against cuDNN"
DEVICE = torch.device("cpu")  # --device: where tensors and layers live; CUDA work is synchronised in _timed
Builder = Callable[[int, int], nn.Module]


@dataclass
class BenchPath:
    """One benchmarked path: how to build it and how many matmul FLOPs a token costs."""

    name: str
    build: Builder
    gates: int  # gate blocks G in the input (and recurrent) projection
    recurrent_matmul: bool  # False for minGRU/minLSTM: no W_hh
    baseline: str  # the torch.nn path it is compared with
    stacked: bool = False  # two layers, bidirectional: four matmul pairs, the second layer's input is 2H
    projected: bool = False  # LSTMP with proj_size P = H/2: W_hh is [4H, P], plus W_hr [P, H]


@dataclass
class Result:
    name: str
    train: list[float] = field(default_factory=list)
    infer: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    peak_mib: float = float("nan")
    faults: list[int] = field(default_factory=list)  # minor page faults per training step
    note: str = ""


def _torch_layer(cls: type[nn.Module]) -> Builder:
    return lambda i, h: cls(i, h, batch_first=True)


def _ours(cls: type[nn.Module], **kw: object) -> Builder:
    return lambda i, h: cls(i, h, batch_first=True, **kw)


class _Recomputing(nn.Module):
    """Runs ``layer`` inside ``rnnkit.scan.recompute_gates()``: backward recomputes the gates."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, object]:
        with recompute_gates():
            return self.layer(x)  # type: ignore[no-any-return]


class _NoGraphs(nn.Module):
    """Runs ``layer`` inside ``rnnkit.scan.cuda_graph.disabled()``: the Triton loops launch eagerly."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, object]:
        with cuda_graph.disabled():
            return self.layer(x)  # type: ignore[no-any-return]


def _min(cell: str, implementation: str) -> Builder:
    return lambda i, h: rnn.Recurrent(cell, i, h, implementation=implementation)


class _KerasAdapter(nn.Module):
    """A Keras 3 layer on the torch backend behind the ``(output, state)`` call convention."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.layer(x), None


def keras_paths() -> tuple[list[BenchPath], str]:
    """Keras LSTM/GRU paths if Keras 3 imports with the torch backend, else a note why not."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras  # noqa: PLC0415  # optional peer, imported only when present
    except Exception as err:  # noqa: BLE001  # any import failure means: skip with a note
        return [], f"Keras not timed: `import keras` failed ({type(err).__name__}: {err})."
    if keras.backend.backend() != "torch":
        return [], f"Keras not timed: its backend is {keras.backend.backend()!r}, not 'torch'."

    def build(kind: str) -> Builder:
        def make(i: int, h: int) -> nn.Module:
            layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind](h, return_sequences=True)
            layer.build((None, None, i))
            return _KerasAdapter(layer)
        return make

    return ([BenchPath("keras LSTM (torch backend)", build("lstm"), 4, True, "torch.nn.LSTM"),
             BenchPath("keras GRU (torch backend)", build("gru"), 3, True, "torch.nn.GRU")],
            f"Keras {keras.__version__} on the torch backend.")


def _auto(kind: str) -> str:
    """What ``implementation="auto"`` runs on this run's device for the ``kind`` variants the fused kernels
    cannot run (``"lstm"``, ``"layernorm"``, ``"gru"``; ``rnnkit.scan.select_scan``)."""
    if DEVICE.type == "cpu":
        return "engine"
    if engine_triton.chosen_by_auto(DEVICE):
        return "triton"
    return "reference" if kind == "gru" else "engine"


def core_paths() -> list[BenchPath]:
    lstm, gru = "torch.nn.LSTM", "torch.nn.GRU"
    return [
        BenchPath(lstm, _torch_layer(nn.LSTM), 4, True, lstm),
        BenchPath("rnnkit LSTM fused", _ours(rnn.LSTM, implementation="fused"), 4, True, lstm),
        BenchPath("rnnkit LSTM engine", _ours(rnn.LSTM, implementation="engine"), 4, True, lstm),
        BenchPath("rnnkit LSTM reference", _ours(rnn.LSTM, implementation="reference"), 4, True, lstm),
        BenchPath(f"rnnkit peephole LSTM (auto: {_auto('lstm')})", _ours(rnn.LSTM, cell="peephole_lstm"), 4, True, lstm),
        BenchPath(f"rnnkit peephole LSTM (auto: {_auto('lstm')}), gates recomputed",
                  lambda i, h: _Recomputing(rnn.LSTM(i, h, batch_first=True, cell="peephole_lstm")), 4, True, lstm),
        BenchPath("rnnkit peephole LSTM reference",
                  _ours(rnn.LSTM, cell="peephole_lstm", implementation="reference"), 4, True, lstm),
        BenchPath(f"rnnkit LSTM recurrent dropout 0.25 (auto: {_auto('lstm')})", _ours(rnn.LSTM, recurrent_dropout=0.25),
                  4, True, lstm),
        BenchPath("rnnkit LSTM recurrent dropout 0.25 reference",
                  _ours(rnn.LSTM, recurrent_dropout=0.25, implementation="reference"), 4, True, lstm),
        BenchPath(f"rnnkit LSTM zoneout 0.1 (auto: {_auto('lstm')})", _ours(rnn.LSTM, zoneout=0.1), 4, True, lstm),
        BenchPath("rnnkit LSTM zoneout 0.1 reference", _ours(rnn.LSTM, zoneout=0.1, implementation="reference"),
                  4, True, lstm),
        BenchPath(f"rnnkit layernorm LSTM (auto: {_auto('layernorm')})",
                  _ours(rnn.LSTM, cell="layernorm_lstm"), 4, True, lstm),
        BenchPath(f"rnnkit layernorm LSTM (auto: {_auto('layernorm')}), gates recomputed",
                  lambda i, h: _Recomputing(rnn.LSTM(i, h, batch_first=True, cell="layernorm_lstm")), 4, True, lstm),
        BenchPath("rnnkit layernorm LSTM engine" if DEVICE.type != "cpu" else "rnnkit layernorm LSTM reference",
                  _ours(rnn.LSTM, cell="layernorm_lstm",
                        implementation="engine" if DEVICE.type != "cpu" else "reference"), 4, True, lstm),
        *triton_paths(),
        BenchPath(gru, _torch_layer(nn.GRU), 3, True, gru),
        BenchPath("rnnkit GRU fused", _ours(rnn.GRU, implementation="fused"), 3, True, gru),
        # on CPU "auto" runs plain float32 GRUs of 256+ units on the GRU engine (batch 1-2 inference: fused)
        BenchPath("rnnkit GRU (auto)", _ours(rnn.GRU), 3, True, gru),
        BenchPath("rnnkit GRU reference", _ours(rnn.GRU, implementation="reference"), 3, True, gru),
        BenchPath(f"rnnkit GRU recurrent dropout 0.25 (auto: {_auto('gru')})",
                  _ours(rnn.GRU, recurrent_dropout=0.25), 3, True, gru),
        BenchPath("rnnkit GRU recurrent dropout 0.25 reference",
                  _ours(rnn.GRU, recurrent_dropout=0.25, implementation="reference"), 3, True, gru),
        BenchPath(f"rnnkit GRU zoneout 0.1 (auto: {_auto('gru')})",
                  _ours(rnn.GRU, zoneout=0.1), 3, True, gru),
        BenchPath(f"rnnkit GRU zoneout 0.1 (auto: {_auto('gru')}), "
                  "gates recomputed", lambda i, h: _Recomputing(rnn.GRU(i, h, batch_first=True, zoneout=0.1)),
                  3, True, gru),
        BenchPath("rnnkit GRU zoneout 0.1 reference", _ours(rnn.GRU, zoneout=0.1, implementation="reference"),
                  3, True, gru),
        *triton_gru_paths(),
        BenchPath("rnnkit minGRU sequential", _min("mingru", "sequential"), 2, False, gru),
        BenchPath("rnnkit minGRU parallel", _min("mingru", "parallel"), 2, False, gru),
        BenchPath("rnnkit minLSTM sequential", _min("minlstm", "sequential"), 3, False, gru),
    ]


def triton_paths() -> list[BenchPath]:
    """On a GPU: the engine with its element-wise math in Triton kernels (``implementation="triton"``)."""
    if DEVICE.type != "cuda":
        return []
    lstm = "torch.nn.LSTM"
    return [BenchPath("rnnkit LSTM triton", _ours(rnn.LSTM, implementation="triton"), 4, True, lstm),
            BenchPath("rnnkit LSTM triton, no CUDA graph",
                      lambda i, h: _NoGraphs(rnn.LSTM(i, h, batch_first=True, implementation="triton")), 4, True, lstm),
            BenchPath("rnnkit peephole LSTM triton", _ours(rnn.LSTM, cell="peephole_lstm", implementation="triton"),
                      4, True, lstm),
            BenchPath("rnnkit LSTM recurrent dropout 0.25 triton",
                      _ours(rnn.LSTM, recurrent_dropout=0.25, implementation="triton"), 4, True, lstm),
            BenchPath("rnnkit layernorm LSTM triton", _ours(rnn.LSTM, cell="layernorm_lstm", implementation="triton"),
                      4, True, lstm),
            BenchPath("rnnkit LSTM zoneout 0.1 triton", _ours(rnn.LSTM, zoneout=0.1, implementation="triton"),
                      4, True, lstm)]


class _VariableLengths(nn.Module):
    """Runs ``layer`` with per-sequence lengths between T/2 and T (fixed draws per batch shape)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, object]:
        batch, steps = x.shape[0], x.shape[1]
        lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=torch.Generator().manual_seed(batch))
        lengths[0] = steps
        return self.layer(x, lengths=lengths)  # type: ignore[no-any-return]


def stacked_paths() -> list[BenchPath]:
    """Two layers, bidirectional: the configuration most models use (cuDNN runs both directions at once)."""
    base = "torch.nn.LSTM, 2 layers, bidirectional"
    stack = {"num_layers": 2, "bidirectional": True, "batch_first": True}

    def ours(**kw: object) -> Builder:
        return lambda i, h: rnn.LSTM(i, h, **stack, **kw)  # type: ignore[arg-type]

    return [BenchPath(base, lambda i, h: nn.LSTM(i, h, **stack), 4, True, base, True),  # type: ignore[arg-type]
            BenchPath("rnnkit LSTM (auto: fused)", ours(), 4, True, base, True),
            BenchPath("rnnkit peephole LSTM (auto)", ours(cell="peephole_lstm"), 4, True, base, True),
            BenchPath("rnnkit peephole LSTM (auto), variable lengths",
                      lambda i, h: _VariableLengths(rnn.LSTM(i, h, cell="peephole_lstm", **stack)),  # type: ignore[arg-type]
                      4, True, base, True),
            BenchPath("rnnkit LSTM recurrent dropout 0.25 (auto)", ours(recurrent_dropout=0.25), 4, True, base, True),
            BenchPath("rnnkit LSTM zoneout 0.1 (auto)", ours(zoneout=0.1), 4, True, base, True),
            BenchPath("torch.nn.GRU, 2 layers, bidirectional", lambda i, h: nn.GRU(i, h, **stack), 3, True,  # type: ignore[arg-type]
                      "torch.nn.GRU, 2 layers, bidirectional", True),
            BenchPath("rnnkit GRU (auto)", lambda i, h: rnn.GRU(i, h, **stack), 3, True,  # type: ignore[arg-type]
                      "torch.nn.GRU, 2 layers, bidirectional", True)]


def projected_paths() -> list[BenchPath]:
    """LSTMP (``proj_size = H/2``): torch.nn has no oneDNN kernel for it, so "auto" runs the engine on CPU; on CUDA
    plain LSTMP runs cuDNN and its variants the Triton engine (the layer-norm one the torch engine)."""
    base = "torch.nn.LSTM proj_size=H/2"
    auto = "engine" if DEVICE.type == "cpu" else "fused"
    variants = _auto("lstm")

    def ours(**kw: object) -> Builder:
        return lambda i, h: rnn.LSTM(i, h, batch_first=True, proj_size=h // 2, **kw)  # type: ignore[arg-type]

    return [BenchPath(base, lambda i, h: nn.LSTM(i, h, batch_first=True, proj_size=h // 2), 4, True, base,
                      projected=True),
            BenchPath("rnnkit LSTMP fused", ours(implementation="fused"), 4, True, base, projected=True),
            BenchPath(f"rnnkit LSTMP (auto: {auto})", ours(), 4, True, base, projected=True),
            BenchPath("rnnkit LSTMP engine", ours(implementation="engine"), 4, True, base, projected=True),
            BenchPath("rnnkit LSTMP reference", ours(implementation="reference"), 4, True, base, projected=True),
            BenchPath(f"rnnkit peephole LSTMP (auto: {variants})", ours(cell="peephole_lstm"), 4, True, base,
                      projected=True),
            BenchPath(f"rnnkit LSTMP recurrent dropout 0.25 (auto: {variants})", ours(recurrent_dropout=0.25), 4,
                      True, base, projected=True),
            BenchPath("rnnkit LSTMP recurrent dropout 0.25 reference",
                      ours(recurrent_dropout=0.25, implementation="reference"), 4, True, base, projected=True),
            BenchPath(f"rnnkit LSTMP zoneout 0.1 (auto: {variants})", ours(zoneout=0.1), 4, True, base,
                      projected=True),
            BenchPath("rnnkit layernorm LSTMP (auto: engine)", ours(cell="layernorm_lstm"), 4, True, base,
                      projected=True),
            BenchPath("rnnkit layernorm LSTMP reference", ours(cell="layernorm_lstm", implementation="reference"), 4,
                      True, base, projected=True)]


def triton_gru_paths() -> list[BenchPath]:
    """On a GPU: the GRU engine (``rnnkit.scan.engine_gru``), plain and with the variants cuDNN cannot run."""
    if DEVICE.type != "cuda":
        return []
    gru = "torch.nn.GRU"
    return [BenchPath("rnnkit GRU triton", _ours(rnn.GRU, implementation="triton"), 3, True, gru),
            BenchPath("rnnkit GRU recurrent dropout 0.25 triton",
                      _ours(rnn.GRU, recurrent_dropout=0.25, implementation="triton"), 3, True, gru),
            BenchPath("rnnkit GRU zoneout 0.1 triton", _ours(rnn.GRU, zoneout=0.1, implementation="triton"),
                      3, True, gru)]


def long_paths() -> list[BenchPath]:
    gru = "torch.nn.GRU"
    return [BenchPath(gru, _torch_layer(nn.GRU), 3, True, gru),
            BenchPath("rnnkit minGRU sequential", _min("mingru", "sequential"), 2, False, gru),
            BenchPath("rnnkit minGRU parallel", _min("mingru", "parallel"), 2, False, gru),
            BenchPath("rnnkit minGRU reference", _min("mingru", "reference"), 2, False, gru)]


def select_paths(paths: list[BenchPath], pattern: str) -> list[BenchPath]:
    """The paths whose name matches ``pattern`` and, first, the baselines they are compared with."""
    chosen = [p for p in paths if re.search(pattern, p.name)]
    needed = {p.baseline for p in chosen}
    return [p for p in paths if p.name in needed and p not in chosen] + chosen if chosen else []


# -- measuring ---------------------------------------------------------------------------------
def matmul_gflops(size: int, repeats: int) -> float:
    """Best-of-``repeats`` fp32 ``[size x size] @ [size x size]`` throughput in GFLOP/s: on a CPU the
    faster of torch's GEMM (MKL) and oneDNN's (MKL took a generic code path on the AMD EPYC of
    2026-11-29: 205-225 GFLOP/s against oneDNN's 480-520, and ``torch.nn.LSTM``'s oneDNN kernel showed
    as 193% of a GEMM probed through torch alone)."""
    a, b = torch.randn(size, size, device=DEVICE), torch.randn(size, size, device=DEVICE)
    products: list[Callable[[], object]] = [lambda: a @ b]
    if DEVICE.type == "cpu" and step_matmul._ONEDNN:
        weight = b.t().contiguous()
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], ""))
    best = math.inf
    for product in products:
        product()  # warm-up
        best = min(best, *(_timed(product) for _ in range(repeats)))
    return 2 * size**3 / best / 1e9


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _minor_faults() -> int:
    """Minor page faults of this process so far (first writes to fresh pages); -1 where not available."""
    try:
        import resource  # noqa: PLC0415  # POSIX only
    except ImportError:
        return -1
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _timed(fn: Callable[[], object]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _train(layer: nn.Module, x: Tensor) -> None:
    layer.train()
    layer.zero_grad(set_to_none=False)
    layer(x)[0].sum().backward()


def _infer(layer: nn.Module, x: Tensor) -> None:
    layer.eval()
    with torch.no_grad():
        layer(x)


def peak_train_mib(layer: nn.Module, x: Tensor) -> float:
    """High-water mark of torch allocations during one training step, above the start level."""
    if DEVICE.type == "cuda":
        _sync()
        before = torch.cuda.memory_allocated(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
        _train(layer, x)
        _sync()
        return (torch.cuda.max_memory_allocated(DEVICE) - before) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train(layer, x)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def bench(paths: list[BenchPath], *, batch: int, steps: int, input_size: int, hidden: int, rounds: int,
          latency_steps: int) -> list[Result]:
    """Time every path in interleaved rounds; returns one :class:`Result` per path that ran."""
    x = torch.randn(batch, steps, input_size, device=DEVICE)
    x1 = torch.randn(1, latency_steps, input_size, device=DEVICE)
    layers: dict[str, nn.Module] = {}
    results: dict[str, Result] = {}
    for p in paths:
        try:
            layer = p.build(input_size, hidden).to(DEVICE)
            _train(layer, x)  # warm-up (and allocate .grad so later steps start from the same level)
            _infer(layer, x)
            _infer(layer, x1)
        except Exception as err:  # noqa: BLE001  # an optional peer failing must not stop the run
            results[p.name] = Result(p.name, note=f"failed: {type(err).__name__}: {err}")
            continue
        layers[p.name] = layer
        results[p.name] = Result(p.name)
    for _ in range(rounds):
        for name, layer in layers.items():
            r = results[name]
            before = _minor_faults()
            r.train.append(_timed(lambda layer=layer: _train(layer, x)))
            r.faults.append(_minor_faults() - before if before >= 0 else -1)
            r.infer.append(_timed(lambda layer=layer: _infer(layer, x)))
            r.latency.append(_timed(lambda layer=layer: _infer(layer, x1)))
    for name, layer in layers.items():
        results[name].peak_mib = peak_train_mib(layer, x)
    return [results[p.name] for p in paths]


def profile_train_step(path: BenchPath, *, batch: int, steps: int, input_size: int, hidden: int) -> str:
    """Where one training step of ``path`` spends its time: wall clock, kernels, top operators.

    On a GPU, kernel time well below the wall time means the step waits on the host (Python,
    launches), not on the device.
    """
    x = torch.randn(batch, steps, input_size, device=DEVICE)
    layer = path.build(input_size, hidden).to(DEVICE)
    for _ in range(2):  # warm-up: compilation, allocator
        _train(layer, x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    wall = _timed(lambda: _train(layer, x))
    with profile(activities=activities) as prof:
        _train(layer, x)
        _sync()
    averages = prof.key_averages()
    kernel_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) for e in averages)
    sort = "self_cuda_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"
    busy = (f", kernels {kernel_us / 1e3:.2f} ms ({100 * kernel_us / 1e3 / (wall * 1e3):.0f}% of wall)"
            if DEVICE.type == "cuda" else "")
    return (f"#### profile: {path.name}, one training step, B={batch} T={steps} H={hidden}\n"
            f"wall {wall * 1e3:.2f} ms (unprofiled){busy}; per time step {wall / steps * 1e6:.1f} µs\n"
            + averages.table(sort_by=sort, row_limit=12) + "\n")


STATS: dict[str, Callable[[list[float]], float]] = {"best": min, "median": statistics.median}


def _faults_cell(faults: list[int]) -> str:
    return "n/a" if not faults or min(faults) < 0 else f"{statistics.median(faults):,.0f}"


def table(paths: list[BenchPath], results: list[Result], *, batch: int, steps: int, input_size: int, hidden: int,
          latency_steps: int, peak_gflops: float, stat: str = "best") -> list[str]:
    tokens = batch * steps
    pick = STATS[stat]
    train_rate = {r.name: tokens / pick(r.train) for r in results if r.train}
    lines = ["| path | train tokens/s | vs torch.nn | inference tokens/s | vs torch.nn | "
             f"latency B=1 µs/token (T={latency_steps}) | train GFLOP/s | % of GEMM | train peak MiB | "
             "page faults / train step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    infer_rate = {r.name: tokens / pick(r.infer) for r in results if r.infer}
    for p, r in zip(paths, results):
        if not r.train:
            lines.append(f"| {p.name} | {r.note} | | | | | | | | |")
            continue
        flops_fwd = 2 * p.gates * hidden * (input_size + (hidden if p.recurrent_matmul else 0))
        if p.stacked:  # both directions of layer 1 (input I) and of layer 2 (input 2H)
            flops_fwd = 2 * 2 * p.gates * hidden * ((input_size + hidden) + (2 * hidden + hidden))
        if p.projected:  # W_ih x, W_hh h (h has P = H/2 features) and W_hr (o tanh c)
            proj = hidden // 2
            flops_fwd = 2 * p.gates * hidden * (input_size + proj) + 2 * proj * hidden
        gflops = 3 * flops_fwd * train_rate[p.name] / 1e9
        base_t = train_rate.get(p.baseline, float("nan"))
        base_i = infer_rate.get(p.baseline, float("nan"))
        latency_us = pick(r.latency) / latency_steps * 1e6
        lines.append(f"| {p.name} | {train_rate[p.name]:,.0f} | {train_rate[p.name] / base_t:.2f}x | "
                     f"{infer_rate[p.name]:,.0f} | {infer_rate[p.name] / base_i:.2f}x | {latency_us:,.1f} | "
                     f"{gflops:.1f} | {100 * gflops / peak_gflops:.0f}% | {r.peak_mib:,.1f} | "
                     f"{_faults_cell(r.faults)} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one round: checks the script runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (recorded in the output)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per table")
    parser.add_argument("--stat", choices=sorted(STATS), default="best",
                        help="which round each figure reports: the fastest (default) or the median")
    parser.add_argument("--freed-memory", choices=["reuse", "return"], default="reuse",
                        help="keep freed memory for reuse, as the rnnkit command does (default), or return it "
                             "to the system as glibc does unless told (rnnkit.runtime)")
    parser.add_argument("--no-keras", action="store_true", help="do not try to time Keras")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/RESULTS.md")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (GPU section of RESULTS.md; no Keras)")
    parser.add_argument("--only", metavar="REGEX",
                        help="time only the paths whose name matches (plus their torch.nn baselines); "
                             "prints the tables, and --write is refused (the section holds whole tables)")
    parser.add_argument("--profile", action="store_true",
                        help="after the tables, profile one training step of each path of the first shape: "
                             "wall time against time busy in kernels, and the top operators")
    parser.add_argument("--cudnn-tf32", action="store_true",
                        help="leave cuDNN's TF32 on (torch's default; rnnkit's matmuls stay fp32)")
    args = parser.parse_args(argv)
    if args.only and args.write:
        parser.error("--only times a subset of the paths: it cannot --write the whole-table section of RESULTS.md")
    global DEVICE
    DEVICE = torch.device(args.device)
    on_gpu = DEVICE.type == "cuda"
    if on_gpu:
        args.no_keras = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reused = args.freed_memory == "reuse" and reuse_freed_memory()
    memory_note = ("Freed memory kept for reuse (rnnkit.runtime.reuse_freed_memory, as the rnnkit command does)."
                   if reused else "Freed memory returned to the system (the C library's default"
                   + (f"; GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}" if os.environ.get("GLIBC_TUNABLES") else "")
                   + ").")
    rounds = 1 if args.quick else args.rounds
    gemm_size, gemm_repeats = (256, 2) if args.quick else ((8192 if on_gpu else 2048), 5)
    # the matmul probe runs before every table and once at the end, and the best of them is the machine's figure:
    # one probe at start-up once read 159.5 GFLOP/s against about 187 in other runs (a slow moment), and every
    # "% of GEMM" of that run came out above 100%
    probes = [matmul_gflops(gemm_size, gemm_repeats)]
    extra, keras_note = ([], "Keras not timed (--no-keras).") if args.no_keras else keras_paths()
    i, h, b, t = (16, 32, 8, 10) if args.quick else (128, 256, 64, 100)
    big_h = 64 if args.quick else 1024
    long_cfg = [(32, 2), (64, 2)] if args.quick else [(1024, 16), (4096, 4)]  # (T, B)
    cmd = "python benchmarks/bench_speed.py" + (" --quick" if args.quick else f" --threads {args.threads} "
                                                f"--rounds {rounds} --write") + (" --device cuda" if on_gpu else "") \
        + (f" --stat {args.stat}" if args.stat != "best" else "") \
        + (" --freed-memory return" if args.freed_memory == "return" else "")
    if args.only:
        cmd = cmd.replace(" --write", "") + f" --only '{args.only}'"
    if on_gpu:
        # keep every path's CUDA-graph recordings: a table's ~40 paths in one process are many models' worth, and
        # under the default limits (sized for one model) the recordings of the first paths were evicted by the
        # last ones (their later rounds ran eagerly or re-recorded); a process training one model keeps its own
        cuda_graph.CACHE_SIZE, cuda_graph.CACHE_BYTES, cuda_graph.CACHE_FRACTION = 4096, 2**62, 0.5
    if on_gpu and not args.cudnn_tf32:  # cuDNN allows TF32 by default, torch's matmuls do not: compare like with like
        torch.backends.cudnn.allow_tf32 = False
    machine = (f"{torch.cuda.get_device_name(DEVICE)} (CUDA {torch.version.cuda}, cuDNN "
               f"{torch.backends.cudnn.version()}), TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN "
               f"{torch.backends.cudnn.allow_tf32}"
               if on_gpu else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                              f"{args.threads} torch threads")
    lines = [GPU_SECTION if on_gpu else SECTION, "",
             f"Command: `{cmd}`  ",
             f"Machine: {machine}, torch {torch.__version__}, {datetime.date.today().isoformat()}. "
             f"{'Best' if args.stat == 'best' else 'Median'} of {rounds} interleaved rounds. Measured fp32 GEMM peak (the faster of torch.mm and oneDNN on a CPU) "
             f"({gemm_size}^3, best of {gemm_repeats}, probed before each table and at the end, best probe): "
             "{peak} GFLOP/s. " + f"{keras_note} {memory_note}"
             + (" CUDA graphs: every path's recordings kept within a table (cache limits raised for the run)."
                if on_gpu else ""), "",
             "Columns: see the docstring of benchmarks/bench_speed.py (GFLOP/s counts matmul FLOPs only; "
             "peak MiB is the allocator's high-water mark during one training step: torch's CPU allocator, "
             "or torch.cuda.max_memory_allocated on a GPU).", ""]
    if args.quick:
        lines.insert(2, "**Smoke run (--quick): tiny shapes, one round; the figures mean nothing.**\n")
    configs = [(core_paths(), h, b, t, min(t, 100), ""), (core_paths(), big_h, b, t, min(t, 100), ""),
               (stacked_paths(), h, b, t, min(t, 100), "2 layers, bidirectional, "),
               (projected_paths(), h, b, t, min(t, 100), "LSTMP proj_size=H/2, ")]
    configs += [(long_paths(), h, lb, lt, lt, "") for lt, lb in long_cfg]
    if args.only:
        configs = [(chosen, *rest) for paths, *rest in configs if (chosen := select_paths(paths, args.only))]
        extra = []
        if not configs:
            raise SystemExit(f"--only {args.only!r}: no path matches; names are e.g. 'rnnkit LSTM engine'")
    if extra:  # timed apart: interleaving Keras' many small tensors with our paths slowed ours by 5-10%
        baselines = [p for p in core_paths() if p.name in ("torch.nn.LSTM", "torch.nn.GRU")]
        configs.append((baselines + extra, h, b, t, min(t, 100), "Keras 3 on the torch backend, "))
    print("\n".join(lines).replace("{peak}", f"{probes[0]:.1f} (first probe)"), flush=True)
    timed = []
    for n, (paths, hidden, batch, steps, latency_steps, what) in enumerate(configs):
        label = f"### {what}I={i} H={hidden} B={batch} T={steps}"
        print(label, flush=True)
        if n:
            probes.append(matmul_gflops(gemm_size, gemm_repeats))
        cuda_graph.clear()  # each table starts with no recordings (and their GPU memory freed)
        results = bench(paths, batch=batch, steps=steps, input_size=i, hidden=hidden, rounds=rounds,
                        latency_steps=latency_steps)
        timed.append((label, paths, results, batch, steps, hidden, latency_steps))
        rows = table(paths, results, batch=batch, steps=steps, input_size=i, hidden=hidden,
                     latency_steps=latency_steps, peak_gflops=max(probes), stat=args.stat)
        print("\n".join(rows) + "\n", flush=True)
    probes.append(matmul_gflops(gemm_size, gemm_repeats))
    peak = max(probes)
    print(f"GEMM probes (GFLOP/s): {', '.join(f'{g:.1f}' for g in probes)}; the tables use the best, {peak:.1f}",
          flush=True)
    lines = [line.replace("{peak}", f"{peak:.1f}") for line in lines]
    for label, paths, results, batch, steps, hidden, latency_steps in timed:
        rows = table(paths, results, batch=batch, steps=steps, input_size=i, hidden=hidden,
                     latency_steps=latency_steps, peak_gflops=peak, stat=args.stat)
        lines += [label, "", *rows, ""]
    if args.profile:
        paths, hidden, batch, steps = configs[0][:4]
        for p in paths:
            print(profile_train_step(p, batch=batch, steps=steps, input_size=i, hidden=hidden), flush=True)
    if args.write:
        write_section(GPU_SECTION if on_gpu else SECTION, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
