"""Pixel and permuted MNIST (784-step sequences) under a time budget, several configurations at once.

    python benchmarks/bench_image_configs.py --minutes 6 --parallel 4 \\
        --run 'pixels LSTM=data.sequence=pixels' \\
        --run 'pixels BiLSTM max=data.sequence=pixels,model.bidirectional=true,model.pooling=max' \\
        --run 'permuted LSTM=data.sequence=permuted' \\
        --run 'permuted BiLSTM max=data.sequence=permuted,model.bidirectional=true,model.pooling=max'
    python benchmarks/bench_image_configs.py --quick        # smoke run on builtin:digits (CPU, seconds)

Each ``--run 'LABEL=key=value,key=value'`` trains one model with ``rnnkit train
image-classification`` (dev carved from the 60k training images, ``train.max_minutes`` as the
budget, early stopping off unless set), up to ``--parallel`` of them at the same time as separate
processes (on one GPU they share it: the budget is wall-clock time, so a run's epochs depend on
what runs beside it; the table says how many each got). Then every run's selected weights are
scored once on the official 10k test images (``t10k-*``), and for each ``data.sequence`` the
configuration with the best dev accuracy is marked: that is the reported figure; test plays no
part in the choice. Writes ``bench_image_configs.md`` to ``--out`` (and, with ``--write``, the
section of benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from results_md import write_section  # benchmarks/results_md.py

from rnnkit.tasks.image_classification import TrainedImageClassifier
from rnnkit.tasks.report import markdown_table

SECTION = "## Image classification: pixel and permuted MNIST on a GPU (time budget)"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
# lr_decay_patience=3: on permuted MNIST, dev accuracy wobbles by ±0.3 points from epoch to epoch, and a cut after
# every such epoch (patience 1) took the rate to 6.6e-8 by epoch 65 (RESULTS.md, run C)
COMMON = ["train.patience=null", "train.lr_decay=0.7", "train.lr_decay_patience=3", "train.accelerator=auto"]


def parse_run(text: str) -> tuple[str, list[str]]:
    label, sep, settings = text.partition("=")
    if not sep or not label.strip():
        raise SystemExit(f"--run {text!r}: expected 'LABEL=key=value,key=value'")
    return label.strip(), [s.strip() for s in settings.split(",") if s.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MNIST folder (idx files)")
    parser.add_argument("--run", action="append", default=[], help="'LABEL=key=value,...' (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="key=value added to every run (repeatable)")
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per run (train.max_minutes)")
    parser.add_argument("--epochs", type=int, default=200, help="epoch cap (the budget usually ends first)")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--out", default="runs/bench-image-configs")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: builtin:digits, rows, 0.1 min")
    args = parser.parse_args()
    data = "builtin:digits" if args.quick else args.data
    if args.quick:
        args.minutes = 0.1
        args.run = args.run or ["rows LSTM=data.sequence=rows,model.hidden_size=16",
                                "rows GRU max=data.sequence=rows,model.hidden_size=16,model.cell=gru,model.pooling=max"]
    if not args.run:
        raise SystemExit("give at least one --run 'LABEL=key=value,...'")
    if not data.startswith("builtin:") and not Path(data).is_dir():
        raise SystemExit(f"{data}: MNIST folder not found; pass --data FOLDER (see ../shared/data/README.md)")
    runs = [(label, [*settings, *args.set]) for label, settings in (parse_run(r) for r in args.run)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    pending = list(enumerate(runs))
    active: list[tuple[int, subprocess.Popen[bytes]]] = []
    codes: dict[int, int] = {}
    start = time.perf_counter()
    while pending or active:
        while pending and len(active) < args.parallel:
            k, (label, settings) = pending.pop(0)
            sets = [*COMMON, f"train.max_minutes={args.minutes}", f"train.epochs={args.epochs}", *settings]
            cmd = [sys.executable, "-m", "rnnkit.cli", "train", "image-classification", "--train", data,
                   "--out", str(out), "--name", f"run{k}", "--quiet"] + [a for s in sets for a in ("--set", s)]
            print(f"start run{k} ({label}): {' '.join(sets)}", flush=True)
            with open(out / f"run{k}.stderr", "wb") as log:  # the child keeps its own descriptor
                active.append((k, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(1)
        for k, proc in list(active):
            if proc.poll() is not None:
                codes[k] = proc.returncode
                active.remove((k, proc))
                print(f"run{k} ended with code {proc.returncode} after {time.perf_counter() - start:.0f} s", flush=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, results = [], []
    for k, (label, settings) in enumerate(runs):
        run = out / f"run{k}"
        if codes.get(k) != 0 or not (run / "metrics.json").exists():
            tail = (out / f"run{k}.stderr").read_text(errors="replace")[-600:]
            print(f"run{k} ({label}) failed:\n{tail}", flush=True)
            results.append({"label": label, "failed": tail})
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        model = TrainedImageClassifier.load(run, device=device)
        test = float("nan") if data.startswith("builtin:") else model.evaluate(data, ["data.split=test"])["accuracy"]
        sequence = next((s.split("=", 1)[1] for s in settings if s.startswith("data.sequence=")), "rows")
        results.append({"label": label, "sequence": sequence, "settings": settings, "dev": metrics["dev"]["accuracy"],
                        "test": test, "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
                        "seconds": metrics["train_seconds"], "parameters": metrics["parameters"]})
    chosen = {}
    for r in results:
        if "dev" in r and r["dev"] > chosen.get(r["sequence"], {"dev": -1.0})["dev"]:
            chosen[r["sequence"]] = r
    for r in results:
        if "dev" not in r:
            rows.append([r["label"], "failed", "", "", "", "", "", ""])
            continue
        mark = " (selected on dev)" if chosen[r["sequence"]] is r else ""
        rows.append([r["label"] + mark, r["sequence"], ", ".join(r["settings"]), f"{100 * r['dev']:.2f}",
                     f"{100 * r['test']:.2f}", f"{r['best_epoch']} / {r['epochs']}", f"{r['seconds']:.0f}",
                     f"{r['parameters']:,}"])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU)"
    cmd = ("python benchmarks/bench_image_configs.py " + ("--quick" if args.quick else
           f"--minutes {args.minutes:g} --parallel {args.parallel} " + " ".join(f"--run '{r}'" for r in args.run)
           + "".join(f" --set {s}" for s in args.set)))
    text = "\n".join([
        SECTION, "", f"Command: `{cmd}`  ",
        f"Machine: {gpu}, torch {torch.__version__}, {datetime.date.today().isoformat()}; {args.parallel} run(s) "
        f"at a time sharing the device, {args.minutes:g} min training budget each; shared settings: "
        f"{', '.join(COMMON)}. Dev: held out from the training images (data.dev_fraction, 10% unless set); "
        f"test: t10k, scored once per run. 'train s' includes data loading and dev scoring.", "",
        ("**Smoke run (--quick): not a result.**\n" if args.quick else "")
        + markdown_table(["configuration", "sequence", "settings", "dev accuracy %", "test accuracy %",
                          "best / epochs run", "train s", "parameters"], rows), ""])
    print(text, flush=True)
    (out / "bench_image_configs.md").write_text(text)
    (out / "bench_image_configs.json").write_text(json.dumps(results, indent=2))
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
