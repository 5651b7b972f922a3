"""The engines' per-step matmul on this CPU: torch's GEMM, oneDNN with the weight packed once, and what auto picks.

    python benchmarks/bench_step_matmul.py [--write] [--hidden 64,256,1024] [--batch 1,2,8,64] [--threads 2]

A recurrent step multiplies ``[B, H]`` by ``[H, N]`` (``N = 4H`` for an LSTM, ``3H`` for a GRU)
and adds the step's input projection. :mod:`rnnkit.scan.step_matmul` times ``torch.addmm`` (a BLAS
GEMM that repacks the weight on every call) against oneDNN's linear primitive with the weight
packed once per sequence, once per shape, and keeps the winner; this script shows both on a grid
of shapes, microseconds per call (the best of ``--rounds`` alternated samples), and the choice the
library makes.

A third column, "split over threads": at batch 1 the GEMM is a matrix-vector product that BLAS
runs on one thread; ``torch.baddbmm`` over the weight's column halves, ``[2, 1, H] x [2, H, N/2]``,
lets MKL give each thread a half (equal to float32 rounding). It is measured here, not used by the
engines. Alone, back to back, it ran an H=256 LSTM step in 13.7 against 25.7 µs; tried as a
backend chosen by measurement (2026-11-28), inside the engines' batch-1 inference loops, where
element-wise ops on one thread come between the matmuls, it moved latency by 0-5% (peephole 44.9
-> 43.2, zoneout 42.8 -> 43.2, GRU zoneout 44.0 -> 41.9 µs per token; layer norm 72.1 -> 65.0),
and timed in isolation at start-up it mostly lost to ``addmm`` (the second thread's wake-up), so
it was left out. At B > 1 its output layout differs from ``[B, N]``: shown for comparison only.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections.abc import Callable

import torch
from results_md import write_section  # benchmarks/results_md.py

from rnnkit.scan import step_matmul

SECTION = "## The per-step matmul: torch against oneDNN"


def timed(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best µs per call of each function, alternated round by round; a sample lasts about 10 ms."""
    for fn in fns.values():
        fn()
    start = time.perf_counter()
    for fn in fns.values():
        fn()
    calls = max(1, int(1e-2 * len(fns) / max(time.perf_counter() - start, 1e-7)))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
    return best


def measure(hidden: int, gates: int, batch: int, rounds: int) -> dict[str, float | str]:
    n = gates * hidden
    weight = torch.randn(n, hidden) / hidden ** 0.5
    x, add, out = torch.randn(batch, hidden), torch.randn(batch, n), torch.empty(batch, n)
    right = weight.t()
    fns: dict[str, Callable[[], object]] = {"torch": lambda: torch.addmm(add, x, right, out=out)}
    if step_matmul._ONEDNN:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)
        fns["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise.binary(x, add, packed, None, "add")
    halves = right.reshape(hidden, 2, n // 2).permute(1, 0, 2).contiguous()
    x2, add2, out2 = x.expand(2, batch, hidden), add.view(batch, 2, n // 2).transpose(0, 1), torch.empty(2, batch, n // 2)
    fns["split"] = lambda: torch.baddbmm(add2, x2, halves, out=out2)
    result: dict[str, float | str] = dict(timed(fns, rounds))
    with step_matmul.step_matmul_backend("auto"):
        step_matmul.forget_measurements()
        result["auto"] = step_matmul.StepMatmul(weight, None, batch, adds=True).backend
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="64,256,1024", help="hidden sizes, comma-separated")
    parser.add_argument("--batch", default="1,2,8,64", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="alternated samples per function")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="one small shape, 2 rounds (checks the script runs)")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hiddens = [64] if args.quick else [int(h) for h in args.hidden.split(",") if h.strip()]
    batches = [1, 8] if args.quick else [int(b) for b in args.batch.split(",") if b.strip()]
    rounds = 2 if args.quick else args.rounds
    rows = []
    for hidden in hiddens:
        for gates, cell in ((4, "LSTM"), (3, "GRU")):
            for batch in batches:
                r = measure(hidden, gates, batch, rounds)
                onednn = f"{r['onednn']:,.1f}" if "onednn" in r else "n/a"
                rows.append(f"| {hidden} | {cell} ({gates}H) | {batch} | {r['torch']:,.1f} | {onednn} | "
                            f"{r['split']:,.1f} | {r['auto']} |")
                print(rows[-1], flush=True)
    cmd = "python benchmarks/bench_step_matmul.py --write" + (" --quick" if args.quick else "")
    text = "\n".join([
        SECTION, "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}. Microseconds per call of `[B, H] x [H, N]` plus the step's input "
        f"projection, the best of {rounds} alternated samples; 'auto' is what `rnnkit.scan.step_matmul` picks "
        "(oneDNN only on a clear win, 10%). 'split over threads' is measured, not used (see the script's docstring).", "",
        "| H | N | B | torch addmm µs | oneDNN packed µs | split over threads µs | auto picks |",
        "|---:|---|---:|---:|---:|---:|---|", *rows, ""])
    print(text)
    if args.write and not args.quick:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
