"""Image classification review: bad pixel values, class folders read in the training size and colour
for evaluate and --dev, and errors that name the dev hold-out or the picture layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.datasets import load_digits
from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.image_classification import DataConfig, TrainedImageClassifier, read_images

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

runner = CliRunner()
TINY = ["--set", "train.epochs=1", "--set", "model.hidden_size=8", "--quiet"]


def _folders(root: Path, counts: dict[str, int], size: int = 8, colour: bool = False) -> Path:
    """Class folders of digit pictures (class ``cK`` holds digit K), grey or with the digit in one colour band."""
    images, labels = load_digits()
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(labels == k)[:n]):
            grey = np.round(images[i] * 255).astype(np.uint8)
            picture = np.zeros((8, 8, 3), np.uint8) if colour else grey
            if colour:
                picture[..., k % 3] = grey
            Image.fromarray(picture).resize((size, size)).save(root / name / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review")
    data = _folders(root / "grey", {"c0": 8, "c1": 8, "c2": 8})
    result = runner.invoke(app, ["train", "image-classification", "--train", str(data), "--out", str(root),
                                 "--name", "run", *TINY])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_nan_or_infinite_pixels_are_a_one_line_error(grey_run, tmp_path):
    images, labels = load_digits()
    x = images[:20].copy()
    x[4, 2, 3], x[7, 0, 0] = np.nan, np.inf
    np.savez(tmp_path / "nan.npz", x=x, y=labels[:20])
    with pytest.raises(ConfigError, match=r"2 image\(s\) hold NaN or infinite pixel values \(first: image 4\)"):
        read_images(tmp_path / "nan.npz", DataConfig())
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "nan.npz"),
                                 "--out", str(tmp_path), *TINY])
    assert result.exit_code != 0 and "NaN or infinite" in result.output
    assert "Traceback" not in result.output and "FloatingPointError" not in result.output
    clf = TrainedImageClassifier.load(grey_run)
    with pytest.raises(ConfigError, match="NaN or infinite"):  # was: a prediction with nan probabilities
        clf.predict([np.full((8, 8), np.nan, dtype=np.float32)])
    with pytest.raises(ConfigError, match="NaN or infinite"):  # was: scored silently as the first class
        clf.evaluate_arrays(np.full((2, 8, 8), np.nan, dtype=np.float32), np.array(["c0", "c1"]))


def test_non_numeric_pixels_are_a_one_line_error(tmp_path):
    images, labels = load_digits()
    np.savez(tmp_path / "text.npz", x=images[:10].astype(str), y=labels[:10])
    with pytest.raises(ConfigError, match="pixel values must be real numbers"):
        read_images(tmp_path / "text.npz", DataConfig())
    np.savez(tmp_path / "complex.npz", x=images[:10].astype(complex), y=labels[:10])
    with pytest.raises(ConfigError, match="pixel values must be real numbers"):
        read_images(tmp_path / "complex.npz", DataConfig())


def test_evaluate_reads_class_folders_in_the_training_size_and_colour(grey_run, tmp_path):
    """Documented: class folders given to evaluate are converted as predict converts picture files
    (was: 'images are 16x16x3 but the model was trained on 8x8')."""
    other = _folders(tmp_path / "rgb16", {"c0": 4, "c1": 4, "c2": 4}, size=16, colour=True)
    clf = TrainedImageClassifier.load(grey_run)
    metrics = clf.evaluate(other)
    files = sorted(other.rglob("*.png"))
    predicted = clf.predict(files)  # independent reference: picture files one by one
    truth = [f.parent.name for f in files]
    accuracy = np.mean([row["label"] == t for row, t in zip(predicted, truth)])
    assert metrics["examples"] == 12 and metrics["accuracy"] == pytest.approx(accuracy)
    classes = metrics["classes"]
    confusion = np.zeros((3, 3), int)
    for row, t in zip(predicted, truth):
        confusion[classes.index(t), classes.index(row["label"])] += 1
    assert metrics["confusion_matrix"] == confusion.tolist()
    result = runner.invoke(app, ["evaluate", str(grey_run), "--data", str(other), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] == pytest.approx(accuracy)


def test_dev_class_folders_of_another_size_and_colour_are_converted(tmp_path):
    train = _folders(tmp_path / "train", {"c0": 6, "c1": 6})
    dev = _folders(tmp_path / "dev", {"c0": 3, "c1": 3}, size=12, colour=True)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(tmp_path), "--name", "run", *TINY])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dev"]["examples"] == 6
    assert json.loads((tmp_path / "run" / "preprocessing.json").read_text())["image_shape"] == [8, 8]


def test_a_class_of_one_picture_stays_in_training(tmp_path):
    """The dev hold-out is split by class and keeps one example of every class in training: the one
    'b' picture went to dev, and training stopped with "dev label(s) b never occur"."""
    data = _folders(tmp_path / "data", {"a": 10, "b": 1})
    result = runner.invoke(app, ["train", "image-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--name", "run", *TINY])
    assert result.exit_code == 0, result.output
    support = json.loads((tmp_path / "run" / "metrics.json").read_text())["dev"]["per_class"]["support"]
    assert support == [1, 0]  # classes a, b: dev holds one 'a' picture, no 'b'


def test_too_few_images_names_the_dev_hold_out(tmp_path):
    images, labels = load_digits()
    np.savez(tmp_path / "one.npz", x=images[:1], y=labels[:1])
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "one.npz"),
                                 "--out", str(tmp_path), *TINY])
    assert result.exit_code != 0 and "found 0 (after holding out 1 for dev" in result.output


def test_a_folder_without_pictures_names_class_folders_too(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders of pictures"):
        read_images(tmp_path / "data", DataConfig())


def test_pictures_too_large_for_memory_are_a_one_line_error(tmp_path, monkeypatch):
    import rnnkit.data.images as images_module

    data = _folders(tmp_path / "data", {"c0": 2, "c1": 2})

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(images_module, "read_image_folder", no_memory)
    with pytest.raises(ConfigError, match=r"not enough memory .* data.image_shape=\[100000, 100000\]"):
        read_images(data, DataConfig(image_shape=[100000, 100000]))


def test_predict_on_inputs_holding_no_images_says_so(tmp_path: Path) -> None:
    """An .npz with no rows printed nothing and exited 0; it still exits 0 (nothing failed) but says so."""
    result = runner.invoke(app, ["train", "image-classification", "--train", "builtin:digits", "--out", str(tmp_path),
                                 "--name", "r", "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--quiet"])
    assert result.exit_code == 0, result.output
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 8, 8), dtype=np.float32))
    result = runner.invoke(app, ["predict", str(tmp_path / "r"), str(empty)])
    assert result.exit_code == 0 and "note: nothing to predict: the inputs hold no items" in result.output


def test_max_train_examples_samples_every_class_in_proportion(tmp_path):
    from rnnkit.tasks.image_classification import _stratified_sample

    labels = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10)  # class folders arrive class by class
    chosen = _stratified_sample(labels, 20, seed=0)
    assert len(chosen) == 20 and np.all(np.diff(chosen) > 0)  # original order, no repeats
    assert {k: int((labels[chosen] == k).sum()) for k in "abc"} == {"a": 12, "b": 6, "c": 2}
    assert np.array_equal(chosen, _stratified_sample(labels, 20, seed=0))
    assert not np.array_equal(chosen, _stratified_sample(labels, 20, seed=1))
    assert np.array_equal(_stratified_sample(labels, 100, seed=0), np.arange(100))
    # through the command: with --dev given, training images stay in folder order; 6 of 3 classes keeps all three
    train = _folders(tmp_path / "train", {"c0": 8, "c1": 8, "c2": 8})
    dev = _folders(tmp_path / "dev", {"c0": 2, "c1": 2, "c2": 2})
    result = runner.invoke(app, ["train", "image-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(tmp_path), "--name", "run", "--set", "data.max_train_examples=6", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "preprocessing.json").read_text())["classes"] == ["c0", "c1", "c2"]
