"""What the measured GEMM choice for the large products buys, and the parallel scan's adjoint backward.

    python benchmarks/bench_large_products.py            # print the tables (quiet machine, ~2 min)
    python benchmarks/bench_large_products.py --write    # also replace this section of RESULTS.md
    python benchmarks/bench_large_products.py --quick    # smoke run (seconds)

Table 1 times a training step (forward + backward of ``sum(outputs)``, or the summed NLL of the
language model) with the large products outside the recurrent loops (weight and input gradients,
input and output projections: ``rnnkit.scan.step_matmul.large_matmul`` / ``linear``) kept on
torch's GEMM, against the measured choice ("auto"), interleaved, best of the rounds. The per-step
matmuls keep their own measured choice in both columns. Table 2 times the log-space parallel
scan's forward and backward through autograd's logarithms against its adjoint backward.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import section_benchmark  # benchmarks/results_md.py

import rnnkit.nn as rnn
import rnnkit.scan.step_matmul as step_matmul
from rnnkit.scan.parallel import _scan_log, linear_scan_log
from rnnkit.tasks.language_model import RNNLanguageModel

SECTION = "## Large products on the faster GEMM, and the parallel scan's adjoint backward"


def _best(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _layer_step(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        out = layer(x)[0]
        out.sum().backward()
    return step


def products_table(quick: bool, rounds: int) -> list[str]:
    i, h, b, t = (16, 32, 4, 10) if quick else (128, 256, 64, 100)
    torch.manual_seed(0)
    x = torch.randn(b, t, i)
    long_x = torch.randn(4 if quick else 16, 20 if quick else 1024, i)
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("LSTM engine", _layer_step(rnn.LSTM(i, h, batch_first=True, implementation="engine"), x), b * t),
        ("LSTM zoneout 0.1 (auto: engine)", _layer_step(rnn.LSTM(i, h, batch_first=True, zoneout=0.1), x), b * t),
        ("layernorm LSTM (auto: engine)", _layer_step(rnn.LSTM(i, h, batch_first=True, cell="layernorm_lstm"), x),
         b * t),
        ("GRU zoneout 0.1 (auto: engine)", _layer_step(rnn.GRU(i, h, batch_first=True, zoneout=0.1), x), b * t),
        ("minGRU sequential, T=1024", _layer_step(
            rnn.Recurrent("mingru", i, h, batch_first=True, implementation="sequential"), long_x),
         long_x.shape[0] * long_x.shape[1]),
    ]
    vocab = 500 if quick else 10_000
    lm = RNNLanguageModel(vocab)
    ids, targets = torch.randint(0, vocab, (20, 35)), torch.randint(0, vocab, (20, 35))

    def lm_step() -> None:
        lm.nll(ids, targets)[0].backward()
    cases.append((f"language model step (V={vocab:,}, 20x35 tokens, full softmax)", lm_step, 20 * 35))
    best = {(name, mode): math.inf for name, _, _ in cases for mode in ("torch", "auto")}
    for _ in range(rounds):
        for name, fn, _ in cases:
            for mode in ("torch", "auto"):
                step_matmul.LARGE_MIN_FLOPS = math.inf if mode == "torch" else 5e7  # inf: never leaves torch
                best[name, mode] = min(best[name, mode], _best(fn, 1))
    step_matmul.LARGE_MIN_FLOPS = 5e7
    rows = ["| path | large products on torch (ms / step) | measured choice (ms / step) | speed-up |", "|---|---:|---:|---:|"]
    for name, _, _ in cases:
        slow, fast = best[name, "torch"], best[name, "auto"]
        rows.append(f"| {name} | {slow * 1e3:.1f} | {fast * 1e3:.1f} | {slow / fast:.2f}x |")
    return rows


def scan_table(quick: bool, rounds: int) -> list[str]:
    b, t, h = (2, 64, 16) if quick else (16, 1024, 256)
    torch.manual_seed(0)
    k = torch.randn(b, t, 2 * h, requires_grad=True)
    h0 = torch.zeros(b, h)

    def terms() -> tuple[torch.Tensor, ...]:
        k_z, k_h = k.chunk(2, -1)
        log_a = -torch.nn.functional.softplus(k_z)
        log_b = -torch.nn.functional.softplus(-k_z) + torch.log(k_h.abs().clamp_min(torch.finfo(k.dtype).tiny))
        return log_a, log_b, k_h.sign(), torch.sigmoid(k_z) * k_h

    def through_logs() -> None:
        log_a, log_b, sign, _ = terms()
        _scan_log(log_a, log_b, h0, b_sign=sign, reverse=False, chunk_size=64).sum().backward()

    def adjoint() -> None:
        log_a, log_b, sign, b_lin = terms()
        linear_scan_log(log_a, log_b.detach(), h0, b_sign=sign, b=b_lin).sum().backward()

    best = {"logs": math.inf, "adjoint": math.inf}
    for _ in range(rounds):
        best["logs"] = min(best["logs"], _best(through_logs, 1))
        best["adjoint"] = min(best["adjoint"], _best(adjoint, 1))
    return ["| backward | forward + backward (ms) |", "|---|---:|",
            f"| autograd through the logarithms | {best['logs'] * 1e3:.1f} |",
            f"| adjoint recurrence (rnnkit's) | {best['adjoint'] * 1e3:.1f} |",
            "", f"Signed minGRU-style terms, B={b} T={t} H={h}, blocks of 64 steps."]


def main() -> None:
    section_benchmark("bench_large_products.py", __doc__, SECTION, lambda quick, rounds: [*products_table(quick, rounds), "", *scan_table(quick, rounds)],
                      'Training steps at I=128 H=256 B=64 T=100 (minGRU: B=16 T=1024); interleaved rounds.')


if __name__ == "__main__":
    main()
