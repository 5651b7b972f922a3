"""Defects found walking through the text tasks (text classification, tagging, language model,
translation, compare) from raw files to reports, as a new user would. Small synthetic fixtures only."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app

runner = CliRunner()

TC_FAST = ["--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
           "--set", "data.min_freq=1"]


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _reviews(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    good, bad, filler = ["great", "superb", "moving"], ["awful", "dull", "tedious"], ["the", "film", "was", "a", "plot"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            words = rng.sample(filler, 3) + rng.sample(good if label == "pos" else bad, 1)
            writer.writerow([" ".join(words), label])
    return path


# -- text classification -------------------------------------------------------------------------
def test_text_classification_empty_training_file_is_one_error_without_a_held_out_zero_line(tmp_path):
    """An empty `label sentence` file logged "held out 0 of the training texts" and then stopped with
    "need at least 2 training texts, found 0", where an empty CSV (and evaluate) say the file holds no
    labelled texts."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = runner.invoke(app, ["train", "text-classification", "--train", str(empty), "--out", str(tmp_path / "r"),
                                 *TC_FAST])
    assert result.exit_code == 2, result.output
    assert "held out 0" not in result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and "no labelled texts read" in errors[0], result.output


def test_text_classification_report_says_no_text_was_cut_and_gives_support(tmp_path):
    """The log and report said "0 texts longer than data.max_length=400 tokens kept their first 400
    tokens"; the report's per-class table left out the support that evaluate prints."""
    train, dev = _reviews(tmp_path / "train.csv", 40, 1), _reviews(tmp_path / "dev.csv", 10, 2)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--dev", str(dev),
                                 "--out", str(tmp_path / "runs"), "--name", "run", *TC_FAST])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "runs" / "run" / "report.md").read_text()
    assert "0 texts longer" not in report and "0 texts longer" not in result.output
    assert "no text was longer than data.max_length=400 tokens; every token was used" in report
    assert "| class | precision | recall | f1 | support |" in report
    assert "| neg |" in report and report.split("| neg |")[1].splitlines()[0].rstrip().endswith("| 5 |")


# -- tagging -------------------------------------------------------------------------------------
def _conll(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        sentence = [(rng.choice(["Ann", "Bob", "Eve"]), "B-PER"), ("Smith", "I-PER"), (rng.choice(["saw", "met"]), "O"),
                    (rng.choice(["Rome", "Oslo"]), "B-LOC"), (".", "O")]
        lines += [f"{w} {t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tagging_empty_training_file_has_no_held_out_zero_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = runner.invoke(app, ["train", "tagging", "--train", str(empty), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "held out 0" not in result.output
    assert len(_errors(result.output)) == 1 and "no non-empty sentences" in result.output


def test_tagging_epoch_token_accuracy_is_scored_in_the_files_scheme(tmp_path):
    """The per-epoch dev token accuracy (log, history.csv) was counted on the model's BIOES tags while
    metrics.json and report.md count it on the file's IOB2 tags: CoNLL-2003 showed 0.9436 against
    0.9452 for the same weights. Both now read the file's scheme."""
    train, dev = _conll(tmp_path / "train.txt", 30, 1), _conll(tmp_path / "dev.txt", 8, 2)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out",
                                 str(tmp_path / "runs"), "--name", "run", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=4", "--set", "model.embedding_dim=4",
                                 "--set", "model.char_hidden_size=2", "--set", "model.decoder=softmax", "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "run"
    history = (run / "history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    epoch_accuracy = float(row[header.index("dev_token_accuracy")])
    metrics = json.loads((run / "metrics.json").read_text())
    assert epoch_accuracy == pytest.approx(metrics["dev"]["token_accuracy"], abs=1e-9)
    assert float(row[header.index("dev_f1")]) == pytest.approx(metrics["dev"]["f1"], abs=1e-9)


def test_tagging_epoch_metric_converts_model_tags_to_the_file_scheme():
    """The same comparison without training: an ill-formed BIOES prediction (``B-PER`` then ``O``)
    reads as ``B-PER`` in IOB2, so it is right by the file's tags."""
    from rnnkit.data.conll import convert_tags

    gold, predicted = ["S-PER", "O"], ["B-PER", "O"]
    assert gold != predicted
    assert convert_tags(gold, "BIOES", "IOB2") == convert_tags(predicted, "BIOES", "IOB2") == ["B-PER", "O"]


# -- language model ------------------------------------------------------------------------------
def test_language_model_single_line_dev_note_and_one_epoch_report(tmp_path):
    """The log said "the last part of its single line (5%) of x.txt are the dev stream"; the report
    said "(1 epochs, ...)"."""
    corpus = tmp_path / "one.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(["the", "cat", "sat", "on", "a", "mat"]) for _ in range(3000)) + "\n")
    result = runner.invoke(app, ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path / "runs"),
                                 "--name", "run", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                                 "--set", "train.bptt=10", "--set", "model.hidden_size=8",
                                 "--set", "model.embedding_dim=8", "--set", "data.dev_fraction=0.1"])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "runs" / "run" / "train.log").read_text()
    assert "the last 10% of the single line of one.txt is the dev stream" in log, log
    assert "are the dev stream" not in log
    report = (tmp_path / "runs" / "run" / "report.md").read_text()
    assert "(1 epoch, about" in report and "1 epochs" not in report

    lines = tmp_path / "lines.txt"
    lines.write_text("".join(" ".join(rng.choice(["the", "cat", "sat", "on"]) for _ in range(30)) + "\n"
                             for _ in range(100)))
    result = runner.invoke(app, ["train", "language-model", "--train", str(lines), "--out", str(tmp_path / "runs"),
                                 "--name", "run2", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                                 "--set", "train.bptt=10", "--set", "model.hidden_size=8",
                                 "--set", "model.embedding_dim=8", "--set", "data.dev_fraction=0.1"])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "runs" / "run2" / "train.log").read_text()
    assert "no --dev given: the last 10 lines (10%) of lines.txt are the dev stream" in log, log


# -- translation ---------------------------------------------------------------------------------
def test_translation_empty_files_say_so(tmp_path):
    """Empty files stopped with "0 sentence pair(s); without --dev, data.dev_fraction=0.05 of them is
    held out ...; fix: give more pairs, or a dev set with --dev", which sends the user to --dev."""
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("")
    tgt.write_text("")
    result = runner.invoke(app, ["train", "translation", "--train", str(src), str(tgt), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and "no sentence pairs read (empty files?)" in errors[0], result.output
    assert "--dev" not in errors[0]


def test_attention_plot_scales_colours_to_the_weights(tmp_path, monkeypatch):
    """A young model's attention (about 1 / source length everywhere) was drawn on a fixed 0..1 grey
    scale: the report's attention.png was a blank white square. The scale now ends at the largest
    weight, with a colour bar."""
    import matplotlib.axes

    from rnnkit.tasks.translation import plot_attention

    seen: dict[str, object] = {}
    original = matplotlib.axes.Axes.imshow

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy)
    weights = [[0.1] * 10 for _ in range(3)]
    weights[1][4] = 0.15
    out = plot_attention([f"s{i}" for i in range(10)], ["a", "b", "<eos>"], weights, tmp_path / "att.png")
    assert out.exists()
    assert seen["vmin"] == 0.0 and seen["vmax"] == pytest.approx(0.15)


# -- compare -------------------------------------------------------------------------------------
def test_compare_with_one_seed_prints_no_spread(tmp_path):
    """With one seed per cell compare printed std 0.0000 and "1.0 ± 0.0" s, a spread it never measured."""
    from rnnkit.insight.compare import CellRun, CompareResult

    runs = [CellRun(cell=c, seed=0, run=str(tmp_path / c), quality=q, seconds=s, parameters=p, peak_mib=m)
            for c, q, s, p, m in (("rnn", 0.49, 1.0, 100, 29.0), ("gru", 0.56, 1.5, 200, 35.0))]
    result = CompareResult(task="text-classification", metric="accuracy", higher_is_better=True, runs=runs,
                           cells=["rnn", "gru"], memory_method="RSS growth, sampled")
    rows = result.formatted_rows()
    assert rows[0] == ["rnn", "1", "0.4900", "n/a", "1.0", "100", "29"]
    markdown = result.markdown()
    assert "0.0000" not in markdown and "± 0" not in markdown
    assert "One seed for rnn, gru" in markdown
    assert result.summary()[0]["std"] == 0.0  # compare.json keeps its number

    two = CompareResult(task="t", metric="accuracy", higher_is_better=True,
                        runs=[*runs, CellRun(cell="rnn", seed=1, run="x", quality=0.51, seconds=1.2, parameters=100,
                                             peak_mib=31.0)],
                        cells=["rnn", "gru"], memory_method="m")
    assert two.formatted_rows()[0][3] != "n/a" and "±" in two.formatted_rows()[0][4]
    assert "One seed for gru:" in two.markdown()


# -- second walkthrough: SST-2, IMDB and CoNLL-2003 as README.md gives them ----------------------
def _train_tc(train: Path, tmp_path: Path, name: str, *extra: str) -> Path:
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--out", str(tmp_path / "runs"),
                                 "--name", name, *TC_FAST, "--quiet", *extra])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / name


def test_text_classification_reads_gzipped_jsonl_and_txz_archives_by_extension(tmp_path):
    """``reviews.jsonl.gz`` was read as ``label sentence`` lines (a label ``{"text":``) and an
    ``aclImdb.txz`` archive, which the class-folder reader opens, as text: "cannot decode bytes fd as
    utf-8; fix: re-save the file as UTF-8"."""
    import gzip
    import tarfile

    import pandas as pd

    from rnnkit.tasks.text_classification import DataConfig, read_examples

    rows = [{"text": f"{w} film number {i}", "label": "pos" if w == "great" else "neg"}
            for i, w in enumerate(["great", "awful"] * 5)]
    jsonl = tmp_path / "reviews.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    expected = pd.read_json(jsonl, lines=True, compression="gzip")
    read = read_examples(jsonl, DataConfig())
    assert [e.text for e in read] == list(expected["text"]) and [e.label for e in read] == list(expected["label"])

    for row, i in zip(rows, range(len(rows))):
        folder = tmp_path / "acl" / "train" / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}_7.txt").write_text(row["text"])
    archive = tmp_path / "acl.txz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(tmp_path / "acl", arcname="acl")
    read = read_examples(archive, DataConfig(member_prefix="acl/train"))
    assert sorted((e.text, e.label) for e in read) == sorted((r["text"], r["label"]) for r in rows)


def _label_sentence(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = ("1", "0")[i % 2]
        words = rng.sample(["the", "film", "was", "a", "plot"], 3) + [rng.choice(["great", "superb"] if label == "1"
                                                                                  else ["awful", "dull"])]
        lines.append(f"{label} {' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _predicted(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_predict_file_with_label_sentence_format_drops_each_lines_label(tmp_path):
    """``predict --file stsa.binary.test --set data.format=label-sentence`` ignored the format and read
    each whole line as the text, so every label was predicted from as a word ("0 no movement ...")."""
    run = _train_tc(_label_sentence(tmp_path / "train.txt", 40, 1), tmp_path, "sst")
    test = _label_sentence(tmp_path / "test.txt", 12, 2)
    lines = test.read_text().splitlines()
    result = runner.invoke(app, ["predict", str(run), "--file", str(test), "--set", "data.format=label-sentence",
                                 "--json"])
    assert result.exit_code == 0, result.output
    rows = _predicted(result.output)
    assert [r["text"] for r in rows] == [line.split(" ", 1)[1] for line in lines]
    # the same answers as the sentences given inline, and accuracy (a plain count) as evaluate reports it
    inline = _predicted(runner.invoke(app, ["predict", str(run), *[r["text"] for r in rows], "--json"]).output)
    assert [r["probabilities"] for r in rows] == [r["probabilities"] for r in inline]
    accuracy = sum(r["label"] == line.split(" ", 1)[0] for r, line in zip(rows, lines)) / len(lines)
    evaluated = json.loads(runner.invoke(app, ["evaluate", str(run), "--data", str(test), "--json"]).output)
    assert evaluated["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_evaluate_on_an_extracted_split_folder_names_the_member_prefix_fix(tmp_path):
    """A run trained on ``aclImdb`` with ``data.member_prefix=aclImdb/train``, evaluated on the
    extracted ``aclImdb/test`` folder itself, stopped with "aclImdb/test/aclImdb/train: folder not
    found; fix: check data.member_prefix"; the error now names ``--set data.member_prefix=null``,
    which reads the same texts as the archive root with ``data.member_prefix=aclImdb/test``."""
    rng = random.Random(0)
    for split, n in (("train", 30), ("test", 10)):
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            word = rng.choice(["great", "superb"] if label == "pos" else ["awful", "dull"])
            (folder / f"{i}_5.txt").write_text(f"the film was {word}")
    run = _train_tc(tmp_path, tmp_path, "imdb", "--set", "data.member_prefix=aclImdb/train")
    split = tmp_path / "aclImdb" / "test"
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(split)])
    assert result.exit_code == 2
    errors = _errors(result.output)
    assert len(errors) == 1 and "no folder aclImdb/train in it" in errors[0], result.output
    assert "fix: add --set data.member_prefix=null" in errors[0]
    direct = runner.invoke(app, ["evaluate", str(run), "--data", str(split), "--set", "data.member_prefix=null",
                                 "--json"])
    via_root = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path), "--set",
                                   "data.member_prefix=aclImdb/test", "--json"])
    assert direct.exit_code == via_root.exit_code == 0, direct.output + via_root.output
    a, b = json.loads(direct.output), json.loads(via_root.output)
    assert a["examples"] == b["examples"] == 10 and a["confusion_matrix"] == b["confusion_matrix"]


def test_tagging_a_folder_instead_of_a_file_is_one_error_naming_a_file(tmp_path):
    """``train tagging --train conll2003/`` said "data file not found" (the folder exists), with no
    fix; ``predict --conll --file`` said "data file is a folder" without one."""
    folder = tmp_path / "conll2003"
    folder.mkdir()
    _conll(folder / "train.txt", 12, 1)
    result = runner.invoke(app, ["train", "tagging", "--train", str(folder), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    errors = _errors(result.output)
    assert errors == [f"error: {folder} is a folder, not a file; fix: give the path of a CoNLL column file in it "
                      f"(e.g. {folder / 'train.txt'})"], result.output
    result = runner.invoke(app, ["train", "tagging", "--train", str(folder / "train.txt"), "--out",
                                 str(tmp_path / "runs"), "--name", "t", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=4", "--set", "model.embedding_dim=4",
                                 "--set", "model.char_hidden_size=2", "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "t"
    for command in (["evaluate", str(run), "--data", str(folder)],
                    ["predict", str(run), "--file", str(folder), "--conll"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and _errors(result.output) == errors, result.output


def _conlleval(lines: list[str], gold_col: int, pred_col: int) -> tuple[int, int, int]:
    """(correct, gold, predicted) chunk counts as conlleval counts them (IOB2/IOB1 files: a chunk
    starts at B-, or at an I- whose type differs from the previous tag's or after O)."""
    def chunks(tags: list[str]) -> set[tuple[int, int, str]]:
        found, start, kind = set(), None, None
        for i, tag in enumerate([*tags, "O"]):
            prefix, _, typ = tag.partition("-")
            if start is not None and (tag == "O" or prefix == "B" or typ != kind):
                found.add((start, i, kind))
                start = None
            if tag != "O" and start is None:
                start, kind = i, typ
        return found

    correct = gold = predicted = 0
    for block in "\n".join(lines).split("\n\n"):
        rows = [line.split() for line in block.splitlines() if line.strip() and not line.startswith("-DOCSTART-")]
        if rows:
            g, p = chunks([r[gold_col] for r in rows]), chunks([r[pred_col] for r in rows])
            correct, gold, predicted = correct + len(g & p), gold + len(g), predicted + len(p)
    return correct, gold, predicted


@pytest.mark.data
def test_conll2003_scores_equal_conlleval_counts_of_the_predictions(shared_data, tmp_path):
    """On real CoNLL-2003 sentences: metrics.json's dev F1 and evaluate's test F1 are conlleval's
    counts over dev.predictions.conll and over ``predict --conll``'s appended column."""
    conll = shared_data / "conll2003"

    def head(src: Path, dst: Path, n: int) -> Path:
        blocks = src.read_text().split("\n\n")[:n]
        dst.write_text("\n\n".join(blocks) + "\n\n")
        return dst

    train, dev = head(conll / "train.txt", tmp_path / "train.txt", 400), head(conll / "valid.txt", tmp_path / "dev.txt", 120)
    test = head(conll / "test.txt", tmp_path / "test.txt", 120)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out",
                                 str(tmp_path / "runs"), "--name", "ner", "--set", "train.epochs=2",
                                 "--set", "model.hidden_size=16", "--set", "model.embedding_dim=16",
                                 "--set", "model.char_hidden_size=4", "--set", "train.learning_rate=0.01", "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "ner"
    correct, gold, predicted = _conlleval((run / "dev.predictions.conll").read_text().splitlines(), 1, 2)
    metrics = json.loads((run / "metrics.json").read_text())["dev"]
    assert gold > 0 and metrics["recall"] == pytest.approx(correct / gold)
    assert metrics["precision"] == pytest.approx(correct / predicted if predicted else 0.0)

    tagged = runner.invoke(app, ["predict", str(run), "--file", str(test), "--conll"])
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", str(test), "--json"])
    assert tagged.exit_code == evaluated.exit_code == 0, tagged.output + evaluated.output
    correct, gold, predicted = _conlleval(tagged.output.splitlines(), 3, 4)
    scores = json.loads(evaluated.output)
    precision, recall = (correct / predicted if predicted else 0.0), correct / gold
    assert scores["f1"] == pytest.approx(2 * precision * recall / (precision + recall) if correct else 0.0)


def test_tagging_hold_out_leaves_every_tag_a_training_sentence(tmp_path):
    """Without --dev, a tag carried by one sentence (a rare POS tag, a type in a small CoNLL sample)
    was held out with it for seeds 0, 4, 8 and 10 of 11, and training stopped with "tag 'B-MISC'
    appears in dev data but not in training data" for dev data the user never gave."""
    lines = []
    for i in range(10):
        lines += [f"Ann{i} B-PER", "saw O", "Rome B-LOC", ". O", ""]
    lines += ["Euro B-MISC", "cup O", ""]
    train = tmp_path / "rare.txt"
    train.write_text("\n".join(lines) + "\n")
    for seed in (0, 4):
        result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path / "runs"),
                                     "--name", f"s{seed}", "--set", f"train.seed={seed}", "--set", "train.epochs=1",
                                     "--set", "model.hidden_size=4", "--set", "model.embedding_dim=4",
                                     "--set", "model.char_hidden_size=2"])
        assert result.exit_code == 0, result.output
        assert "held out 1 training sentence for" in result.output  # a tenth of 11, as before
        dev = (tmp_path / "runs" / f"s{seed}" / "dev.predictions.conll").read_text()
        assert "Euro" not in dev

    from rnnkit.tasks.tagging import keep_every_tag_last

    rng = random.Random(0)
    tags = [{rng.choice("ABCDEFGH")} | {"O"} for _ in range(40)]
    keys = [i // 2 for i in range(40)]  # pairs of copies, held out together
    for _ in range(20):
        order = rng.sample(range(40), 40)
        new = keep_every_tag_last(order, tags, keys)
        assert sorted(new) == list(range(40))
        # a plain loop: what remains after taking any front part that stops before the kept tail
        tail = {i for i in new if keys[i] in {keys[j] for t in set().union(*tags) for j in order if t in tags[j]
                                               and j == [k for k in order if t in tags[k]][-1]}}
        front = [i for i in new if i not in tail]
        assert new == front + [i for i in order if i in tail] and front == [i for i in order if i not in tail]
        assert set().union(*(tags[i] for i in tail)) == set().union(*tags)


def test_predict_conll_on_latin1_bytes_names_the_encoding_errors_setting_that_reads_it(tmp_path):
    """``predict --conll`` on a Latin-1 file said the encoding was "set by data.encoding_errors at
    training" and sent the user to re-encode the file, though ``--set data.encoding_errors=replace``
    reads it (as for evaluate)."""
    train = _conll(tmp_path / "train.txt", 12, 1)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path / "runs"),
                                 "--name", "t", "--set", "train.epochs=1", "--set", "model.hidden_size=4",
                                 "--set", "model.embedding_dim=4", "--set", "model.char_hidden_size=2", "--quiet"])
    assert result.exit_code == 0, result.output
    raw = b"Caf\xe9 O\nin O\nRome B-LOC\n"
    latin = tmp_path / "latin.txt"
    latin.write_bytes(raw)
    run = str(tmp_path / "runs" / "t")
    result = runner.invoke(app, ["predict", run, "--file", str(latin), "--conll"])
    assert result.exit_code == 2
    errors = _errors(result.output)
    assert len(errors) == 1 and f"{latin}:1: cannot decode bytes e9" in errors[0], result.output
    assert "at training" not in errors[0] and "add --set data.encoding_errors=replace" in errors[0]
    result = runner.invoke(app, ["predict", run, "--file", str(latin), "--conll", "--set",
                                 "data.encoding_errors=replace"])
    assert result.exit_code == 0, result.output
    expected = raw.decode("utf-8", errors="replace").splitlines()
    lines = result.output.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == expected


def test_pos_tagging_log_says_the_tags_are_not_chunks(tmp_path):
    """With ``data.scheme=none`` (POS tags) the log said "tags (none in the file, none in the model)",
    as if the run had no tags."""
    lines = []
    for i in range(10):
        lines += [f"Ann{i} NNP", "saw VBD", "Rome NNP", ". .", ""]
    train = tmp_path / "pos.txt"
    train.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path / "runs"),
                                 "--set", "data.scheme=none", "--set", "train.epochs=1", "--set", "model.hidden_size=4",
                                 "--set", "model.embedding_dim=4", "--set", "model.char_hidden_size=2"])
    assert result.exit_code == 0, result.output
    expected_tags = ", ".join(sorted({line.split()[1] for line in lines if line}))
    assert f"tags (not chunks, data.scheme=none): {expected_tags};" in " ".join(result.output.split())
    assert "none in the file" not in result.output


def test_a_folder_without_class_folders_names_fixes_that_exist(tmp_path):
    """The hint said "check the path and pattern", naming a setting the command line does not have."""
    (tmp_path / "root" / "empty").mkdir(parents=True)
    result = runner.invoke(app, ["train", "text-classification", "--train", str(tmp_path / "root"),
                                 "--out", str(tmp_path / "runs")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code != 0 and len(errors) == 1, result.output
    assert "no class sub-folders" in errors[0] and "--set data.member_prefix=" in errors[0]
    assert "pattern" not in errors[0].split("fix:")[1]
