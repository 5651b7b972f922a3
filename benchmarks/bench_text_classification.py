"""Text classification quality and training time: rnn vs lstm vs gru vs the hierarchical model.

    python benchmarks/bench_text_classification.py --dataset sst2 [--epochs 4] [--write]
    python benchmarks/bench_text_classification.py --dataset imdb [--epochs 3] [--write]

Models are selected on dev (SST-2: the official dev split; IMDB: 10% carved out of train by
``data.dev_fraction``); the test split is evaluated once per model, only to report. Needs
../shared/data. With --write, replaces this dataset's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = {
    "rnn": ["model.cell=rnn", "model.pooling=max"],
    "lstm": ["model.cell=lstm", "model.pooling=max"],
    "gru": ["model.cell=gru", "model.pooling=max"],
    "han (gru)": ["model.architecture=han", "model.cell=gru", "model.hidden_size=64"],
}


def datasets(name: str) -> tuple[list[str], Path, list[str]]:
    if name == "sst2":
        d = DATA / "sst2"
        return ["--train", str(d / "stsa.binary.train"), "--dev", str(d / "stsa.binary.dev")], \
            d / "stsa.binary.test", []
    archive = DATA / "imdb" / "aclImdb_v1_labeled.tar.xz"
    return ["--train", str(archive)], archive, ["data.member_prefix=aclImdb/train", "data.classes=neg,pos"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["sst2", "imdb"], default="sst2")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the real datasets at {DATA}")
    train_args, test_path, extra = datasets(args.dataset)
    rows = []
    out = Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
    for name in args.models.split(","):
        sets = [*extra, f"train.epochs={args.epochs}", *MODELS[name]]
        cmd = [sys.executable, "-m", "rnnkit.cli", "train", "text-classification", *train_args, "--out", str(out),
               "--name", name.replace(" ", "_").replace("(", "").replace(")", ""), "--json"]
        for s in sets:
            cmd += ["--set", s]
        start = time.perf_counter()
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        seconds = time.perf_counter() - start
        eval_cmd = [sys.executable, "-m", "rnnkit.cli", "evaluate", result["run"], "--data", str(test_path), "--json"]
        if args.dataset == "imdb":  # the test folders of the same archive
            eval_cmd += ["--set", "data.member_prefix=aclImdb/test"]
        test = json.loads(subprocess.run(eval_cmd, check=True, capture_output=True, text=True).stdout)
        rows.append((name, result["dev"]["accuracy"], test["accuracy"], test["macro_f1"], result["parameters"],
                     result["epochs_run"], seconds))
        print(rows[-1], flush=True)
    section = f"## Text classification: {args.dataset}"
    lines = [section, "",
             f"Command: `python benchmarks/bench_text_classification.py --dataset {args.dataset} --epochs {args.epochs} "
             f"--models {shlex.quote(args.models)} --write`  ",
             f"Date {datetime.date.today().isoformat()}, 2 CPU threads. Defaults otherwise (word tokens, vocabulary from "
             "training data, embedding 128, bidirectional, max 400 tokens, early stopping on dev accuracy). "
             "Test split evaluated once, to report.", "",
             "| model | dev accuracy | test accuracy | test macro F1 | parameters | epochs | wall time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {d:.4f} | {t:.4f} | {f:.4f} | {p:,} | {e} | {s:.0f} |" for n, d, t, f, p, e, s in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(section, text)


if __name__ == "__main__":
    main()
