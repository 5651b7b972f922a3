"""Defects found walking through forecasting, speech and image classification as a new user: each
test pins one fix (small synthetic fixtures only)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rnnkit.cli import app  # noqa: E402
from rnnkit.data.audio import list_audio_folder  # noqa: E402
from rnnkit.data.errors import DataError  # noqa: E402
from rnnkit.data.timeseries import read_timeseries  # noqa: E402
from rnnkit.tasks.forecasting import verdict  # noqa: E402
from rnnkit.tasks.speech import split_table  # noqa: E402

runner = CliRunner()


# -- speech ------------------------------------------------------------------------------------
def test_speech_report_table_shows_only_the_metrics_of_the_head() -> None:
    """A classifier's report had WER and CER columns reading ``nan`` (and a CTC run an accuracy of ``nan``)."""
    clf = {"dev": {"accuracy": 0.7, "rtf": 0.01, "utterances": 270}, "test": {"accuracy": 0.8, "rtf": 0.01,
                                                                               "utterances": 300}}
    table = split_table(clf, ["dev", "test"], "classifier")
    assert table.splitlines()[0] == "| split | accuracy | real-time factor | utterances |"
    assert "nan" not in table and "WER" not in table
    ctc = {"test": {"wer": 0.1, "cer": 0.05, "sentence_accuracy": 0.8, "rtf": 0.01, "utterances": 3}}
    table = split_table(ctc, ["test"], "ctc")
    assert table.splitlines()[0] == "| split | WER | CER | sentence accuracy | real-time factor | utterances |"
    assert "nan" not in table
    # an undefined WER (every reference empty) still reads n/a
    ctc["test"].update(wer=None, cer=None)
    assert "n/a" in split_table(ctc, ["test"], "ctc")


def test_an_audio_folder_whose_files_are_in_a_subfolder_names_it(tmp_path: Path) -> None:
    """``--data fsdd`` (the dataset folder, not its ``recordings/``) said only "no audio files found"."""
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "3_theo_0.wav").write_bytes(b"")
    with pytest.raises(DataError) as err:
        list_audio_folder(tmp_path)
    assert "recordings" in str(err.value) and "subfolder" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="check the folder and extensions"):
        list_audio_folder(empty)


# -- forecasting -------------------------------------------------------------------------------
def test_verdict_says_when_a_simpler_baseline_beats_the_model() -> None:
    """On a stock price the model beat seasonal naive but lost to naive (the random walk) and to
    drift, and the verdict only said "The model beats seasonal naive"."""
    model = {"mase": 1.43, "mae": 0.59}
    base = {"naive": {"mase": 1.37, "mae": 0.57}, "seasonal_naive": {"mase": 2.14, "mae": 0.89},
            "drift": {"mase": 1.36, "mae": 0.56}, "ets": {"mase": 1.5, "mae": 0.6}}
    text = verdict(model, base)
    assert text.startswith("The model beats seasonal naive")
    assert "but not drift (1.36), naive (1.37)" in text and "ets" not in text
    base = {k: v for k, v in base.items() if k == "seasonal_naive"}
    assert "but not" not in verdict(model, base)


def _csv(path: Path, days: np.ndarray) -> Path:
    path.write_text("date,price\n" + "".join(f"{d},{10 + i * 0.1:.2f}\n" for i, d in enumerate(days)))
    return path


def test_a_daily_file_missing_its_weekends_suggests_counting_rows_as_steps(tmp_path: Path) -> None:
    """Daily stock prices (trading days) stopped with "gap of 2 missing 1D steps (1725 gaps in all)" and
    only offered to fill the weekends in."""
    days = np.datetime64("2021-01-04") + np.arange(70)  # a Monday
    weekdays = days[(days.astype(np.int64) + 3) % 7 < 5]
    # read as business days (weekdays only, spanning weekends), dated Monday to Friday
    series = read_timeseries(_csv(tmp_path / "stock.csv", weekdays), "date", "price").only()
    assert series.freq == "1B" and series.time.tolist() == weekdays.astype(series.time.dtype).tolist()
    # declared daily: the weekend gaps are named, with business days as the first fix
    with pytest.raises(DataError) as err:
        read_timeseries(_csv(tmp_path / "stock.csv", weekdays), "date", "price", freq="D")
    message = str(err.value)
    assert "mostly weekends" in message and "time_column" in message and "fill" in message
    assert "freq='B'" in message or "freq=B" in message
    # a single gap in a daily file on a weekday: one gap (not "1 gaps"), and no weekend hint
    one = np.delete(days, 2)  # a Wednesday
    with pytest.raises(DataError) as err:
        read_timeseries(_csv(tmp_path / "one.csv", one), "date", "price")
    assert "(1 gap in all)" in str(err.value) and "weekends" not in str(err.value)


def _series_csv(path: Path, n: int = 60) -> Path:
    t = np.arange(n)
    y = 10 + 3 * np.sin(2 * np.pi * t / 7) + 0.1 * t
    days = np.datetime64("2021-01-01") + t
    path.write_text("date,sales\n" + "".join(f"{d},{v:.3f}\n" for d, v in zip(days, y)))
    return path


def test_forecast_plot_labels_its_y_axis_and_report_explains_the_scaled_curves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """forecasts.png had no y-axis label (what and in which units), and the per-epoch ``dev_mae``
    (scaled values) disagreed with the report's dev MAE (original units) with nothing saying why."""
    figures: list[tuple[str, Figure]] = []
    save = Figure.savefig

    def spy(fig: Figure, path: object, *args: object, **kwargs: object) -> None:
        figures.append((Path(str(path)).name, fig))
        save(fig, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", spy)
    data = _series_csv(tmp_path / "sales.csv")
    result = runner.invoke(app, ["train", "forecasting", "--train", str(data), "--out", str(tmp_path), "--name", "run",
                                 "--quiet", "--set", "data.time_column=date", "--set", "data.target=sales",
                                 "--set", "data.lookback=7", "--set", "data.horizon=3", "--set", "data.val_size=6",
                                 "--set", "data.test_size=12", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=4", "--set", "evaluation.baselines=[naive]"])
    assert result.exit_code == 0, result.output
    fig = dict(figures)["forecasts.png"]
    assert fig.axes[0].get_ylabel() == "sales (original units)"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "computed on the scaled series" in report


# -- image classification ------------------------------------------------------------------------
def _ts(path: Path, n: int, steps: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        up = i % 2 == 0
        a = np.linspace(0, 1, steps) * (1 if up else -1) + 0.1 * rng.normal(size=steps)
        rows.append(f"{','.join(f'{v:.4f}' for v in a)}:{'up' if up else 'down'}")
    path.write_text("@problemName toy\n@timeStamps false\n@univariate true\n@classLabel true up down\n@data\n"
                    + "\n".join(rows) + "\n")
    return path


def _json(output: str) -> dict:
    """The JSON object printed by ``--json`` (notes may be printed before it)."""
    return json.loads(output[output.index("\n{") + 1 if not output.startswith("{") else 0:])


def test_ucr_runs_speak_of_series_and_the_report_gives_support(tmp_path: Path) -> None:
    """A UCR/UEA run's report said "45 images of 150x1" and "150 steps of 1 features"; its per-class table
    had no support column (``evaluate`` prints one)."""
    train = _ts(tmp_path / "toy_TRAIN.ts", 20)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "run", "--quiet", "--set", "train.epochs=1", "--set", "train.batch_size=8",
                                 "--set", "model.hidden_size=8"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "run" / "report.md").read_text()
    assert "18 series of 10 steps x 1 dimension)" in report and "images" not in report.split("\n")[2]
    assert "10 steps of 1 feature." in report and "1 features" not in report
    assert "| class | precision | recall | f1 | support |" in report
    log = (tmp_path / "run" / "train.log").read_text()
    assert "series of 10 steps x 1 dimension" in log and "1 features" not in log

    test = _ts(tmp_path / "toy_TEST.ts", 10, seed=1)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(test), "--json"])
    assert result.exit_code == 0, result.output
    assert "per_class" in _json(result.output)


def test_learning_curves_have_whole_epoch_ticks(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from unittest import mock

    from rnnkit.tasks import report

    history = [{"epoch": e, "train_loss": 1.0 / e, "dev_accuracy": 0.5 + 0.1 * e} for e in (1, 2)]
    captured = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):  # read the ticks matplotlib drew
        fig.canvas.draw()
        captured["ticks"] = [[t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                             for ax in fig.axes]
        return real_savefig(fig, *args, **kwargs)

    with mock.patch.object(matplotlib.figure.Figure, "savefig", keep):
        report.plot_learning_curves(history, tmp_path / "curves.png")
    assert captured["ticks"] and all(ticks and all(float(t).is_integer() for t in ticks)
                                     for ticks in captured["ticks"])
