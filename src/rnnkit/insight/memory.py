"""Long-range memory tasks: the adding problem, copy memory and selective copy.

Each task is a generator of ``(inputs [B, T, I], targets)`` batches plus a trivial baseline
(what a network with no memory can reach) and a success rule. :func:`run_memory_benchmark`
trains each cell on each length under the same fixed budget (exactly ``budget_steps`` training
steps) through the task engine (:func:`rnnkit.tasks.engine.fit`), reports the success rate, and
per cell where it stops learning: the longest ``T`` whose success rate reaches ``success_rate``
(default 0.5) and the first ``T`` that does not.

The model (:class:`MemoryModel`) is one recurrent layer and a linear read-out; its LSTM cells
start with forget-gate bias 1 (Jozefowicz et al. 2015, the common LSTM initialisation), so that
a fresh LSTM does not forget at the rate 0.5 per step of a forget gate at ``sigmoid(0)``.

* **adding** (Hochreiter and Schmidhuber 1997, experiment 4; the variant of Le et al. 2015):
  two channels, a value ``U(0, 1)`` and a marker; exactly two steps are marked, one in each half
  of the sequence; the target is the sum of the two marked values, read at the last step.
  Always answering 1 gives MSE ``Var(u1 + u2) = 1/6 = 0.167``. Success: dev MSE below 10% of
  that baseline (``< 0.0167``). ``length`` = sequence length ``T`` (at least 4).
* **copy** (Hochreiter and Schmidhuber 1997, experiment 2; the version of Arjovsky et al. 2016):
  ``K`` symbols from an alphabet of ``A``, a gap of blanks, a delimiter, then ``K`` steps in which
  the network must output the symbols in order. ``length`` = total sequence length ``T``
  (``T - 2K - 1`` blanks before the delimiter; at least ``2K + 1``). Without memory, accuracy on
  the recalled segment is ``1/A``. Success: recalled-segment accuracy above 0.9.
* **selective-copy** (Gu and Dao 2023, sec. 3.1; Jing et al. 2019): ``K`` symbols at random
  positions among blanks in the first ``T - K - 1`` steps, a delimiter, then the symbols in order
  (the network must pick out *where* the symbols were, not just copy a fixed block). Same
  baseline and success rule as copy; ``length`` = total length (at least ``2K + 1``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import recurrent_layer
from ..nn.factory import LSTM_CELLS

Batch = tuple[Tensor, Tensor]
MAX_LENGTH = 100_000  # longer sequences would not fit in memory (the dev set alone is 512 x T x features)


def clip_norm_or_none(value: float | None, option: str = "--clip-norm") -> float | None:
    """A gradient-clipping norm: ``None`` for no clipping (given as ``None`` or ``0``); a negative
    or non-finite value is a ValueError."""
    if value is None or value == 0:
        return None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{option} must be a norm >= 0 (0: no clipping), got {value:g}")
    return float(value)


CELL_ALIASES = {"rnn_tanh": "rnn"}  # the same cell under two names (nn.factory.RNN_CELLS)


def canonical_cell(name: str) -> str:
    """The registered cell ``name`` stands for (case, ``-``/``_`` and aliases folded): two names
    with the same canonical cell train the same model."""
    key = name.strip().lower().replace("-", "_")
    return CELL_ALIASES.get(key, key)


def check_out_folder(out: str | Path, option: str = "--out") -> None:
    """``out`` must be a folder or a path that can become one: a ValueError when it, or the nearest
    part of it that exists, is a file (found before any work, not when the results are written)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {out} is a file, not a folder; give a folder for the results")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {out}: {parent} is a file, so no folder can be made under it; "
                                 "give another folder for the results")
            return


def check_learning_rate(value: float, option: str = "--learning-rate") -> float:
    """A learning rate: finite and > 0, or a ValueError naming ``option``."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be a number > 0, got {value:g}; e.g. {option} 1e-3")
    return float(value)


def check_unique(values: Sequence[Any], option: str, shown: Sequence[Any] | None = None) -> None:
    """A ValueError naming the first value given twice (``shown``: how to print each value)."""
    seen: set[Any] = set()
    for value, text in zip(values, shown if shown is not None else values):
        if value in seen:
            raise ValueError(f"{option} names {text} twice; give each once")
        seen.add(value)


@dataclass(frozen=True)
class MemoryTask:
    """A memory task: its generator, loss, quality metric, trivial baseline and success rule.

    Attributes:
        name: ``adding``, ``copy`` or ``selective-copy``.
        input_size: features per step of the generated inputs.
        output_size: regression outputs (adding) or classes per recalled step (copies).
        metric: name of the dev metric (``mse`` or ``recall_accuracy``).
        higher_is_better: direction of ``metric``.
        baseline: the metric of a network with no memory.
        threshold: success when the metric is better than this.
        rule: the success rule in words.
    """

    name: str
    input_size: int
    output_size: int
    metric: str
    higher_is_better: bool
    baseline: float
    threshold: float
    rule: str
    symbols: int = 8
    memorize: int = 10

    def min_length(self) -> int:
        return 4 if self.name == "adding" else 2 * self.memorize + 1

    def check_length(self, length: int) -> None:
        if length > MAX_LENGTH:
            raise ValueError(f"length {length} is too long for the {self.name} task: at most {MAX_LENGTH:,} steps "
                             "(a batch of such sequences would not fit in memory); give a shorter --length")
        if length < self.min_length():
            what = ("two marked steps, one in each half" if self.name == "adding" else
                    f"{self.memorize} symbols, a delimiter and {self.memorize} recall steps")
            raise ValueError(f"length {length} is too short for the {self.name} task: it needs at least "
                             f"{self.min_length()} steps ({what})")

    def generate(self, batch_size: int, length: int, generator: torch.Generator | None = None) -> Batch:
        """One batch ``(inputs [B, T, input_size], targets)``; see the module docstring."""
        self.check_length(length)
        if self.name == "adding":
            return adding_problem(batch_size, length, generator)
        if self.name == "copy":
            return copy_memory(batch_size, length, symbols=self.symbols, memorize=self.memorize, generator=generator)
        return selective_copy(batch_size, length, symbols=self.symbols, memorize=self.memorize, generator=generator)

    def success(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value > self.threshold if self.higher_is_better else value < self.threshold


def make_task(name: str, *, symbols: int = 8, memorize: int = 10) -> MemoryTask:
    """The task called ``name`` (``adding``, ``copy``, ``selective-copy``; case and ``_`` for ``-``
    do not matter); ValueError lists them."""
    name = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if name == "adding":
        baseline = 1.0 / 6.0
        return MemoryTask("adding", 2, 1, "mse", False, baseline, 0.1 * baseline,
                          "dev MSE < 0.1 x 0.167 (the MSE of always answering 1)")
    if name in ("copy", "selective-copy"):
        if symbols < 2 or memorize < 1:
            raise ValueError(f"copy tasks need symbols >= 2 and memorize >= 1, got {symbols} and {memorize}")
        return MemoryTask(name, symbols + 2, symbols + 1, "recall_accuracy", True, 1.0 / symbols, 0.9,
                          f"accuracy on the {memorize} recalled steps > 0.9 (chance without memory: 1/{symbols})",
                          symbols=symbols, memorize=memorize)
    raise ValueError(f"unknown memory task {name!r}; choose one of {', '.join(MEMORY_TASKS)}")


MEMORY_TASKS = ("adding", "copy", "selective-copy")


# -- generators --------------------------------------------------------------------------------
def adding_problem(batch_size: int, length: int, generator: torch.Generator | None = None) -> Batch:
    """Adding problem: ``inputs [B, T, 2]`` (value, marker), ``targets [B]`` = sum of the 2 marked values.

    One marker falls uniformly in ``[0, T/2)``, the other in ``[T/2, T)``.
    """
    if length < 4:
        raise ValueError(f"length {length} is too short for the adding task: it needs at least 4 steps")
    values = torch.rand(batch_size, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, length, (batch_size,), generator=generator)
    markers = torch.zeros(batch_size, length)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], -1), targets


def _one_hot(tokens: Tensor, size: int) -> Tensor:
    return F.one_hot(tokens, size).to(torch.float32)


def copy_memory(batch_size: int, length: int, *, symbols: int = 8, memorize: int = 10,
                generator: torch.Generator | None = None) -> Batch:
    """Copy memory: ``inputs [B, T, symbols+2]`` one-hot, ``targets [B, T]`` class ids.

    Input tokens: 0 blank, ``1..symbols`` data, ``symbols+1`` delimiter. The data occupy steps
    ``0..K-1``, the delimiter step ``T-K-1``; targets are blank (0) everywhere except the last
    ``K`` steps, which hold the data in order.
    """
    if length < 2 * memorize + 1:
        raise ValueError(f"length {length} is too short for the copy task: it needs at least {2 * memorize + 1}")
    data = torch.randint(1, symbols + 1, (batch_size, memorize), generator=generator)
    tokens = torch.zeros(batch_size, length, dtype=torch.long)
    tokens[:, :memorize] = data
    tokens[:, length - memorize - 1] = symbols + 1
    targets = torch.zeros(batch_size, length, dtype=torch.long)
    targets[:, length - memorize:] = data
    return _one_hot(tokens, symbols + 2), targets


def selective_copy(batch_size: int, length: int, *, symbols: int = 8, memorize: int = 10,
                   generator: torch.Generator | None = None) -> Batch:
    """Selective copy: like :func:`copy_memory` but the ``K`` data tokens sit at random (ordered)
    positions among blanks in the first ``T - K - 1`` steps."""
    if length < 2 * memorize + 1:
        raise ValueError(f"length {length} is too short for the selective-copy task: it needs at least "
                         f"{2 * memorize + 1}")
    span = length - memorize - 1
    data = torch.randint(1, symbols + 1, (batch_size, memorize), generator=generator)
    positions = torch.rand(batch_size, span, generator=generator).argsort(-1)[:, :memorize].sort(-1).values
    tokens = torch.zeros(batch_size, length, dtype=torch.long)
    tokens.scatter_(1, positions, data)
    tokens[:, span] = symbols + 1
    targets = torch.zeros(batch_size, length, dtype=torch.long)
    targets[:, length - memorize:] = data
    return _one_hot(tokens, symbols + 2), targets


# -- model, loss, metric -----------------------------------------------------------------------
class MemoryModel(nn.Module):
    """One recurrent layer of any cell and a linear read-out (last step for adding, every step for copies).

    LSTM cells (``lstm``, ``peephole_lstm``, ``layernorm_lstm``) start with forget-gate bias
    ``forget_bias`` (1, Jozefowicz et al. 2015; ``None``: the cell's own initialisation, bias
    about 0, i.e. a forget gate near 0.5 that halves the cell state every step).
    """

    def __init__(self, task: MemoryTask, cell: str, hidden_size: int = 64, *,
                 forget_bias: float | None = 1.0) -> None:
        super().__init__()
        self.task_name = task.name
        is_lstm = isinstance(cell, str) and cell.lower().replace("-", "_") in LSTM_CELLS
        options = {"forget_bias": forget_bias} if is_lstm and forget_bias is not None else {}
        self.encoder = recurrent_layer(cell, task.input_size, hidden_size, cell_options=options)
        self.head = nn.Linear(hidden_size, task.output_size)

    def forward(self, x: Tensor) -> Tensor:
        outputs, _ = self.encoder(x)  # [B, T, H]
        if self.task_name == "adding":
            return self.head(outputs[:, -1]).squeeze(-1)  # [B]
        return self.head(outputs)  # [B, T, C]


def task_loss(task: MemoryTask, prediction: Tensor, targets: Tensor) -> Tensor:
    """MSE for adding; cross-entropy over every step for the copies (the usual setup)."""
    if task.name == "adding":
        return F.mse_loss(prediction, targets)
    return F.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), targets.reshape(-1))


def task_metric(task: MemoryTask, prediction: Tensor, targets: Tensor) -> float:
    """MSE (adding) or accuracy over the recalled segment (copies)."""
    if task.name == "adding":
        return float(F.mse_loss(prediction, targets))
    k = task.memorize
    return float((prediction[:, -k:].argmax(-1) == targets[:, -k:]).float().mean())


def split_budget(budget_steps: int, epochs: int) -> list[int]:
    """``budget_steps`` as ``epochs`` parts that differ by at most one and add up to it exactly
    (the larger parts first)."""
    base, extra = divmod(budget_steps, epochs)
    return [base + (1 if k < extra else 0) for k in range(epochs)]


class _Batches(torch.utils.data.IterableDataset):
    """``steps[k]`` fresh batches on pass ``k`` from one seeded generator (each epoch sees new data).

    No ``__len__``: the passes differ in length, so the engine ends each epoch when its pass ends
    (a length read once would cut or merge epochs and skip evaluations).
    """

    def __init__(self, task: MemoryTask, length: int, batch_size: int, steps: Sequence[int], seed: int) -> None:
        super().__init__()
        self.task, self.length, self.batch_size, self.steps = task, length, batch_size, list(steps)
        self.generator = torch.Generator().manual_seed(seed)
        self.passes = 0

    def __iter__(self) -> Any:
        steps = self.steps[min(self.passes, len(self.steps) - 1)]
        self.passes += 1
        for _ in range(steps):
            yield self.task.generate(self.batch_size, self.length, self.generator)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (``nan``, ``inf``) replaced by its string, in nested
    dicts, lists and tuples: ``json.dumps`` writes those floats as ``NaN``/``Infinity``, which is
    not JSON (``jq``, browsers and strict readers refuse it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# -- training under a budget -------------------------------------------------------------------
@dataclass
class MemoryResult:
    """One training run: task, cell, length, seed, final dev metric and whether it succeeded."""

    task: str
    cell: str
    length: int
    seed: int
    metric: str
    value: float
    baseline: float
    success: bool
    steps: int
    seconds: float
    history: list[float] = field(default_factory=list)


def train_memory_task(task: MemoryTask, cell: str, length: int, *, budget_steps: int = 2000, seed: int = 0,
                      batch_size: int = 64, hidden_size: int = 64, learning_rate: float = 1e-3,
                      clip_norm: float | None = 1.0, evaluations: int = 5, dev_size: int = 512,
                      accelerator: str = "cpu", forget_bias: float | None = None) -> MemoryResult:
    """Train ``cell`` on ``task`` at ``length`` for exactly ``budget_steps`` Adam steps through the task engine.

    The budget is split into ``evaluations`` engine epochs of sizes differing by at most one step
    (:func:`split_budget`); after each the model is scored on a fixed dev set of ``dev_size``
    sequences (its own seed), and the best weights are kept. ``clip_norm`` ``None`` or ``0``: no
    clipping. ``MemoryResult.steps`` counts the training steps actually taken. ``forget_bias``: the
    LSTM cells' initial forget-gate bias (``None``, the default: the cell's own initialisation, with
    which the tables in ``benchmarks/RESULTS.md`` were measured; :class:`MemoryModel` itself, as used
    by the fresh-model gradient demo, defaults to 1).
    """
    from ..tasks.engine import EngineOptions, fit

    task.check_length(length)
    if budget_steps < 1:
        raise ValueError(f"budget_steps must be >= 1, got {budget_steps}")
    if batch_size < 1 or hidden_size < 1:
        raise ValueError(f"batch_size and hidden_size must be >= 1, got {batch_size} and {hidden_size}")
    learning_rate = check_learning_rate(learning_rate, "learning_rate")
    clip_norm = clip_norm_or_none(clip_norm, "clip_norm")
    evaluations = max(1, min(evaluations, budget_steps))
    torch.manual_seed(seed)
    model = MemoryModel(task, cell, hidden_size, forget_bias=forget_bias)
    dev = task.generate(dev_size, length, torch.Generator().manual_seed(10_000 + seed))
    dev_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*dev), batch_size=256)
    parts = split_budget(budget_steps, evaluations)
    train_loader = torch.utils.data.DataLoader(_Batches(task, length, batch_size, parts, seed), batch_size=None)
    taken = [0]

    def loss_fn(m: nn.Module, batch: Any) -> Tensor:
        taken[0] += 1
        return task_loss(task, m(batch[0]), batch[1])

    def predict_fn(m: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        return m(batch[0]), batch[1]

    def metric_fn(prediction: Tensor, targets: Tensor) -> dict[str, float]:
        return {task.metric: task_metric(task, prediction, targets)}

    options = EngineOptions(epochs=evaluations, learning_rate=learning_rate, optimizer="adam", clip_norm=clip_norm,
                            patience=None, monitor=task.metric, mode="max" if task.higher_is_better else "min",
                            seed=seed, accelerator=accelerator, progress=False)
    start = time.perf_counter()
    try:
        history = fit(model, train_loader, dev_loader, loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn,
                      options=options, log=lambda _: None)
        curve = [row[f"dev_{task.metric}"] for row in history]
    except FloatingPointError:  # the loss diverged: a failure, not a crash of the benchmark
        curve = [math.nan]
    seconds = time.perf_counter() - start
    finite = [v for v in curve if math.isfinite(v)]
    value = (max(finite) if task.higher_is_better else min(finite)) if finite else math.nan
    return MemoryResult(task.name, cell, length, seed, task.metric, value, task.baseline, task.success(value),
                        taken[0], seconds, curve)


@dataclass
class MemoryBenchmark:
    """Results of :func:`run_memory_benchmark` and their summary per (cell, length)."""

    task: MemoryTask
    results: list[MemoryResult]
    settings: dict[str, Any]

    def summary(self) -> list[dict[str, Any]]:
        """One row per (cell, length): success rate, mean and best metric, runs."""
        rows = []
        keys = sorted({(r.cell, r.length) for r in self.results}, key=lambda k: (self._cell_order(k[0]), k[1]))
        for cell, length in keys:
            runs = [r for r in self.results if r.cell == cell and r.length == length]
            values = [r.value for r in runs if math.isfinite(r.value)]
            rows.append({"cell": cell, "length": length, "runs": len(runs),
                         "success_rate": sum(r.success for r in runs) / len(runs),
                         "mean": sum(values) / len(values) if values else math.nan,
                         "best": (max(values) if self.task.higher_is_better else min(values)) if values else math.nan,
                         "seconds": sum(r.seconds for r in runs) / len(runs)})
        return rows

    def _cell_order(self, cell: str) -> int:
        cells = list(self.settings.get("cells", []))
        return cells.index(cell) if cell in cells else len(cells)

    @property
    def success_rate(self) -> float:
        """The success rate at which a cell counts as learning a length (``settings["success_rate"]``)."""
        return float(self.settings.get("success_rate", 0.5))

    def limits(self) -> list[dict[str, Any]]:
        """Per cell, where it stops learning within the budget: ``longest_learned``, the longest
        ``T`` whose success rate is ``>= success_rate``, and ``first_failed``, the shortest ``T``
        whose rate is below it (``None`` when there is none: learned everywhere, or nowhere)."""
        rows = self.summary()
        out = []
        for cell in dict.fromkeys(r["cell"] for r in rows):
            rates = sorted((r["length"], r["success_rate"]) for r in rows if r["cell"] == cell)
            learned = [t for t, rate in rates if rate >= self.success_rate]
            failed = [t for t, rate in rates if rate < self.success_rate]
            out.append({"cell": cell, "longest_learned": max(learned) if learned else None,
                        "first_failed": min(failed) if failed else None})
        return out

    def _limit_text(self, row: dict[str, Any]) -> tuple[str, str]:
        lengths = sorted({r["length"] for r in self.summary()})
        learned = str(row["longest_learned"]) if row["longest_learned"] is not None else \
            f"none (fails from T={lengths[0]})"
        failed = str(row["first_failed"]) if row["first_failed"] is not None else \
            f"none (learns up to T={lengths[-1]}, the longest tried)"
        return learned, failed

    @staticmethod
    def _legend_text(row: Mapping[str, Any], lengths: Sequence[int]) -> str:
        """Both limits of one cell for the plot's legend (``learns to T=12, fails from T=40``); a
        missing limit is said in words, as ``memory.md`` does, never as ``T=none``: ``learns no T``
        (it failed from the shortest), ``no failure up to T=<longest tried>``."""
        learned = f"learns to T={row['longest_learned']}" if row["longest_learned"] is not None else "learns no T"
        failed = f"fails from T={row['first_failed']}" if row["first_failed"] is not None else \
            f"no failure up to T={lengths[-1]}"
        return f"{learned}, {failed}"

    def markdown(self) -> str:
        from ..tasks.report import markdown_table

        t = self.task
        s = self.settings
        clip = "no clipping" if s["clip_norm"] is None else f"clip norm {s['clip_norm']}"
        fb = s.get("lstm_forget_bias")
        bias = f"LSTM cells start with forget-gate bias {fb:g}" if fb is not None else \
            "LSTM cells keep their own bias initialisation"
        head = [f"# Memory benchmark: {t.name}", "",
                f"Budget {s['budget_steps']} Adam steps of batch {s['batch_size']} (learning rate "
                f"{s['learning_rate']}, {clip}), hidden size {s['hidden_size']}, {s['seeds']} seed(s) per cell and "
                f"length; {bias}.", "",
                f"Success rule: {t.rule}. Trivial baseline {t.metric} = {t.baseline:.4f}.", ""]
        rows = [[r["cell"], r["length"], f"{r['success_rate']:.2f}", r["mean"], r["best"], f"{r['seconds']:.1f}"]
                for r in self.summary()]
        header = ["cell", "T", "success rate", f"mean {t.metric}", f"best {t.metric}", "seconds per run"]
        limits = [[row["cell"], *self._limit_text(row)] for row in self.limits()]
        tail = ["## Where each cell stops learning", "",
                f"A cell learns a length when its success rate there is >= {self.success_rate:g} "
                f"(under the budget of {s['budget_steps']} steps).", "",
                markdown_table(["cell", "longest T learned", "first T that fails"], limits), ""]
        return "\n".join(head + [markdown_table(header, rows), ""] + tail)

    def to_json(self) -> dict[str, Any]:
        """The benchmark as strict JSON values: a diverged run's ``nan`` (its value, history and the
        means it enters) is written as the string ``"nan"``, not the ``NaN`` that JSON lacks."""
        return json_safe({"task": asdict(self.task), "settings": self.settings, "summary": self.summary(),
                           "limits": self.limits(), "runs": [asdict(r) for r in self.results]})

    def plot(self, path: Path) -> Path:
        """Success rate against ``T``, one line per cell; the success threshold as a dotted line,
        each cell's first failing ``T`` circled, and where each stops learning in the legend."""
        from ..tasks.report import _pyplot

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        summary = self.summary()
        limits = {row["cell"]: row for row in self.limits()}
        styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-")]
        ax.axhline(self.success_rate, color="grey", linestyle=":", linewidth=1,
                   label=f"learns: rate >= {self.success_rate:g}")
        lengths = sorted({r["length"] for r in summary})
        for k, cell in enumerate(dict.fromkeys(r["cell"] for r in summary)):
            rows = [r for r in summary if r["cell"] == cell]
            marker, line = styles[k % len(styles)]  # cells with the same rates stay visible on top of each other
            label = f"{cell}: {self._legend_text(limits[cell], lengths)}"
            drawn = ax.plot([r["length"] for r in rows], [r["success_rate"] for r in rows], marker=marker,
                            linestyle=line, markersize=9 - 2 * (k % 3), label=label)
            first = limits[cell]["first_failed"]
            if first is not None:
                rate = next(r["success_rate"] for r in rows if r["length"] == first)
                ax.plot([first], [rate], marker="o", markersize=16, markerfacecolor="none",
                        markeredgecolor=drawn[0].get_color(), linestyle="none")
        ax.set(xlabel="sequence length T", ylabel="success rate", ylim=(-0.05, 1.05),
               title=f"{self.task.name}: success under {self.settings['budget_steps']} steps")
        if len(lengths) > 1 and lengths[-1] / max(lengths[0], 1) >= 8:
            ax.set_xscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def run_memory_benchmark(task_name: str, lengths: Sequence[int], cells: Sequence[str], *, budget_steps: int = 2000,
                         seeds: int = 1, batch_size: int = 64, hidden_size: int = 64, learning_rate: float = 1e-3,
                         clip_norm: float | None = 1.0, symbols: int = 8, memorize: int = 10,
                         success_rate: float = 0.5, forget_bias: float | None = None,
                         log: Callable[[str], None] = print) -> MemoryBenchmark:
    """Train every cell at every length for ``seeds`` seeds under one budget.

    Before the timed runs each cell trains one untimed step at the shortest length (a warm-up), so
    the first run's ``seconds`` do not include the process's start-up (imports, first calls).
    ``success_rate``: a cell learns a length when at least this fraction of its seeds succeed
    there (:meth:`MemoryBenchmark.limits`). ``clip_norm`` ``None`` or ``0``: no clipping.
    ``forget_bias``: the LSTM cells' initial forget-gate bias (``None``, the default: the cell's own
    initialisation, as in the published tables; 1 is the common LSTM initialisation).

    Raises:
        ValueError: unknown task or cell names (listing the valid ones), no cell or no length, a
            cell or length given twice, a length too short for the task (or above MAX_LENGTH), ``seeds < 1``, a
            negative ``clip_norm`` or a ``success_rate`` outside ``(0, 1]``.
    """
    from ..cells import CELLS

    task = make_task(task_name, symbols=symbols, memorize=memorize)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not cells:
        raise ValueError("give at least one cell, e.g. --cell rnn,lstm,gru")
    if not lengths:
        raise ValueError("give at least one length, e.g. --length 50,100")
    if not 0 < success_rate <= 1:
        raise ValueError(f"--success-rate must be in (0, 1], got {success_rate:g}")
    if budget_steps < 1:
        raise ValueError(f"--budget-steps must be >= 1, got {budget_steps}")
    for option, value in (("--batch-size", batch_size), ("--hidden-size", hidden_size)):
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    learning_rate = check_learning_rate(learning_rate)
    clip_norm = clip_norm_or_none(clip_norm)
    for cell in cells:
        if cell.lower().replace("-", "_") not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(sorted(CELLS))}")
    check_unique([canonical_cell(c) for c in cells], "--cell",  # rnn_tanh is rnn: the same model twice
                 shown=[repr(c) if canonical_cell(c) == c.strip().lower().replace("-", "_") else
                        f"{c!r} (the same cell as {canonical_cell(c)})" for c in cells])
    check_unique(list(lengths), "--length", shown=[f"T={t}" for t in lengths])
    for length in lengths:
        task.check_length(length)
    for cell in cells:  # untimed warm-up: imports and first-call set-up are not paid by the first timed run
        train_memory_task(task, cell, min(lengths), budget_steps=1, evaluations=1, dev_size=min(batch_size, 8),
                          batch_size=min(batch_size, 8), hidden_size=hidden_size, learning_rate=learning_rate,
                          clip_norm=clip_norm, forget_bias=forget_bias)
    results = []
    for length in lengths:
        for cell in cells:
            for seed in range(seeds):
                result = train_memory_task(task, cell, length, budget_steps=budget_steps, seed=seed,
                                           batch_size=batch_size, hidden_size=hidden_size,
                                           learning_rate=learning_rate, clip_norm=clip_norm,
                                           forget_bias=forget_bias)
                results.append(result)
                log(f"{task.name} T={length} {cell} seed {seed}: {task.metric} {result.value:.4f} "
                    f"({'success' if result.success else 'no success'}, {result.seconds:.1f} s)")
    settings = {"cells": list(cells), "lengths": list(lengths), "budget_steps": budget_steps, "seeds": seeds,
                "batch_size": batch_size, "hidden_size": hidden_size, "learning_rate": learning_rate,
                "clip_norm": clip_norm, "success_rate": success_rate, "lstm_forget_bias": forget_bias}
    return MemoryBenchmark(task, results, settings)


__all__ = ["MAX_LENGTH", "MEMORY_TASKS", "MemoryBenchmark", "MemoryModel", "MemoryResult", "MemoryTask", "adding_problem",
           "canonical_cell", "check_learning_rate", "check_out_folder", "check_unique", "clip_norm_or_none",
           "copy_memory", "make_task", "run_memory_benchmark", "selective_copy", "split_budget", "task_loss",
           "task_metric", "train_memory_task"]
