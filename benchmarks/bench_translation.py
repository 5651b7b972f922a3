"""Translation quality and speed on Multi30k: LSTM vs GRU, Bahdanau vs Luong attention, De->En and En->De.

    python benchmarks/bench_translation.py [--epochs 10] [--threads 2] [--write]   # full (hours on 2 CPU cores)
    python benchmarks/bench_translation.py --quick                               # smoke run (about a minute)
    python benchmarks/bench_translation.py --set model.hidden_size=512 --set train.epochs=20 --write  # other settings

Each model is trained on Multi30k train (29,000 pairs) with early stopping on val BLEU (greedy),
then scored on val with beam 5 (the number to select by); test_2016_flickr is translated once per
model with beam 5, only to report. Greedy and beam-5 decoding speed (sentences/s) are measured
on test_2016_flickr too. Scores are detokenized sacreBLEU BLEU and chrF on the raw references
(case-sensitive), printed with sacreBLEU's signature. ``--quick`` trains tiny models on 1,000
pairs for one epoch: it only checks that the script runs, its numbers mean nothing. With
``--write``, replaces this benchmark's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import platform
import tempfile
import time
from pathlib import Path

import torch
from results_md import merge_rows, write_section  # benchmarks/results_md.py

from rnnkit.tasks.config import dump_yaml, load_config
from rnnkit.tasks.run import RunDir
from rnnkit.tasks.translation import Config, TrainedTranslator, corpus_scores, read_pairs, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
SECTION = "## Translation: Multi30k (test_2016_flickr)"
MODELS = {
    "LSTM + Bahdanau": ["model.cell=lstm", "model.attention=bahdanau"],
    "LSTM + Luong (general)": ["model.cell=lstm", "model.attention=luong_general"],
    "GRU + Bahdanau": ["model.cell=gru", "model.attention=bahdanau"],
    "GRU + Luong (general)": ["model.cell=gru", "model.attention=luong_general"],
}
FULL = ["data.vocab_size=8000", "model.embedding_dim=256", "model.hidden_size=256", "model.dropout=0.3",
        "train.batch_size=64", "train.patience=3", "decode.beam_size=5"]
QUICK = ["data.vocab_size=400", "model.embedding_dim=32", "model.hidden_size=32", "model.dropout=0.1",
         "train.batch_size=32", "train.epochs=1", "decode.beam_size=5"]


def _subset(split: str, lang: str, n: int | None, folder: Path) -> str:
    """The split's file, or its first ``n`` lines copied into ``folder``."""
    path = DATA / f"{split}.{lang}.gz"
    if n is None:
        return str(path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    out = folder / f"{split}.{lang}"
    out.write_text("".join(lines), encoding="utf-8")
    return str(out)


def _speed(model: TrainedTranslator, sources: list[str], beam: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = [r["translation"] for r in model.translate(sources, beam_size=beam, truncate=True)]
    return len(sources) / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and data, one epoch: checks the script runs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--directions", default="de-en,en-de")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names from: " + ", ".join(MODELS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting for every model (repeatable), e.g. model.hidden_size=512")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs Multi30k at {DATA}")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="rnnkit-bench-translation-"))
    n_train, n_eval = (1000, 100) if args.quick else (None, None)
    shared = QUICK if args.quick else [*FULL, f"train.epochs={args.epochs}"]  # the table's settings line
    base = [b for b in shared if b.split("=")[0] not in {o.split("=")[0] for o in args.set}] + args.set
    rows, signature = [], ""
    for direction in args.directions.split(","):
        src, tgt = direction.split("-")
        train_files = (_subset("train", src, n_train, work), _subset("train", tgt, n_train, work))
        val_files = (_subset("val", src, n_eval, work), _subset("val", tgt, n_eval, work))
        test_files = (_subset("test_2016_flickr", src, n_eval, work), _subset("test_2016_flickr", tgt, n_eval, work))
        cfg_data = load_config(Config).data
        test = read_pairs(test_files, cfg_data)
        for name in args.models.split(","):
            cfg = load_config(Config, overrides=[*base, *MODELS[name]])
            run = RunDir.create(work, f"{direction}-{name.split()[0].lower()}-{name.split()[2].lower()}")
            run.write_text("config.yaml", dump_yaml(cfg))
            start = time.perf_counter()
            metrics = train(cfg, train_files, val_files, run, log=lambda m: None, progress=False)
            train_seconds = time.perf_counter() - start
            model = TrainedTranslator.load(run.path)
            greedy_speed, _ = _speed(model, test.sources, 1)
            beam_speed, hyps = _speed(model, test.sources, 5)
            scores = corpus_scores(hyps, test.targets)
            signature = scores["bleu_signature"]
            label = name + (f" ({', '.join(args.set)})" if args.set else "")  # rows with other settings say so
            rows.append((direction, label, metrics["parameters"], metrics["epochs_run"], train_seconds,
                         metrics["dev"]["bleu"], scores["bleu"], scores["chrf"], greedy_speed, beam_speed))
            print(rows[-1], flush=True)
    command = "python benchmarks/bench_translation.py" + (" --quick" if args.quick else
                                                          f" --epochs {args.epochs} --threads {args.threads}")
    command += " [--set KEY=VALUE as in the model column]" if args.set else ""
    command += " --directions DIRECTION --models MODEL" if not args.quick else ""
    table = [f"| {d} | {name} | {params:,} | {epochs} | {secs:.0f} | {val:.2f} | {bleu:.2f} | {chrf:.2f} "
             f"| {gs:.1f} | {bs:.1f} |" for d, name, params, epochs, secs, val, bleu, chrf, gs, bs in rows]
    notes: list[str] = []
    if args.write and not args.quick:  # one run per row: keep the rows of earlier runs
        table, notes = merge_rows(SECTION, [r.replace(" * |", " |") for r in table], key_columns=2)
        table = [r.replace(" * |", " |") for r in table]
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table]
    best = {d: max((c for c in cells if c[0] == d), key=lambda c: float(c[5]))[1] for d in {c[0] for c in cells}}
    table = [r.replace(f"| {c[1]} |", f"| {c[1]} * |", 1) if best[c[0]] == c[1] else r for r, c in zip(table, cells)]
    lines = [SECTION, "",
             f"Command: `{command} --write`{'  (SMOKE RUN: tiny models, 1,000 pairs, 1 epoch; not a result)' if args.quick else ' for each row (DIRECTION and MODEL from the row)'}  ",
             f"Machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
             f"{datetime.date.today().isoformat()}. Settings: `{' '.join(shared)}` (a row's parenthesis lists what it changed); separate BPE vocabularies, "
             "bidirectional encoder, input feeding, tied decoder embeddings, label smoothing 0.1, early stopping on "
             "val BLEU (greedy). Val and test BLEU with beam 5, length penalty 1.0; * = best on val per direction; "
             "test evaluated once per model, to report.", "",
             "| direction | model | parameters | epochs | training time (s) | val BLEU | test BLEU | test chrF "
             "| greedy sentences/s | beam-5 sentences/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|", *table]
    kept = "\n".join(n for n in notes if not n.startswith("sacreBLEU")).strip()
    lines += ["", f"sacreBLEU signature: `{signature}`", *(["", kept] if kept else []), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
