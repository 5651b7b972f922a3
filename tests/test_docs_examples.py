"""The Python examples of the documentation run as written and do what the text around them says.

One test per page (docs/data.md and README.md have their own: tests/data/test_docs.py,
tests/test_readme.py). A page's ```python blocks run in order in one namespace in a temporary
folder, as a reader would run them. Names a block leaves to the reader (``X_train``, ``chunks``,
``keras_model``...) are filled in with tiny data before it runs, and the block must not define them
itself. The pages whose examples load a trained run (``runs/forecasting-1``, ``runs/speech-3``,
``runs/translation-1``) first train one with the page's own command line plus settings that make it
tiny (one or two epochs, a few units), so the examples run on a real run folder in seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["core", "speed", "models", "forecasting", "insight", "speech", "translation"]

Namespace = dict[str, Any]
Given = Callable[[Namespace], Namespace]  # names a block leaves to the reader, from what ran before


def _blocks(page: str) -> list[str]:
    doc = DOCS / f"{page}.md"
    if not doc.is_file():
        pytest.skip(f"{doc} not found")
    return re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)


def _run_page(page: str, given: dict[int, Given] | None = None, count: int | None = None) -> list[Namespace]:
    """Run the page's blocks in order in one namespace; returns the namespace after each block."""
    blocks = _blocks(page)
    if count is not None:
        assert len(blocks) == count, f"docs/{page}.md has {len(blocks)} python examples, the test expects {count}"
    namespace: Namespace = {"__name__": f"docs_{page}"}
    after = []
    for i, block in enumerate(blocks):
        if given and i in given:
            names = given[i](namespace)
            defined = set(re.findall(r"^(\w+)\s*=", block, flags=re.M))
            assert not defined & set(names), f"docs/{page}.md example {i} now defines {defined & set(names)} itself"
            namespace.update(names)
        try:
            exec(compile(block, f"docs/{page}.md example {i}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - shows which block failed
            raise AssertionError(f"docs/{page}.md example {i} failed: {exc!r}\n{block}") from exc
        after.append(dict(namespace))
    return after


def _cli(*args: str) -> str:
    from typer.testing import CliRunner

    from rnnkit.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"rnnkit {' '.join(args)}\n{result.output}"
    return result.output


# -- docs/core.md -----------------------------------------------------------------------------------
def _core(tmp_path: Path) -> None:
    x = torch.randn(4, 20, 32)  # [B, T, 32]
    given: dict[int, Given] = {1: lambda ns: {"chunks": list(x.unbind(1)), "first_chunk": x[:, :10],
                                              "second_chunk": x[:, 10:]}}
    cell_ns, stream_ns, custom_ns = _run_page("core", given, count=3)

    # one step of a cell; the comment lists the gates it returns
    assert list(cell_ns["gates"]) == ["input", "forget", "cell_candidate", "output", "cell"]
    assert cell_ns["h"].shape == cell_ns["c"].shape == (4, 16)

    # gru.step over the chunks "equals forward() over the same steps"
    gru = stream_ns["gru"]
    with torch.no_grad():
        out, h_n = gru(x)
    torch.testing.assert_close(stream_ns["y_t"], out[:, -1])
    torch.testing.assert_close(stream_ns["h"], h_n)
    # the stateful layer carried its state from the first chunk into the second; reset_state([2])
    # forgets sample 2's only
    stream = stream_ns["stream"]
    plain = torch.nn.LSTM(32, 64, batch_first=True)
    plain.load_state_dict(stream.state_dict())
    with torch.no_grad():
        whole, (h, c) = plain(x)
        carried = stream(x[:, :1])[0]
        torch.testing.assert_close(carried[2], plain(x[2:3, :1])[0][0])  # sample 2 starts afresh
        torch.testing.assert_close(carried[0], plain(x[0:1, :1], (h[:, 0:1], c[:, 0:1]))[0][0])  # sample 0 goes on

    # a custom cell on the reference scan, named like torch, padding respected
    layer, y = custom_ns["layer"], custom_ns["out"]
    assert "weight_ih_l1_reverse" in dict(layer.named_parameters())
    assert y.shape == (4, 10, 128)
    assert y[3].abs().sum() == 0 and y[2, 3:].abs().sum() == 0


# -- docs/speed.md ----------------------------------------------------------------------------------
def _speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rnnkit.scan.parallel as parallel

    calls = []
    sequential_scan = parallel.sequential_scan

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return sequential_scan(*args, **kwargs)

    monkeypatch.setattr(parallel, "sequential_scan", counting)
    (ns,) = _run_page("speed", count=1)
    out = ns["out"]
    assert out.shape == (8, 1000, 512)  # two directions of 256
    assert out[3].abs().sum() == 0 and out[2, 5:].abs().sum() == 0  # lengths 0 and 5: padding is zero
    assert calls, "the comment says auto runs minGRU on the sequential scan on CPU"


# -- docs/models.md ---------------------------------------------------------------------------------
def _models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lightning")
    rng = np.random.default_rng(0)

    def keras_model(ns: Namespace) -> Namespace:
        # the saving example ends with the model loaded back: it predicts as the saved one did
        import rnnkit.models

        np.testing.assert_array_equal(ns["model"].predict(x_seq, verbose=0),
                                      rnnkit.models.load_model("sentiment.safetensors").predict(x_seq, verbose=0))
        # Keras: the same architecture as the model the page built last (the TBPTT example's); without
        # Keras, the same model in rnnkit, whose get_weights() has Keras' order and layout too
        monkeypatch.setenv("KERAS_BACKEND", "torch")
        if importlib.util.find_spec("keras") is None:
            from rnnkit.layers import LSTM, Dense, Input
            from rnnkit.models import Sequential

            stand_in = Sequential([Input(shape=(None, 8)), LSTM(32, return_sequences=True), Dense(1)])
            return {"keras_model": stand_in}
        import keras

        return {"keras_model": keras.Sequential([keras.Input((None, 8)), keras.layers.LSTM(32, return_sequences=True),
                                                 keras.layers.Dense(1)])}

    def interrupt_once(ns: Namespace) -> Namespace:
        # the Ctrl-C example: its model.fit(..., epochs=100) is interrupted in its first epoch (after
        # which fit is the model's own again); the history of the TBPTT fit before it is noted first
        from rnnkit.training import Callback

        class CtrlC(Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                raise KeyboardInterrupt

        model, fit = ns["model"], ns["model"].fit
        seen.update(tbptt_epochs=len(model.history.history["loss"]))

        def fit_once(*args: Any, **kwargs: Any) -> Any:
            del model.fit
            return fit(*args, **kwargs, callbacks=[CtrlC()])

        model.fit = fit_once
        return {}

    seen: dict[str, int] = {}
    x_seq = rng.normal(size=(8, 120, 8)).astype("float32")  # longer than tbptt_steps=50
    y_seq = rng.normal(size=(8, 120, 1)).astype("float32")
    given: dict[int, Given] = {
        0: lambda ns: {"X_train": rng.integers(1, 10000, (16, 100)), "y_train": np.eye(10)[rng.integers(0, 10, 16)],
                       "X_val": rng.integers(1, 10000, (4, 100)), "y_val": np.eye(10)[rng.integers(0, 10, 4)]},
        1: lambda ns: {"max_features": 50, "embedding_size": 8, "maxlen": 20, "filters": 4, "kernel_size": 3,
                       "pool_size": 2, "lstm_output_size": 6, "batch_size": 8, "epochs": 2,
                       "x_train": rng.integers(1, 50, (16, 20)), "y_train": rng.integers(0, 2, 16),
                       "x_test": rng.integers(1, 50, (4, 20)), "y_test": rng.integers(0, 2, 4)},
        2: lambda ns: {"src_ids": rng.integers(1, 8000, (16, 7)), "tgt_in_ids": rng.integers(1, 8000, (16, 6)),
                       "tgt_out_ids": rng.integers(1, 8000, (16, 6))},
        4: lambda ns: {"x": [ns["src_ids"], ns["tgt_in_ids"]], "y": ns["tgt_out_ids"]},
        6: lambda ns: {"x": x_seq, "y": y_seq},
        7: interrupt_once,
        10: keras_model,
    }
    after = _run_page("models", given, count=11)
    keras_style, cnn_lstm, functional, _, fitted, on_batch, tbptt, _, _, _, imported = after

    history = keras_style["model"].history.history
    assert len(history["loss"]) == 10 and "val_accuracy" in history
    assert cnn_lstm["model"].predict(cnn_lstm["x_test"], verbose=0).shape == (4, 1)
    seq2seq = functional["model"]
    assert seq2seq.predict([functional["src_ids"], functional["tgt_in_ids"]], verbose=0).shape == (16, 6, 8000)
    # compile(metrics=["accuracy", "f1_macro"]): what evaluate and train_on_batch return, in order
    assert seq2seq.metrics_names == ["loss", "accuracy", "f1_macro"]
    assert len(fitted["history"].history["loss"]) == 1  # epochs=1
    assert all(np.isfinite([on_batch["loss"], on_batch["acc"], on_batch["f1"]]))
    assert seen["tbptt_epochs"] == 5 and tbptt["model"].output_shape == (None, None, 1)
    assert (tmp_path / "run1" / "last.ckpt").is_file()
    assert (tmp_path / "interrupted" / "model.safetensors").is_file()  # saved after Ctrl-C
    assert {"config.json", "model.safetensors", "optimizer.safetensors"} == set(os.listdir(tmp_path / "sentiment"))
    assert {"config.json", "model.safetensors"} == set(os.listdir(tmp_path / "deploy"))
    assert (tmp_path / "sentiment.safetensors").is_file() and (tmp_path / "w.safetensors").is_file()
    # Keras' weights give Keras' outputs
    np.testing.assert_allclose(imported["model"].predict(x_seq, verbose=0),
                               np.asarray(imported["keras_model"].predict(x_seq, verbose=0)), atol=2e-5)


# -- run folders the task pages load --------------------------------------------------------------
def _write_sales(path: Path) -> None:
    """date,sales: 20 years of a monthly series with a trend and a season."""
    rng = np.random.default_rng(0)
    t = np.arange(240)
    y = 10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, t.size)
    months = np.datetime64("1990-01", "M") + t
    path.write_text("date,sales\n" + "".join(f"{m}-01,{v:.4f}\n" for m, v in zip(months, y)))


@pytest.fixture(scope="module")
def forecasting_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sales.csv and runs/forecasting-1, trained by docs/forecasting.md's quick start (made tiny)."""
    pytest.importorskip("lightning")
    folder = tmp_path_factory.mktemp("forecasting")
    _write_sales(folder / "sales.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # the quick start writes runs/forecasting-1 under the current folder
        _cli("train", "forecasting", "--train", "sales.csv", "--set", "data.time_column=date",
             "--set", "data.target=sales", "--set", "data.horizon=12",
             "--set", "train.epochs=2", "--set", "model.hidden_size=8", "--set", "train.accelerator=cpu",
             "--set", "evaluation.baselines=naive,seasonal_naive", "--quiet")
        assert (folder / "runs" / "forecasting-1" / "model.safetensors").is_file()
        # the quick start's other two commands
        assert "beats_seasonal_naive" in _cli("evaluate", "runs/forecasting-1", "--data", "sales.csv")
        assert len(_cli("predict", "runs/forecasting-1", "sales.csv", "--json").splitlines()) == 12  # next 12 months
    return folder


def _copy_into(folder: Path, tmp_path: Path) -> None:
    for item in folder.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp_path / item.name)


# -- docs/forecasting.md ----------------------------------------------------------------------------
def _forecasting(tmp_path: Path, forecasting_folder: Path) -> None:
    _copy_into(forecasting_folder, tmp_path)
    (ns,) = _run_page("forecasting", count=1)
    rows, metrics, bt = ns["rows"], ns["metrics"], ns["bt"]
    assert len(rows) == 12 and [r["step"] for r in rows] == list(range(1, 13))
    assert list(rows[0]) == ["series_id", "time", "step", "target", "forecast", "q0.1", "q0.5", "q0.9"]
    assert ns["model"].forecast() == rows  # "or model.forecast() for the training file"
    assert (tmp_path / "forecast.csv").read_text().startswith("series_id,time,step,target,forecast")
    assert {"mae", "rmse", "mase"} <= set(metrics)
    assert bt.y.shape == bt.point.shape and bt.quantiles.shape[:-1] == bt.y.shape and isinstance(bt.baselines, dict)
    import rnnkit.metrics.forecasting as fm

    for name in ("mae", "rmse", "mape", "smape", "mase", "mase_scale", "pinball_loss", "crps_from_quantiles",
                 "crps_gaussian", "coverage"):
        assert callable(getattr(fm, name)), name


# -- docs/insight.md --------------------------------------------------------------------------------
def _insight(tmp_path: Path, forecasting_folder: Path) -> None:
    import rnnkit.nn
    from rnnkit.insight import GradientReport, gradient_diagnostics

    _copy_into(forecasting_folder, tmp_path)
    given: dict[int, Given] = {0: lambda ns: {"model_or_layer": rnnkit.nn.LSTM(2, 16, batch_first=True),
                                              "batch": torch.randn(4, 30, 2)}}
    (ns,) = _run_page("insight", given, count=1)
    report = ns["report"]  # the trained run's
    assert isinstance(report, GradientReport) and report.label == "forecasting-1"
    assert len(report.grad_norms) == 48  # the run's lookback

    # "With --fresh --cell rnn,lstm,gru (T=100, hidden 64, seed 0) the horizons are 13 for the tanh RNN,
    # 27 for the LSTM and 14 for the GRU", and 10 for an LSTM at the cell's own initialisation
    from rnnkit.insight import diagnose_fresh, make_task
    from rnnkit.insight.memory import MemoryModel, task_loss

    reports, _ = diagnose_fresh(["rnn", "lstm", "gru"], length=100, exploding_scale=None)
    assert [r.horizon for r in reports] == [13, 27, 14]
    spec = make_task("adding")
    batch = spec.generate(32, 100, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    own_init = MemoryModel(spec, "lstm", 64, forget_bias=None)
    report = gradient_diagnostics(own_init, batch, loss_fn=lambda m, b: task_loss(spec, m(b[0]), b[1]))
    assert report.horizon == 10


# -- docs/speech.md ---------------------------------------------------------------------------------
def _speech(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("lightning")
    rate, rng = 8000, np.random.default_rng(0)
    freqs = {"0": 440.0, "1": 1100.0, "2": 2300.0}

    def tone(label: str, seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.5 * np.sin(2 * np.pi * (freqs[label] * rng.uniform(0.95, 1.05) * t + 150.0 * t * t))
        return (wave * np.hanning(t.size) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    recordings = tmp_path / "recordings"  # FSDD's naming: <digit>_<speaker>_<index>.wav
    recordings.mkdir()
    for label in freqs:
        for speaker in ("ann", "bob"):
            for index in range(8):
                sf.write(recordings / f"{label}_{speaker}_{index}.wav", tone(label, rng.uniform(0.25, 0.4)), rate)
    sf.write(tmp_path / "a.wav", np.concatenate([tone("1", 0.3), np.zeros(800, np.float32), tone("2", 0.3)]), rate)
    monkeypatch.chdir(tmp_path)
    # "a streamable model", the page's third training command, made tiny; the example loads runs/speech-3
    _cli("train", "speech", "--train", "recordings", "--set", "data.mode=connected_digits",
         "--set", "model.bidirectional=false", "--name", "speech-3", "--quiet",
         "--set", "train.epochs=1", "--set", "model.hidden_size=16", "--set", "model.num_layers=1",
         "--set", "data.n_mels=20", "--set", "data.connected_train=20", "--set", "data.connected_eval=4",
         "--set", "data.max_digits=3", "--set", "train.accelerator=cpu")

    wave = torch.from_numpy(sf.read(tmp_path / "a.wav", dtype="float32")[0])
    (ns,) = _run_page("speech", {0: lambda ns: {"chunks": list(wave.split(800))}}, count=1)
    model = ns["model"]
    assert model.sample_rate == rate and type(ns["rec"]).__name__ == "StreamingRecognizer"
    assert isinstance(ns["partial"], str)
    # streaming gives the whole-file pass's transcript (greedy: beam_size=1 in both)
    assert ns["text"] == model.transcribe(["a.wav"], beam_size=1)[0]["text"]


# -- docs/translation.md ----------------------------------------------------------------------------
def _translation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("tokenizers")
    pytest.importorskip("sacrebleu")
    import random

    subjects = [("Ein Hund", "A dog"), ("Eine Katze", "A cat"), ("Ein Mann", "A man"), ("Eine Frau", "A woman"),
                ("Ein Kind", "A child")]
    verbs = [("rennt", "runs"), ("schläft", "sleeps"), ("spielt", "plays"), ("springt", "jumps")]
    places = [("", ""), (" über die Wiese", " across the meadow"), (" im Park", " in the park"),
              (" am Strand", " on the beach")]
    pairs = [(f"{s} {v}{p}.", f"{s_en} {v_en}{p_en}.") for s, s_en in subjects for v, v_en in verbs
             for p, p_en in places]
    random.Random(0).shuffle(pairs)
    for name, part in (("train", pairs[:64]), ("val", pairs[64:72]), ("test", pairs[72:])):
        (tmp_path / f"{name}.de").write_text("".join(de + "\n" for de, _ in part), encoding="utf-8")
        (tmp_path / f"{name}.en").write_text("".join(en + "\n" for _, en in part), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    # the page's training command (its cell and attention), made tiny: writes runs/translation-1
    _cli("train", "translation", "--train", "train.de", "train.en", "--dev", "val.de", "val.en",
         "--set", "model.cell=gru", "--set", "model.attention=luong_general", "--quiet",
         "--set", "data.vocab_size=60", "--set", "model.embedding_dim=16", "--set", "model.hidden_size=16",
         "--set", "train.epochs=1", "--set", "train.accelerator=cpu")

    (ns,) = _run_page("translation", count=1)
    model = ns["model"]
    (result,) = model.translate(["Ein Hund rennt."], beam_size=5, nbest=3)
    assert {"translation", "score", "nbest"} <= set(result) and 1 <= len(result["nbest"]) <= 3
    attention = model.translate(["Ein Hund rennt."], attention=True)[0]["attention"]
    assert len(attention) >= 1 and len({len(row) for row in attention}) == 1  # [output steps][source tokens]
    assert (tmp_path / "attention.png").stat().st_size > 0
    scores = model.evaluate(("test.de", "test.en"), ["decode.beam_size=1"])
    assert scores["beam_size"] == 1 and {"bleu", "chrf"} <= set(scores)


RUNNERS: dict[str, Callable[..., None]] = {"core": _core, "speed": _speed, "models": _models,
                                           "forecasting": _forecasting, "insight": _insight, "speech": _speech,
                                           "translation": _translation}


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run_and_do_what_the_text_says(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      request: pytest.FixtureRequest) -> None:
    runner = RUNNERS[page]
    kwargs: dict[str, Any] = {"tmp_path": tmp_path}
    params = runner.__code__.co_varnames[:runner.__code__.co_argcount]
    if "forecasting_folder" in params:
        kwargs["forecasting_folder"] = request.getfixturevalue("forecasting_folder")
    if "monkeypatch" in params:
        kwargs["monkeypatch"] = monkeypatch
    monkeypatch.chdir(tmp_path)
    runner(**kwargs)


def test_every_page_with_python_examples_is_covered() -> None:
    tested = {"data", "README"} | set(PAGES)  # data.md and README.md: tests/data/test_docs.py, tests/test_readme.py
    with_examples = {p.stem for p in DOCS.glob("*.md") if "```python" in p.read_text(encoding="utf-8")}
    assert with_examples <= tested, f"pages with python examples and no test: {sorted(with_examples - tested)}"


# -- the command lines of these pages -------------------------------------------------------------
def _command_lines(page: str) -> list[str]:
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip().startswith("rnnkit ")]
    return lines


@pytest.mark.parametrize("page", PAGES)
def test_command_lines_use_existing_commands_flags_and_config_keys(page: str) -> None:
    """Every `rnnkit ...` line of the page names a command, flags it has and config keys of its task
    (the task named on the line, or by the run folder `runs/<task>-N` it reads)."""
    import shlex

    import typer.main

    from rnnkit.cli import app
    from rnnkit.tasks import get_task
    from rnnkit.tasks.config import describe

    group = typer.main.get_command(app)
    tasks = {"forecasting", "image-classification", "language-model", "speech", "tagging", "text-classification",
             "translation"}
    for line in _command_lines(page):
        words = shlex.split(line)[1:]
        command = group.commands[words[0]]  # type: ignore[attr-defined]
        words = words[1:]
        if hasattr(command, "commands"):  # rnnkit bench memory
            command, words = command.commands[words[0]], words[1:]
        flags = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
        used = {w.split("=")[0] for w in words if w.startswith("--")}
        assert used <= flags, f"docs/{page}.md: `{line}` uses {sorted(used - flags)}; the command has {sorted(flags)}"
        task = next((w for w in words if w in tasks), None) or next(
            (m.group(1) for w in words if (m := re.match(r"runs/([a-z-]+)-\d+$", w))), None)
        keys = [words[i + 1].split("=")[0] for i, w in enumerate(words[:-1]) if w == "--set"]
        if keys:
            assert task in tasks, f"docs/{page}.md: no task for `{line}`"
            known = {key for key, *_ in describe(get_task(task).Config)}
            assert set(keys) <= known, f"docs/{page}.md: `{line}` sets {sorted(set(keys) - known)}, not {task} keys"


def test_the_pages_have_command_lines_to_check() -> None:
    assert all(_command_lines(page) for page in ("forecasting", "insight", "speech", "translation"))
