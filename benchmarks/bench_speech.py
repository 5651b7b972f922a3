"""Speech recognition on the Free Spoken Digit Dataset (FSDD, 8 kHz, 6 speakers, 3,000 recordings).

    python benchmarks/bench_speech.py                  # full run (quiet machine; tens of minutes)
    python benchmarks/bench_speech.py --quick          # smoke run on a small subset (about a minute)
    python benchmarks/bench_speech.py --write          # also replace the "Speech recognition" section
                                                       # of benchmarks/RESULTS.md

Runs the ``speech`` task exactly as ``rnnkit train speech`` does, on FSDD's official split
(recordings with index 0-4 are test, 5-49 train; dev carved at random from train):

1. isolated digits: BiLSTM classifier on log-mels, test accuracy (goal >= 97%);
2. connected digits: 2-7 digit utterances joined from recordings with random silences and
   white noise, BiLSTM + CTC over digit words, test WER greedy and with beam search plus the
   digit lexicon (goal < 5%); test utterances come only from test recordings;
3. streaming: a unidirectional LSTM + CTC model on the same connected digits, decoded in
   200 ms chunks with carried state (WER, and agreement with the whole-file pass);
4. speaker held out (extra): isolated digits with one speaker as the test set.

Real-time factor = decoding time (features + network + search) / audio duration, one thread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from results_md import write_section  # benchmarks/results_md.py

from rnnkit.tasks.config import dump_yaml, load_config
from rnnkit.tasks.run import RunDir
from rnnkit.tasks.speech import Config, TrainedSpeechModel, list_items, split_test, train

SECTION = "## Speech recognition"
FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"


def _subset(src: Path, dst: Path, speakers: int, max_index: int) -> Path:
    """Symlink the recordings of the first ``speakers`` speakers with index < max_index."""
    dst.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.glob("*.wav"))
    chosen = sorted({n.split("_")[1] for n in names})[:speakers]
    for n in names:
        _, speaker, index = n[:-4].split("_")
        if speaker in chosen and int(index) < max_index:
            (dst / n).symlink_to(src / n)
    return dst


def _run(name: str, data: Path, out: Path, overrides: list[str], log: Any) -> tuple[dict[str, Any], Path]:
    cfg = load_config(Config, overrides=overrides)
    run = RunDir.create(out, "speech", name)
    run.write_text("config.yaml", dump_yaml(cfg))
    start = time.perf_counter()
    metrics = train(cfg, data, None, run, log=log, progress=False)
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics, run.path


def _stream_check(run: Path, data: Path, count: int) -> dict[str, Any]:
    """Stream ``count`` connected-digit test utterances in 200 ms chunks; WER, RTF, agreement."""
    from rnnkit.nn.ctc import error_counts
    from rnnkit.tasks.speech import AudioLoader, connect_digits

    model = TrainedSpeechModel.load(run)
    cfg = model.prep.data
    _, test = split_test(list_items(data, cfg), cfg)
    loader = AudioLoader(model.sample_rate, cfg.mono)
    for u in test:
        u.wave = loader(u.key)
    utts = connect_digits(test, count, cfg, model.sample_rate, seed=2, name="test")
    chunk = model.sample_rate // 5
    errors = words = same = 0
    seconds = audio = 0.0
    for u in utts:
        assert u.wave is not None
        full = model.recognize([u.wave])[0]["text"]
        t0 = time.perf_counter()
        text = model.transcribe_stream(u.wave, chunk)
        seconds += time.perf_counter() - t0
        audio += u.wave.shape[0] / model.sample_rate
        e, n, _, _ = error_counts(u.target, text)
        errors, words, same = errors + e, words + n, same + (text == full)
    return {"wer": errors / max(words, 1), "rtf": seconds / audio, "same_as_whole_file": same / len(utts),
            "utterances": len(utts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small subset, few epochs: checks the script runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (decoding timed at 1)")
    parser.add_argument("--data", type=Path, default=FSDD, help="FSDD recordings folder")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: a temp dir)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: isolated,connected,streaming,speaker")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"FSDD recordings not found at {args.data} (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tmp = tempfile.TemporaryDirectory(prefix="bench_speech_")
    out = args.out or Path(tmp.name) / "runs"
    data = args.data
    if args.quick:
        data = _subset(args.data, Path(tmp.name) / "subset", speakers=3, max_index=12)
    q = args.quick
    common = ["train.accelerator=cpu"] + (["model.hidden_size=32", "model.num_layers=1", "train.epochs=2"] if q else [])
    connected = ["data.mode=connected_digits", "model.subsample_factor=3", "train.batch_size=32",
                 f"data.connected_train={150 if q else 3000}", f"data.connected_eval={30 if q else 500}"]
    if not q:
        connected += ["train.epochs=25", "train.patience=5"]

    def log(message: str) -> None:
        print(f"  {message}", flush=True)

    rows: list[tuple[str, str, str, str]] = []
    details: dict[str, Any] = {}
    if "isolated" not in skip:
        print("isolated digits (official split)", flush=True)
        m, _ = _run("isolated", data, out, common, log)
        details["isolated"] = m
        rows.append(("isolated digits, BiLSTM classifier", f"accuracy {m['test']['accuracy']:.2%}",
                     f"{m['test']['rtf']:.4f}", f"{m['train_seconds']:.0f}"))
    if "connected" not in skip:
        print("connected digits, BiLSTM + CTC", flush=True)
        m, run = _run("connected", data, out, common + connected, log)
        torch.set_num_threads(1)
        model = TrainedSpeechModel.load(run)
        model.decode.beam_size, model.decode.lexicon = 8, "train"
        beam = model.evaluate(data)
        torch.set_num_threads(args.threads)
        details["connected"] = {**m, "test_beam8_lexicon": beam}
        rows.append(("connected digits, BiLSTM + CTC, greedy", f"WER {m['test']['wer']:.2%} (CER {m['test']['cer']:.2%})",
                     f"{m['test']['rtf']:.4f}", f"{m['train_seconds']:.0f}"))
        rows.append(("connected digits, same model, beam 8 + lexicon", f"WER {beam['wer']:.2%}", f"{beam['rtf']:.4f}", ""))
    if "streaming" not in skip:
        print("connected digits, unidirectional LSTM + CTC, streamed", flush=True)
        # a one-way CTC model sits on the all-blank plateau (WER 100%) for several epochs before it
        # starts to emit digits, so it gets a longer budget and more patience than the BiLSTM
        streaming = ["model.bidirectional=false"] + ([] if q else ["train.epochs=40", "train.patience=15"])
        m, run = _run("streaming", data, out, common + connected + streaming, log)
        torch.set_num_threads(1)
        stream = _stream_check(run, data, 20 if q else 200)
        torch.set_num_threads(args.threads)
        details["streaming"] = {**m, "stream": stream}
        rows.append(("connected digits, LSTM + CTC, whole file", f"WER {m['test']['wer']:.2%}",
                     f"{m['test']['rtf']:.4f}", f"{m['train_seconds']:.0f}"))
        rows.append(("connected digits, LSTM + CTC, streamed 200 ms chunks",
                     f"WER {stream['wer']:.2%} on {stream['utterances']} test utterances "
                     f"({stream['same_as_whole_file']:.0%} identical to whole file)",
                     f"{stream['rtf']:.4f}", ""))
    if "speaker" not in skip:
        speakers = sorted({u.speaker for u in list_items(data, load_config(Config).data)})
        held = "theo" if "theo" in speakers else speakers[-1]
        print(f"isolated digits, speaker {held} held out", flush=True)
        m, _ = _run("speaker", data, out, common + ["data.split=speaker", f"data.test_speakers=[{held}]"], log)
        details["speaker"] = m
        rows.append((f"isolated digits, speaker '{held}' held out", f"accuracy {m['test']['accuracy']:.2%}",
                     f"{m['test']['rtf']:.4f}", f"{m['train_seconds']:.0f}"))
    kind = "SMOKE RUN (--quick: 3 speakers, indices < 12, tiny models, 2 epochs; not a result)" if q else "full run"
    lines = [SECTION, "",
             f"Command: `python benchmarks/bench_speech.py --threads {args.threads}{' --quick' if q else ''} --write` ({kind})  ",
             f"Machine: {platform.processor() or platform.machine()}, {args.threads} training threads, decoding timed "
             f"with 1 thread, torch {torch.__version__}, {datetime.date.today().isoformat()}. FSDD official split "
             "(index 0-4 test). Goals: isolated accuracy >= 97%, connected-digit WER < 5%.", "",
             "| model | test | real-time factor | train s |", "|---|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps(details, indent=1, default=str)[:4000])
    if args.write:
        write_section(SECTION, text)
    tmp.cleanup()


if __name__ == "__main__":
    main()
