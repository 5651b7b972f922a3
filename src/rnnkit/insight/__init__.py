"""Insight into recurrent networks: long-range memory tasks, gradient diagnostics, cell comparison.

* :mod:`~rnnkit.insight.memory`: the adding problem, copy memory and selective copy, and a
  benchmark that trains each cell under a fixed budget (``rnnkit bench memory``);
* :mod:`~rnnkit.insight.gradients`: ``||dL/dh_t||`` through time, step-Jacobian products, gate
  saturation, the effective memory horizon, exploding gradients and clipping (``rnnkit diagnose``);
* :mod:`~rnnkit.insight.compare`: train one task with several cells under the same config and
  compare quality, time, size and memory (``rnnkit compare``).

Lightning and matplotlib are imported only when training or plotting starts.
"""

from __future__ import annotations

from .compare import CompareResult, compare_cells
from .gradients import (
    GradientReport,
    clipping_demo,
    diagnose_fresh,
    diagnose_run,
    diagnose_runs,
    gate_activations,
    gradient_diagnostics,
    memory_horizon,
    plot_gradient_norms,
    saturation_fractions,
    scale_recurrent_weights,
)
from .memory import (
    MEMORY_TASKS,
    MemoryBenchmark,
    MemoryModel,
    MemoryTask,
    adding_problem,
    copy_memory,
    make_task,
    run_memory_benchmark,
    selective_copy,
    train_memory_task,
)

__all__ = [
    "MEMORY_TASKS", "CompareResult", "GradientReport", "MemoryBenchmark", "MemoryModel", "MemoryTask",
    "adding_problem", "clipping_demo", "compare_cells", "copy_memory", "diagnose_fresh", "diagnose_run",
    "diagnose_runs", "gate_activations", "gradient_diagnostics", "make_task",
    "memory_horizon", "plot_gradient_norms", "run_memory_benchmark", "saturation_fractions",
    "scale_recurrent_weights", "selective_copy", "train_memory_task",
]
