"""Image classification end to end (shipped digits), readers for MNIST-style files, and errors."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.images import PixelPermutation
from rnnkit.datasets import load_digits
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.image_classification import (
    Config,
    DataConfig,
    Preprocessor,
    TrainedImageClassifier,
    read_images,
)

runner = CliRunner()
FAST = ["--set", "train.epochs=4", "--set", "model.hidden_size=32", "--set", "train.learning_rate=0.01",
        "--set", "train.batch_size=64", "--quiet"]


def _write_idx(path: Path, array: np.ndarray) -> Path:
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgclf")
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(root),
                                 "--name", "run", *FAST])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_train_on_builtin_digits_writes_a_complete_run(digits_run):
    for name in ("config.yaml", "model.json", "model.safetensors", "preprocessing.json", "metrics.json",
                 "report.md", "learning_curves.png", "confusion_matrix.png", "history.csv", "train.log"):
        assert (digits_run / name).is_file(), name
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["dev"]["examples"] == 180  # 10% of 1,797 held out
    assert metrics["dev"]["accuracy"] > 0.6 and 0 < metrics["dev"]["macro_f1"] <= 1
    assert len(metrics["dev"]["confusion_matrix"]) == 10
    report = (digits_run / "report.md").read_text()
    assert "8 steps of 8 features" in report and "confusion_matrix.png" in report


def test_evaluate_and_predict_from_the_run_folder(digits_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(digits_run), "--data", "builtin:digits", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["examples"] == 1797 and scores["classes"] == [str(d) for d in range(10)]
    plain = runner.invoke(app, ["evaluate", str(digits_run), "--data", "builtin:digits"])
    assert plain.exit_code == 0 and "support" in plain.output  # the per-class table, one row per digit
    assert sum(int(line.split()[-1]) for line in plain.output.splitlines()
               if line.split() and line.split()[0] in scores["classes"] and len(line.split()) == 5) == 1797
    images, labels = load_digits()
    np.savez(tmp_path / "few.npz", x=images[:5], y=labels[:5])
    from PIL import Image

    png = tmp_path / "digit.png"
    Image.fromarray(np.round(images[7] * 255).astype(np.uint8)).save(png)
    result = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "few.npz"), str(png), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 6 and rows[0]["input"].endswith("few.npz[0]")
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    trained = TrainedImageClassifier.load(digits_run)
    direct = trained.predict([images[7]])[0]
    assert rows[-1]["label"] == direct["label"]  # the PNG reads back as the same digit
    assert max(abs(rows[-1]["probabilities"][k] - direct["probabilities"][k]) for k in direct["probabilities"]) < 0.05
    bad = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "missing.png")])
    assert bad.exit_code == 2 and "input not found" in bad.output


def test_diagnose_a_trained_run(digits_run, tmp_path):
    result = runner.invoke(app, ["diagnose", str(digits_run), "--data", "builtin:digits", "--samples", "16",
                                 "--out", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)[0]
    assert summary["steps"] == 8 and summary["grad_norm_last"] > 0
    bad = runner.invoke(app, ["diagnose", str(digits_run)])
    assert bad.exit_code == 2 and "--data" in bad.output


def test_permuted_pixels_are_saved_and_reused(tmp_path):
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                                 "--name", "perm", "--set", "data.sequence=permuted", "--set", "data.permutation_seed=7",
                                 "--set", "train.epochs=1", "--set", "model.hidden_size=8",
                                 "--set", "data.max_train_examples=200", "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "perm" / "permutation.json").read_text())
    assert saved["order"] == PixelPermutation(64, 7).order.tolist()
    trained = TrainedImageClassifier.load(tmp_path / "perm")
    assert trained.prep.steps == 64 and trained.prep.input_size == 1
    bad = runner.invoke(app, ["evaluate", str(tmp_path / "perm"), "--data", "builtin:digits",
                              "--set", "data.permutation_seed=8"])
    assert bad.exit_code == 2 and "cannot change after training" in bad.output


def test_sequence_modes():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([0, 1])
    for mode, shape in (("rows", (2, 3, 4)), ("pixels", (2, 12, 1)), ("permuted", (2, 12, 1))):
        prep = Preprocessor.fit(images, labels, DataConfig(sequence=mode, standardize=False))
        seq = prep.sequences(images)
        assert seq.shape == shape and (prep.steps, prep.input_size) == shape[1:]
        assert float(seq.max()) == 1.0  # scaled by the training maximum
    rows = Preprocessor.fit(images, labels, DataConfig(sequence="rows", standardize=False)).sequences(images)
    pixels = Preprocessor.fit(images, labels, DataConfig(sequence="pixels", standardize=False)).sequences(images)
    assert torch.equal(rows.reshape(2, 12), pixels.reshape(2, 12))
    with pytest.raises(ConfigError, match="trained on 3x4"):
        prep.sequences(np.zeros((1, 4, 4), dtype=np.uint8))


def test_mnist_style_folders_and_files(tmp_path):
    rng = np.random.default_rng(0)
    train_x, train_y = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8), rng.integers(0, 10, 6).astype(np.uint8)
    test_x, test_y = rng.integers(0, 256, (3, 5, 5), dtype=np.uint8), rng.integers(0, 10, 3).astype(np.uint8)
    _write_idx(tmp_path / "train-images.idx3-ubyte.gz", train_x)  # the shared copy's naming
    _write_idx(tmp_path / "train-labels.idx1-ubyte.gz", train_y)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_x)  # the original naming
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    x, y = read_images(tmp_path, DataConfig())
    assert np.array_equal(x, train_x) and np.array_equal(y, train_y)
    x, y = read_images(tmp_path, DataConfig(split="test"))
    assert np.array_equal(x, test_x) and np.array_equal(y, test_y)
    x, y = read_images(tmp_path / "t10k-images-idx3-ubyte.gz", DataConfig())  # labels found beside
    assert np.array_equal(y, test_y)
    pair = f"{tmp_path / 'train-images.idx3-ubyte.gz'},{tmp_path / 't10k-labels-idx1-ubyte.gz'}"
    with pytest.raises(ValueError, match="6 images but 3 labels"):
        read_images(pair, DataConfig())
    with pytest.raises(FileNotFoundError, match="needs a folder holding MNIST idx files"):
        read_images(tmp_path / "t10k-images-idx3-ubyte.gz", DataConfig(format="mnist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no MNIST file named train"):
        read_images(tmp_path / "empty", DataConfig())


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.cell: 'transformer' is not valid; choose one of .*gru"):
        load_config(Config, overrides=["model.cell=transformer"])
    with pytest.raises(ConfigError, match="data.sequence"):
        load_config(Config, overrides=["data.sequence=columns"])
    (tmp_path / "pictures.zip").write_bytes(b"PK")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "pictures.zip"),
                                 "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "cannot tell the image format" in result.output
    missing = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "nonexist") + "/",
                                  "--out", str(tmp_path), "--quiet"])
    assert missing.exit_code == 2 and "data not found" in missing.output and "nonexist" in missing.output


@pytest.mark.data
def test_real_mnist_files_read(shared_data):
    x, y = read_images(shared_data / "mnist", DataConfig())
    assert x.shape == (60000, 28, 28) and y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    x, y = read_images(shared_data / "mnist", DataConfig(split="test"))
    assert x.shape == (10000, 28, 28)


@pytest.mark.data
@pytest.mark.slow
def test_row_by_row_mnist_learns_quickly(shared_data, tmp_path):
    mnist = shared_data / "mnist"
    result = runner.invoke(app, ["train", "image-classification", "--train", str(mnist), "--out", str(tmp_path),
                                 "--name", "m", "--set", "data.max_train_examples=3000",
                                 "--set", "model.hidden_size=64", "--set", "train.learning_rate=0.005",
                                 "--set", "train.epochs=3", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "m"), "--data", str(mnist), "--set", "data.split=test",
                                 "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 10000 and metrics["accuracy"] > 0.6


def test_time_budget_and_lr_decay_options(tmp_path):
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                                 "--name", "budget", *FAST, "--set", "train.epochs=30",
                                 "--set", "train.max_minutes=0.000001", "--set", "train.lr_decay=0.5",
                                 "--set", "train.lr_decay_patience=2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "budget" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    assert "time budget" in (tmp_path / "budget" / "train.log").read_text()
    for bad, key in (("train.max_minutes=0", "train.max_minutes"), ("train.lr_decay=1.5", "train.lr_decay"),
                     ("train.lr_decay_patience=0", "train.lr_decay_patience")):
        with pytest.raises(ConfigError, match=key):
            load_config(Config, overrides=[bad]).validate()


def test_trained_classifier_scores_on_the_device_it_was_given(digits_run):
    images, _ = load_digits()
    cpu = TrainedImageClassifier.load(digits_run, device="cpu")
    assert cpu.device == torch.device("cpu")
    scores = cpu.scores(images[:5])
    assert scores.shape == (5, 10) and scores.device == torch.device("cpu")
    if torch.cuda.is_available():  # scores come back on the CPU, equal to the CPU's up to kernel rounding
        gpu = TrainedImageClassifier.load(digits_run, device="cuda")
        assert torch.allclose(gpu.scores(images[:5]), scores, atol=1e-5)


def test_train_takes_data_as_another_name_for_train(tmp_path):
    result = runner.invoke(app, ["train", "image-classification", "--data", "builtin:digits", "--out", str(tmp_path),
                                 "--name", "alias", "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "alias" / "model.safetensors").is_file()


def test_npz_with_other_array_names_predicts_with_set_and_empty_data_is_refused(digits_run, tmp_path):
    images, labels = load_digits()
    np.savez(tmp_path / "other.npz", images=images[:3])
    result = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "other.npz")])
    assert result.exit_code == 2
    assert "no array 'x'; arrays are ['images']; fix: add --set data.images_key=<name> with one of those" in result.output
    result = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "other.npz"), "--set",
                                 "data.images_key=images"])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 3
    result = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "other.npz"), "--set", "data.sequence=pixels"])
    assert result.exit_code == 2 and "cannot change after training" in result.output
    np.savez(tmp_path / "empty.npz", x=images[:0], y=labels[:0])
    result = runner.invoke(app, ["evaluate", str(digits_run), "--data", str(tmp_path / "empty.npz")])
    assert result.exit_code == 2 and "no labelled images read" in result.output


def test_bad_train_and_permutation_values_are_one_line_errors_naming_the_key():
    for bad, key in (("data.permutation_seed=-1", "data.permutation_seed: must be >= 0"),
                     ("train.clip_norm=-1", "train.clip_norm: must be > 0"),  # a negative norm flips the gradients
                     ("train.clip_norm=0", "train.clip_norm: must be > 0"),
                     ("train.weight_decay=-0.1", "train.weight_decay: must be >= 0"),
                     ("train.patience=0", "train.patience: must be >= 1")):
        with pytest.raises(ConfigError, match=key):
            load_config(Config, overrides=[bad]).validate()


def test_labels_are_whole_class_indices_or_class_names(tmp_path):
    images, labels = load_digits()
    np.savez(tmp_path / "names.npz", x=images[:20], y=np.array(["cat", "dog"] * 10))
    np.savez(tmp_path / "halves.npz", x=images[:20], y=labels[:20] + 0.5)
    np.savez(tmp_path / "floats.npz", x=images[:20], y=labels[:20].astype(np.float64))
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "halves.npz"),
                                 "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "labels must be whole-number class indices or class names (strings), got 0.5" in result.output
    _, y = read_images(tmp_path / "floats.npz", DataConfig())  # 0.0, 1.0, ... are class indices
    assert y is not None and y.dtype == np.int64 and np.array_equal(y, labels[:20])
    _, y = read_images(tmp_path / "names.npz", DataConfig())  # strings are class names
    assert y is not None and y.tolist() == ["cat", "dog"] * 10
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "names.npz"),
                                 "--out", str(tmp_path), "--name", "names", "--set", "train.epochs=1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert TrainedImageClassifier.load(tmp_path / "names").prep.classes == ["cat", "dog"]


def test_colour_images_in_every_sequence_mode():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 3, 2, 3), dtype=np.uint8)  # [N, H, W, C]
    labels = np.array([0, 1, 0, 1])
    for mode, shape in (("rows", (4, 3, 6)), ("pixels", (4, 6, 3)), ("permuted", (4, 6, 3))):
        prep = Preprocessor.fit(images, labels, DataConfig(sequence=mode, standardize=False))
        seq = prep.sequences(images)
        assert seq.shape == shape and (prep.steps, prep.input_size) == shape[1:] and prep.channels == 3
        pixels = torch.tensor(images, dtype=torch.float32).reshape(4, 6, 3) * prep.scale
        if mode == "pixels":  # step t holds the C values of pixel t
            assert torch.allclose(seq, pixels)
        if mode == "permuted":  # the same pixels, each with its C values, in the saved order
            assert torch.allclose(seq, pixels[:, torch.as_tensor(prep.permutation.order)])
    with pytest.raises(ConfigError, match="images are 3x2 but the model was trained on 3x2x3"):
        prep.sequences(images[..., 0])
    assert Preprocessor.fit(images[..., :1], labels, DataConfig()).channels == 1  # [N, H, W, 1] is grey


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colour")
    images, labels = load_digits()
    tint = np.array([1.0, 0.5, 0.25], dtype=np.float32)
    np.savez(root / "colour.npz", x=np.round(images[:400, :, :, None] * tint * 255).astype(np.uint8), y=labels[:400])
    result = runner.invoke(app, ["train", "image-classification", "--train", str(root / "colour.npz"), "--out",
                                 str(root), "--name", "run", "--set", "train.epochs=1", "--set", "model.hidden_size=8",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_colour_run_trains_evaluates_and_predicts_pictures(colour_run, tmp_path):
    from PIL import Image

    trained = TrainedImageClassifier.load(colour_run)
    assert trained.prep.channels == 3 and trained.prep.input_size == 24  # rows: 8 pixels x 3 channels
    assert "images of 8x8x3" in (colour_run / "train.log").read_text()
    result = runner.invoke(app, ["evaluate", str(colour_run), "--data", str(colour_run.parent / "colour.npz"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    images = np.load(colour_run.parent / "colour.npz")["x"]
    Image.fromarray(images[3]).save(tmp_path / "rgb.png")
    Image.fromarray(images[3]).resize((16, 16)).convert("L").save(tmp_path / "grey16.png")  # converted and resized
    np.save(tmp_path / "one.npy", images[3])
    result = runner.invoke(app, ["predict", str(colour_run), str(tmp_path / "rgb.png"), str(tmp_path / "grey16.png"),
                                 str(tmp_path / "one.npy"), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["input"] for r in rows] == [str(tmp_path / n) for n in ("rgb.png", "grey16.png", "one.npy")]
    direct = trained.scores(images[3:4])[0]
    for row in (rows[0], rows[2]):  # the lossless PNG and the array read back as the same image
        assert max(abs(row["probabilities"][str(c)] - float(p)) for c, p in zip(trained.prep.classes, direct)) < 1e-5
    batch = trained.scores(images[:6])  # one image at a time gives the batch's scores (eval mode)
    assert torch.allclose(torch.cat([trained.scores(images[i:i + 1]) for i in range(6)]), batch, atol=1e-6)


def test_predict_refuses_arrays_that_are_not_training_images_in_one_line(digits_run, tmp_path):
    images, _ = load_digits()
    np.save(tmp_path / "flat.npy", images[0].reshape(64))
    np.save(tmp_path / "rgb.npy", np.repeat(images[:2, ..., None], 3, -1))
    result = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "flat.npy")])
    assert result.exit_code == 2 and "flat.npy: an array of shape (64,) is not an image" in result.output
    result = runner.invoke(app, ["predict", str(digits_run), str(tmp_path / "rgb.npy")])
    assert result.exit_code == 2
    assert "rgb.npy: images are 8x8x3 but the model was trained on 8x8 (grey)" in result.output
    trained = TrainedImageClassifier.load(digits_run)
    with pytest.raises(ConfigError, match=r"array: image is 6x6 but the model was trained on 8x8 \(grey\); resize"):
        trained.predict([images[0][:6, :6]])


def test_dev_must_not_be_the_training_data_and_must_hold_training_classes(tmp_path):
    same = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--dev", "builtin:digits",
                               "--out", str(tmp_path), "--quiet"])
    assert same.exit_code == 2 and "is the training data itself" in same.output
    few = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                              "--set", "data.max_train_examples=5", "--quiet"])
    assert few.exit_code == 2
    assert "never occur in the 5 training images" in few.output and "raise data.max_train_examples" in few.output


def test_training_or_selecting_on_mnist_test_files_is_noted(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 2)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path), "--dev",
                                 str(tmp_path / "t10k-images-idx3-ubyte.gz"), "--out", str(tmp_path), "--name", "r",
                                 "--set", "train.epochs=1", "--set", "model.hidden_size=4", "--quiet"])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "r" / "train.log").read_text()
    assert "note: the dev data are MNIST test (t10k) files; keep them for the final evaluate only" in log
    assert "the training data are MNIST test" not in log
