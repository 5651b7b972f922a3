"""Speed of rnnkit's recurrent layers against torch.nn, measured in one interleaved run.

    python benchmarks/bench_core.py                 # full table (quiet machine, ~5 min)
    python benchmarks/bench_core.py --quick         # smoke run (seconds)

Training = forward + backward of sum(outputs); inference = forward under no_grad. Each
configuration is timed in rounds that alternate between paths, and the median round is reported,
so a background load shifts every column alike. Prints a Markdown table and, with --write,
replaces the "Recurrent core" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch
from results_md import write_section  # benchmarks/results_md.py

import rnnkit.nn as rnn

SECTION = "## Recurrent core: rnnkit.nn against torch.nn"


def make_paths(kind: str, input_size: int, hidden: int) -> dict[str, torch.nn.Module]:
    torch_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    ours_cls = {"lstm": rnn.LSTM, "gru": rnn.GRU}[kind]
    base = torch_cls(input_size, hidden, batch_first=True)
    paths: dict[str, torch.nn.Module] = {"torch.nn": base}
    for name, kw in {"rnnkit fused": {"implementation": "fused"},
                     "rnnkit reference": {"implementation": "reference"}}.items():
        layer = ours_cls(input_size, hidden, batch_first=True, **kw)
        layer.load_state_dict(base.state_dict())
        paths[name] = layer
    variants = {"lstm": {"layernorm": {"cell": "layernorm_lstm"}, "peephole": {"cell": "peephole_lstm"},
                         "recurrent dropout 0.25": {"recurrent_dropout": 0.25}, "zoneout 0.1": {"zoneout": 0.1}},
                "gru": {"layernorm": {"cell": "layernorm_gru"}}}[kind]
    for name, kw in variants.items():  # the reference scan: the variants on the LSTM engine are in bench_speed.py
        paths[f"rnnkit {name} (reference scan)"] = ours_cls(input_size, hidden, batch_first=True,
                                                             implementation="reference", **kw)
    return paths


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(kind: str, batch: int, steps: int, input_size: int, hidden: int, rounds: int,
          with_lengths: bool) -> list[tuple[str, float, float]]:
    paths = make_paths(kind, input_size, hidden)
    x = torch.randn(batch, steps, input_size)
    lengths = torch.randint(steps // 2, steps + 1, (batch,)) if with_lengths else None

    def call(layer: torch.nn.Module) -> torch.Tensor:
        if lengths is None:
            return layer(x)[0]
        if isinstance(layer, rnn.GRU | rnn.LSTM):
            return layer(x, lengths=lengths)[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return torch.nn.utils.rnn.pad_packed_sequence(layer(packed)[0], batch_first=True, total_length=steps)[0]

    def train(layer: torch.nn.Module) -> None:
        layer.train()
        call(layer).sum().backward()

    def infer(layer: torch.nn.Module) -> None:
        layer.eval()
        with torch.no_grad():
            call(layer)

    results = []
    train_times: dict[str, list[float]] = {n: [] for n in paths}
    infer_times: dict[str, list[float]] = {n: [] for n in paths}
    for layer in paths.values():  # warm-up
        train(layer)
        infer(layer)
    for _ in range(rounds):
        for name, layer in paths.items():
            train_times[name].append(timed(lambda layer=layer: train(layer)))
            infer_times[name].append(timed(lambda layer=layer: infer(layer)))
    tokens = batch * steps
    for name in paths:
        results.append((name, tokens / statistics.median(train_times[name]),
                        tokens / statistics.median(infer_times[name])))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one round: checks the script runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    i, h, b, t = (16, 32, 8, 10) if args.quick else (128, 256, 64, 100)
    rounds = 1 if args.quick else args.rounds
    lines = [SECTION, "",
             f"Command: `python benchmarks/bench_core.py --threads {args.threads} --rounds {rounds} --write`  ",
             f"Machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
             f"{datetime.date.today().isoformat()}. Median of {rounds} interleaved rounds; tokens/s = B*T / time.", ""]
    for kind in ("lstm", "gru"):
        for batch, with_lengths in ((b, False), (b, True), (1, False)):
            label = f"{kind.upper()} I={i} H={h} B={batch} T={t}" + (" with lengths" if with_lengths else "")
            rows = bench(kind, batch, t, i, h, rounds if batch > 1 else max(rounds, 5), with_lengths)
            base_train, base_infer = rows[0][1], rows[0][2]
            lines += [f"### {label}", "", "| path | train tokens/s | vs torch.nn | inference tokens/s | vs torch.nn |",
                      "|---|---:|---:|---:|---:|"]
            for name, tr, inf in rows:
                lines.append(f"| {name} | {tr:,.0f} | {tr / base_train:.2f}x | {inf:,.0f} | {inf / base_infer:.2f}x |")
            lines.append("")
            print("\n".join(lines[-len(rows) - 4:]), flush=True)
    text = "\n".join(lines) + "\n"
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
