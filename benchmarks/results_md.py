"""Shared by the benchmark scripts: replace one section of benchmarks/RESULTS.md, keep the rest."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next ``## ``) by ``text`` in place, or append it."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(heading)
    if start < 0:
        RESULTS.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")
        return
    end = old.find("\n## ", start + len(heading))
    rest = old[end + 1:] if end >= 0 else ""
    RESULTS.write_text(old[:start] + text.rstrip() + "\n" + ("\n" + rest if rest else ""))


def merge_rows(heading: str, rows: list[str], key_columns: int = 1) -> tuple[list[str], list[str]]:
    """Fill a section's table one run at a time.

    Returns the section's earlier table rows whose first ``key_columns`` cells differ from every
    row in ``rows``, followed by ``rows``; and the section's notes (the lines after its table),
    kept as they are.
    """
    old = RESULTS.read_text() if RESULTS.exists() else ""
    start = old.find(heading)
    if start < 0:
        return rows, []
    end = old.find("\n## ", start + len(heading))
    body = old[start:end if end >= 0 else len(old)].rstrip().splitlines()
    table_lines = [i for i, line in enumerate(body) if line.startswith("|")]
    earlier = [line for i, line in enumerate(body) if line.startswith("|") and not line.startswith("|---")
               and not (i + 1 < len(body) and body[i + 1].startswith("|---"))]  # not the header

    def key(row: str) -> tuple[str, ...]:
        return tuple(c.strip() for c in row.strip().strip("|").split("|"))[:key_columns]

    new = {key(r) for r in rows}
    notes = body[table_lines[-1] + 1:] if table_lines else []
    return [r for r in earlier if key(r) not in new] + rows, notes


def best_per_call(fn: Callable[[], object], rounds: int, calls: int = 1, warmup: int = 1) -> float:
    """Seconds per call of ``fn``: the fastest of ``rounds`` samples of ``calls`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def section_benchmark(script: str, doc: str | None, section: str, tables: Callable[[bool, int], list[str]],
                      describe: str = "") -> None:
    """The ``main`` of a benchmark that writes one section of RESULTS.md: ``--threads``, ``--rounds``,
    ``--quick`` (one round, small sizes: checks the script runs) and ``--write``; freed memory kept for
    reuse as the rnnkit command does; a header with the command and the machine, then ``tables(quick,
    rounds)``, printed, and with ``--write`` written over the section."""
    import argparse
    import datetime
    import platform

    import torch

    from rnnkit.runtime import reuse_freed_memory

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    rounds = 1 if args.quick else args.rounds
    cmd = f"python benchmarks/{script}" + (" --quick" if args.quick else
                                           f" --threads {args.threads} --rounds {rounds} --write")
    lines = [section, "", f"Command: `{cmd}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, torch "
             f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
             f"{datetime.date.today().isoformat()}. Best of {rounds} rounds. Freed memory kept for reuse, as the "
             f"rnnkit command does.{' ' + describe if describe else ''}", "", *tables(args.quick, rounds)]
    text = "\n".join(lines)
    print(text)
    if args.write and not args.quick:
        write_section(section, text)
