"""Compare recurrent cells on any registered task, under one config, data and budget.

For each cell and seed, :func:`compare_cells` loads the task's config with the same file and
``--set`` overrides plus ``model.cell=<cell>`` and ``train.seed=<seed>``, and calls the task's own
``train`` into a run folder ``<out>/<cell>-seed<k>``. It records:

* quality: a dev metric the task reports, by default the one the task selects on (the task
  module's ``quality_metric(config)``), mean and standard deviation over seeds; whether higher or
  lower is better comes from the task too (``dev_metrics(config)``), and ``metric=`` is checked
  against that list before anything trains;
* training time: wall-clock seconds of ``train`` (reading data included, the same for every cell),
  mean and standard deviation over seeds;
* parameters: from the task's metrics (``parameters``) or the saved model;
* peak memory, mean and standard deviation over seeds, measured on the device the config trains
  on (``train.accelerator``; ``auto`` is CUDA when available): on CUDA the growth of
  ``torch.cuda.max_memory_allocated`` above the allocation before the run; otherwise the growth of
  the process's resident set size above its value before the run, sampled every 20 ms (Linux
  ``/proc``), after freed memory has been handed back to the system (``malloc_trim``).

Every timed run starts from the same state: before any of them, each cell runs an untimed
warm-up, the task's own ``train`` on the same config with one training and one dev batch
(:func:`rnnkit.tasks.engine.batch_limit`) in a temporary folder, so imports, first-call
allocations and kernel set-up are paid there, not by whichever cell comes first in ``cells``.

A run whose training loss diverges (the engine's ``FloatingPointError``) does not end the
comparison: it counts with quality ``nan`` (so its cell is not recommended), its error is kept in
``CellRun.error`` and its run folder's ``train.log``, and the other runs go on. An interrupted
comparison (Ctrl-C) says which runs finished before it stops, and writes no report.

The recommendation is the best trade-off by this rule: among cells whose mean quality is within
``max(spread of the best cell, tolerance)`` of the best mean, the one with the shortest mean
training time (then the fewest parameters).
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .. import runtime
from ..tasks.engine import checkpoint_interval
from ..training.interrupts import ended_by_sigterm
from .memory import canonical_cell, check_out_folder, json_safe

OUTPUTS = ("compare.md", "compare.json", "compare.png")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def release_freed_memory() -> None:
    """Collect garbage and hand memory the C allocator keeps free back to the system (glibc
    ``malloc_trim``; a no-op elsewhere), so that the next run's RSS growth is its own."""
    gc.collect()
    runtime.return_freed_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def training_device(accelerator: str) -> str:
    """The device a task trains on for ``train.accelerator`` (as Lightning picks it): ``cuda``,
    ``mps`` or ``cpu``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if accelerator == "mps" or (accelerator == "auto" and mps is not None and mps.is_available()):
        return "mps"
    return "cpu"


class PeakMemory:
    """Peak memory of a block on ``device``: the CUDA allocator's peak above its allocation at the
    start on ``cuda``, else the sampled growth of the process's resident set size."""

    def __init__(self, device: str = "cpu", interval: float = 0.02) -> None:
        self.device = device
        self.cuda = device == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise ValueError("the config trains on CUDA (train.accelerator) but torch sees no CUDA device; "
                             "add --set train.accelerator=cpu (or auto)")
        self.interval = interval
        self.peak = 0
        self.method = ("CUDA max_memory_allocated" if self.cuda else
                       "RSS growth, sampled" + ("; MPS memory not included" if device == "mps" else ""))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start = _rss_bytes()
        self.peak = self._start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def megabytes(self) -> float:
        return max(0, self.peak - self._start) / 2**20


@dataclass
class CellRun:
    cell: str
    seed: int
    run: str
    quality: float
    seconds: float
    parameters: int
    peak_mib: float
    error: str | None = None  # why training stopped (a diverged loss), None for a run that finished


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); ``nan`` spread when a value is not
    finite (a diverged run), where ``statistics.stdev`` would raise."""
    if not all(math.isfinite(v) for v in values):
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class CompareResult:
    """Runs of :func:`compare_cells`, their per-cell summary and the recommendation."""

    task: str
    metric: str
    higher_is_better: bool
    runs: list[CellRun]
    cells: list[str]
    memory_method: str
    tolerance: float = 0.005
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One row per cell: quality, training time and peak memory as mean and standard deviation
        over seeds (``std`` is the quality's), and the parameter count."""
        rows = []
        for cell in self.cells:
            runs = [r for r in self.runs if r.cell == cell]
            mean, std = _mean_std([r.quality for r in runs])
            seconds, seconds_std = _mean_std([r.seconds for r in runs])
            memory, memory_std = _mean_std([r.peak_mib for r in runs])
            rows.append({"cell": cell, "seeds": len(runs), "mean": mean, "std": std, "seconds": seconds,
                         "seconds_std": seconds_std, "parameters": max(r.parameters for r in runs), "peak_mib": memory,
                         "peak_mib_std": memory_std})
        return rows

    def formatted_rows(self) -> list[list[str]]:
        """The summary as table cells (cell, seeds, mean, std, train s, parameters, peak MiB), for
        ``compare.md`` and the terminal alike. A cell trained with one seed has no spread: its std and
        ``±`` figures read ``n/a``, not a ``0.0000`` that would pass for a measured (perfectly stable)
        spread."""
        def spread(value: float, std: float, fmt: str, seeds: int) -> str:
            return f"{value:{fmt}}" if seeds < 2 else f"{value:{fmt}} ± {std:{fmt}}"

        return [[r["cell"], str(r["seeds"]), f"{r['mean']:.4f}", f"{r['std']:.4f}" if r["seeds"] > 1 else "n/a",
                 spread(r["seconds"], r["seconds_std"], ".1f", r["seeds"]), f"{r['parameters']:,}",
                 spread(r["peak_mib"], r["peak_mib_std"], ".0f", r["seeds"])] for r in self.summary()]

    def recommendation(self) -> tuple[str, str]:
        """``(cell, reason)`` by the rule in the module docstring (cells without a finite mean are
        left out; ``("none", why)`` when no cell has one)."""
        rows = [r for r in self.summary() if math.isfinite(r["mean"])]
        if not rows:
            return "none", f"no cell reached a finite dev {self.metric}"
        sign = 1.0 if self.higher_is_better else -1.0
        best = max(rows, key=lambda r: sign * r["mean"])
        margin = max(best["std"], self.tolerance)
        slack = 1e-9 * max(1.0, abs(best["mean"]))  # 0.900 - 0.895 is 0.0050000000000000044 in floats
        if self.higher_is_better and best["mean"] == 0:
            # every run at dev f1 0 (no entity learnt yet), say: speed alone would pick the plainest cell
            return "none", (f"no run scored above 0 dev {self.metric}, so quality cannot tell the cells apart; "
                            "train longer (train.epochs) or on more data")
        close = [r for r in rows if sign * (best["mean"] - r["mean"]) <= margin + slack]
        pick = min(close, key=lambda r: (r["seconds"], r["parameters"]))
        others = [r["cell"] for r in close if r is not pick]
        if pick is best:
            reason = (f"best mean dev {self.metric} ({best['mean']:.4f})"
                      + (f" and the fastest of the cells within {margin:.4f} of it ({', '.join(others)})" if others
                         else f"; no other cell came within {margin:.4f}"))
        elif pick["seconds"] < best["seconds"]:
            reason = (f"dev {self.metric} {pick['mean']:.4f} is within {margin:.4f} of the best ({best['cell']}, "
                      f"{best['mean']:.4f}) and it trains faster ({pick['seconds']:.1f} s against "
                      f"{best['seconds']:.1f} s)")
        else:
            reason = (f"dev {self.metric} {pick['mean']:.4f} is within {margin:.4f} of the best ({best['cell']}, "
                      f"{best['mean']:.4f}), it trains as fast ({pick['seconds']:.1f} s) and it is smaller "
                      f"({pick['parameters']:,} parameters against {best['parameters']:,})")
        return pick["cell"], reason

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def markdown(self) -> str:
        from ..tasks.report import markdown_table

        cell, reason = self.recommendation()
        rows = self.formatted_rows()
        single = [r["cell"] for r in self.summary() if r["seeds"] < 2]
        if single:
            single_note = [f"One seed for {', '.join(single)}: no standard deviation (n/a), so the recommendation's "
                           f"margin is the {self.tolerance} tolerance alone, and a difference within run-to-run "
                           "noise can decide it; `--seeds 3` measures the spread.", ""]
        else:
            single_note = []
        device = self.settings.get("device", "cpu")
        failed = [f"- {Path(r.run).name}: {r.error}" for r in self.runs if r.error]
        if failed:
            failed = ["Runs that did not finish (quality nan; their cell is not recommended):", "", *failed, ""]
        return "\n".join([
            f"# Cell comparison: {self.task}", "",
            f"Every cell trained with the same config, data and budget through the task's own training; "
            f"quality is dev {self.metric} ({self.direction}); every figure is the mean (± standard deviation) "
            "over seeds. Before the timed runs each cell ran an untimed warm-up (the same training with one "
            f"batch), so no run pays the process's start-up cost. Trained on {device}; peak memory is the "
            f"{self.memory_method} above the start of each run.", "",
            markdown_table(["cell", "seeds", f"dev {self.metric}", "std", "train s", "parameters",
                            f"peak MiB ({self.memory_method})"], rows), "", *single_note, *failed,
            f"**Recommended: {cell}**: {reason}.", "",
            f"Rule: among cells whose mean is within max(the best cell's std, {self.tolerance}) of the best mean, "
            "the fastest to train (then the smallest).", "", "![comparison](compare.png)", ""])

    def to_json(self) -> dict[str, Any]:
        """Strict JSON values (``rnnkit compare --json`` prints this): a ``nan`` or ``inf`` figure (a
        diverged run's quality) becomes its string, as in ``compare.json``."""
        cell, reason = self.recommendation()
        return json_safe({"task": self.task, "metric": self.metric, "higher_is_better": self.higher_is_better,  # type: ignore[no-any-return]
                        "memory_method": self.memory_method, "settings": self.settings, "summary": self.summary(),
                        "recommended": cell, "reason": reason, "runs": [asdict(r) for r in self.runs]})

    def plot(self, path: Path) -> Path:
        """Quality, training time and peak memory (mean ± std) and parameters per cell, side by side."""
        from ..tasks.report import _pyplot

        plt = _pyplot()
        rows = self.summary()
        names = [r["cell"] for r in rows]
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))

        def spread(key: str) -> list[float]:
            """Error bars: the std over seeds; none (``nan``, not drawn) for a one-seed cell, which
            has no spread (``n/a`` in the table), so no ``± 0`` bar suggests a measured one."""
            return [r[key] if r["seeds"] > 1 else math.nan for r in rows]

        axes[0].bar(names, [r["mean"] for r in rows], yerr=spread("std"), capsize=4, color="tab:blue")
        axes[0].set(title=f"dev {self.metric} ({self.direction})", ylabel=self.metric)
        finite = [r for r in rows if math.isfinite(r["mean"])]
        if finite:
            lows = [r["mean"] - (r["std"] if r["seeds"] > 1 else 0.0) for r in finite]
            highs = [r["mean"] + (r["std"] if r["seeds"] > 1 else 0.0) for r in finite]
            pad = (max(highs) - min(lows)) * 0.5 or 0.01
            bottom = min(lows) - pad
            if min(r["mean"] for r in finite) >= 0:  # accuracy, F1, BLEU, WER, perplexity, errors: never below 0
                bottom = max(bottom, 0.0)
            axes[0].set_ylim(bottom, max(highs) + pad)
        axes[1].bar(names, [r["seconds"] for r in rows], yerr=spread("seconds_std"), capsize=4,
                    color="tab:orange")
        axes[1].set(title="training time", ylabel="seconds")
        axes[2].bar(names, [r["peak_mib"] for r in rows], yerr=spread("peak_mib_std"), capsize=4,
                    color="tab:red")
        axes[2].set(title="peak memory", ylabel=f"MiB ({self.memory_method})")
        axes[3].bar(names, [r["parameters"] for r in rows], color="tab:green")
        axes[3].set(title="parameters")
        spreads = "mean ± std over seeds" if any(r["seeds"] > 1 for r in rows) else "one seed per cell: no spread"
        fig.suptitle(f"{self.task}: cells compared ({spreads})")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def quality_key(module: ModuleType, task: str, config: Any, metric: str | None) -> tuple[str, bool]:
    """``(metric, higher_is_better)``: ``metric`` (default: the task's ``quality_metric(config)``),
    checked against the dev metrics the task reports for ``config`` and their directions."""
    if not hasattr(module, "dev_metrics") or not hasattr(module, "quality_metric"):
        raise ValueError(f"the {task} task does not declare its dev metrics (dev_metrics, quality_metric)")
    directions: dict[str, str | None] = module.dev_metrics(config)
    key = metric or module.quality_metric(config)
    ranked = [k for k, v in directions.items() if v is not None]
    if key not in directions:
        raise ValueError(f"--metric {key!r}: the {task} task reports no such dev metric with this config; "
                         f"choose one of {', '.join(ranked)}")
    if directions[key] is None:
        raise ValueError(f"--metric {key!r} has no better direction (neither higher nor lower is better); "
                         f"choose one of {', '.join(ranked)}")
    return key, directions[key] == "max"


def _parameters(metrics: dict[str, Any], run_path: Path | None) -> int:
    if isinstance(metrics.get("parameters"), int):
        return int(metrics["parameters"])
    if run_path is None:
        return 0
    from ..tasks.run import RunDir

    return sum(int(t.numel()) for t in RunDir(run_path).load_state().values())


def _is_compare_output(entry: Path) -> bool:
    if entry.name in OUTPUTS or re.fullmatch(r"\.compare\.(md|json|png)\..*\.tmp", entry.name):
        return True
    return entry.is_dir() and not entry.is_symlink() and re.fullmatch(r".+-seed\d+", entry.name) is not None


def prepare_out(root: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``root``; with ``overwrite``, clear it if it holds only a previous
    comparison (``compare.*`` and ``<cell>-seed<k>`` run folders)."""
    check_out_folder(root)
    if not root.exists():
        return
    entries = sorted(root.iterdir())
    if not entries:
        return
    if not overwrite:
        raise ValueError(f"--out {root} is not empty (runs of an earlier comparison would sit beside the new "
                         "report); choose another --out, or add --overwrite to clear it")
    foreign = [e.name for e in entries if not _is_compare_output(e)]
    if foreign:
        raise ValueError(f"--overwrite clears only a folder written by 'rnnkit compare', and {root} also holds "
                         f"{foreign[0]!r}; choose another --out")
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def warm_up(module: ModuleType, task: str, config: Any, train_path: str, dev_path: str | None) -> dict[str, Any]:
    """Run the task's own ``train`` on ``config`` with one training and one dev batch, in a
    temporary folder, untimed: imports, first-call allocations and kernels of this cell. Returns
    the metrics it reported (``{}`` when its loss diverged: the timed runs will say so)."""
    from ..tasks.engine import batch_limit
    from ..tasks.run import RunDir

    with tempfile.TemporaryDirectory(prefix="rnnkit-compare-warm-up-") as tmp:
        run = RunDir.create(tmp, task, "warm-up")
        with batch_limit(1):
            try:
                metrics = module.train(config, train_path, dev_path, run, lambda _: None, progress=False)
            except FloatingPointError:
                return {}
    return metrics if isinstance(metrics, dict) else {}


def _dev(metrics: dict[str, Any]) -> dict[str, Any]:
    dev = metrics.get("dev", metrics)
    return dev if isinstance(dev, dict) else {}


def compare_cells(task: str, cells: Sequence[str], train_path: str, *, dev_path: str | None = None,
                  seeds: int = 1, config_path: str | None = None, overrides: Sequence[str] = (),
                  out: str | Path = "runs/compare", metric: str | None = None, tolerance: float = 0.005,
                  overwrite: bool = False, log: Callable[[str], None] = print,
                  progress: bool = False) -> CompareResult:
    """Train ``task`` once per cell and seed with the task's own ``train`` and compare the cells.

    Args:
        task: a registered task name (``rnnkit tasks``).
        cells: cell names, each must be valid for the task's ``model.cell``, each named once.
        train_path, dev_path: the data, as for ``rnnkit train``.
        seeds: seeds per cell (``train.seed = 0..seeds-1``).
        config_path, overrides: the shared config (YAML file and ``key=value`` overrides).
        out: folder receiving one run folder per (cell, seed) and the comparison report; it must be
            empty or absent.
        metric: dev metric to compare (default: the task's ``quality_metric``); checked against
            the task's ``dev_metrics`` before any training.
        tolerance: the smallest quality margin of the recommendation rule.
        overwrite: clear ``out`` first when it holds an earlier comparison.

    Returns:
        A :class:`CompareResult`; ``compare.md``, ``compare.json`` and ``compare.png`` are written
        to ``out``.
    """
    from ..tasks import get_task
    from ..tasks.config import ConfigError, dump_yaml, load_config
    from ..tasks.run import RunDir

    module = get_task(task)
    if not cells:
        raise ValueError("give at least one cell, e.g. --cells rnn,lstm,gru")
    seen: dict[str, str] = {}
    for cell in cells:  # rnn_tanh is rnn under another name: the same model trained twice
        if canonical_cell(cell) in seen:
            raise ValueError(f"--cells names {cell!r} twice (as {seen[canonical_cell(cell)]!r} before; both are "
                             f"{canonical_cell(cell)}); name each cell once")
        seen[canonical_cell(cell)] = cell
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    for o in overrides:
        if o.split("=", 1)[0].strip() in ("model.cell", "train.seed"):
            raise ConfigError(f"--set {o}: compare sets model.cell and train.seed itself (use --cells and --seeds)")
    configs = {}
    for cell in cells:  # validate every cell before any training starts
        configs[cell] = load_config(module.Config, config_path, [*overrides, f"model.cell={cell}"])
    first = configs[cells[0]]
    key, higher = quality_key(module, task, first, metric)
    device = training_device(str(getattr(getattr(first, "train", None), "accelerator", "cpu")))
    method = PeakMemory(device).method
    root = Path(out)
    prepare_out(root, overwrite)

    warm: dict[str, dict[str, Any]] = {}
    for cell in cells:  # the same start for every timed run: each cell's first call happens here
        log(f"{cell}: untimed warm-up (one training batch)")
        warm[cell] = warm_up(module, task, configs[cell], train_path, dev_path)
        dev = _dev(warm[cell])
        if warm[cell] and key not in dev:
            reported = [k for k in module.dev_metrics(first) if k in dev]
            raise ValueError(f"the {task} task reports no dev metric {key!r} on this data (it reports "
                             f"{', '.join(reported) or 'none of its usual metrics'}); choose one with --metric")

    runs: list[CellRun] = []
    for cell in cells:
        for seed in range(seeds):
            cfg = load_config(module.Config, config_path, [*overrides, f"model.cell={cell}", f"train.seed={seed}"])
            run = RunDir.create(root, task, f"{cell}-seed{seed}")
            run.write_text("config.yaml", dump_yaml(cfg))
            lines: list[str] = []

            def run_log(message: str, _lines: list[str] = lines, _run: RunDir = run) -> None:
                _lines.append(message)
                _run.write_text("train.log", "\n".join(_lines) + "\n")

            release_freed_memory()
            error = None
            try:
                with PeakMemory(device) as memory:
                    start = time.perf_counter()
                    try:  # no mid-epoch checkpoints: a comparison is started again, not resumed, so Ctrl-C
                        with checkpoint_interval(None):  # stops at once (no "checkpoint to resume from")
                            metrics = module.train(cfg, train_path, dev_path, run, run_log, progress=progress)
                    except FloatingPointError as err:  # a diverged loss: this run failed, the comparison goes on
                        error = " ".join(str(err).split()) or "training diverged"
                        metrics = {}
                    seconds = time.perf_counter() - start
            except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, SIGTERM (exit 143), an exit from training
                word = "terminated (SIGTERM)" if ended_by_sigterm(stop) else "interrupted"
                lines.append(f"error: {word}")
                with contextlib.suppress(OSError):
                    run.write_text("train.log", "\n".join(lines) + "\n")
                done = ", ".join(Path(r.run).name for r in runs) or "none"
                log(f"{word} during {cell} seed {seed}: no report written; finished runs in {root}: {done}; "
                    "start again with --overwrite")
                raise
            if error is not None:
                run_log(f"error: {error}")
                quality = math.nan
                parameters = _parameters(warm[cell], None) if warm[cell] else 0
                log(f"{cell} seed {seed}: training diverged ({error}); counted as quality nan ({run.path})")
            else:
                quality = float(_dev(metrics)[key])
                parameters = _parameters(metrics, run.path)
                log(f"{cell} seed {seed}: dev {key} {quality:.4f}, {seconds:.1f} s, peak {memory.megabytes:.0f} MiB "
                    f"({run.path})")
            runs.append(CellRun(cell, seed, str(run.path), quality, seconds, parameters, memory.megabytes, error))
    result = CompareResult(task, key, higher, runs, list(cells), method, tolerance,
                           {"train": str(train_path), "dev": None if dev_path is None else str(dev_path),
                            "seeds": seeds, "overrides": list(overrides), "config": config_path, "device": device,
                            "warm_up": "one untimed training batch per cell before the timed runs"})
    root.mkdir(parents=True, exist_ok=True)
    from ..tasks.run import atomic_write_bytes

    atomic_write_bytes(root / "compare.md", result.markdown().encode())
    import json

    atomic_write_bytes(root / "compare.json", (json.dumps(result.to_json(), indent=2) + "\n").encode())
    result.plot(root / "compare.png")
    return result


__all__ = ["OUTPUTS", "CellRun", "CompareResult", "PeakMemory", "compare_cells", "prepare_out", "quality_key",
           "release_freed_memory", "training_device", "warm_up"]
