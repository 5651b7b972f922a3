"""Long-range memory: success rate of rnn, lstm and gru against the sequence length T.

    python benchmarks/bench_memory.py --quick     # smoke run (about a minute on 2 cores)
    python benchmarks/bench_memory.py             # full table (quiet CPU: several hours; GPU recommended)

For each task (adding, copy, selective copy) every cell is trained at every length for a fixed
budget of Adam steps and several seeds (``rnnkit.insight.run_memory_benchmark``, the same code as
``rnnkit bench memory``). Success rules (see docs/insight.md): adding, dev MSE < 0.1 x 0.167 (the
constant-answer baseline); copies, accuracy on the recalled symbols > 0.9 (chance 1/8).
Writes ``<task>.md``, ``<task>.json`` and ``<task>.png`` per task to ``--out`` and prints the
tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rnnkit.insight import make_task, run_memory_benchmark

FULL = {"adding": [50, 100, 200, 400], "copy": [30, 60, 120], "selective-copy": [30, 60, 120]}
QUICK = {"adding": [10, 20], "copy": [9, 15], "selective-copy": [9, 15]}


def _lengths(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 50,100,200, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"lengths must be positive, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="adding,copy,selective-copy")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--lengths", type=_lengths, default=None, help="comma-separated T for every task (default: per task, "
                        + "; ".join(f"{k} {','.join(map(str, v))}" for k, v in FULL.items()) + ")")
    parser.add_argument("--budget-steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed for comparability)")
    parser.add_argument("--out", default="runs/bench-memory")
    parser.add_argument("--quick", action="store_true", help="smoke run: short T, 60 steps, 1 seed, hidden 16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = QUICK if args.quick else FULL
    memorize = 4 if args.quick else 10
    if args.quick:
        args.budget_steps, args.seeds, args.hidden_size = 60, 1, 16
    for task in args.tasks.split(","):  # refuse a bad task or length now, not hours into the run
        for length in args.lengths or lengths[task]:
            try:
                make_task(task, memorize=memorize).check_length(length)
            except ValueError as err:
                parser.error(str(err))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = "SMOKE RUN (--quick): not a result" if args.quick else "full run"
    for task in args.tasks.split(","):
        start = time.perf_counter()
        task_lengths = args.lengths or lengths[task]
        bench = run_memory_benchmark(task, task_lengths, args.cells.split(","), budget_steps=args.budget_steps,
                                     seeds=args.seeds, batch_size=args.batch_size, hidden_size=args.hidden_size,
                                     learning_rate=args.learning_rate, memorize=memorize, log=lambda _: None)
        text = (bench.markdown().replace("# Memory benchmark", f"## Memory benchmark ({label})", 1)
                + f"\n{platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
                f"{time.perf_counter() - start:.0f} s.\n")
        print(text)
        (out / f"{task}.md").write_text(text)
        (out / f"{task}.json").write_text(json.dumps(bench.to_json(), indent=2, default=str) + "\n")
        bench.plot(out / f"{task}.png")


if __name__ == "__main__":
    main()
