"""Text classification end to end through the CLI and the Python API, and its error paths."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.text_classification import (
    Config,
    TextClassifier,
    TrainedTextClassifier,
    classification_metrics,
)

runner = CliRunner()
POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant", "delightful"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious"]
FILLER = ["the", "film", "was", "a", "story", "and", "acting", "plot", "really", "quite", "this", "movie"]
FAST = ["--set", "train.epochs=3", "--set", "model.hidden_size=16", "--set", "model.embedding_dim=16",
        "--set", "data.min_freq=1", "--set", "train.learning_rate=0.01", "--quiet"]


def _review(rng: random.Random, label: str) -> str:
    words = rng.sample(FILLER, 5) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
    rng.shuffle(words)
    return " ".join(words)


def _write_csv(path: Path, n: int, seed: int, labels: tuple[str, ...] = ("pos", "neg")) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for i in range(n):
            label = labels[i % len(labels)]
            writer.writerow([_review(rng, label), label])
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("textclf")
    train = _write_csv(root / "train.csv", 240, 1)
    dev = _write_csv(root / "dev.csv", 60, 2)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(root / "runs"), "--name", "run", "--set", "data.text_column=review",
                                 "--set", "data.label_column=sentiment", "--set", "model.pooling=attention", *FAST])
    assert result.exit_code == 0, result.output
    return root / "runs" / "run", dev


def test_train_writes_a_complete_run_folder(trained_run):
    run, _ = trained_run
    for name in ("config.yaml", "model.json", "model.safetensors", "text_encoder.json", "labels.json",
                 "metrics.json", "report.md", "learning_curves.png", "confusion_matrix.png", "train.log", "history.csv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] > 0.9  # the fixture's sentiment words are unambiguous
    assert "## Dev metrics" in (run / "report.md").read_text()


def test_evaluate_and_predict_from_the_run_folder_alone(trained_run):
    run, dev = trained_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 60 and metrics["accuracy"] > 0.9
    result = runner.invoke(app, ["predict", str(run), "a wonderful and brilliant film", "--json"])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.output.splitlines()[0])
    assert prediction["label"] == "pos"
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5
    result = runner.invoke(app, ["predict", str(run), "dull and tedious", "--explain"])
    assert result.exit_code == 0 and "attention" in result.output



def test_evaluate_prints_the_per_class_table(trained_run):
    from rnnkit.cli import _metrics_text

    run, dev = trained_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines.index("class  precision  recall      f1  support")
    rows = [line.split() for line in lines[header + 1:]]
    assert [row[0] for row in rows] == ["neg", "pos"] and [row[-1] for row in rows] == ["30", "30"]
    assert any(line.startswith("examples  ") and line.split()[1] == "60" for line in lines)
    metrics = json.loads(runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--json"]).output)
    assert metrics["classes"] == ["neg", "pos"] and metrics["per_class"]["support"] == [30, 30]
    assert [float(v) for v in rows[1][1:4]] == [round(metrics["per_class"][k][1], 4) for k in ("precision", "recall",
                                                                                            "f1")]
    text = _metrics_text({"accuracy": 0.75, "classes": ["a", "longer"],
                          "per_class": {"precision": [1.0, 2 / 3], "recall": [0.5, 1.0], "f1": [2 / 3, 0.8],
                                        "support": [2, 2]}})
    assert text.splitlines()[2:] == ["class   precision  recall      f1  support",
                                     "a          1.0000  0.5000  0.6667        2",
                                     "longer     0.6667  1.0000  0.8000        2"]

def test_reload_gives_identical_predictions(trained_run):
    run, _ = trained_run
    texts = ["great acting", "boring plot and awful acting", "", "words never seen before zzz"]
    a = TrainedTextClassifier.load(run).predict(texts)
    b = TrainedTextClassifier.load(run).predict(texts)
    assert a == b
    assert a[2]["label"] in ("pos", "neg")  # an empty text still gets a prediction


def test_help_lists_every_command_and_tasks():
    result = runner.invoke(app, ["--help"])
    for command in ("train", "evaluate", "predict", "tasks", "demo"):
        assert command in result.output
    assert "text-classification" in runner.invoke(app, ["tasks"]).output
    printed = runner.invoke(app, ["train", "text-classification", "--print-config", "--set", "model.cell=gru"])
    assert "cell: gru" in printed.output and "model.pooling" in printed.output


@pytest.mark.parametrize("overrides,message", [
    (["model.cel=gru"], "unknown key model.cel; valid keys here"),
    (["model.pooling=sum"], "choose one of 'last', 'mean', 'max', 'attention'"),
    (["model.cell=transformer"], "model.cell: 'transformer' is not valid"),
    (["train.epochs=many"], "train.epochs: expected an integer"),
    (["model.dropout=1.5"], r"model.dropout: must be in \[0, 1\)"),
])
def test_bad_config_values_name_the_valid_choices(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, None, overrides)


def _train_error(tmp_path: Path, *args: str) -> str:
    result = runner.invoke(app, ["train", "text-classification", "--out", str(tmp_path / "runs"), *args, *FAST])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_error_missing_file(tmp_path):
    assert "not found" in _train_error(tmp_path, "--train", str(tmp_path / "nope.csv"))


def test_error_missing_column(tmp_path):
    train = _write_csv(tmp_path / "t.csv", 20, 0)
    message = _train_error(tmp_path, "--train", str(train), "--set", "data.text_column=text",
                           "--set", "data.label_column=sentiment")
    assert "text" in message and "review" in message  # names the missing column and the ones that exist


def test_error_label_seen_only_in_dev(tmp_path):
    train = _write_csv(tmp_path / "t.csv", 40, 0)
    dev = _write_csv(tmp_path / "d.csv", 9, 1, labels=("pos", "neg", "mixed"))
    message = _train_error(tmp_path, "--train", str(train), "--dev", str(dev), "--set", "data.text_column=review",
                           "--set", "data.label_column=sentiment")
    assert "'mixed' appears in dev data but not in training data" in message


def test_error_non_utf8_bytes_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"1 a fine film\n0 caf\xe9 was bad\n")
    message = _train_error(tmp_path, "--train", str(bad))
    assert "bad.txt" in message and "2" in message


def test_empty_text_line_names_file_and_line(tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("1 good\n1 \n0 bad film\n")
    message = _train_error(tmp_path, "--train", str(data))
    assert "lines.txt:2" in message


def test_empty_csv_texts_are_skipped_and_single_class_rejected(tmp_path):
    data = tmp_path / "one.csv"
    data.write_text("text,label\ngood,1\n,1\nfine film,1\nnice,1\n")
    assert "only one label" in _train_error(tmp_path, "--train", str(data), "--set", "data.dev_fraction=0.3")


def test_incomplete_and_corrupt_run_folders(trained_run, tmp_path):
    run, _ = trained_run
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in run.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a model")
    result = runner.invoke(app, ["predict", str(broken), "x"])
    assert result.exit_code == 2 and "corrupt" in result.output
    (broken / "model.safetensors").unlink()
    result = runner.invoke(app, ["predict", str(broken), "x"])
    assert result.exit_code == 2 and "incomplete: missing model.safetensors" in result.output


def test_model_pooling_options_and_metrics():
    for pooling in ("last", "mean", "max", "attention"):
        model = TextClassifier(50, 3, embedding_dim=8, hidden_size=6, pooling=pooling, cell="gru")
        logits = model(torch.randint(1, 50, (4, 7)), torch.tensor([7, 3, 1, 0]))
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(scores, targets, multi_label=False)
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert abs(m["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-6


def test_hierarchical_attention_network_and_multilabel(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "docs.jsonl"
    with path.open("w") as f:
        for i in range(80):
            labels = ["pos"] if i % 3 == 0 else (["neg"] if i % 3 == 1 else ["pos", "neg"])
            sentences = [_review(rng, lab) + "." for lab in labels] + ["the film was a story."]
            f.write(json.dumps({"text": " ".join(sentences), "label": "|".join(labels)}) + "\n")
    result = runner.invoke(app, ["train", "text-classification", "--train", str(path), "--out", str(tmp_path / "r"),
                                 "--name", "han", "--set", "model.architecture=han", "--set", "train.multi_label=true",
                                 "--set", "train.monitor=micro_f1", *FAST])
    assert result.exit_code == 0, result.output
    model = TrainedTextClassifier.load(tmp_path / "r" / "han")
    out = model.predict(["great and wonderful. the film was dull and awful."])
    assert set(out[0]["probabilities"]) == {"neg", "pos"}
    explained = model.explain("great film. awful plot.")
    assert explained["method"] == "sentence attention" and len(explained["weights"]) == 2


@pytest.mark.data
def test_sst2_end_to_end(shared_data, tmp_path):
    sst = shared_data / "sst2"
    result = runner.invoke(app, ["train", "text-classification", "--train", str(sst / "stsa.binary.train"),
                                 "--dev", str(sst / "stsa.binary.dev"), "--out", str(tmp_path), "--name", "sst",
                                 "--set", "train.epochs=2", "--set", "model.hidden_size=64", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "sst" / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] > 0.70


# -- review fixes: one-line errors, notes and file reading --------------------------------------
def _errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_an_empty_text_is_predicted_and_explained_with_a_note(trained_run):
    run, _ = trained_run  # attention pooling: explaining "" ran the encoder on 0 steps
    explained = TrainedTextClassifier.load(run).explain("")
    assert explained["tokens"] == [] and explained["top_tokens"] == [] and "no tokens" in explained["note"]
    assert explained["label"] in ("pos", "neg")
    result = runner.invoke(app, ["predict", str(run), "", "--explain"])
    assert result.exit_code == 0, result.output
    assert "note: input 1: the text has no tokens" in result.output and "(no tokens)" in result.output
    result = runner.invoke(app, ["predict", str(run), "great film", "   "])
    assert result.exit_code == 0 and "note: input 2:" in result.output and "note: input 1" not in result.output


def test_evaluate_on_a_header_only_file_is_a_one_line_error(trained_run, tmp_path):
    run, _ = trained_run
    header = tmp_path / "header.csv"
    header.write_text("review,sentiment\n")
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(header)])
    assert result.exit_code == 2 and _errors(result) == [
        f"error: {header}: no labelled texts read (an empty file, or a header only?); give a file with at least one "
        "text and its label"]


def test_out_that_is_a_file_and_an_existing_name_are_one_line_errors(trained_run, tmp_path):
    run, dev = trained_run
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for out in (not_a_folder, not_a_folder / "sub"):
        result = runner.invoke(app, ["train", "text-classification", "--train", str(dev), "--out", str(out), *FAST])
        assert result.exit_code == 2 and len(_errors(result)) == 1 and str(not_a_folder) in result.output
    before = sorted(p.name for p in run.iterdir())
    result = runner.invoke(app, ["train", "text-classification", "--train", str(dev), "--out", str(run.parent),
                                 "--name", run.name, *FAST])
    assert result.exit_code == 2
    assert _errors(result) == [f"error: run folder {run} already exists; choose another --name, or remove that "
                               "folder first"]
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_failed_train_leaves_no_run_folder_unless_it_wrote_weights(tmp_path, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n")
    out = tmp_path / "runs"
    for _ in range(2):
        result = runner.invoke(app, ["train", "text-classification", "--train", str(bad), "--out", str(out), *FAST])
        assert result.exit_code == 2
    assert list(out.iterdir()) == []  # the next run is text-classification-1 again
    import rnnkit.tasks.text_classification as task

    def interrupted(config, train_path, dev_path, run, log, progress=True):
        run.write_text("checkpoint-best.safetensors", "weights")
        raise KeyboardInterrupt

    monkeypatch.setattr(task, "train", interrupted)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(bad), "--out", str(out), *FAST])
    assert result.exit_code != 0
    assert (out / "text-classification-1" / "checkpoint-best.safetensors").is_file()  # kept: it holds weights


def _archive(tmp_path: Path) -> Path:
    import io
    import tarfile

    rng = random.Random(3)
    path = tmp_path / "reviews.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 40), ("test", 10)):
            for label in ("pos", "neg"):
                for i in range(n):
                    data = _review(rng, label).encode()
                    info = tarfile.TarInfo(f"corpus/{split}/{label}/{i}.txt")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def test_evaluate_on_an_archive_says_which_folder_it_read(tmp_path):
    archive = _archive(tmp_path)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(archive), "--out", str(tmp_path),
                                 "--name", "run", "--set", "data.member_prefix=corpus/train", *FAST])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(archive)])
    assert result.exit_code == 0, result.output
    assert f"{archive}, folder corpus/train" in result.output and "examples" in result.output
    assert "note: read corpus/train" in result.output and "--set data.member_prefix=corpus/test" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(archive),
                                 "--set", "data.member_prefix=corpus/test", "--json"])
    assert result.exit_code == 0 and "note:" not in result.output
    metrics = json.loads(result.output)
    assert metrics["examples"] == 20 and metrics["read"] == f"{archive}, folder corpus/test"


@pytest.mark.parametrize("name,content,line", [
    ("null.jsonl", '{"text": "fine", "label": null}', 3),
    ("nan.jsonl", '{"text": "fine", "label": NaN}', 3),
    ("nan.csv", "fine,NaN", 3),
    ("lower.csv", "fine,nan", 3),
    ("empty.csv", "fine,", 3),
])
def test_missing_labels_are_refused_not_made_classes(tmp_path, name, content, line):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        good = [json.dumps({"text": _review(random.Random(i), lab), "label": lab}) for i, lab in enumerate(["pos", "neg"])]
        path.write_text("\n".join([good[0], good[1], content] + good * 5) + "\n")
    else:
        path.write_text("\n".join(["text,label", "great film,pos", content] + ["dull plot,neg", "great,pos"] * 5) + "\n")
    message = _train_error(tmp_path, "--train", str(path))
    assert f"{path}:{line}: missing label" in message and "fill it in or remove the line" in message


@pytest.mark.parametrize("label", ["pos|nan", "pos|", "|neg", "pos| |neg"])
def test_multi_label_parts_that_are_empty_or_nan_are_missing_labels(tmp_path, label):
    path = tmp_path / "multi.csv"
    path.write_text("\n".join(["text,label", "great film,pos|neg", f"fine,{label}"]
                              + ["dull plot,neg", "great,pos"] * 5) + "\n")
    message = _train_error(tmp_path, "--train", str(path), "--set", "train.multi_label=true")
    assert f"{path}:3: missing label in {label!r}" in message and "data.label_separator='|'" in message
    assert "fill it in or remove the line" in message


def test_predict_file_reads_csv_and_jsonl_text_columns(trained_run, tmp_path):
    run, dev = trained_run
    result = runner.invoke(app, ["predict", str(run), "--file", str(dev), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    with dev.open() as handle:
        texts = [row[0] for row in csv.reader(handle)][1:]
    assert [r["text"] for r in rows] == texts  # no header line, no label column
    records = tmp_path / "texts.jsonl"
    records.write_text(json.dumps({"body": "a wonderful film"}) + "\n" + json.dumps({"body": "awful"}) + "\n")
    result = runner.invoke(app, ["predict", str(run), "--file", str(records)])
    assert result.exit_code == 2 and "add --set data.text_column=<key>" in result.output
    result = runner.invoke(app, ["predict", str(run), "--file", str(records), "--set", "data.text_column=body"])
    assert result.exit_code == 0 and [line.split("\t")[2] for line in result.output.splitlines()] == [
        "a wonderful film", "awful"]
    result = runner.invoke(app, ["predict", str(run), "x", "--set", "data.lowercase=false"])
    assert result.exit_code == 2 and "data.lowercase: fixed at training" in result.output
    plain = tmp_path / "texts.txt"
    plain.write_text("text,label\na great film\n")
    result = runner.invoke(app, ["predict", str(run), "--file", str(plain)])
    assert [line.split("\t")[2] for line in result.output.splitlines()] == ["text,label", "a great film"]


def test_predict_file_reads_standard_input_and_pipes(trained_run, tmp_path):
    """``--file -`` (standard input) and pipes (``/dev/stdin``, ``<(command)``) are read as a file of
    the same lines would be; sources and errors name them as given, not as a temporary copy."""
    import subprocess
    import sys

    run, _ = trained_run
    lines = "a great film\n\nawful plot\n"
    plain = tmp_path / "texts.txt"
    plain.write_text(lines)
    from_file = runner.invoke(app, ["predict", str(run), "--file", str(plain), "--json"])
    from_stdin = runner.invoke(app, ["predict", str(run), "--file", "-", "--json"], input=lines)
    assert from_file.exit_code == 0 and from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_file.stdout and len(from_stdin.stdout.splitlines()) == 3
    assert "note: stdin:2: the text has no tokens" in from_stdin.stderr
    empty = runner.invoke(app, ["predict", str(run), "--file", "-"], input="")
    assert empty.exit_code == 2 and "nothing to predict: stdin holds no inputs" in empty.output
    # a real pipe, given by its path: the CSV reader (data.format=csv) reads it like the file
    command = [sys.executable, "-c", "from rnnkit.cli import app; app()", "predict", str(run), "--file", "/dev/stdin",
               "--json", "--set", "data.format=csv", "--set", "data.text_column=0"]
    piped = subprocess.run(command, input="text\na great film\nawful plot\n", capture_output=True, text=True,
                           timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(row)["text"] for row in piped.stdout.splitlines()] == ["a great film", "awful plot"]
    bad = subprocess.run(command[:7], input=b"fine\nca\xff va\n", capture_output=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("error: /dev/stdin:2: cannot decode bytes ff")


def test_predict_file_with_undecodable_bytes_names_file_and_line(trained_run, tmp_path):
    run, _ = trained_run
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fine film\nca\xff va\n")
    result = runner.invoke(app, ["predict", str(run), "--file", str(bad)])
    assert result.exit_code == 2
    assert _errors(result) == [f"error: {bad}:2: cannot decode bytes ff as utf-8 (invalid start byte); fix: re-save "
                               "the file as UTF-8 or add --set data.encoding_errors=replace to substitute U+FFFD"]
    result = runner.invoke(app, ["predict", str(run), "--file", str(bad), "--set", "data.encoding_errors=replace"])
    assert result.exit_code == 0 and len(result.output.splitlines()) == 2


def test_missing_column_hint_names_the_config_key(tmp_path):
    train = _write_csv(tmp_path / "t.csv", 20, 0)
    message = _train_error(tmp_path, "--train", str(train), "--set", "data.label_column=sentiment")
    assert "fix: add --set data.text_column=<name> with one of those names (or a 0-based index) or add --set data.has_header=false" in message


def test_evaluate_output_is_aligned_and_multi_label_predictions_are_joined(tmp_path):
    from rnnkit.cli import _metrics_text

    text = _metrics_text({"accuracy": 0.5, "sentences_per_second": 12.25, "tokens": 11011, "read": "x.tar"})
    assert text.splitlines() == ["accuracy              0.5000", "sentences_per_second  12.2500",
                                 "tokens                11011", "read                  x.tar"]
    path = tmp_path / "multi.csv"
    rng = random.Random(0)
    rows = ["text,label"] + [f"{_review(rng, lab)},{lab}" for lab in ["pos", "neg"] * 30]
    path.write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["train", "text-classification", "--train", str(path), "--out", str(tmp_path),
                                 "--name", "m", "--set", "train.multi_label=true", *FAST])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), "great wonderful superb"])
    label = result.output.splitlines()[0].split("\t")[0]
    assert "[" not in label and "'" not in label and label in ("pos", "neg", "neg|pos", "(none)")


def test_a_corrupt_config_yaml_is_refused_like_a_missing_one(trained_run, tmp_path):
    run, _ = trained_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    for content in (b"\xff\x00 not yaml: [", b"just a line of text\n", b""):
        (copy / "config.yaml").write_bytes(content)
        result = runner.invoke(app, ["predict", str(copy), "x"])
        assert result.exit_code == 2 and _errors(result) and "config.yaml is corrupt" in result.output
