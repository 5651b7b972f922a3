"""Language modelling: Penn Treebank word perplexity and Tiny Shakespeare bits per character.

    python benchmarks/bench_language_model.py [--dataset ptb|shakespeare|all] [--write]
    python benchmarks/bench_language_model.py --quick        # a tenth of each corpus, 1 epoch
    python benchmarks/bench_language_model.py --softmax [--epochs 2] [--write]   # full vs adaptive softmax

PTB: the Mikolov files; the model is selected on ptb.valid.txt (best dev epoch) and ptb.test.txt
is scored once, at batch size 1 with the state carried through the whole stream. The settings are
the small configuration (2 x 200 LSTM, BPTT 35, 20 streams) with tied embeddings, 0.2 locked
dropout and plain SGD at rate 20 divided by 4 after each epoch without dev improvement, averaging
the iterates from the first such epoch. Zaremba et al. (2014) report test perplexity 114.5 for the
small non-regularised LSTM.

Tiny Shakespeare: the first 90% of input.txt trains, the next 5% selects, the last 5% (the
held-out tail) is scored once in bits per character; samples are generated from the selected model.

--softmax compares output layers on PTB with the same 2 x 200 LSTM and budget (Adam 0.002, 2 epochs):
a full softmax tied to the embedding, a full softmax untied, and an adaptive softmax (Grave et al.
2017; untied by construction), each scored on ptb.valid.txt and, once, on ptb.test.txt, with training
and evaluation tokens per second.

Both record the time-to-perplexity curve (dev after each epoch, wall-clock seconds), training
tokens per second and generation tokens per second (one token per step with carried state).
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import write_section  # benchmarks/results_md.py

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SECTION = "## Language modelling"
SOFTMAX_SECTION = "## Output layers for language models: full vs adaptive softmax (PTB)"
SOFTMAX_BASE = ["data.level=word", "model.cell=lstm", "model.embedding_dim=200", "model.hidden_size=200",
                "model.num_layers=2", "model.dropout=0.2", "train.batch_size=20", "train.bptt=35",
                "train.optimizer=adam", "train.learning_rate=0.002", "train.clip_norm=0.25", "train.patience=null"]
SOFTMAX_VARIANTS = {"full, tied": ["model.tie_weights=true"],
                    "full, untied": ["model.tie_weights=false"],
                    "adaptive, untied": ["model.tie_weights=false", "model.softmax=adaptive"]}
CURVE_PNG = Path(__file__).with_name("lm_time_to_perplexity.png")

SETTINGS = {
    "ptb": ["data.level=word", "model.cell=lstm", "model.embedding_dim=200", "model.hidden_size=200",
            "model.num_layers=2", "model.dropout=0.2", "train.batch_size=20", "train.bptt=35",
            "train.optimizer=asgd", "train.learning_rate=20", "train.lr_decay=0.25", "train.clip_norm=0.25",
            "train.patience=3"],
    "shakespeare": ["data.level=char", "data.line_ending=keep", "model.cell=lstm", "model.embedding_dim=64",
                    "model.hidden_size=256", "model.num_layers=2", "model.tie_weights=false", "model.dropout=0.1",
                    "train.batch_size=64", "train.bptt=100", "train.learning_rate=0.003", "train.lr_decay=0.5",
                    "train.patience=2"],
}
MEDIUM = ["model.embedding_dim=650", "model.hidden_size=650", "model.dropout=0.5", "train.optimizer=asgd",
          "train.learning_rate=20", "train.lr_decay=0.25", "train.clip_norm=0.25", "train.epochs=40",
          "train.patience=5", "train.accelerator=gpu"]
EPOCHS = {"ptb": 14, "shakespeare": 10}


def _cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "rnnkit.cli", *args, "--json"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"rnnkit {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _files(name: str, out: Path, quick: bool) -> tuple[Path, Path, Path]:
    """(train, dev, test) files; Tiny Shakespeare is cut 90/5/5 in order, ``quick`` keeps a tenth of train."""
    if name == "ptb":
        train, dev, test = (DATA / "ptb" / f"ptb.{s}.txt" for s in ("train", "valid", "test"))
    else:
        text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
        a, b = int(len(text) * 0.90), int(len(text) * 0.95)
        train, dev, test = out / "shakespeare.train.txt", out / "shakespeare.dev.txt", out / "shakespeare.test.txt"
        train.write_text(text[:a]), dev.write_text(text[a:b]), test.write_text(text[b:])
    if quick:
        lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
        small = out / f"{name}.train-small.txt"
        small.write_text("".join(lines[: len(lines) // 10]))
        train = small
    return train, dev, test


def _generation_speed(run: str, level: str) -> tuple[float, str]:
    """Tokens per second of sampling 1,000 tokens one step at a time, and a seeded sample."""
    import torch

    from rnnkit.tasks.language_model import TrainedLanguageModel

    torch.set_num_threads(2)
    lm = TrainedLanguageModel.load(run)
    lm.generate("the", length=20, seed=0)  # warm-up
    start = time.perf_counter()
    out = lm.generate("the", length=1000, seed=0, stop="")  # "": never stop
    speed = len(out["tokens"]) / (time.perf_counter() - start)
    prompt = "ROMEO:\n" if level == "char" else "the company said"
    sample = lm.generate(prompt, length=500 if level == "char" else 60, temperature=0.8, seed=0)
    return speed, prompt + ("" if level == "char" else " ") + sample["text"]


def _train_and_test(name: str, files: tuple[Path, Path, Path], out: Path, sets: list[str]) -> tuple[dict, dict, float]:
    """Train through the CLI on (train, dev), score the test file once: (train result, test metrics, seconds)."""
    train, dev, test = files
    cmd = ["train", "language-model", "--train", str(train), "--dev", str(dev), "--out", str(out), "--name", name]
    for item in sets:
        cmd += ["--set", item]
    start = time.perf_counter()
    result = _cli(*cmd)
    seconds = time.perf_counter() - start
    return result, _cli("evaluate", result["run"], "--data", str(test)), seconds


def run_one(name: str, out: Path, epochs: int, quick: bool) -> dict:
    sets = [*SETTINGS[name], f"train.epochs={epochs}"]
    result, test_metrics, seconds = _train_and_test(name, _files(name, out, quick), out, sets)
    with open(Path(result["run"]) / "history.csv", newline="") as f:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    level = "char" if name == "shakespeare" else "word"
    gen_speed, sample = _generation_speed(result["run"], level)
    row = {"name": name, "settings": sets, "seconds": seconds, "dev": result["dev"], "test": test_metrics,
           "history": history, "train_tokens_per_second": result["train_tokens_per_second"],
           "generation_tokens_per_second": gen_speed, "sample": sample, "parameters": result["parameters"],
           "best_epoch": result["best_epoch"]}
    print(json.dumps({k: v for k, v in row.items() if k != "history"}, indent=1), flush=True)
    return row


def _eval_speed(run: str, test: Path) -> float:
    """Tokens per second of scoring the test stream (batch 1, state carried), second of two passes."""
    import torch

    from rnnkit.tasks.language_model import TrainedLanguageModel

    torch.set_num_threads(2)
    lm = TrainedLanguageModel.load(run)
    lm.evaluate(test)
    start = time.perf_counter()
    tokens = lm.evaluate(test)["tokens"]
    return tokens / (time.perf_counter() - start)


def run_softmax(out: Path, epochs: int, quick: bool) -> list[dict]:
    files = _files("ptb", out, quick)
    rows = []
    for name, extra in SOFTMAX_VARIANTS.items():
        sets = [*SOFTMAX_BASE, *extra, f"train.epochs={epochs}"]
        result, test_metrics, seconds = _train_and_test(name.replace(", ", "-"), files, out, sets)
        row = {"name": name, "settings": extra, "seconds": seconds, "dev": result["dev"]["perplexity"],
               "test": test_metrics["perplexity"], "parameters": result["parameters"],
               "train_tokens_per_second": result["train_tokens_per_second"],
               "eval_tokens_per_second": _eval_speed(result["run"], files[2]),
               "generation_tokens_per_second": _generation_speed(result["run"], "word")[0]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _softmax_markdown(rows: list[dict], command: str, epochs: int) -> str:
    lines = [SOFTMAX_SECTION, "", f"Command: `{command}`  ",
             f"Date {datetime.date.today().isoformat()}, 2 CPU threads. Same network and budget for each row: "
             "`" + " ".join(f"--set {s}" for s in SOFTMAX_BASE) + f" --set train.epochs={epochs}`. Vocabulary "
             "10,000; adaptive cutoffs at the defaults (ranks 2,000 and 5,000). Dev and test perplexity at batch "
             "size 1 with carried state; test scored once per row. Evaluation tokens/s: scoring ptb.test.txt at "
             "batch size 1; generation: sampling one token per step.", "",
             "| output layer | parameters | dev ppl | test ppl | train time (s) | train tokens/s | eval tokens/s "
             "| generation tokens/s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['parameters']:,} | {r['dev']:.1f} | {r['test']:.1f} | {r['seconds']:.0f} "
                     f"| {r['train_tokens_per_second']:,.0f} | {r['eval_tokens_per_second']:,.0f} "
                     f"| {r['generation_tokens_per_second']:,.0f} |")
    by_name = {r["name"]: r for r in rows}
    full, adaptive = by_name.get("full, untied"), by_name.get("adaptive, untied")
    if full and adaptive:
        lines += ["", f"The adaptive softmax trains {adaptive['train_tokens_per_second'] / full['train_tokens_per_second']:.2f}x "
                  f"as fast as the full softmax with the same (untied) network and scores "
                  f"{adaptive['eval_tokens_per_second'] / full['eval_tokens_per_second']:.2f}x as fast, at dev perplexity "
                  f"{adaptive['dev']:.1f} against {full['dev']:.1f}. Generation samples from the full distribution "
                  "either way, so it gains nothing (its figures vary by about 20% from run to run here)."]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        key = "dev_perplexity" if row["name"] == "ptb" else "dev_bits_per_character"
        minutes = [h["seconds"] / 60 for h in row["history"]]
        ax.plot(minutes, [h[key] for h in row["history"]], marker="o")
        if row["name"] == "ptb":
            ax.axhline(114.5, color="grey", linestyle="--", label="Zaremba small (test)")
            ax.legend()
        ax.set(title=row["name"], xlabel="training minutes", ylabel=key.replace("_", " "))
    fig.tight_layout()
    fig.savefig(CURVE_PNG, dpi=100)
    return True


def _markdown(rows: list[dict], command: str) -> str:
    lines = [SECTION, "", f"Command: `{command}`  ",
             f"Date {datetime.date.today().isoformat()}, 2 CPU threads. Selection on the dev file (best epoch); "
             "the test file is scored once, batch size 1, state carried through the whole stream. Generation "
             "samples one token per step with carried state (temperature 1, prompt 'the').", "",
             "| corpus | model | parameters | dev | test | epochs (best) | train time (s) | train tokens/s "
             "| generation tokens/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        key, unit = ("perplexity", "ppl") if r["name"] == "ptb" else ("bits_per_character", "bpc")
        model = ", ".join(s.split("=", 1)[1] for s in r["settings"] if s.split("=")[0] in
                          ("model.cell", "model.hidden_size", "model.num_layers"))
        lines.append(f"| {r['name']} | {model} | {r['parameters']:,} | {r['dev'][key]:.3f} {unit} "
                     f"| **{r['test'][key]:.3f} {unit}** | {len(r['history'])} ({r['best_epoch']}) | {r['seconds']:.0f} "
                     f"| {r['train_tokens_per_second']:,.0f} | {r['generation_tokens_per_second']:,.0f} |")
    for r in rows:
        key = "dev_perplexity" if r["name"] == "ptb" else "dev_bits_per_character"
        lines += ["", f"### {r['name']}: settings and time to {key.removeprefix('dev_').replace('_', ' ')}", "",
                  "`" + " ".join(f"--set {s}" for s in r["settings"]) + "`", "",
                  "| epoch | minutes | learning rate | dev |", "|---:|---:|---:|---:|"]
        lines += [f"| {int(h['epoch'])} | {h['seconds'] / 60:.1f} | {h.get('lr', float('nan')):.4g} | {h[key]:.3f} |"
                  for h in r["history"]]
        lines += ["", "Sample (temperature 0.8, seed 0):", "", "```", r["sample"].strip(), "```"]
    lines += ["", "Toward the medium model's 82.7 (Zaremba et al. 2014: 2 x 650 LSTM, dropout 0.5, 39 epochs) on a GPU: "
              "`rnnkit train language-model --train ptb.train.txt --dev ptb.valid.txt "
              + " ".join(f"--set {s}" for s in MEDIUM) + "` (about 20M parameters; roughly 8x the small model's "
              "compute per token, so hours on this CPU). Not run: no GPU was lent to this task."]
    if CURVE_PNG.exists():
        lines += ["", f"![time to perplexity]({CURVE_PNG.name})"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("ptb", "shakespeare", "all"), default="all")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-corpus epoch budget")
    parser.add_argument("--quick", action="store_true", help="a tenth of each training file, 1 epoch")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    parser.add_argument("--from-rows", type=Path, default=None,
                        help="re-render the section from a finished run's rows.json instead of training")
    parser.add_argument("--softmax", action="store_true", help="compare full and adaptive softmax on PTB")
    args = parser.parse_args()
    command = "python benchmarks/bench_language_model.py " + " ".join(sys.argv[1:])
    if args.softmax:
        if not DATA.is_dir():
            sys.exit(f"needs the corpora under {DATA}")
        epochs = 1 if args.quick else (args.epochs or 2)
        softmax_rows = run_softmax(Path(tempfile.mkdtemp(prefix="rnnkit-bench-softmax-")), epochs, args.quick)
        text = _softmax_markdown(softmax_rows, command.strip(), epochs)
        print(text)
        if args.write:
            write_section(SOFTMAX_SECTION, text)
        return
    if args.from_rows:
        rows = json.loads(args.from_rows.read_text())
        command = rows[0].get("command", command) if rows else command
    else:
        if not DATA.is_dir():
            sys.exit(f"needs the corpora under {DATA}")
        out = Path(tempfile.mkdtemp(prefix="rnnkit-bench-lm-"))
        names = ["ptb", "shakespeare"] if args.dataset == "all" else [args.dataset]
        rows = [run_one(n, out, 1 if args.quick else (args.epochs or EPOCHS[n]), args.quick) for n in names]
        for row in rows:
            row["command"] = command.strip()
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
        print(f"rows saved to {out / 'rows.json'} (re-render with --from-rows)")
    if args.write:
        _plot(rows)
    text = _markdown(rows, command.strip())
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
