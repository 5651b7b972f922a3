"""Page faults per CPU training step, with glibc's default and with freed memory kept (rnnkit.runtime).

    python benchmarks/bench_page_faults.py [--write] [--hidden 256,1024] [--rounds 5]

glibc hands large freed blocks back to the system, so a training step that allocates the same
buffers as the last one takes a page fault on the first write to each 4 KiB page again.
:func:`rnnkit.runtime.reuse_freed_memory` (what the ``rnnkit`` command applies at start-up) keeps
them. Each mode runs in its own process (the setting is process-wide and the heap's history
matters): per path, two warm-up steps, then ``--rounds`` timed steps of forward + backward of
``sum(outputs)`` at I=128 B=64 T=100, reporting the fastest step and the median minor faults.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys

from results_md import write_section  # benchmarks/results_md.py

SECTION = "## Page faults per CPU training step: glibc's default against freed memory kept"
PATHS = ("torch.nn.LSTM", "rnnkit peephole LSTM (engine)", "rnnkit layernorm LSTM (engine)")

_CHILD = """
import json, resource, sys, time, torch
import rnnkit.nn as rnn
from rnnkit import runtime
mode, hidden, rounds, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
reused = mode == "reuse" and runtime.reuse_freed_memory()
torch.set_num_threads(threads)
torch.manual_seed(0)
x = torch.randn(64, 100, 128)
layers = {"torch.nn.LSTM": torch.nn.LSTM(128, hidden, batch_first=True),
          "rnnkit peephole LSTM (engine)": rnn.LSTM(128, hidden, cell="peephole_lstm", batch_first=True),
          "rnnkit layernorm LSTM (engine)": rnn.LSTM(128, hidden, cell="layernorm_lstm", batch_first=True)}
def step(layer):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    layer(x)[0].sum().backward()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for layer in layers.values():
    step(layer), step(layer)
runs = {name: [] for name in layers}
for _ in range(rounds):
    for name, layer in layers.items():
        runs[name].append(step(layer))
print(json.dumps({"reused": reused, "runs": runs}))
"""


def measure(mode: str, hidden: int, rounds: int, threads: int) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(hidden), str(rounds), str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="256,1024", help="hidden sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per path")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    if platform.system() != "Linux":
        raise SystemExit("page faults are read with getrusage and the setting is glibc's: run this on Linux")
    hiddens = [int(h) for h in args.hidden.split(",") if h.strip()]
    rows = []
    for hidden in hiddens:
        results = {mode: measure(mode, hidden, args.rounds, args.threads) for mode in ("return", "reuse")}
        if not results["reuse"]["reused"]:
            raise SystemExit("this C library is not glibc: rnnkit.runtime.reuse_freed_memory does nothing here")
        for name in PATHS:
            cells = []
            for mode in ("return", "reuse"):
                runs = results[mode]["runs"][name]  # type: ignore[index]
                best = min(t for t, _ in runs)
                faults = sorted(f for _, f in runs)[len(runs) // 2]
                cells += [f"{best * 1e3:,.0f}", f"{faults:,}"]
            speedup = float(cells[0].replace(",", "")) / float(cells[2].replace(",", ""))
            rows.append(f"| {hidden} | {name} | {' | '.join(cells)} | {speedup:.2f}x |")
            print(rows[-1], flush=True)
    cmd = f"python benchmarks/bench_page_faults.py --hidden {args.hidden} --rounds {args.rounds} --write"
    text = "\n".join([
        SECTION, "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {args.threads} torch threads, glibc {platform.libc_ver()[1]}, "
        f"{datetime.date.today().isoformat()}. I=128 B=64 T=100; per path the fastest of {args.rounds} training "
        "steps and the median minor page faults of a step, after two warm-up steps; each mode in its own process. "
        "'kept': `rnnkit.runtime.reuse_freed_memory()`, which the `rnnkit` command applies at start-up.", "",
        "| H | path | ms/step, glibc default | faults/step, default | ms/step, freed memory kept "
        "| faults/step, kept | speed-up |",
        "|---:|---|---:|---:|---:|---:|---:|", *rows, ""])
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
