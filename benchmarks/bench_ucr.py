"""UCR/UEA time-series classification through `rnnkit train image-classification --train X_TRAIN.ts`.

    python benchmarks/bench_ucr.py --write    # every archive problem in ../shared/data/ucr-uea (~2 min)
    python benchmarks/bench_ucr.py --quick    # one problem, few epochs: checks the script runs

Each problem trains on its _TRAIN file (20% held out as dev for model selection; the test file is
scored once, only to report) with a GRU and an LSTM of 32 units, batch 8, Adam at 0.005, 60 epochs
without early stopping (the best dev epoch is kept). Test accuracy is the figure the UCR archive
reports. Next to it, the archive's simplest standard baseline computed here: 1-nearest-neighbour
with Euclidean distance over the whole series (all dimensions), trained on the whole _TRAIN file.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from results_md import section_benchmark  # benchmarks/results_md.py

from rnnkit.data.ucr import read_ts_file
from rnnkit.tasks.config import dump_yaml, load_config
from rnnkit.tasks.image_classification import Config, TrainedImageClassifier, train
from rnnkit.tasks.run import RunDir

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucr-uea"
SECTION = "## Time-series classification: UCR/UEA archive"
PROBLEMS = ("GunPoint", "ItalyPowerDemand", "ArrowHead", "BasicMotions")
SETTINGS = ["train.batch_size=8", "train.learning_rate=0.005", "train.patience=null", "data.dev_fraction=0.2",
            "model.hidden_size=32"]


def nearest_neighbour_accuracy(train_file: Path, test_file: Path) -> float:
    """1-NN Euclidean test accuracy (the UCR archive's ED baseline), in plain numpy."""
    train, test = read_ts_file(train_file), read_ts_file(test_file)
    x = np.stack(train.series).reshape(len(train), -1)
    q = np.stack(test.series).reshape(len(test), -1)
    d = (q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :]
    predicted = np.asarray(train.labels)[d.argmin(1)]
    return float((predicted == np.asarray(test.labels)).mean())


def tables(quick: bool, rounds: int) -> list[str]:
    if not ARCHIVE.is_dir():
        raise SystemExit(f"the UCR/UEA archive is not at {ARCHIVE}")
    problems = PROBLEMS[:1] if quick else PROBLEMS
    epochs = 3 if quick else 60
    lines = [f"Settings: `{' '.join(SETTINGS)} train.epochs={epochs}`; model.cell per row. Test accuracy on the "
             "archive's test split (scored once); 1-NN ED: nearest neighbour by Euclidean distance, computed here.", "",
             "| problem | train / test | steps x features | cell | dev accuracy | test accuracy | 1-NN ED | train s |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as out:
        for problem in problems:
            train_file = ARCHIVE / problem / f"{problem}_TRAIN.ts"
            test_file = ARCHIVE / problem / f"{problem}_TEST.ts"
            baseline = nearest_neighbour_accuracy(train_file, test_file)
            for cell in ("gru", "lstm"):
                cfg = load_config(Config, None, [*SETTINGS, f"train.epochs={epochs}", f"model.cell={cell}"])
                run = RunDir.create(out, "image-classification", f"{problem}-{cell}")
                run.write_text("config.yaml", dump_yaml(cfg))
                start = time.perf_counter()
                metrics = train(cfg, str(train_file), None, run, log=lambda m: None, progress=False)
                seconds = time.perf_counter() - start
                model = TrainedImageClassifier.load(run.path)
                test = model.evaluate(str(test_file))
                shape = model.prep.image_shape
                sizes = f"{len(read_ts_file(train_file))} / {test['examples']}"
                dev = metrics["dev"]["accuracy"] if isinstance(metrics.get("dev"), dict) else float("nan")
                lines.append(f"| {problem} | {sizes} | {shape[0]} x {shape[1]} | {cell.upper()} | {dev:.3f} | "
                             f"{test['accuracy']:.3f} | {baseline:.3f} | {seconds:.1f} |")
                print(lines[-1], flush=True)
    lines += ["", "Plain recurrent classifiers on the raw series, without the convolutional front ends of "
              "LSTM-FCN-style models; small training sets (36-67 series) make dev selection on 20% of them noisy."]
    return lines


if __name__ == "__main__":
    section_benchmark("bench_ucr.py", __doc__, SECTION, tables)
