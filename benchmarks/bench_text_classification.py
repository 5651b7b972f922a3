"""Text classification quality and training time: rnn vs lstm vs gru vs the hierarchical model.

    python benchmarks/bench_text_classification.py --dataset sst2 [--epochs 4] [--write]
    python benchmarks/bench_text_classification.py --dataset imdb [--epochs 3] [--write]
    python benchmarks/bench_text_classification.py --dataset imdb --models lstm --epochs 5 --set data.max_length=800 --write

``--set`` passes config overrides to every model of the run. With --write, the rows of this run replace
the rows with the same model and settings in the dataset's table; the other rows stay, so the table
can be filled one model at a time (each row names its settings, so each row is reproducible).

Models are selected on dev (SST-2: the official dev split; IMDB: 10% carved out of train by
``data.dev_fraction``); the test split is evaluated once per model, only to report. Needs
../shared/data. With --write, replaces this dataset's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import merge_rows, write_section  # benchmarks/results_md.py

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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every model (repeatable)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the real datasets at {DATA}")
    train_args, test_path, extra = datasets(args.dataset)
    rows = []
    out = Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
    for name in args.models.split(","):
        sets = [*extra, f"train.epochs={args.epochs}", *MODELS[name], *args.overrides]
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
        settings = " ".join([f"--epochs {args.epochs}", *(f"--set {o}" for o in args.overrides)])
        rows.append(f"| {name} | `{settings}` | {result['dev']['accuracy']:.4f} | {test['accuracy']:.4f} "
                    f"| {test['macro_f1']:.4f} | {result['parameters']:,} | {result['epochs_run']} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    section = f"## Text classification: {args.dataset}"
    text = table(section, args.dataset, *(merge_rows(section, rows, key_columns=2) if args.write else (rows, [])))
    print(text)
    if args.write:
        write_section(section, text)


HEADER = ["| model | settings | dev accuracy | test accuracy | test macro F1 | parameters | epochs run | wall time (s) |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]


def table(section: str, dataset: str, rows: list[str], notes: list[str]) -> str:
    lines = [section, "",
             f"Command: `python benchmarks/bench_text_classification.py --dataset {dataset} --models MODEL SETTINGS "
             "--write` for each row (MODEL and SETTINGS from the row).  ",
             f"Updated {datetime.date.today().isoformat()}, 2 CPU threads. Defaults otherwise (word tokens, vocabulary "
             "from training data, embedding 128, bidirectional, max 400 tokens, early stopping on dev accuracy). "
             "Test split evaluated once per row, to report.", "", *HEADER, *rows, *notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
