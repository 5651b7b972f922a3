"""Image classification from class folders of picture files: reading speed, and the same model
trained from the pictures and from the idx arrays they were written from.

    python benchmarks/bench_image_folders.py --write       # 10,000 + 2,000 MNIST digits (~3 min on 2 cores)
    python benchmarks/bench_image_folders.py --quick       # smoke run: 1,000 + 200 digits, 1 epoch

Writes the first ``--train`` training and ``--test`` test images of MNIST (``../shared/data/mnist``)
as PNG files in one folder per digit, times ``rnnkit.data.read_image_folder`` on them, then trains
row-by-row LSTMs with the same settings on (a) the picture folders and (b) an ``.npz`` of the same
images in the same order, and evaluates each on the test pictures / test arrays. The two should
agree to the last digit (the reader hands training the arrays the ``.npz`` holds).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import read_idx, read_image_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
HEADING = "## Image classification from picture folders"


def write_pictures(images: np.ndarray, labels: np.ndarray, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """PNG files ``root/<label>/<i>.png``; returns the images and labels in the reader's order."""
    from PIL import Image

    for i, (picture, label) in enumerate(zip(images, labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / f"{i:06d}.png")
    order = np.lexsort((np.arange(len(labels)), labels))
    return images[order], labels[order]


def train_and_evaluate(train: Path, test: Path, out: Path, name: str, epochs: int) -> dict:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--out", str(out),
                                 "--name", name, "--set", f"train.epochs={epochs}", "--set", "model.hidden_size=64",
                                 "--set", "train.learning_rate=0.005", "--quiet"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    seconds = json.loads((out / name / "metrics.json").read_text())["train_seconds"]
    result = runner.invoke(app, ["evaluate", str(out / name), "--data", str(test), "--json"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return {**json.loads(result.output), "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MNIST folder (idx files)")
    parser.add_argument("--train", type=int, default=10000, help="training images written as pictures")
    parser.add_argument("--test", type=int, default=2000, help="test images written as pictures")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 + 200 images, 1 epoch (never written)")
    args = parser.parse_args()
    if args.quick:
        args.train, args.test, args.epochs, args.write = 1000, 200, 1, False
    torch.set_num_threads(args.threads)
    mnist = Path(args.data)
    if not mnist.is_dir():
        raise SystemExit(f"MNIST not found at {mnist}; pass --data")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = {}
        for split, prefix, count in (("train", "train", args.train), ("test", "t10k", args.test)):
            images = read_idx(next(mnist.glob(f"{prefix}-images*")))[:count]
            labels = read_idx(next(mnist.glob(f"{prefix}-labels*")))[:count]
            t = time.perf_counter()
            splits[split] = write_pictures(images, labels, root / split)
            print(f"wrote {count} {split} pictures in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            np.savez(root / f"{split}.npz", x=splits[split][0], y=splits[split][1])
        timings = []
        for _ in range(3):
            t = time.perf_counter()
            read_image_folder(root / "train")
            timings.append(time.perf_counter() - t)
        read_seconds = min(timings)
        train_and_evaluate(root / "test.npz", root / "test.npz", root / "runs", "warm-up", 1)  # imports, first calls
        pictures = train_and_evaluate(root / "train", root / "test", root / "runs", "pictures", args.epochs)
        arrays = train_and_evaluate(root / "train.npz", root / "test.npz", root / "runs", "arrays", args.epochs)
    rows = [f"| {source} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['train_seconds']:.0f} |"
            for source, m in (("PNG class folders", pictures), (".npz of the same images", arrays))]
    text = "\n".join([
        HEADING, "",
        "Command: `python benchmarks/bench_image_folders.py --write`  ",
        f"Updated {time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, {args.threads} "
        f"threads. The first {args.train:,} MNIST training and {args.test:,} test images written as 8-bit PNG files, "
        "one folder per digit; row-by-row LSTM (hidden 64, learning rate 0.005, "
        f"{args.epochs} epochs, 10% of training held out as dev); test figures on the {args.test:,} test pictures.", "",
        f"Reading: `read_image_folder` took {read_seconds:.2f} s for {args.train:,} 28x28 pictures "
        f"({args.train / read_seconds:,.0f} pictures/s, best of 3; Pillow decoding, one process).", "",
        "| training data | test accuracy | test macro F1 | train seconds (reading included) |", "|---|---:|---:|---:|", *rows, "",
        "Both rows train on the same arrays in the same order, so their accuracies agree; the folder reader "
        "adds only reading time.",
    ])
    print(text)
    if args.write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
