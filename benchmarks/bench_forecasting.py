"""Forecasting benchmarks on the real series in ../shared/data, through the forecasting task.

* ETTh1 (Zhou et al. 2021, "Informer"): the standard 12/4/4-month split (8640/2880/2880 hourly
  rows), all 7 columns standardised with training statistics, input 96, multivariate horizons
  24/48/168, MSE and MAE on standardised data over every test origin (stride 1). Informer's
  Table 2 reports MSE 0.577 / 0.685 / 0.931 for these horizons.
* Airline passengers (monthly, 1949-1960) and monthly sunspots (1749-1983): MASE over a 24-step
  horizon against seasonal naive and Holt-Winters (statsmodels) on the same test origins.
* MSFT daily close: 5-day forecasts against a random walk (the naive forecast), which is very hard
  to beat on stock prices; the result is said plainly either way.

``--quick`` shrinks data, models and epochs to check that the script runs (its figures are smoke
runs, not results). ``--write`` replaces the "Forecasting" section of benchmarks/RESULTS.md.
Training time is recorded per run.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_md import write_section  # benchmarks/results_md.py

from rnnkit.tasks.config import dump_yaml, load_config
from rnnkit.tasks.forecasting import Config, TrainedForecaster, run_backtest, train
from rnnkit.tasks.run import RunDir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SECTION = "## Forecasting"
INFORMER_MSE = {24: 0.577, 48: 0.685, 168: 0.931}


def _train(csv: Path, overrides: list[str], out: Path, name: str) -> tuple[dict[str, Any], Path]:
    cfg = load_config(Config, None, overrides)
    run = RunDir.create(out, "forecasting", name)
    run.write_text("config.yaml", dump_yaml(cfg))
    metrics = train(cfg, csv, None, run, log=lambda m: None, progress=False)
    return metrics, run.path


def _etth1_long_csv(csv: Path, out: Path, cols: list[str]) -> Path:
    """ETTh1 as 7 univariate series in one long file (date, series, value): channel independence."""
    import pandas as pd

    wide = pd.read_csv(csv)
    long = wide.melt(id_vars=["date"], value_vars=cols, var_name="series", value_name="value")
    path = out / "etth1-long.csv"
    long[["date", "series", "value"]].to_csv(path, index=False)
    return path


def bench_etth1(out: Path, quick: bool, epochs: int, modes: list[str]) -> list[str]:
    """Both ways to forecast ETTh1's 7 columns, scored on the same standardised test windows.

    joint: one multivariate model reads and forecasts all 7 columns together;
    channel-independent: one shared univariate model (series embedding, each window minus its last
    value) forecasts each column from its own past, as PatchTST / SegRNN do.
    """
    csv = DATA / "ett" / "ETTh1.csv"
    cols = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    sizes = (800, 200, 200) if quick else (8640, 2880, 2880)
    horizons = [24] if quick else [24, 48, 168]
    hidden = 16 if quick else 128
    lines = ["### ETTh1, 7 targets, input 96, standardised MSE / MAE over every test origin", "",
             "Selection on the validation months (early stopping on validation loss); test months scored once. "
             "Standardised with training statistics per column; the seasonal-naive forecast repeats the last day.", "",
             "| model | horizon | MSE | MAE | Informer MSE | seasonal naive MSE | train s | epochs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    common = ["data.time_column=date", "data.lookback=96", f"data.train_size={sizes[0]}", f"data.val_size={sizes[1]}",
              f"data.test_size={sizes[2]}", "data.freq=1h", "model.likelihood=mse", f"model.hidden_size={hidden}",
              f"train.epochs={epochs}", "train.learning_rate=0.001", "train.patience=3",
              "evaluation.baselines=seasonal_naive", "train.accelerator=cpu"]
    variants = {
        "joint (multivariate)": (csv, [f"data.target={','.join(cols)}", "model.window_norm=none",
                                       "train.batch_size=64"]),
        "channel-independent": (None, ["data.target=value", "data.series_id_column=series",
                                       "model.window_norm=last", "train.batch_size=256"]),
    }
    for label, (path, sets) in variants.items():
        if label.split(" ")[0] not in [m.strip() for m in modes]:
            continue
        data_csv = path or _etth1_long_csv(csv, out, cols)
        for h in horizons:
            name = f"etth1-{label.split(' ')[0]}-{h}"
            metrics, run_path = _train(data_csv, [*common, *sets, f"data.horizon={h}", f"evaluation.stride={h}"],
                                       out, name)
            model = TrainedForecaster.load(run_path)
            series = model.pipe.read(data_csv)
            lo = sizes[0] + sizes[1]
            bt = run_backtest(model.model, model.pipe, series, {s.series_id: (lo, lo + sizes[2]) for s in series},
                              {s.series_id: sizes[0] for s in series}, 1, ["seasonal_naive"], model.levels)
            scaler = model.pipe.target_scaler
            assert scaler is not None
            sids = [series[k].series_id for k, _ in bt.windows]
            y, p, sn = (np.stack([scaler.transform(w, sid) for w, sid in zip(a, sids, strict=True)])
                        for a in (bt.y, bt.point, bt.baselines["seasonal_naive"]))
            mse, mae_ = float(np.mean((y - p) ** 2)), float(np.mean(np.abs(y - p)))
            lines.append(f"| {label} | {h} | {mse:.3f} | {mae_:.3f} | {INFORMER_MSE[h]} | "
                         f"{float(np.mean((y - sn) ** 2)):.3f} | {metrics['train_seconds']:.0f} | "
                         f"{metrics['epochs_run']} |")
            print(lines[-1], flush=True)
    return lines + [""]


def _sunspots_csv(out: Path, quick: bool) -> Path:
    with gzip.open(DATA / "sunspots" / "sunspots.txt.gz", "rt") as f:
        values = [float(v) for line in f for v in line.split()]
    if quick:
        values = values[-1200:]
    months = np.datetime64("1983-12", "M") - len(values) + 1 + np.arange(len(values))
    path = out / "sunspots_monthly.csv"
    path.write_text("month,sunspots\n" + "".join(f"{m},{v}\n" for m, v in zip(months, values)))
    return path


def bench_univariate(out: Path, quick: bool, epochs: int) -> list[str]:
    hidden = 16 if quick else 64
    cases = [
        ("airline passengers", DATA / "airline-passengers" / "Airline.csv",
         ["data.time_column=Date", "data.target=Passengers", "data.lookback=36", "data.test_size=24",
          "data.val_size=24"]),
        ("monthly sunspots", _sunspots_csv(out, quick),
         ["data.time_column=month", "data.target=sunspots", "data.lookback=132", "data.test_size=240",
          "data.val_size=240"]),
    ]
    lines = ["### Univariate monthly series: MASE over a 24-step horizon (test origins every 24 steps)", "",
             "For each series two window normalisations are trained (`last`: forecast relative to the last value; "
             "`seasonal`: a learned correction to the seasonal-naive forecast) and the one with the lower "
             "validation MASE is kept; its test MASE is reported once.", "",
             "| series | test origins | window_norm (val MASE last / seasonal) | model MASE | seasonal naive "
             "| Holt-Winters | naive | model beats seasonal naive | train s |",
             "|---|---:|---|---:|---:|---:|---:|---|---:|"]
    for label, csv, extra in cases:
        tried = {}
        for norm in ("last", "seasonal"):
            tried[norm], _ = _train(csv, [*extra, "data.horizon=24", f"model.hidden_size={hidden}",
                                          f"train.epochs={epochs}", "train.batch_size=32", f"model.window_norm={norm}",
                                          "evaluation.baselines=naive,seasonal_naive,ets", "train.accelerator=cpu"],
                                    out, f"{label.replace(' ', '-')}-{norm}")
        chosen = min(tried, key=lambda k: tried[k]["dev"]["mase"])
        metrics = tried[chosen]
        b = metrics["baselines"]
        ets = f"{b['ets']['mase']:.3f}" if "ets" in b else "skipped (no statsmodels)"
        val = " / ".join(f"{tried[k]['dev']['mase']:.3f}" for k in ("last", "seasonal"))
        lines.append(f"| {label} | {metrics['test']['windows']} | {chosen} ({val}) | {metrics['test']['mase']:.3f} | "
                     f"{b['seasonal_naive']['mase']:.3f} | {ets} | {b['naive']['mase']:.3f} | "
                     f"{'yes' if metrics['beats_seasonal_naive'] else '**no**'} | "
                     f"{sum(t['train_seconds'] for t in tried.values()):.0f} |")
        print(lines[-1], flush=True)
    return lines + [""]


def bench_msft(out: Path, quick: bool, epochs: int) -> list[str]:
    src = (DATA / "msft-stock" / "msft.csv").read_text().splitlines()
    rows = src[1:][-1500:] if quick else src[1:]
    path = out / "msft_close.csv"
    path.write_text("Date,Close\n" + "".join(",".join(r.split(",")[i] for i in (0, 4)) + "\n" for r in rows))
    # Trading days are irregular (weekends, holidays): rows are taken as consecutive steps.
    metrics, _ = _train(path, ["data.target=Close", "data.lookback=30", "data.horizon=5", "data.test_size=250",
                               "data.val_size=250", "data.seasonal_period=1", f"model.hidden_size={16 if quick else 64}",
                               f"train.epochs={epochs}", "evaluation.baselines=naive,drift", "train.accelerator=cpu"],
                        out, "msft")
    m, rw = metrics["test"], metrics["baselines"]["naive"]
    said = ("The model beats the random walk" if m["mae"] < rw["mae"] else
            "The model does **not** beat the random walk (as expected for stock prices)")
    lines = ["### MSFT daily close: 5-day forecasts over the last 250 trading days", "",
             "| forecast | MAE ($) | MAPE % | train s |", "|---|---:|---:|---:|",
             f"| model | {m['mae']:.3f} | {m['mape']:.2f} | {metrics['train_seconds']:.0f} |",
             f"| random walk (naive) | {rw['mae']:.3f} | {rw['mape']:.2f} | |",
             f"| drift | {metrics['baselines']['drift']['mae']:.3f} | {metrics['baselines']['drift']['mape']:.2f} | |",
             "", f"{said}: MAE {m['mae']:.3f} vs {rw['mae']:.3f}.", ""]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data, models and epochs: checks the script runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--only", choices=["etth1", "univariate", "msft"], default=None)
    parser.add_argument("--etth1-models", default="joint,channel-independent",
                        help="comma-separated ETTh1 variants: joint, channel-independent")
    parser.add_argument("--write", action="store_true", help="replace the Forecasting section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"datasets not found at {DATA}")
    torch.set_num_threads(args.threads)
    epochs = 1 if args.quick else args.epochs
    start = time.perf_counter()
    lines = [SECTION, "",
             f"Command: `python benchmarks/bench_forecasting.py{' --quick' if args.quick else ''} --threads {args.threads} "
             f"--epochs {epochs}{'' if args.only is None else ' --only ' + args.only}`  ",
             f"Machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
             f"{datetime.date.today().isoformat()}. LSTM encoder, direct multi-step head, early stopping on the "
             "validation loss; backtests never refit." + (" **Smoke run (--quick): not a result.**" if args.quick else ""),
             ""]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.only in (None, "etth1"):
            lines += bench_etth1(out, args.quick, epochs, args.etth1_models.split(","))
        if args.only in (None, "univariate"):
            lines += bench_univariate(out, args.quick, epochs)
        if args.only in (None, "msft"):
            lines += bench_msft(out, args.quick, epochs)
    lines.append(f"Total time {time.perf_counter() - start:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(SECTION + "\n", text)


if __name__ == "__main__":
    main()
