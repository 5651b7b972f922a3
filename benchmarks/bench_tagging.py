"""CoNLL-2003 English NER: softmax vs CRF, with and without character features.

    python benchmarks/bench_tagging.py [--epochs 20] [--write]
    python benchmarks/bench_tagging.py --quick          # 2,000 training sentences, 2 epochs
    python benchmarks/bench_tagging.py --epochs 40 --models 'char-BiLSTM + BiLSTM + CRF' \
        --set train.lr_decay=0.5 --set train.patience=5 --write        # other settings: a labelled row
    python benchmarks/bench_tagging.py --ensemble RUN,RUN,... --label '(...)' --write   # trained runs, one ensemble
    python benchmarks/bench_tagging.py --ensemble RUN --label 'MODEL (...)' --write     # one trained run

Models are selected on valid.txt (early stopping on dev entity F1); test.txt is scored once per
model, only to report. Word embeddings are trained from scratch (no pretrained vectors). Records
training time and decoding speed (sentences per second). Needs ../shared/data.
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
DATA = ROOT.parent / "shared" / "data" / "conll2003"
MODELS = {
    "char-BiLSTM + BiLSTM + CRF": ["model.decoder=crf", "model.char_encoder=lstm"],
    "BiLSTM + CRF (no characters)": ["model.decoder=crf", "model.char_encoder=none"],
    "char-BiLSTM + BiLSTM + softmax": ["model.decoder=softmax", "model.char_encoder=lstm"],
    "char-CNN + BiGRU + CRF": ["model.decoder=crf", "model.char_encoder=cnn", "model.cell=gru"],
}
SECTION = "## Named-entity recognition: CoNLL-2003 English"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names from the table")
    parser.add_argument("--quick", action="store_true", help="2,000 training sentences, 2 epochs, the first model")
    parser.add_argument("--label", default="", help="appended to the model names in the table, e.g. '(20-epoch budget)'")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="task setting for every model (repeatable); the row's label lists them")
    parser.add_argument("--ensemble", default="", metavar="RUN,RUN,...",
                        help="score these trained CoNLL-2003 runs as one ensemble, or one run (dev, then test once; "
                             "the row is named by --label); no training")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the CoNLL-2003 files at {DATA}")
    if args.ensemble:
        return report([ensemble_row(args.ensemble.split(","), args.label)], args.write)
    fixed = {"train.epochs"} | {m.split("=")[0] for ms in MODELS.values() for m in ms}  # named by --epochs, MODEL
    clashes = sorted({kv.split("=")[0] for kv in args.set} & fixed)
    if clashes or any("=" not in kv for kv in args.set):
        sys.exit(f"--set takes KEY=VALUE and not {', '.join(clashes) or 'a bare key'}: use --epochs, or a model "
                 "from the table, for those")
    out = Path(tempfile.mkdtemp(prefix="rnnkit-bench-tagging-"))
    train = DATA / "train.txt"
    names = args.models.split(",")
    epochs = args.epochs
    if args.quick:
        train = out / "train-small.txt"
        lines = (DATA / "train.txt").read_text().splitlines()
        train.write_text("\n".join(lines[:30000]) + "\n")
        names, epochs = names[:1], 2
    rows = []
    for name in names:
        run = out / f"run{len(rows)}"
        cmd = [sys.executable, "-m", "rnnkit.cli", "train", "tagging", "--train", str(train),
               "--dev", str(DATA / "valid.txt"), "--out", str(out), "--name", run.name, "--json",
               "--set", f"train.epochs={epochs}"]
        for s in [*MODELS[name], *args.set]:
            cmd += ["--set", s]
        start = time.perf_counter()
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        seconds = time.perf_counter() - start
        test = json.loads(subprocess.run([sys.executable, "-m", "rnnkit.cli", "evaluate", result["run"], "--data",
                                          str(DATA / "test.txt"), "--json"], check=True, capture_output=True,
                                         text=True).stdout)
        settings = f"({', '.join(args.set)})" if args.set else ""
        rows.append((f"{name} {args.label} {settings}".strip().replace("  ", " "), result["dev"]["f1"], test["f1"], test["precision"], test["recall"],
                     result["epochs_run"], seconds, test["sentences_per_second"]))
        print(rows[-1], flush=True)
    report(rows, args.write)


def ensemble_row(runs: list[str], label: str) -> tuple:
    """Dev and test scores of trained runs deciding together; train time and epochs summed over members."""
    def evaluate(split: str) -> dict:
        cmd = [sys.executable, "-m", "rnnkit.cli", "evaluate", runs[0], "--data", str(DATA / f"{split}.txt"), "--json"]
        for run in runs[1:]:
            cmd += ["--ensemble", run]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    members = [json.loads((Path(r) / "metrics.json").read_text()) for r in runs]
    dev = evaluate("valid")
    print(f"ensemble of {len(runs)}: dev F1 {dev['f1']:.4f}", flush=True)
    test = evaluate("test")
    name = f"ensemble of {len(runs)} runs {label}".strip() if len(runs) > 1 else label
    if not name:
        sys.exit("--ensemble with one run needs --label: the row's name")
    row = (name, dev["f1"], test["f1"], test["precision"], test["recall"],
           "+".join(str(m["epochs_run"]) for m in members), sum(m["train_seconds"] for m in members),
           test["sentences_per_second"])
    print(row, flush=True)
    return row


def report(rows: list[tuple], write: bool) -> None:
    table = [f"| {n} | {d * 100:.2f} | {t * 100:.2f} | {p * 100:.2f} | {r * 100:.2f} | {e} | {s:.0f} | {sp:.0f} |"
             for n, d, t, p, r, e, s, sp in rows]
    notes: list[str] = []
    if write:  # rows of models not in this run stay, so the table can be filled one model at a time
        table, notes = merge_rows(SECTION, table)
    lines = [SECTION, "",
             "Command: `python benchmarks/bench_tagging.py --epochs EPOCHS --models MODEL [--label '(...)'] "
             "[--set KEY=VALUE ...] --write` for each row (EPOCHS, MODEL, the label and the settings in the last "
             "parenthesis from the row); ensemble rows: `python benchmarks/bench_tagging.py --ensemble RUN,RUN,... "
             "--label '(...)' --write` on trained runs (members named in the label and the notes below).  ",
             f"Updated {datetime.date.today().isoformat()}, 2 CPU threads, embeddings trained from scratch, selection on "
             "valid.txt by entity F1, test.txt scored once (CoNLL counting). Lample et al. 2016 report about 83.6 "
             "without pretrained embeddings; the goal is 86.", "",
             "| model | dev F1 | test F1 | test P | test R | epochs | train time (s) | decoding sentences/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|", *table, *notes]
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
