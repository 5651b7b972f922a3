"""Short sequences: the engines' fixed cost per call against the reference scan, and what "auto" picks.

    python benchmarks/bench_short.py --write      # quiet machine, about 2 minutes
    python benchmarks/bench_short.py --quick      # smoke run: checks the script works

The hand-written-backward engines (``rnnkit.scan.engine``, ``engine_gru``) pay a fixed cost per
call: the weights reordered under autograd, buffers, the weight gradients' matmuls after the
loop, and (per training call) packing the recurrent weight for oneDNN where that pays. On long
sequences that cost vanishes; on a streaming call of one step or a short sentence it decides.
This script times, at I=128 H=256, batch 1 and 64, T = 1..16, training (forward + backward of
``sum(outputs)``) and inference (``torch.no_grad``, eval mode) of the engine against the
reference scan for the variants ``torch.nn`` has no kernel for, and the layer with
``implementation="auto"``, which on CPU runs calls shorter than
``rnnkit.scan.parallel.SHORT_STEPS`` on the reference scan. Each figure is the best of the
interleaved rounds, in microseconds per call.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections.abc import Callable

import torch
from results_md import write_section  # benchmarks/results_md.py
from torch import nn

import rnnkit.nn as rnn
from rnnkit.scan.parallel import SHORT_STEPS

SECTION = "## Short sequences: the engines' fixed cost and auto's choice"
VARIANTS: dict[str, tuple[type[nn.Module], dict[str, object]]] = {
    "peephole LSTM": (rnn.LSTM, {"cell": "peephole_lstm"}),
    "LSTM zoneout 0.1": (rnn.LSTM, {"zoneout": 0.1}),
    "layer-norm LSTM": (rnn.LSTM, {"cell": "layernorm_lstm"}),
    "GRU zoneout 0.1": (rnn.GRU, {"zoneout": 0.1}),
}


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(cls: type[nn.Module], kw: dict[str, object], *, input_size: int, hidden: int, batch: int, steps: int,
            training: bool, rounds: int) -> dict[str, float]:
    """Best seconds per call of the engine, the reference scan and "auto" (interleaved rounds)."""
    layers = {name: cls(input_size, hidden, batch_first=True, implementation=name, **kw).train(training)
              for name in ("engine", "reference", "auto")}
    x = torch.randn(batch, steps, input_size)

    def call(layer: nn.Module) -> None:
        if training:
            layer(x)[0].sum().backward()
        else:
            with torch.no_grad():
                layer(x)

    for layer in layers.values():  # warm-up: the step matmul's one-off measurement, allocator
        call(layer)
        call(layer)
    best = {name: float("inf") for name in layers}
    for _ in range(rounds):
        for name, layer in layers.items():
            best[name] = min(best[name], _time(lambda layer=layer: call(layer)))  # type: ignore[misc]
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, two rounds: checks the script runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (recorded in the output)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per row")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    input_size, hidden = (8, 16) if args.quick else (128, 256)
    rounds = 2 if args.quick else args.rounds
    lengths = (1, 4, 8) if args.quick else (1, 2, 4, 8, 16)
    command = "python benchmarks/bench_short.py" + (" --quick" if args.quick else
                                                    f" --threads {args.threads} --rounds {rounds} --write")
    lines = [SECTION, "", f"Command: `{command}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, torch "
             f"{torch.__version__}, {datetime.date.today().isoformat()}. I={input_size} H={hidden}; best of "
             f"{rounds} interleaved rounds, µs per call; ratio = reference / engine (above 1: the engine is "
             f"faster). \"auto\" runs the reference scan below {SHORT_STEPS['lstm']} steps for LSTMs and "
             f"{SHORT_STEPS['gru']} for GRUs, the engine from there on.", ""]
    if args.quick:
        lines.insert(2, "**Smoke run (--quick): tiny shapes; the figures mean nothing.**\n")
    header = ["| variant | mode | B | T | engine | reference | ratio | auto |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for name, (cls, kw) in VARIANTS.items():
        for training in (True, False):
            for batch in (1, 64):
                for steps in lengths:
                    best = measure(cls, kw, input_size=input_size, hidden=hidden, batch=batch, steps=steps,
                                   training=training, rounds=rounds)
                    row = (f"| {name} | {'train' if training else 'infer'} | {batch} | {steps} | "
                           f"{best['engine'] * 1e6:,.0f} | {best['reference'] * 1e6:,.0f} | "
                           f"{best['reference'] / best['engine']:.2f} | {best['auto'] * 1e6:,.0f} |")
                    rows.append(row)
                    print(row, flush=True)
    lines += header + rows
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
