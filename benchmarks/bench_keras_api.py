"""The Keras example trained for one epoch with rnnkit and with Keras 3 (torch backend), side by side.

    python benchmarks/bench_keras_api.py                  # IMDB sample (5,000 reviews) if ../shared/data exists
    python benchmarks/bench_keras_api.py --quick          # seconds: tiny sizes, to check it runs
    python benchmarks/bench_keras_api.py --data synthetic --n 20000

Both frameworks get the same model (Embedding, LSTM, Dense softmax, categorical cross-entropy,
Adam), the same data and batch size; each is warmed up on one batch first (imports, first
call), then one epoch with validation is timed, interleaved over ``--repeats`` rounds (median
reported). Keras is skipped with a note when it is not installed (``pip install keras==3.15.1``;
it runs with ``KERAS_BACKEND=torch``). Threads are fixed with ``--threads`` and printed. Prints a
Markdown table. Measure on a quiet machine: background load moves these numbers by several times.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import statistics
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb" / "aclImdb_v1_labeled.tar.xz"
WORD = re.compile(r"[a-z0-9']+")


def imdb(n: int, vocab_size: int, max_length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` balanced training reviews as ``pad_sequences``-style ids (pre padding/truncation) and labels."""
    texts: list[str] = []
    labels: list[int] = []
    with tarfile.open(ARCHIVE, "r|xz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == "train" and parts[2] in ("pos", "neg"):
                f = tar.extractfile(member)
                assert f is not None
                texts.append(f.read().decode("utf-8", errors="replace"))
                labels.append(int(parts[2] == "pos"))
    rng = np.random.default_rng(seed)
    y_all = np.array(labels)
    pick = np.concatenate([rng.choice(np.flatnonzero(y_all == c), n // 2, replace=False) for c in (0, 1)])
    rng.shuffle(pick)
    tokens = [WORD.findall(texts[i].lower().replace("<br />", " ")) for i in pick]
    counts = Counter(w for toks in tokens for w in toks)
    vocab = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(vocab_size - 2))}
    ids = np.zeros((n, max_length), dtype=np.int64)
    for i, toks in enumerate(tokens):
        tail = [vocab.get(w, 1) for w in toks][-max_length:]
        if tail:
            ids[i, max_length - len(tail):] = tail
    return ids, y_all[pick]


def synthetic(n: int, vocab_size: int, max_length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids whose class says whether token 7 occurs (a memory task an LSTM learns)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab_size, (n, max_length))
    flip = rng.random(n) < 0.5
    x[flip, rng.integers(0, max_length, int(flip.sum()))] = 7
    return x, (x == 7).any(1).astype(np.int64)


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype="float32")[y]


def rnnkit_run(args: argparse.Namespace) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, float]]:
    from rnnkit.layers import LSTM, Dense, Embedding
    from rnnkit.models import Sequential, set_random_seed

    def run(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray) -> dict[str, float]:
        set_random_seed(0)
        model = Sequential()
        model.add(Embedding(args.vocab, args.embedding, input_length=args.max_length))
        model.add(LSTM(args.units))
        model.add(Dense(args.outputs, activation="softmax"))
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=args.batch_size, epochs=1, validation_data=(xv, yv), verbose=0)
        return {"seconds": time.perf_counter() - start, "val_accuracy": history.history["val_accuracy"][-1]}
    return run


def keras_run(args: argparse.Namespace) -> Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, float]]:
    import keras
    from keras.layers import LSTM, Dense, Embedding
    from keras.models import Sequential

    def run(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray) -> dict[str, float]:
        keras.utils.set_random_seed(0)
        model = Sequential()
        model.add(keras.Input(shape=(args.max_length,), dtype="int64"))
        model.add(Embedding(args.vocab, args.embedding))
        model.add(LSTM(args.units))
        model.add(Dense(args.outputs, activation="softmax"))
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=args.batch_size, epochs=1, validation_data=(xv, yv), verbose=0)
        return {"seconds": time.perf_counter() - start, "val_accuracy": float(history.history["val_accuracy"][-1])}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["auto", "imdb", "synthetic"], default="auto")
    parser.add_argument("--n", type=int, default=5000, help="samples (80%% train, 20%% validation)")
    parser.add_argument("--max-length", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.n, args.max_length, args.embedding, args.units = 256, 20, 16, 16
    args.outputs = 2
    torch.set_num_threads(args.threads)
    source = args.data
    if source == "auto":
        source = "imdb" if ARCHIVE.is_file() else "synthetic"
    load = imdb if source == "imdb" else synthetic
    ids, labels = load(args.n, args.vocab, args.max_length)
    cut = int(0.8 * len(ids))
    x, y, xv, yv = ids[:cut], one_hot(labels[:cut], 2), ids[cut:], one_hot(labels[cut:], 2)

    runners: dict[str, Callable[..., dict[str, float]]] = {"rnnkit": rnnkit_run(args)}
    notes = []
    if importlib.util.find_spec("keras") is not None:
        runners["Keras 3 (torch backend)"] = keras_run(args)
    else:
        notes.append("Keras skipped: not installed (pip install keras==3.15.1).")
    for run in runners.values():  # warm-up: imports, first call
        run(x[: args.batch_size], y[: args.batch_size], xv[: args.batch_size], yv[: args.batch_size])
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            results[name].append(run(x, y, xv, yv))

    versions = f"torch {torch.__version__}"
    if "Keras 3 (torch backend)" in runners:
        import keras

        versions += f", keras {keras.__version__} (KERAS_BACKEND={os.environ['KERAS_BACKEND']})"
    print(f"One epoch of Embedding({args.vocab}, {args.embedding}) -> LSTM({args.units}) -> Dense(2, softmax) on "
          f"{source} data: {len(x)} train / {len(xv)} validation sequences of {args.max_length} tokens, batch "
          f"{args.batch_size}; {args.threads} threads; {platform.processor() or platform.machine()}; {versions}; "
          f"median of {args.repeats} interleaved run(s) after a warm-up.\n")
    print("| framework | epoch wall time (s) | train tokens/s | validation accuracy |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        seconds = statistics.median(r["seconds"] for r in rows)
        accuracy = statistics.median(r["val_accuracy"] for r in rows)
        print(f"| {name} | {seconds:.2f} | {len(x) * args.max_length / seconds:,.0f} | {accuracy:.4f} |")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
