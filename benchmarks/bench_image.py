"""Row-by-row MNIST with rnn, lstm and gru through the image-classification task.

    python benchmarks/bench_image.py --quick                         # smoke run (about a minute on 2 cores)
    python benchmarks/bench_image.py                                 # row-by-row MNIST, 3 cells (quiet CPU: ~1 h)
    python benchmarks/bench_image.py --sequence pixels --epochs 20   # sequential MNIST: 784 steps (GPU-sized)
    python benchmarks/bench_image.py --sequence permuted --epochs 20 # permuted MNIST: 784 steps (GPU-sized)

Each cell is trained with the same config through ``rnnkit.insight.compare_cells`` (the task's
own training: dev carved from the 60k training images, early stopping on dev accuracy), then the
selected weights are evaluated once on the official 10k test images (``t10k-*``). Prints a
Markdown table of dev and test accuracy, training time, parameters and peak memory, and writes
it with the plots to ``--out``. Pixel and permuted MNIST are 784-step sequences: on a CPU an
epoch takes hours, so run those on a GPU (``--accelerator gpu``). Reference figures
(../shared/data/README.md): sequential MNIST LSTM about 98-99%, permuted MNIST IndRNN 96.0%.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from rnnkit.insight import compare_cells
from rnnkit.tasks.image_classification import TrainedImageClassifier
from rnnkit.tasks.report import markdown_table

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MNIST folder (idx files)")
    parser.add_argument("--sequence", default="rows", choices=["rows", "pixels", "permuted"])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-train", type=int, default=None, help="use only N training images")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "auto"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed for comparability)")
    parser.add_argument("--out", default="runs/bench-image")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 images, 1 epoch, hidden 32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if args.quick:
        args.epochs, args.hidden_size, args.max_train = 1, 32, 1000
        if not data.is_dir():
            print(f"{data} not found: smoke run on builtin:digits")
    train = str(data) if data.is_dir() else "builtin:digits"
    overrides = [f"data.sequence={args.sequence}", f"train.epochs={args.epochs}",
                 f"model.hidden_size={args.hidden_size}", f"train.batch_size={args.batch_size}",
                 f"train.learning_rate={args.learning_rate}", f"train.accelerator={args.accelerator}"]
    if args.max_train:
        overrides.append(f"data.max_train_examples={args.max_train}")
    start = time.perf_counter()
    result = compare_cells("image-classification", args.cells.split(","), train, seeds=args.seeds,
                           overrides=overrides, out=args.out)
    rows = []
    for summary in result.summary():
        runs = [r for r in result.runs if r.cell == summary["cell"]]
        tests = []
        for r in runs:
            model = TrainedImageClassifier.load(r.run)
            metrics = model.evaluate(train, ["data.split=test"]) if train != "builtin:digits" else {"accuracy": float("nan")}
            tests.append(metrics["accuracy"])
        rows.append([summary["cell"], args.sequence, f"{summary['mean']:.4f}", f"{sum(tests) / len(tests):.4f}",
                     f"{summary['seconds']:.0f}", f"{summary['parameters']:,}", f"{summary['peak_mib']:.0f}"])
    label = "SMOKE RUN (--quick): not a result" if args.quick else "full run"
    table = markdown_table(["cell", "sequence", "dev accuracy", "test accuracy (t10k)", "train s", "parameters",
                            f"peak MiB ({result.memory_method})"], rows)
    text = (f"## Image classification: {args.sequence} MNIST ({label})\n\n"
            f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
            f"{args.epochs} epochs, hidden {args.hidden_size}, seeds {args.seeds}, "
            f"training images {args.max_train or 'all'}; total {time.perf_counter() - start:.0f} s.\n\n{table}\n")
    print(text)
    Path(args.out, "bench_image.md").write_text(text)


if __name__ == "__main__":
    main()
