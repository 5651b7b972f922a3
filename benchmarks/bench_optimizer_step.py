"""The optimizer step: torch's default (``foreach``) against its fused step, on the task models' parameters.

    python benchmarks/bench_optimizer_step.py            # print the tables (quiet machine, ~1 min)
    python benchmarks/bench_optimizer_step.py --write    # also replace this section of RESULTS.md
    python benchmarks/bench_optimizer_step.py --quick    # smoke run (seconds)

Table 1: one ``optimizer.step()`` (milliseconds, best of the rounds) on the parameters of three task
models at their default sizes: the CoNLL tagger (word vocabulary 23,625 as on CoNLL-2003 train, char
BiLSTM, BiLSTM 200, CRF over 17 tags), the text classifier (vocabulary 20,000, BiLSTM 128) and the
PTB language model (vocabulary 10,000), for Adam, AdamW and SGD with momentum, as
:func:`rnnkit.training.optimizers.make_torch_optimizer` builds them (fused where torch has the step)
against the same class without ``fused``. Table 2 (when ``../shared/data/conll2003`` is present):
``rnnkit train tagging`` for two epochs on the first 3,000 CoNLL-2003 training sentences (dev: the
first 300 of valid.txt), training seconds with the default and the fused Adam, interleaved.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import section_benchmark  # benchmarks/results_md.py

from rnnkit.tasks.language_model import RNNLanguageModel
from rnnkit.tasks.tagging import SequenceTagger
from rnnkit.tasks.text_classification import TextClassifier
from rnnkit.training import optimizers as opt

SECTION = "## Fused optimizer steps"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conll2003"


def _models(quick: bool) -> list[tuple[str, nn.Module]]:
    scale = 10 if quick else 1
    return [("tagger (CoNLL-2003 sizes)", SequenceTagger(23_625 // scale, 85, 17)),
            ("text classifier", TextClassifier(20_000 // scale, 2)),
            ("language model (PTB sizes)", RNNLanguageModel(10_000 // scale))]


def _step_ms(make: Callable[[list[nn.Parameter]], torch.optim.Optimizer], params: list[nn.Parameter],
             rounds: int) -> float:
    optimizer = make(params)
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    for _ in range(3):
        optimizer.step()
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(5):
            optimizer.step()
        best = min(best, (time.perf_counter() - start) / 5)
    return best * 1e3


def step_table(quick: bool, rounds: int) -> list[str]:
    cases = [("Adam", torch.optim.Adam, {"lr": 1e-3}), ("AdamW", torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01}),
             ("SGD, momentum 0.9", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})]
    rows = ["| parameters of | optimizer | parameters | default step (ms) | fused step (ms) | speed-up |",
            "|---|---|---:|---:|---:|---:|"]
    for model_name, model in _models(quick):
        params = [p for p in model.parameters() if p.requires_grad]
        count = sum(p.numel() for p in params)
        for name, cls, kwargs in cases:
            plain = _step_ms(lambda ps, cls=cls, kwargs=kwargs: cls(ps, **kwargs), params, rounds)
            fused = _step_ms(lambda ps, cls=cls, kwargs=kwargs: opt.make_torch_optimizer(cls, ps, **kwargs), params,
                             rounds)
            rows.append(f"| {model_name} | {name} | {count:,} | {plain:.2f} | {fused:.2f} | {plain / fused:.2f}x |")
    return rows


def task_table(quick: bool, rounds: int) -> list[str]:
    if not DATA.is_dir():
        return [f"(Table 2 skipped: {DATA} not found.)"]
    from typer.testing import CliRunner

    from rnnkit.cli import app

    work = Path(tempfile.mkdtemp(prefix="bench-opt-"))
    sentences = 300 if quick else 3000
    train = (DATA / "train.txt").read_text(encoding="utf-8").split("\n\n")[:sentences]
    dev = (DATA / "valid.txt").read_text(encoding="utf-8").split("\n\n")[:sentences // 10]
    (work / "train.txt").write_text("\n\n".join(train) + "\n", encoding="utf-8")
    (work / "dev.txt").write_text("\n\n".join(dev) + "\n", encoding="utf-8")
    fused_classes = opt._FUSED_CLASSES
    best = {"default": math.inf, "fused": math.inf}
    scores: dict[str, float] = {}
    for _ in range(max(1, rounds // 2)):
        for mode in best:
            opt._FUSED_CLASSES = fused_classes if mode == "fused" else ()
            try:
                result = CliRunner().invoke(app, ["train", "tagging", "--train", str(work / "train.txt"), "--dev",
                                                  str(work / "dev.txt"), "--out", str(work / "runs"), "--quiet",
                                                  "--json", "--set", f"train.epochs={1 if quick else 2}"])
            finally:
                opt._FUSED_CLASSES = fused_classes
            if result.exit_code != 0:
                return [f"(Table 2 failed: {result.output.strip()[-200:]})"]
            metrics = json.loads(result.stdout[result.stdout.index("{"):])
            best[mode] = min(best[mode], metrics["train_seconds"])
            scores[mode] = metrics["dev"]["f1"]
    return [f"| `rnnkit train tagging`, {1 if quick else 2} epoch(s), {sentences:,} sentences | training seconds | dev F1 |",
            "|---|---:|---:|",
            *(f"| Adam, {mode} step | {best[mode]:.1f} | {scores[mode]:.4f} |" for mode in best),
            "", f"Speed-up of the whole run: {best['default'] / best['fused']:.2f}x."]


def main() -> None:
    section_benchmark("bench_optimizer_step.py", __doc__, SECTION, lambda quick, rounds: [*step_table(quick, rounds), "", *task_table(quick, rounds)],
                      '')


if __name__ == "__main__":
    main()
