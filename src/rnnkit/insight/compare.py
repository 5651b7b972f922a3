"""Compare recurrent cells on any registered task, under one config, data and budget.

For each cell and seed, :func:`compare_cells` loads the task's config with the same file and
``--set`` overrides plus ``model.cell=<cell>`` and ``train.seed=<seed>``, and calls the task's own
``train`` into a run folder ``<out>/<cell>-seed<k>``. It records:

* quality: the dev metric the task selects on (``train.monitor`` when the config has one, else
  ``metric=``), mean and standard deviation over seeds;
* training time: wall-clock seconds of ``train`` (reading data included, the same for every cell);
* parameters: from the task's metrics (``parameters``) or the saved model;
* peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's
  resident set size above its value before the run, sampled every 20 ms (Linux ``/proc``); an
  approximation, as freed memory is not always returned to the system.

The recommendation is the best trade-off by this rule: among cells whose mean quality is within
``max(spread of the best cell, tolerance)`` of the best mean, the one with the shortest training
time (then the fewest parameters).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "mape", "smape", "perplexity", "cer", "wer")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak when CUDA is in use, else sampled RSS growth."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self.method = "cuda max_memory_allocated" if torch.cuda.is_available() else "RSS growth (sampled)"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
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
        if torch.cuda.is_available():
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
        rows = []
        for cell in self.cells:
            runs = [r for r in self.runs if r.cell == cell]
            q = [r.quality for r in runs]
            rows.append({"cell": cell, "seeds": len(runs), "mean": statistics.fmean(q),
                         "std": statistics.stdev(q) if len(q) > 1 else 0.0,
                         "seconds": statistics.fmean(r.seconds for r in runs),
                         "parameters": runs[0].parameters,
                         "peak_mib": max(r.peak_mib for r in runs)})
        return rows

    def recommendation(self) -> tuple[str, str]:
        """``(cell, reason)`` by the rule in the module docstring."""
        rows = self.summary()
        sign = 1.0 if self.higher_is_better else -1.0
        best = max(rows, key=lambda r: sign * r["mean"])
        margin = max(best["std"], self.tolerance)
        close = [r for r in rows if sign * (best["mean"] - r["mean"]) <= margin]
        pick = min(close, key=lambda r: (r["seconds"], r["parameters"]))
        others = [r["cell"] for r in close if r is not pick]
        if pick is best:
            reason = (f"best mean dev {self.metric} ({best['mean']:.4f})"
                      + (f" and the fastest of the cells within {margin:.4f} of it ({', '.join(others)})" if others
                         else f"; no other cell came within {margin:.4f}"))
        else:
            reason = (f"dev {self.metric} {pick['mean']:.4f} is within {margin:.4f} of the best ({best['cell']}, "
                      f"{best['mean']:.4f}) and it trains faster ({pick['seconds']:.1f} s against "
                      f"{best['seconds']:.1f} s)")
        return pick["cell"], reason

    def markdown(self) -> str:
        from ..tasks.report import markdown_table

        cell, reason = self.recommendation()
        rows = [[r["cell"], r["seeds"], f"{r['mean']:.4f}", f"{r['std']:.4f}", f"{r['seconds']:.1f}",
                 f"{r['parameters']:,}", f"{r['peak_mib']:.0f}"] for r in self.summary()]
        return "\n".join([
            f"# Cell comparison: {self.task}", "",
            f"Every cell trained with the same config, data and budget through the task's own training; "
            f"quality is dev {self.metric} ({'higher' if self.higher_is_better else 'lower'} is better), "
            "mean and standard deviation over seeds.", "",
            markdown_table(["cell", "seeds", f"dev {self.metric}", "std", "train s", "parameters",
                            f"peak MiB ({self.memory_method})"], rows), "",
            f"**Recommended: {cell}**: {reason}.", "",
            f"Rule: among cells whose mean is within max(the best cell's std, {self.tolerance}) of the best mean, "
            "the fastest to train (then the smallest).", "", "![comparison](compare.png)", ""])

    def to_json(self) -> dict[str, Any]:
        cell, reason = self.recommendation()
        return {"task": self.task, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "memory_method": self.memory_method, "settings": self.settings, "summary": self.summary(),
                "recommended": cell, "reason": reason, "runs": [asdict(r) for r in self.runs]}

    def plot(self, path: Path) -> Path:
        """Quality (mean +- std) and training time per cell, side by side."""
        from ..tasks.report import _pyplot

        plt = _pyplot()
        rows = self.summary()
        names = [r["cell"] for r in rows]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
        axes[0].bar(names, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4, color="tab:blue")
        axes[0].set(title=f"dev {self.metric}", ylabel=self.metric)
        lows = [r["mean"] - r["std"] for r in rows]
        highs = [r["mean"] + r["std"] for r in rows]
        pad = (max(highs) - min(lows)) * 0.5 or 0.01
        axes[0].set_ylim(min(lows) - pad, max(highs) + pad)
        axes[1].bar(names, [r["seconds"] for r in rows], color="tab:orange")
        axes[1].set(title="training time", ylabel="seconds")
        axes[2].bar(names, [r["parameters"] for r in rows], color="tab:green")
        axes[2].set(title="parameters")
        fig.suptitle(f"{self.task}: cells compared")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _quality_key(config: Any, metric: str | None) -> str:
    if metric:
        return metric
    monitor = getattr(getattr(config, "train", None), "monitor", None)
    if isinstance(monitor, str):
        return monitor
    raise ValueError("this task's config has no train.monitor; name the quality metric with --metric")


def _parameters(metrics: dict[str, Any], run_path: Path) -> int:
    if isinstance(metrics.get("parameters"), int):
        return int(metrics["parameters"])
    from ..tasks.run import RunDir

    return sum(int(t.numel()) for t in RunDir(run_path).load_state().values())


def compare_cells(task: str, cells: Sequence[str], train_path: str, *, dev_path: str | None = None,
                  seeds: int = 1, config_path: str | None = None, overrides: Sequence[str] = (),
                  out: str | Path = "runs/compare", metric: str | None = None, tolerance: float = 0.005,
                  log: Callable[[str], None] = print, progress: bool = False) -> CompareResult:
    """Train ``task`` once per cell and seed with the task's own ``train`` and compare the cells.

    Args:
        task: a registered task name (``rnnkit tasks``).
        cells: cell names, each must be valid for the task's ``model.cell``.
        train_path, dev_path: the data, as for ``rnnkit train``.
        seeds: seeds per cell (``train.seed = 0..seeds-1``).
        config_path, overrides: the shared config (YAML file and ``key=value`` overrides).
        out: folder receiving one run folder per (cell, seed) and the comparison report.
        metric: dev metric to compare (default: the config's ``train.monitor``).
        tolerance: the smallest quality margin of the recommendation rule.

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
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    for o in overrides:
        if o.split("=", 1)[0].strip() in ("model.cell", "train.seed"):
            raise ConfigError(f"--set {o}: compare sets model.cell and train.seed itself (use --cells and --seeds)")
    configs = {}
    for cell in cells:  # validate every cell before any training starts
        configs[cell] = load_config(module.Config, config_path, [*overrides, f"model.cell={cell}"])
    key = _quality_key(configs[cells[0]], metric)
    higher = not any(word in key.lower() for word in LOWER_IS_BETTER)
    root = Path(out)
    runs: list[CellRun] = []
    method = PeakMemory().method
    for cell in cells:
        for seed in range(seeds):
            cfg = load_config(module.Config, config_path, [*overrides, f"model.cell={cell}", f"train.seed={seed}"])
            run = RunDir.create(root, task, f"{cell}-seed{seed}")
            run.write_text("config.yaml", dump_yaml(cfg))
            lines: list[str] = []

            def run_log(message: str, _lines: list[str] = lines, _run: RunDir = run) -> None:
                _lines.append(message)
                _run.write_text("train.log", "\n".join(_lines) + "\n")

            start = time.perf_counter()
            with PeakMemory() as memory:
                metrics = module.train(cfg, train_path, dev_path, run, run_log, progress=progress)
            seconds = time.perf_counter() - start
            dev = metrics.get("dev", metrics)
            if key not in dev:
                raise ValueError(f"the {task} task reports no dev metric {key!r} (it reports "
                                 f"{', '.join(k for k, v in dev.items() if isinstance(v, float | int))}); use --metric")
            quality = float(dev[key])
            runs.append(CellRun(cell, seed, str(run.path), quality, seconds, _parameters(metrics, run.path),
                                memory.megabytes))
            log(f"{cell} seed {seed}: dev {key} {quality:.4f}, {seconds:.1f} s, peak {memory.megabytes:.0f} MiB "
                f"({run.path})")
    result = CompareResult(task, key, higher, runs, list(cells), method, tolerance,
                           {"train": str(train_path), "dev": None if dev_path is None else str(dev_path),
                            "seeds": seeds, "overrides": list(overrides), "config": config_path})
    root.mkdir(parents=True, exist_ok=True)
    from ..tasks.run import atomic_write_bytes

    atomic_write_bytes(root / "compare.md", result.markdown().encode())
    import json

    atomic_write_bytes(root / "compare.json", (json.dumps(_finite(result.to_json()), indent=2) + "\n").encode())
    result.plot(root / "compare.png")
    return result


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


__all__ = ["CellRun", "CompareResult", "PeakMemory", "compare_cells"]
