"""Image classification on folders of picture files, one subfolder per class (torchvision's
ImageFolder layout): the reader, training, evaluate and predict, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import DataError, read_image_folder, read_picture
from rnnkit.datasets import load_digits
from rnnkit.tasks.image_classification import DataConfig, TrainedImageClassifier, read_images

Image = pytest.importorskip("PIL.Image")
runner = CliRunner()
FAST = ["--set", "train.epochs=3", "--set", "model.hidden_size=32", "--set", "train.learning_rate=0.01",
        "--set", "train.batch_size=64", "--quiet"]


def _digits_as_pictures(root: Path, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits ``start:stop`` saved as 8-bit grey PNGs under ``root/<digit>/``; returns them in the
    reader's order (class, then file name) as uint8 images and int labels."""
    images, labels = load_digits()
    pixels = np.round(images[start:stop] * 16).astype(np.uint8)  # the original 0-16 values
    for i, (picture, label) in enumerate(zip(pixels, labels[start:stop])):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture, "L").save(folder / f"{start + i:05d}.png")
    order = np.lexsort((np.arange(len(pixels)), labels[start:stop]))  # by class, then by index (= file name)
    return pixels[order], labels[start:stop][order].astype(np.int64)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("pictures")
    train = _digits_as_pictures(root / "train", 0, 600)
    test = _digits_as_pictures(root / "test", 1500, 1797)
    (root / "train" / "1" / "notes.txt").write_text("not a picture")  # ignored
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "1" / ".hidden.png")  # ignored
    return {"root": root, "train": train, "test": test}


def test_reader_returns_every_picture_with_its_folder_as_label(folders):
    root = folders["root"]
    images, labels = read_image_folder(root / "train")
    expected_images, expected_labels = folders["train"]
    assert images.dtype == np.uint8 and images.shape == (600, 8, 8)
    np.testing.assert_array_equal(images, expected_images)
    assert labels.tolist() == [str(v) for v in expected_labels]
    x, y = read_images(root / "train", DataConfig())  # format auto: a folder of class folders
    np.testing.assert_array_equal(x, expected_images)


def test_classes_sort_numbers_as_numbers_and_names_as_text(tmp_path):
    for name in ("10", "2", "dog", "cat"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((3, 3), len(name), np.uint8)).save(tmp_path / name / "a.png")
    images, labels = read_image_folder(tmp_path)
    assert labels.tolist() == ["2", "10", "cat", "dog"]
    assert images[:, 0, 0].tolist() == [1, 2, 3, 3]


def test_colour_is_detected_forced_and_sizes_resized(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((4, 6), 100, np.uint8)).save(tmp_path / "a" / "grey.png")
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "b" / "red.png")
    images, _ = read_image_folder(tmp_path)  # one colour picture: all read as RGB
    assert images.shape == (2, 4, 6, 3)
    assert images[0].tolist() == np.full((4, 6, 3), 100).tolist() and images[1, 0, 0].tolist() == [255, 0, 0]
    grey, _ = read_image_folder(tmp_path, channels=1)  # forced grey: ITU-R 601-2 luma of pure red is 76
    assert grey.shape == (2, 4, 6) and int(grey[1, 0, 0]) == 76
    Image.fromarray(np.full((8, 12), 50, np.uint8)).save(tmp_path / "a" / "big.png")
    with pytest.raises(DataError, match=r"pictures differ in size: .*is 8x12, .*is 4x6.*image_shape=\(H, W\)"):
        read_image_folder(tmp_path)
    resized, _ = read_image_folder(tmp_path, image_shape=(2, 3))
    assert resized.shape == (3, 2, 3, 3) and resized[0].tolist() == np.full((2, 3, 3), 50).tolist()
    assert read_picture(tmp_path / "b" / "red.png", (2, 2), 4).shape == (2, 2, 4)


def test_bad_folders_are_one_line_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no picture files .* in its subfolders; fix: lay the pictures out"):
        read_image_folder(tmp_path / "empty")
    (tmp_path / "loose").mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "loose" / "x.png")
    with pytest.raises(DataError, match=r"1 picture\(s\) directly in the folder \(e.g. x.png\) have no class"):
        read_image_folder(tmp_path / "loose")
    (tmp_path / "broken" / "cat").mkdir(parents=True)
    (tmp_path / "broken" / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad.png: cannot read the picture .*; fix: remove or replace the file"):
        read_image_folder(tmp_path / "broken")
    with pytest.raises(DataError, match="not a folder"):
        read_image_folder(tmp_path / "absent")


def test_command_line_names_the_setting_for_pictures_of_several_sizes(tmp_path):
    for name, size in (("a", (4, 4)), ("b", (5, 5))):
        (tmp_path / "pics" / name).mkdir(parents=True)
        Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / "pics" / name / "1.png")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "pics"), "--out",
                                 str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "pictures differ in size" in result.output
    assert "add --set data.image_shape=[H,W] to resize them all" in result.output
    flat = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "pics" / "a"), "--out",
                               str(tmp_path), "--quiet"])
    assert flat.exit_code == 2 and "have no class; fix: put each picture in a subfolder" in flat.output
    mnist = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "pics"), "--out",
                                str(tmp_path), "--set", "data.format=mnist", "--quiet"])
    assert mnist.exit_code == 2 and "set data.format=folders" in mnist.output


def test_pictures_train_exactly_as_the_same_images_in_an_npz(folders, tmp_path):
    """The folder reader feeds training the very arrays an .npz of the same images would (same
    order, same classes): the two runs end with identical dev metrics."""
    images, labels = folders["train"]
    np.savez(tmp_path / "same.npz", x=images, y=labels)
    metrics = []
    for name, source in (("pictures", folders["root"] / "train"), ("arrays", tmp_path / "same.npz")):
        result = runner.invoke(app, ["train", "image-classification", "--train", str(source), "--out",
                                     str(tmp_path), "--name", name, *FAST])
        assert result.exit_code == 0, result.output
        metrics.append(json.loads((tmp_path / name / "metrics.json").read_text())["dev"])
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"] and metrics[0]["per_class"] == metrics[1]["per_class"]


@pytest.fixture(scope="module")
def picture_run(folders, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("picture_run")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(folders["root"] / "train"),
                                 "--out", str(out), "--name", "run", *FAST])
    assert result.exit_code == 0, result.output
    return out / "run"


def test_evaluate_and_predict_on_folders_agree(folders, picture_run):
    test_root = folders["root"] / "test"
    result = runner.invoke(app, ["evaluate", str(picture_run), "--data", str(test_root), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 297 and metrics["classes"] == [str(d) for d in range(10)]
    result = runner.invoke(app, ["predict", str(picture_run), str(test_root), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 297
    # pictures given to predict are read on the training scale (not rescaled as if 0-255 meant 0..max)
    correct = sum(row["label"] == Path(row["input"]).parent.name for row in rows)
    assert correct == round(metrics["accuracy"] * len(rows))
    trained = TrainedImageClassifier.load(picture_run)
    one = trained.predict([test_root / "7"])
    assert len(one) == len(list((test_root / "7").glob("*.png")))


def test_class_names_label_predictions_and_unknown_classes_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    for name, level in (("cat", 40), ("dog", 200)):
        for i in range(12):
            folder = tmp_path / "pets" / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(level - 30, level + 30, (6, 6)).astype(np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "runs" / "pets"
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "pets"), "--out",
                                 str(run.parent), "--name", "pets", "--set", "train.epochs=15",
                                 "--set", "model.hidden_size=8", "--set", "train.learning_rate=0.02", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "pets" / "dog" / "0.png"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert set(row["probabilities"]) == {"cat", "dog"} and row["label"] == "dog"
    (tmp_path / "more" / "bird").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "more" / "bird" / "0.png")
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "more")])
    assert result.exit_code == 2 and "label bird is not in the training labels (cat, dog)" in result.output


@pytest.mark.data
def test_mnist_pictures_end_to_end(shared_data, tmp_path):
    """Real MNIST digits written as PNG class folders: train row by row, evaluate on held-out pictures."""
    from rnnkit.data import read_idx

    mnist = shared_data / "mnist"
    for split, prefix, count in (("train", "train", 3000), ("test", "t10k", 500)):
        images = read_idx(next(mnist.glob(f"{prefix}-images*")))[:count]
        labels = read_idx(next(mnist.glob(f"{prefix}-labels*")))[:count]
        for i, (picture, label) in enumerate(zip(images, labels)):
            folder = tmp_path / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(folder / f"{i}.png")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "train"), "--out",
                                 str(tmp_path), "--name", "m", "--set", "model.hidden_size=64",
                                 "--set", "train.learning_rate=0.005", "--set", "train.epochs=3", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "m"), "--data", str(tmp_path / "test"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 500 and metrics["accuracy"] > 0.7


def test_sixteen_bit_pictures_are_scaled_not_clipped(tmp_path):
    wide = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(wide).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    np.testing.assert_array_equal(read_picture(tmp_path / "deep.png"), np.round(wide / 257).astype(np.uint8))


def test_photos_are_read_as_their_exif_orientation_shows_them(tmp_path):
    (tmp_path / "a").mkdir()
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[:, :3] = 255  # left half white as stored; orientation 6: turn clockwise to show it
    picture = Image.fromarray(stored)
    exif = picture.getexif()
    exif[0x0112] = 6
    picture.save(tmp_path / "a" / "photo.jpg", exif=exif, quality=100)
    shown = read_picture(tmp_path / "a" / "photo.jpg", channels=3)
    assert shown.shape == (6, 4, 3) and shown[:3].min() > 200 and shown[3:].max() < 50  # white on top
    Image.fromarray(np.zeros((6, 4), np.uint8)).save(tmp_path / "a" / "upright.png")
    images, _ = read_image_folder(tmp_path, channels=1)  # one size as shown: no resize needed
    assert images.shape == (2, 6, 4)


def test_a_model_trained_on_arrays_reads_class_folder_pictures_on_its_scale(folders, tmp_path):
    """Pictures are 0-255; arrays may be 0-16 (the digits): evaluate, diagnose and --dev on class
    folders map the pictures to the arrays' range, as predict on picture files does."""
    images, labels = folders["train"]  # 0-16 values
    test_images, test_labels = folders["test"]
    np.savez(tmp_path / "train.npz", x=images, y=labels)
    np.savez(tmp_path / "test.npz", x=test_images, y=test_labels)
    for i, (picture, label) in enumerate(zip(test_images, test_labels)):  # the same test images, full range
        (tmp_path / "pictures" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(picture * 255.0 / 16).astype(np.uint8)).save(tmp_path / "pictures" / str(label) /
                                                                            f"{i:04d}.png")
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "train.npz"), "--dev",
                                 str(tmp_path / "pictures"), "--out", str(tmp_path), "--name", "run", *FAST])
    assert result.exit_code == 0, result.output
    dev = json.loads((tmp_path / "run" / "metrics.json").read_text())["dev"]["accuracy"]
    scores = []
    for data in ("test.npz", "pictures"):
        result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / data), "--json"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(result.output)["accuracy"])
    assert scores[0] > 0.5 and abs(scores[0] - scores[1]) < 0.03 and abs(dev - scores[1]) < 0.03
