"""Run every benchmark script in benchmarks/ in turn, one process each.

    python benchmarks/run.py                 # every bench_*.py, full size
    python benchmarks/run.py --quick         # smoke run: only scripts that offer --quick, with it
    python benchmarks/run.py --write         # pass --write to the scripts that accept it
    python benchmarks/run.py --only speed,core

Scripts differ in their options, so each flag is passed only to the scripts whose source
declares it (``"--quick"``, ``"--write"``, ``"--threads"``). In ``--quick`` mode a script
without ``--quick`` is skipped, never run at full size. Scripts run one after another, never in
parallel: concurrent benchmarks slow each other down (see ENVIRONMENT.md). Exit status is
non-zero if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(only: list[str] | None = None) -> list[Path]:
    """The ``bench_*.py`` scripts next to this file, sorted, optionally filtered by name."""
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in only}
        unknown = wanted - {p.stem.removeprefix("bench_") for p in found}
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; available: "
                             f"{', '.join(p.stem.removeprefix('bench_') for p in found)}")
        found = [p for p in found if p.stem.removeprefix("bench_") in wanted]
    return found


def accepts(script: Path, flag: str) -> bool:
    """Whether ``script`` declares the command-line ``flag`` (read from its source, not run)."""
    return f'"{flag}"' in script.read_text()


def command(script: Path, *, quick: bool, write: bool, threads: int | None) -> list[str] | None:
    """The command line for ``script``, or ``None`` if it must be skipped in this mode."""
    cmd = [sys.executable, str(script)]
    if quick:
        if not accepts(script, "--quick"):
            return None
        cmd.append("--quick")
    if write and accepts(script, "--write"):
        cmd.append("--write")
    if threads is not None and accepts(script, "--threads"):
        cmd += ["--threads", str(threads)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke-run the scripts that support --quick")
    parser.add_argument("--write", action="store_true", help="let scripts update benchmarks/RESULTS.md")
    parser.add_argument("--threads", type=int, default=None, help="passed to scripts that take --threads")
    parser.add_argument("--only", default=None, help="comma-separated names, e.g. 'speed,core'")
    args = parser.parse_args(argv)
    failed: list[str] = []
    for script in scripts(args.only.split(",") if args.only else None):
        cmd = command(script, quick=args.quick, write=args.write, threads=args.threads)
        if cmd is None:
            print(f"== {script.name}: skipped (no --quick option)", flush=True)
            continue
        print(f"== {script.name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd, cwd=HERE.parent)
        print(f"== {script.name}: exit {code} after {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
