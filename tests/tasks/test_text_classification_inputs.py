"""Text classification as a practitioner meets it: messy CSV/JSONL files, label spellings, the dev
split, edited run folders, and metrics checked against a reference computation."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.text import TextExample, read_delimited, read_jsonl
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.text_classification import (
    Config,
    DataConfig,
    Preprocessor,
    TrainedTextClassifier,
    _split_dev,
    classification_metrics,
    label_name,
)

from .test_text_classification import FILLER, NEGATIVE, POSITIVE

runner = CliRunner()
FAST = ["--set", "train.epochs=2", "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
        "--set", "data.min_freq=1", "--set", "train.learning_rate=0.02", "--quiet"]


def _review(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if positive else NEGATIVE, 2)
    rng.shuffle(words)
    return " ".join(words)


def _write(path: Path, rows: list[list[str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([list(header), *rows])
    return path


def _rows(n: int, seed: int, labels: tuple[str, str] = ("1", "0")) -> list[list[str]]:
    rng = random.Random(seed)
    return [[_review(rng, i % 2 == 0), labels[i % 2]] for i in range(n)]


def _errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tc_inputs")
    train = _write(root / "train.csv", _rows(60, 1))
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(root),
                                 "--name", "run", *FAST])
    assert result.exit_code == 0, result.output
    return root / "run"


# -- the dev split ------------------------------------------------------------------------------
def _examples(counts: dict[str, int]) -> list[TextExample]:
    out = []
    for label, n in counts.items():
        out += [TextExample(f"{label} text {i}", label, f"f:{len(out) + i + 2}") for i in range(n)]
    random.Random(0).shuffle(out)
    return out


def test_the_held_out_dev_split_is_stratified_by_label_and_fixed_by_the_seed():
    examples = _examples({"neg": 90, "pos": 10})
    for seed in range(5):
        train, dev = _split_dev(examples, 0.2, seed)
        assert len(dev) == 20 and len(train) == 80
        assert sum(e.label == "pos" for e in dev) == 2  # the class's share, whatever the seed
        assert {e.source for e in train} | {e.source for e in dev} == {e.source for e in examples}
        assert [e for e in examples if e in dev] == dev  # file order kept
    assert _split_dev(examples, 0.2, 3) == _split_dev(examples, 0.2, 3) and _split_dev([], 0.2, 0) == ([], [])
    assert _split_dev(examples, 0.2, 3)[1] != _split_dev(examples, 0.2, 4)[1]


def test_a_rare_class_is_never_held_out_whole():
    # three texts of 'mixed' in 300: a random 10% split held out all of them for some seeds, and
    # training stopped with "label 'mixed' appears in dev data but not in training data"
    examples = _examples({"neg": 150, "pos": 147, "mixed": 3, "odd": 1})
    for seed in range(30):
        train, dev = _split_dev(examples, 0.1, seed)
        assert {e.label for e in train} == {"neg", "pos", "mixed", "odd"}
        assert len(dev) == 30 and sum(e.label == "odd" for e in dev) == 0


def test_train_without_dev_says_how_the_split_was_made(tmp_path):
    rows = _rows(40, 0, ("pos", "neg"))
    data = _write(tmp_path / "t.csv", rows)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--name", "r", *FAST])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "r" / "train.log").read_text()
    assert "held out 4 of the training texts (data.dev_fraction=0.1, stratified by label, train.seed=0)" in log
    assert "36 training / 4 dev texts, 2 classes (neg: 18, pos: 18)" in log
    assert "4 texts held out of the training file (data.dev_fraction=0.1, stratified by label, train.seed=0)" in (
        tmp_path / "r" / "report.md").read_text()


# -- labels -------------------------------------------------------------------------------------
def test_label_names_read_whole_floats_as_integers():
    assert [label_name(x) for x in ("1.0", " 0.00 ", "-2.0", "pos", " neg ", "1.5", "10", "1e3", 3.0, 1)] == [
        "1", "0", "-2", "pos", "neg", "1.5", "10", "1e3", "3", "1"]
    # SST-style +1/-1 labels: '+1' and '+1.0' are one class with 1 ('+1' stayed '+1'); codes like '01' are kept
    assert [label_name(x) for x in ("+1", "+1.0", "-1", "01", "+x")] == ["1", "1", "-1", "01", "+x"]


def test_a_label_column_written_as_floats_matches_integer_labels(tmp_path):
    # pandas writes an integer column holding a NaN as floats: 1.0, 0.0
    rows = [[text, f"{label}.0"] for text, label in _rows(40, 0)]
    train = _write(tmp_path / "train.csv", rows)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "r", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "labels.json").read_text())["config"]["classes"] == ["0", "1"]
    test = _write(tmp_path / "test.csv", _rows(10, 5))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data", str(test), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["classes"] == ["0", "1"]
    records = tmp_path / "mixed.jsonl"  # 1 and 1.0 in JSON are one class too
    records.write_text("".join(json.dumps({"text": t, "label": [1, 1.0, 0, 0.0][i % 4]}) + "\n"
                               for i, (t, _) in enumerate(_rows(12, 2))))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data", str(records), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["per_class"]["support"] == [6, 6]


def test_a_run_whose_classes_were_saved_as_floats_still_evaluates_integer_labels(run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    labels = json.loads((copy / "labels.json").read_text())
    labels["config"]["classes"] = ["0.0", "1.0"]  # as runs trained before label names were normalised
    (copy / "labels.json").write_text(json.dumps(labels))
    data = _write(tmp_path / "d.csv", _rows(6, 3))
    metrics = TrainedTextClassifier.load(copy).evaluate(data)
    assert metrics["examples"] == 6 and metrics["per_class"]["support"] == [3, 3]


# -- empty texts --------------------------------------------------------------------------------
def test_predict_file_answers_every_record_even_an_empty_one(run, tmp_path):
    data = _write(tmp_path / "new.csv", [["a great film", "1"], ["", "0"], ["   ", "1"], ["dull plot", "0"]])
    result = runner.invoke(app, ["predict", str(run), "--file", str(data), "--json"])
    assert result.exit_code == 0, result.output
    texts = [json.loads(line)["text"] for line in result.output.splitlines() if line.startswith("{")]
    assert texts == ["a great film", "", "   ", "dull plot"]  # one answer per record, in order
    assert f"note: {data}:3: the text has no tokens" in result.output
    assert f"note: {data}:4: the text has no tokens" in result.output
    records = tmp_path / "new.jsonl"
    records.write_text('{"text": "great"}\n{"text": ""}\n{"text": "dull"}\n')
    assert [r["text"] for r in TrainedTextClassifier.load(run).predict(
        [t for t, _ in TrainedTextClassifier.load(run).texts_of_file(records)])] == ["great", "", "dull"]


def test_records_left_out_for_an_empty_text_are_reported(run, tmp_path):
    data = _write(tmp_path / "holes.csv", [["a great film", "1"], ["", "0"], ["dull plot", "0"], [" ", "1"]])
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert metrics["examples"] == 2
    assert metrics["notes"] == [f"{data}: left out 2 records whose text is empty (first: {data}:3)"]
    train = _write(tmp_path / "train.csv", _rows(30, 0) + [["", "1"]])
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "r", *FAST])
    assert result.exit_code == 0, result.output
    assert f"note: {train}: left out 1 record whose text is empty (first: {train}:32)" in (
        tmp_path / "r" / "train.log").read_text()


# -- reading files --------------------------------------------------------------------------------
def test_a_wrong_column_name_suggests_the_closest(tmp_path):
    data = _write(tmp_path / "cols.csv", _rows(20, 0), header=("Review Text", "sentiment"))
    result = runner.invoke(app, ["train", "text-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--set", "data.text_column=review text", "--set", "data.label_column=sentiment", *FAST])
    assert result.exit_code == 2 and _errors(result) == [
        f"error: {data}:1: no text column 'review text'; columns are ['Review Text', 'sentiment']; did you mean "
        "'Review Text'?; fix: add --set data.text_column='Review Text'"]
    result = runner.invoke(app, ["train", "text-classification", "--train", str(data), "--out", str(tmp_path),
                                 "--set", "data.text_column=Review Text", "--set", "data.label_column=sentimnet",
                                 *FAST])
    assert _errors(result)[0].endswith("did you mean 'sentiment'?; fix: add --set data.label_column=sentiment")
    records = tmp_path / "r.jsonl"
    records.write_text('{"review": "good", "stars": "1"}\n')
    with pytest.raises(ValueError, match=r"did you mean 'review'\?; fix: pass text_field='review'$"):
        read_jsonl(records, "reviw", "stars")
    with pytest.raises(ValueError, match=r"columns are \['Review Text', 'sentiment'\]; fix: pass text_column=<name>"):
        read_delimited(data, "body", "sentiment")  # nothing close: the columns and the generic fix


def test_a_csv_without_a_header_row_reads_every_row_with_column_indexes(tmp_path):
    rows = [[label, text] for text, label in _rows(40, 3)]  # label first, no header
    train = tmp_path / "train.csv"
    with train.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path), *FAST])
    assert result.exit_code == 2
    assert _errors(result)[0].endswith("fix: add --set data.text_column=<name> with one of those names (or a "
                                       "0-based index) or add --set data.has_header=false and give 0-based column "
                                       "indexes if the first row is data, not names")
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--set", "data.has_header=false", *FAST])
    assert result.exit_code == 2 and _errors(result) == [
        f"error: {train}: text column 'text' given by name but the file is read without a header row; fix: add "
        "--set data.text_column=<index> (0-based) or add --set data.has_header=true if its first row names the columns"]
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "nohead", "--set", "data.has_header=false", "--set", "data.text_column=1",
                                 "--set", "data.label_column=0", *FAST])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nohead"), "--data", str(train), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["examples"] == 40  # the first row is data, not a header
    examples = read_delimited(train, 1, 0, has_header=False)
    assert [[e.label, e.text] for e in examples] == rows


def test_a_vocabulary_too_small_for_the_texts_is_a_one_line_error(tmp_path):
    train = _write(tmp_path / "train.csv", _rows(30, 0))
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 *FAST, "--set", "data.min_freq=1000"])
    assert result.exit_code == 2 and _errors(result) == [
        f"error: {train}: no token of the training texts is in the vocabulary (data.min_freq=1000, "
        "data.vocab_size=30000), so every token would be <unk>; fix: lower data.min_freq or raise data.vocab_size"]
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 *FAST, "--set", "data.tokenizer=unigram", "--set", "data.vocab_size=8"])
    assert result.exit_code == 2 and _errors(result) == [
        "error: vocab_size=8 is too small for a unigram model of these texts: it must hold every distinct character "
        "and the special tokens; fix: add --set data.vocab_size=8000 or another size larger than the alphabet"]


def test_quoted_fields_with_commas_and_newlines_are_named_by_their_first_line(tmp_path):
    data = tmp_path / "q.csv"
    data.write_text('text,label\n"great, really\ngreat film",1\n"dull\n\nplot, awful",0\nfine,\n', encoding="utf-8")
    examples = read_delimited(data)
    assert [(e.text, e.source) for e in examples] == [("great, really\ngreat film", f"{data}:2"),
                                                       ("dull\n\nplot, awful", f"{data}:4"), ("fine", f"{data}:7")]
    unclosed = tmp_path / "u.csv"
    unclosed.write_text('text,label\ngood film,1\n"bad film,0\nnice,1\nawful,0\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"u\.csv:3: row has 1 fields, the header has 2 \(the record runs from line 3 "
                                         r"to line 5: an unclosed quote\?\)"):
        read_delimited(unclosed)


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["train.patience=0"], r"train.patience: must be >= 1 \(or null to never stop early\), got 0"),
    (["train.patience=-1"], "train.patience: must be >= 1"),
    (["train.clip_norm=0"], r"train.clip_norm: must be > 0 \(or null for no clipping\), got 0.0"),
    (["train.clip_norm=-1"], "train.clip_norm: must be > 0"),
    (["train.weight_decay=-0.1"], "train.weight_decay: must be >= 0, got -0.1"),
    (["data.min_freq=0"], "data.min_freq: must be >= 1, got 0"),
    (["data.max_sentences=0"], "data.max_sentences: must be >= 1"),
    (["data.max_sentence_length=-1"], "data.max_sentence_length: must be >= 1"),
    (["train.multi_label=true", "data.label_separator="], "data.label_separator: must not be empty"),
    (["train.epochs=-1"], "train.epochs: must be >= 1, got -1"),
    (["train.batch_size=0"], "train.batch_size: must be >= 1, got 0"),
    (["train.epoch=3"], "unknown key train.epoch; valid keys here: accelerator, batch_size"),
    (["data.vocab_size=2"], r"data.vocab_size: must be >= 5 \(the 4 special tokens .*got 2; fix: --set "
                            "data.vocab_size=30000"),
])
def test_bad_training_values_are_one_line_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, None, overrides)
    load_config(Config, None, ["train.patience=null", "train.clip_norm=null", "train.patience=1"])


# -- run folders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,edit,message", [
    ("model.json", lambda d: d.pop("hyperparameters"), "model.json is corrupt or from another rnnkit version"),
    ("model.json", lambda d: d["hyperparameters"].update(extra=1), "unexpected keyword argument 'extra'"),
    ("preprocessing.json", lambda d: d.pop("architecture"), "preprocessing.json is corrupt or from another rnnkit"),
    ("preprocessing.json", lambda d: d["data"].update(colour="red"), "unknown key data.colour"),
    ("labels.json", lambda d: d["config"].update(classes=["0", "1", "2"]),
     "labels.json holds 3 classes but the model in model.json has 2"),
    ("text_encoder.json", None, "preprocessing files are corrupt"),
])
def test_an_edited_run_folder_is_a_one_line_error(run, tmp_path, name, edit, message):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    if edit is None:
        (copy / name).write_text("[1, 2]")
    else:
        data = json.loads((copy / name).read_text())
        edit(data)
        (copy / name).write_text(json.dumps(data))
    result = runner.invoke(app, ["predict", str(copy), "a great film"])
    assert result.exit_code == 2 and len(_errors(result)) == 1 and message in result.output, result.output


def test_reloading_and_batching_do_not_change_predictions(run):
    texts = ["a great and wonderful film", "dull", "", "zzz qqq unseen words", "the plot was really quite boring "
             "and the acting was tedious and clumsy all along"]
    model = TrainedTextClassifier.load(run)
    batch = model.predict(texts)
    single = [model.predict([t])[0] for t in texts]
    again = TrainedTextClassifier.load(run).predict(texts)
    assert [r["label"] for r in batch] == [r["label"] for r in single] == [r["label"] for r in again]
    for a, b, c in zip(batch, single, again):
        assert list(a["probabilities"]) == ["0", "1"]
        assert abs(sum(a["probabilities"].values()) - 1) < 1e-6
        for k in a["probabilities"]:
            assert abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-6
            assert a["probabilities"][k] == c["probabilities"][k]
        assert a["label"] == max(a["probabilities"], key=a["probabilities"].get)


# -- truncation ----------------------------------------------------------------------------------
def test_evaluate_reports_texts_cut_at_max_length(tmp_path):
    rows = _rows(40, 0)
    train = _write(tmp_path / "t.csv", rows)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path),
                                 "--name", "r", "--set", "data.max_length=8", *FAST])
    assert result.exit_code == 0, result.output
    long = _write(tmp_path / "long.csv", [[" ".join([text] * 3), label] for text, label in _rows(4, 1)]
                  + _rows(2, 2))
    metrics = TrainedTextClassifier.load(tmp_path / "r").evaluate(long)
    assert metrics["notes"] == [f"{long}: 4 texts longer than data.max_length=8 tokens kept their first 8 tokens; "
                                "52.4% of all tokens were used"]  # 44 of 84
    assert "notes" not in TrainedTextClassifier.load(tmp_path / "r").evaluate(train)


def test_han_documents_cut_at_max_sentences_are_counted():
    cfg = DataConfig(min_freq=1, max_sentences=2, max_sentence_length=3)
    texts = ["a b c d\ne f\ng h", "a b\nc"]  # one sentence a line
    prep = Preprocessor.fit(texts, [["x"], ["y"]], cfg, "han", False)
    encoded = prep.encode_texts(texts)
    assert [[len(s) for s in doc] for doc in encoded] == [[3, 2], [2, 1]]
    assert prep.truncation_note() == ("1 texts with more than data.max_sentences=2 sentences or a sentence longer "
                                      "than data.max_sentence_length=3 tokens were cut; 72.7% of all tokens were "
                                      "used")  # 8 of 11


# -- metrics ---------------------------------------------------------------------------------------
def _reference(y: list[int], p: list[int], classes: int) -> dict:
    """Accuracy, micro F1, macro F1 over the classes present in targets or predictions (scikit-learn's
    default), per-class precision/recall/F1 (0 when undefined) and the confusion matrix (rows: truth)."""
    def count(c: int) -> tuple[int, int, int]:
        tp = sum(a == c and b == c for a, b in zip(y, p))
        return tp, sum(a != c and b == c for a, b in zip(y, p)), sum(a == c and b != c for a, b in zip(y, p))

    stats = [count(c) for c in range(classes)]
    f1 = [2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0 for tp, fp, fn in stats]
    present = sorted(set(y) | set(p))
    return {"accuracy": sum(a == b for a, b in zip(y, p)) / len(y), "micro_f1": sum(a == b for a, b in zip(y, p)) / len(y),
            "macro_f1": sum(f1[c] for c in present) / len(present),
            "precision": [tp / (tp + fp) if tp + fp else 0.0 for tp, fp, _ in stats],
            "recall": [tp / (tp + fn) if tp + fn else 0.0 for tp, _, fn in stats], "f1": f1,
            "confusion": [[sum(a == i and b == j for a, b in zip(y, p)) for j in range(classes)]
                          for i in range(classes)]}


@pytest.mark.parametrize("classes,n", [(2, 40), (4, 30), (5, 7)])
def test_metrics_match_a_reference_computation(classes, n):
    g = torch.Generator().manual_seed(classes)
    for trial in range(20):
        scores = torch.rand(n, classes, generator=g).softmax(-1)
        targets = torch.randint(0, classes, (n,), generator=g)
        if trial % 2:
            targets[targets == classes - 1] = 0  # a class missing from the targets
        m = classification_metrics(scores, targets, multi_label=False)
        ref = _reference(targets.tolist(), scores.argmax(-1).tolist(), classes)
        for key in ("accuracy", "micro_f1", "macro_f1"):
            assert m[key] == pytest.approx(ref[key], abs=1e-6), key
        for key in ("precision", "recall", "f1"):
            assert m["per_class"][key] == pytest.approx(ref[key], abs=1e-6), key
        assert m["confusion_matrix"] == ref["confusion"]
        assert m["per_class"]["support"] == [targets.tolist().count(c) for c in range(classes)]


def test_predict_refuses_a_single_string_that_it_would_split_into_characters(run: Path) -> None:
    """``predict("great film")`` iterated the string: one prediction per character. Every task's
    predict now says to wrap it in a list (tagging ensembles and file-based tasks share the check)."""
    from rnnkit.tasks import load_trained
    from rnnkit.tasks.config import check_batch

    model = load_trained(run)
    with pytest.raises(TypeError, match=r"predict takes a list of texts, got a single str .*predict\(\[x\]\)"):
        model.predict("great film")
    assert len(model.predict(["great film"])) == 1
    for single in (b"bytes", Path("a.wav")):
        with pytest.raises(TypeError, match="wrap it in a list"):
            check_batch(single, "files")
    check_batch([], "files")
