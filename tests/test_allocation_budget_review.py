"""Run folders and transform files are data: sizes edited into them (model.json's hyperparameters,
config.yaml on --resume, a feature extractor's n_mels, a permutation's num_pixels) are one-line
errors before any memory is allocated, and valid runs load exactly as before.

No test here allocates more than a few MB: absurd sizes are refused by the budget (and a guard
that fails the test, instead of allocating, should a refusal ever come too late), and "possible
but too large" sizes are checked with a tiny allowance."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode
from typer.testing import CliRunner

from rnnkit import allocation
from rnnkit.allocation import AllocationBudget, TooLarge, size_argument_bytes
from rnnkit.cli import app
from rnnkit.data.audio import MAX_N_FFT, MAX_N_MELS, MFCC, LogMelSpectrogram
from rnnkit.data.errors import DataError
from rnnkit.data.images import PixelPermutation
from rnnkit.data.serialization import load_transform
from rnnkit.tasks.run import RunDir, RunError

runner = CliRunner()
_GUARD_BYTES = 256 << 20  # nothing in these tests may ask for more in one allocation


class _NoBigAllocation(TorchDispatchMode):
    """Entered outside the budget: sees only what the budget let through, and fails the test
    (instead of allocating) on any allocation over ``_GUARD_BYTES``."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        need = size_argument_bytes(func, args, kwargs)
        if need is not None and need > _GUARD_BYTES:
            raise AssertionError(f"{func} would allocate {need} bytes: the budget let it through")
        return func(*args, **kwargs)


def _one_line(text: str, *parts: str) -> None:
    assert "\n" not in text.strip(), text
    for part in parts:
        assert part in text, text


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


# -- a tiny real run ------------------------------------------------------------------------------
POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "delightful"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious"]
FILLER = ["the", "film", "was", "a", "story", "and", "acting", "plot", "really", "quite"]


def _write_csv(path: Path, n: int, seed: int) -> Path:
    import csv
    import random

    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
            writer.writerow([" ".join(words), label])
    return path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("budget")
    train, dev = _write_csv(root / "train.csv", 80, 1), _write_csv(root / "dev.csv", 20, 2)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(root / "runs"), "--name", "run", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
                                 "--set", "data.min_freq=1", "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "runs" / "run", dev


def _edited(run: Path, tmp_path: Path, name: str = "copy", **hyper: Any) -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["hyperparameters"].update(hyper)
    (copy / "model.json").write_text(json.dumps(meta))
    return copy


# -- 1. run folders: model.json ---------------------------------------------------------------------
@pytest.mark.parametrize("hyper", [{"hidden_size": 10**7}, {"vocab_size": 10**10}, {"embedding_dim": 10**9}])
def test_an_absurd_size_in_model_json_is_refused_before_allocating(text_run, tmp_path, hyper):
    from rnnkit.tasks.text_classification import TrainedTextClassifier

    copy = _edited(text_run[0], tmp_path, **hyper)
    with _NoBigAllocation(), pytest.raises(RunError) as err:
        TrainedTextClassifier.load(copy)
    _one_line(str(err.value), str(copy / "model.json"), "far larger than its weights", "model.safetensors holds",
              "train again")


def test_the_cli_gives_one_line_for_an_absurd_model_json(text_run, tmp_path):
    copy = _edited(text_run[0], tmp_path, hidden_size=10**7)
    with _NoBigAllocation():
        result = runner.invoke(app, ["predict", str(copy), "a great film"])
        evaluated = runner.invoke(app, ["evaluate", str(copy), "--data", str(text_run[1])])
    for res in (result, evaluated):
        assert res.exit_code == 2, res.output
        _one_line(_error_line(res.output), "model.json", "far larger than its weights", "train again")


def test_a_size_the_machine_could_allocate_is_refused_too(text_run, tmp_path, monkeypatch):
    """Gigabytes the machine could hold (filled by the initializers) are refused as well: the budget
    is the weights file plus an allowance, made small here (1 MiB) to keep the test small."""
    from rnnkit.tasks.text_classification import TrainedTextClassifier

    monkeypatch.setattr(allocation, "BUILD_ALLOWANCE", 1 << 20)
    copy = _edited(text_run[0], tmp_path, hidden_size=2000)  # an LSTM of about 64 MB
    allocated: list[int] = []
    real_empty = torch.empty

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real_empty(*args, **kwargs)
        allocated.append(out.numel())
        return out

    monkeypatch.setattr(torch, "empty", spy)
    with pytest.raises(RunError, match="far larger than its weights"):
        TrainedTextClassifier.load(copy)
    assert max(allocated, default=0) < 4 * 2000 * 2000
    monkeypatch.setattr(torch, "empty", real_empty)
    assert TrainedTextClassifier.load(text_run[0]).model is not None  # the real run fits the small budget


def test_wrong_hyperparameters_are_one_line_errors(text_run, tmp_path):
    from rnnkit.tasks.text_classification import TrainedTextClassifier

    for i, (hyper, detail) in enumerate((({"hidden_size": -3}, "hidden_size must be greater than zero"), ({"hidden_size": "many"}, ""),
                                         ({"hidden_size": 10**30}, ""))):
        copy = _edited(text_run[0], tmp_path, f"copy{i}", **hyper)
        with pytest.raises(RunError) as err:
            TrainedTextClassifier.load(copy)
        _one_line(str(err.value), "model.json", "train again", detail)


def test_a_valid_run_loads_exactly_as_before_and_predicts_outside_the_budget(text_run):
    from safetensors.torch import load_file

    from rnnkit.tasks.text_classification import Preprocessor, TrainedTextClassifier, build_model

    run, _ = text_run
    trained = TrainedTextClassifier.load(run)
    assert _get_current_dispatch_mode() is None  # the budget is gone once the model is built
    saved = load_file(run / "model.safetensors")
    state = trained.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    # the same model built without any budget, as before: identical predictions
    meta = json.loads((run / "model.json").read_text())
    plain = TrainedTextClassifier(RunDir(run).load_into(build_model(meta["hyperparameters"])),
                                  Preprocessor.load(RunDir(run)))
    modes: list[Any] = []
    trained.model.register_forward_pre_hook(lambda *_: modes.append(_get_current_dispatch_mode()))
    texts = ["a great and wonderful film", "dull boring plot", "zzz"]
    assert trained.predict(texts) == plain.predict(texts)
    assert modes and all(mode is None for mode in modes)  # inference never runs under the dispatch mode


def test_the_budget_follows_the_weights_file_size(text_run, tmp_path, monkeypatch):
    """The budget is read from model.safetensors' size on disk, not by loading it."""
    from rnnkit.tasks import run as run_module

    seen: list[int] = []
    real = run_module.budget_for
    monkeypatch.setattr(run_module, "budget_for", lambda held: seen.append(held) or real(held))
    from rnnkit.tasks.text_classification import TrainedTextClassifier

    TrainedTextClassifier.load(text_run[0])
    assert seen == [(text_run[0] / "model.safetensors").stat().st_size]


# -- 1b. --resume: config.yaml --------------------------------------------------------------------
def test_resume_with_an_absurd_config_yaml_is_refused_before_allocating(text_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(text_run[0], copy)
    config = copy / "config.yaml"
    text = config.read_text()
    assert "hidden_size: 8" in text
    config.write_text(text.replace("hidden_size: 8", "hidden_size: 10000000"))
    with _NoBigAllocation():
        result = runner.invoke(app, ["train", "text-classification", "--resume", str(copy),
                                     "--set", "train.epochs=2"])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    _one_line(line, "config.yaml", "far larger than its weights", "checkpoint-last.ckpt", "train a new run")
    assert "continue it with" not in result.output  # resuming again would fail the same way


def test_resume_of_a_valid_run_still_continues(text_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(text_run[0], copy)
    result = runner.invoke(app, ["train", "text-classification", "--resume", str(copy), "--set", "train.epochs=2",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "metrics.json").read_text())["epochs_run"] == 2


def test_a_new_training_run_is_not_held_to_any_budget(monkeypatch):
    """Outside --resume the config is the user's own: build_for_run builds as asked."""
    from rnnkit.tasks.engine import build_for_run, resuming

    monkeypatch.setattr(allocation, "BUILD_ALLOWANCE", 0)
    modes: list[Any] = []
    build_for_run(RunDir("nowhere"), lambda: modes.append(_get_current_dispatch_mode()))
    assert modes == [None]
    with resuming(), pytest.raises(ValueError, match="far larger than its weights"):
        build_for_run(RunDir("nowhere"), lambda: torch.empty(1000))


# -- every task rebuilds its run through the shared helpers ---------------------------------------------
TASKS = ["text_classification", "tagging", "language_model", "translation", "speech", "forecasting",
         "image_classification"]


@pytest.mark.parametrize("name", TASKS)
def test_every_task_rebuilds_a_run_under_the_budget(name):
    import importlib

    module = importlib.import_module(f"rnnkit.tasks.{name}")
    loaders = [cls for cls in vars(module).values()
               if inspect.isclass(cls) and cls.__module__ == module.__name__ and "load" in vars(cls)
               and "RunDir.open_task" in inspect.getsource(vars(cls)["load"].__func__)]
    assert loaders, name
    for cls in loaders:
        source = inspect.getsource(vars(cls)["load"].__func__)
        assert "run.build_model(meta" in source and 'meta["hyperparameters"]' not in source.split("build_model")[0]
    train = inspect.getsource(module.train)
    assert "build_for_run(run" in train
    assert "model = build_model(" not in train and "model = RNNLanguageModel(" not in train


def test_image_run_loads_under_the_budget_and_refuses_an_absurd_model_json(tmp_path):
    from rnnkit.tasks.image_classification import TrainedImageClassifier

    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                                 "--name", "perm", "--set", "data.sequence=permuted", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=8", "--set", "data.max_train_examples=200", "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "perm"
    assert TrainedImageClassifier.load(run).prep.steps == 64
    copy = _edited(run, tmp_path, "huge", hidden_size=10**7)
    with _NoBigAllocation(), pytest.raises(RunError, match="far larger than its weights"):
        TrainedImageClassifier.load(copy)
    # 2. a permutation.json asking for 10**10 pixels (and no order) is refused before it is drawn
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    (bad / "permutation.json").write_text(json.dumps({"num_pixels": 10**10, "seed": 0, "order": None}))
    result = runner.invoke(app, ["evaluate", str(bad), "--data", "builtin:digits"])
    assert result.exit_code == 2
    _one_line(_error_line(result.output), "permutation.json", "num_pixels must be between 0 and 16777216", "train again")


# -- 2. transforms read from files ----------------------------------------------------------------
@pytest.fixture
def no_big_numpy(monkeypatch):
    """Fail (instead of allocating) should a filterbank or permutation of absurd size be drawn."""
    from rnnkit.data import audio, images

    real_fb, real_rng = audio.mel_filterbank, np.random.default_rng

    def fb(n_freqs: int, sample_rate: int, n_mels: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert n_freqs * n_mels <= 1 << 25, (n_freqs, n_mels)
        return real_fb(n_freqs, sample_rate, n_mels, *args, **kwargs)

    class Rng:
        def __init__(self, seed: int) -> None:
            self.rng = real_rng(seed)

        def permutation(self, n: int) -> np.ndarray:
            assert n <= PixelPermutation.MAX_PIXELS, n
            return self.rng.permutation(n)

    monkeypatch.setattr(audio, "mel_filterbank", fb)
    monkeypatch.setattr(images.np.random, "default_rng", Rng)


@pytest.mark.parametrize("cls, config, message", [
    (LogMelSpectrogram, {"n_mels": 10**7}, f"n_mels must be at most {MAX_N_MELS}, got 10000000"),
    (LogMelSpectrogram, {"n_fft": 10**7}, f"n_fft must be between 2 and {MAX_N_FFT} samples, got 10000000"),
    (LogMelSpectrogram, {"n_fft": 10**7, "win_length": 400}, "n_fft must be between 2 and"),
    (MFCC, {"n_mfcc": 10**7}, "n_mfcc must be at most n_mels=40, got 10000000"),
    (MFCC, {"n_mfcc": 10**7, "n_mels": 10**7}, f"n_mels must be at most {MAX_N_MELS}"),
    (PixelPermutation, {"num_pixels": 10**10, "seed": 0, "order": None}, "num_pixels must be between 0 and"),
    (PixelPermutation, {"num_pixels": -1, "seed": 0, "order": None}, "num_pixels must be between 0 and"),
])
def test_a_transform_file_asking_for_absurd_sizes_is_a_one_line_error(tmp_path, no_big_numpy, cls, config, message):
    saved = cls(**({"num_pixels": 16} if cls is PixelPermutation else {}))
    full = {**saved.to_config(), **config}
    with pytest.raises(DataError) as err:
        cls.from_config(full)
    _one_line(str(err.value), message, "fix:")
    path = tmp_path / "t.json"
    saved.save(path)
    data = json.loads(path.read_text())
    data["config"].update(config)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message.split(",")[0].replace("(", r"\(")):
        load_transform(path)


def test_the_limits_leave_every_real_setting_working(no_big_numpy):
    wave = torch.randn(MAX_N_FFT + 10)
    assert LogMelSpectrogram(sample_rate=48000, n_fft=MAX_N_FFT, n_mels=64)(wave).shape[-1] == 64
    assert LogMelSpectrogram(sample_rate=16000, n_fft=2048, n_mels=MAX_N_MELS)(wave).shape[-1] == MAX_N_MELS
    assert MFCC(n_mfcc=40, n_mels=40)(wave[:16000]).shape[-1] == 40
    for n in (0, 784, 1024):
        assert sorted(PixelPermutation(n, seed=1).order.tolist()) == list(range(n))
    assert PixelPermutation.from_config(PixelPermutation(784, 3).to_config()).order.tolist() == \
        PixelPermutation(784, 3).order.tolist()


def test_speech_features_in_a_run_folder_are_checked_too():
    from rnnkit.tasks.speech import SpeechFeatures

    with pytest.raises(DataError, match="n_fft must be between 2 and"):  # 10**9 Hz: an FFT of 2**25 samples
        SpeechFeatures(10**9, "logmel")
    with pytest.raises(DataError, match=f"n_mels must be at most {MAX_N_MELS}"):
        SpeechFeatures(16000, "mfcc", n_mels=10**7, n_mfcc=10**7)


def test_the_budget_itself_counts_before_allocating():
    budget = AllocationBudget(1000)
    with pytest.raises(TooLarge) as err, budget:
        torch.empty(10**12)
    assert err.value.need == 4 * 10**12
    with AllocationBudget(1000):
        torch.zeros(10)  # 40 bytes: fine
