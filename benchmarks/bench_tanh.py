"""What computing ``tanh`` as ``2 sigmoid(2x) - 1`` buys where the CPU's ``tanh`` kernel is slow.

    python benchmarks/bench_tanh.py            # print the tables (quiet machine, ~1 min)
    python benchmarks/bench_tanh.py --write    # also replace this section of RESULTS.md
    python benchmarks/bench_tanh.py --quick    # smoke run (seconds)

Table 1 times ``torch.tanh(x, out=)`` against the identity as :mod:`rnnkit.scan.elementwise`
computes it (three passes) per float32 size, and says which one ``rnnkit`` uses here (its
measured choice, from ``MIN_ELEMENTS`` on). Table 2 times whole paths with the choice forced
off (``torch.tanh`` everywhere) and on, interleaved, best of the rounds: training steps
(forward + backward of ``sum(outputs)``) and inference of the LSTM variants and the GRU on
rnnkit's engines at I=128 H=256 B=64 T=100, additive (Bahdanau) attention over 30 decoder
steps (B=64, 40 source positions, A=256) and attention pooling over ``[64, 200, 256]``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import best_per_call, section_benchmark  # benchmarks/results_md.py

import rnnkit.nn as rnn
from rnnkit.nn.attention import BahdanauAttention
from rnnkit.nn.pooling import AttentionPooling
from rnnkit.scan import elementwise

SECTION = "## tanh through sigmoid"


def kernel_table(quick: bool, rounds: int) -> list[str]:
    rows = ["| float32 elements | torch.tanh (µs) | 2 sigmoid(2x) - 1 (µs) | ratio | rnnkit uses |",
            "|---:|---:|---:|---:|---|"]
    for numel in (1024, 4096, 16384) if quick else (1024, 2048, 4096, 8192, 16384, 65536, 262144):
        x = torch.linspace(-3, 3, numel)
        out = torch.empty_like(x)
        calls = 20 if quick else max(20, 2_000_000 // numel)
        slow = best_per_call(lambda x=x, out=out: torch.tanh(x, out=out), rounds, calls, warmup=10)
        fast = best_per_call(lambda x=x, out=out: elementwise._via_sigmoid(x, out), rounds, calls, warmup=10)
        used = "identity" if elementwise.uses_sigmoid(x) else "torch.tanh"
        rows.append(f"| {numel:,} | {slow * 1e6:.2f} | {fast * 1e6:.2f} | {slow / fast:.2f}x | {used} |")
    return rows


def _train(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        layer.train()
        layer(x)[0].sum().backward()
    return step


def _infer(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        layer.eval()
        with torch.no_grad():
            layer(x)
    return step


def paths_table(quick: bool, rounds: int) -> list[str]:
    i, h, b, t = (16, 64, 64, 10) if quick else (128, 256, 64, 100)
    torch.manual_seed(0)
    x = torch.randn(b, t, i, requires_grad=True)
    cases: list[tuple[str, Callable[[], object]]] = []
    for name, make in [
        ("peephole LSTM", lambda: rnn.LSTM(i, h, batch_first=True, cell="peephole_lstm")),
        ("LSTM zoneout 0.1", lambda: rnn.LSTM(i, h, batch_first=True, zoneout=0.1)),
        ("layer-norm LSTM", lambda: rnn.LSTM(i, h, batch_first=True, cell="layernorm_lstm")),
        ("GRU (auto: engine)", lambda: rnn.GRU(i, h, batch_first=True)),
    ]:
        layer = make()
        cases += [(f"{name}, training step", _train(layer, x)), (f"{name}, inference", _infer(layer, x))]
    steps, source, query, keys = (5, 10, 32, 64) if quick else (30, 40, 256, 512)
    attention = BahdanauAttention(query, keys, 256 if not quick else 32)
    memory = torch.randn(b, source, keys)
    mask = torch.ones(b, source, dtype=torch.bool)
    q = torch.randn(b, query, requires_grad=True)

    def attend() -> None:
        projected = attention.project_keys(memory)
        total = sum(attention(q, memory, mask, projected_keys=projected)[0].sum() for _ in range(steps))
        total.backward()  # type: ignore[union-attr]
    cases.append((f"Bahdanau attention, {steps} decoder steps, forward + backward", attend))
    pooling = AttentionPooling(h)
    outputs = torch.randn(b, 20 if quick else 200, h, requires_grad=True)
    cases.append(("attention pooling [64, 200, 256], forward + backward",
                  lambda: pooling(outputs)[0].sum().backward()))
    key = (torch.float32, torch.get_num_threads())
    measured = elementwise._CHOICES.get(key, elementwise.uses_sigmoid(x.new_empty(elementwise.MIN_ELEMENTS)))
    best = {(name, mode): math.inf for name, _ in cases for mode in (False, True)}
    try:
        for _ in range(rounds):
            for name, fn in cases:
                for mode in (False, True):
                    elementwise._CHOICES[key] = mode
                    fn()
                    start = time.perf_counter()
                    fn()
                    best[name, mode] = min(best[name, mode], time.perf_counter() - start)
    finally:
        elementwise._CHOICES[key] = measured
    rows = ["| path | torch.tanh (ms) | through sigmoid (ms) | speed-up |", "|---|---:|---:|---:|"]
    for name, _ in cases:
        slow, fast = best[name, False], best[name, True]
        rows.append(f"| {name} | {slow * 1e3:.1f} | {fast * 1e3:.1f} | {slow / fast:.2f}x |")
    return rows


def main() -> None:
    section_benchmark("bench_tanh.py", __doc__, SECTION, lambda quick, rounds: [*kernel_table(quick, rounds), "", *paths_table(quick, rounds)],
                      'Table 2 interleaved.')


if __name__ == "__main__":
    main()
