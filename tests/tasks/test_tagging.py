"""Sequence labelling: CRF against brute force, entity scores, and the task end to end."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.metrics.entities import entity_scores
from rnnkit.nn.crf import CRF, allowed_transitions
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.tagging import Config, TrainedTagger, read_sentences

runner = CliRunner()


def _crf(k: int, seed: int = 0, constraints=None) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(k, constraints).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _brute_scores(crf: CRF, emissions: torch.Tensor, n: int) -> dict[tuple[int, ...], float]:
    k = crf.num_tags
    out = {}
    for path in itertools.product(range(k), repeat=n):
        tags = torch.tensor([list(path) + [0] * (emissions.shape[0] - n)])
        mask = torch.tensor([[True] * n + [False] * (emissions.shape[0] - n)])
        with torch.no_grad():
            out[path] = float(crf.score(emissions.unsqueeze(0), tags, mask))
    return out


@pytest.mark.parametrize("length", [1, 2, 4])
def test_crf_partition_and_viterbi_match_brute_force(length):
    crf = _crf(3)
    emissions = torch.randn(5, 3, dtype=torch.float64)
    scores = _brute_scores(crf, emissions, length)
    mask = torch.tensor([[True] * length + [False] * (5 - length)])
    log_z = crf.log_partition(emissions.unsqueeze(0), mask)
    expected = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
    torch.testing.assert_close(log_z[0], expected, atol=1e-10, rtol=0)
    best_path, best_score = crf.decode(emissions.unsqueeze(0), mask)
    brute_best = max(scores, key=scores.__getitem__)
    assert tuple(best_path[0]) == brute_best
    torch.testing.assert_close(best_score[0], torch.tensor(scores[brute_best], dtype=torch.float64))


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_marginals_match_brute_force(constrained):
    tags = ["O", "B-PER", "I-PER"]
    crf = _crf(3, seed=2, constraints=allowed_transitions(tags, "IOB2") if constrained else None)
    emissions = torch.randn(4, 5, 3, dtype=torch.float64)
    lengths = [5, 3, 1, 0]  # full, padded, one token, empty
    mask = torch.arange(5).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    marginals = crf.marginals(emissions, mask)
    for b, n in enumerate(lengths):
        if n == 0:
            assert marginals[b].abs().sum() == 0
            continue
        scores = _brute_scores(crf, emissions[b], n)
        log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
        expected = torch.zeros(5, 3, dtype=torch.float64)
        for path, score in scores.items():
            for t, k in enumerate(path):
                expected[t, k] += torch.exp(torch.tensor(score, dtype=torch.float64) - log_z)
        torch.testing.assert_close(marginals[b], expected, atol=1e-10, rtol=0)
    if constrained:  # I-PER cannot start a sentence in IOB2
        assert marginals[0, 0, 2] < 1e-10 and marginals[2, 0, 2] < 1e-10
    one_step = crf.marginals(emissions[:, :1], torch.ones(4, 1, dtype=torch.bool))  # T = 1
    torch.testing.assert_close(one_step[2], marginals[2, :1], atol=1e-12, rtol=0)


def test_crf_batched_equals_one_by_one_and_likelihood_normalises():
    crf = _crf(4, seed=1)
    emissions = torch.randn(3, 6, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 1])
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    paths, _ = crf.decode(emissions, mask)
    for b in range(3):
        alone, _ = crf.decode(emissions[b:b + 1, : lengths[b]], mask[b:b + 1, : lengths[b]])
        assert paths[b] == alone[0]
    # probabilities of all paths of the length-3 sequence sum to one
    total = 0.0
    for path in itertools.product(range(4), repeat=3):
        tags = torch.tensor([list(path) + [0] * 3])
        total += float(crf.log_likelihood(emissions[1:2], tags, mask[1:2]).detach().exp())
    assert abs(total - 1) < 1e-9


def test_constraints_read_underscore_tags_as_the_conll_reader_does():
    dashed = allowed_transitions(["B-PER", "I-PER", "B-LOC", "I-LOC", "O"], "IOB2")
    underscored = allowed_transitions(["B_PER", "I_PER", "B_LOC", "I_LOC", "O"], "IOB2")
    for a, b in zip(dashed, underscored):
        assert torch.equal(a, b)
    assert not underscored[0][1]  # I_PER cannot start a sentence


def test_constraints_forbid_invalid_iob2_and_bioes_paths():
    tags = ["B-PER", "I-PER", "B-LOC", "I-LOC", "O"]
    start, trans, end = allowed_transitions(tags, "IOB2")
    assert not start[1] and start[0] and start[4]
    assert not trans[4, 1] and not trans[0, 3] and trans[0, 1] and trans[1, 1] and trans[3, 0]
    crf = _crf(5, constraints=(start, trans, end))
    with torch.no_grad():
        crf.transitions[4, 1] = 100.0  # a huge score on a forbidden move is still never used
    emissions = torch.zeros(1, 4, 5, dtype=torch.float64)
    emissions[0, :, 1] = 5.0  # emissions favour I-PER everywhere
    path, _ = crf.decode(emissions, torch.ones(1, 4, dtype=torch.bool))
    labels = [tags[i] for i in path[0]]
    assert labels[0] != "I-PER"
    for a, b in zip(labels, labels[1:]):
        assert not (b == "I-PER" and a not in ("B-PER", "I-PER"))
    bioes = ["B-X", "I-X", "E-X", "S-X", "O"]
    s, t, e = allowed_transitions(bioes, "BIOES")
    assert s.tolist() == [True, False, False, True, True] and e.tolist() == [False, False, True, True, True]
    assert t[0, 2] and t[0, 1] and not t[0, 4] and not t[2, 1] and t[2, 0] and t[4, 3] and not t[4, 2]


def test_entity_scores_on_a_hand_made_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    s = entity_scores(gold, pred, "IOB2")
    # gold entities: PER, LOC, ORG, PER (4); predicted: PER, ORG, ORG (3); correct: PER, ORG (2)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert s["per_type"]["PER"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert s["per_type"]["LOC"]["support"] == 1 and s["per_type"]["LOC"]["recall"] == 0.0
    assert s["token_accuracy"] == pytest.approx(5 / 7)
    # conlleval leniency: an I- tag after O starts an entity
    assert entity_scores([["O", "I-PER"]], [["O", "B-PER"]], "IOB2")["f1"] == 1.0


PEOPLE = ["Anna", "Boris", "Carla", "Dmitri", "Elena", "Farid"]
PLACES = ["Paris", "Oslo", "Lima", "Cairo", "Quito", "Delhi"]
WORDS = ["met", "in", "yesterday", "the", "visited", "and", "went", "to", "today"]


def _write_conll(path: Path, n: int, seed: int, extra_tag: str | None = None) -> Path:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- O O", ""]
    for i in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        sentence = [(person, "B-PER"), ("Smith", "I-PER"), (rng.choice(WORDS), "O"), (rng.choice(WORDS), "O"),
                    (place, "B-LOC"), (".", "O")]
        if extra_tag and i == 0:
            sentence.append(("Acme", extra_tag))
        lines += [f"{w} NNP B-NP {t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


FAST = ["--set", "train.epochs=12", "--set", "model.hidden_size=16", "--set", "model.embedding_dim=16",
        "--set", "model.char_hidden_size=8", "--set", "train.learning_rate=0.02", "--quiet"]


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    train = _write_conll(root / "train.txt", 120, 1)
    dev = _write_conll(root / "dev.txt", 30, 2)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev),
                                 "--out", str(root), "--name", "run", "--set", "train.lr_decay=0.5", *FAST])
    assert result.exit_code == 0, result.output
    return root / "run", dev


def test_tagging_end_to_end(ner_run):
    run, dev = ner_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["f1"] > 0.9, metrics["dev"]
    assert (run / "dev.predictions.conll").is_file() and "Dev entity scores" in (run / "report.md").read_text()
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["f1"] > 0.9
    out = runner.invoke(app, ["predict", str(run), "Carla Smith visited Oslo today .", "--json"])
    prediction = json.loads(out.output.splitlines()[0])
    spans = [{k: e[k] for k in ("text", "type", "start", "end")} for e in prediction["entities"]]
    assert {"text": "Carla Smith", "type": "PER", "start": 0, "end": 2} in spans
    assert len(prediction["scores"]) == len(prediction["tokens"]) and all(0 < p <= 1 for p in prediction["scores"])
    person = prediction["entities"][spans.index({"text": "Carla Smith", "type": "PER", "start": 0, "end": 2})]
    assert person["score"] == pytest.approx(sum(prediction["scores"][:2]) / 2, abs=1e-4)
    text_out = runner.invoke(app, ["predict", str(run), "Carla Smith visited Oslo today ."]).output
    assert "PER\tCarla Smith\t0." in text_out or "PER\tCarla Smith\t1.000" in text_out
    again = TrainedTagger.load(run).predict(["Carla Smith visited Oslo today ."])
    assert again[0]["tags"] == prediction["tags"]


def test_predict_conll_appends_a_tag_column(ner_run, tmp_path):
    run, _ = ner_run
    raw = tmp_path / "raw.conll"
    raw.write_text("-DOCSTART- -X-\n\nCarla NNP\nSmith NNP\nvisited VBD\nOslo NNP\n\nElena NNP\nmet VBD\n")
    result = runner.invoke(app, ["predict", str(run), "--file", str(raw), "--conll"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    original = raw.read_text().splitlines()
    assert len(lines) == len(original) and lines[:2] == original[:2] and lines[6] == ""
    expected = TrainedTagger.load(run).tag_tokens([["Carla", "Smith", "visited", "Oslo"], ["Elena", "met"]])
    assert [line.split()[-1] for line in lines if len(line.split()) == 3] == expected[0] + expected[1]
    assert lines[2].startswith("Carla NNP ") and expected[0][:2] == ["B-PER", "I-PER"]
    piped = runner.invoke(app, ["predict", str(run), "--file", "-", "--conll"], input=raw.read_text())
    assert piped.exit_code == 0 and piped.stdout == result.stdout, piped.output
    ragged_stdin = runner.invoke(app, ["predict", str(run), "--file", "-", "--conll"], input="Carla NNP\nSmith\n")
    assert ragged_stdin.exit_code == 2 and "stdin:2" in ragged_stdin.output and "rnnkit-input" not in ragged_stdin.output
    bad = runner.invoke(app, ["predict", str(run), "Carla Smith", "--conll"])
    assert bad.exit_code == 2 and "--conll tags a file" in bad.output
    bad = runner.invoke(app, ["predict", str(run), "--file", str(raw), "--conll", "--json"])
    assert bad.exit_code == 2 and "drop --json" in bad.output
    ragged = tmp_path / "ragged.conll"
    ragged.write_text("Carla NNP\nSmith\n")
    bad = runner.invoke(app, ["predict", str(run), "--file", str(ragged), "--conll"])
    assert bad.exit_code == 2 and "ragged.conll" in bad.output and ":2" in bad.output


def _stub_tagger(token_column: int, model_scheme: str = "BIOES", file_scheme: str = "IOB2",
                 tags: tuple[str, ...] = ()) -> TrainedTagger:
    """A TrainedTagger without a network: it tags each token with the token upper-cased."""
    tagger = object.__new__(TrainedTagger)
    tagger.prep = SimpleNamespace(cfg=SimpleNamespace(token_column=token_column, encoding_errors="strict"),
                                  tags=list(tags), model_scheme=model_scheme, file_scheme=file_scheme)
    tagger.tag_tokens = lambda sentences, documents=None: [[t.upper() for t in s] for s in sentences]  # type: ignore[method-assign]
    return tagger


@pytest.mark.parametrize("layout", ["docstart-then-tokens", "crlf", "gzip", "column-1-tabs"])
def test_tag_conll_keeps_every_line_in_place(tmp_path, layout):
    rows = [["-DOCSTART-", "-X-"], ["a", "x"], ["b", "y"], [], ["-DOCSTART-", "-X-"], ["c", "z"], [], ["d", "w"]]
    column, sep, newline = (1, "\t", "\n") if layout == "column-1-tabs" else (0, " ", "\n")
    if layout == "crlf":
        newline = "\r\n"
    if layout == "docstart-then-tokens":  # no blank line around the second -DOCSTART- either
        rows = [r for i, r in enumerate(rows) if i != 3]
    if column == 1:
        rows = [[r[1], r[0]] if r and r[0] != "-DOCSTART-" else r for r in rows]
    text = newline.join(sep.join(r) for r in rows) + newline
    path = tmp_path / ("f.conll.gz" if layout == "gzip" else "f.conll")
    if layout == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_bytes(text.encode())
    out = _stub_tagger(column).tag_conll(path)
    assert len(out) == len(rows)
    for line, row in zip(out, rows):
        if not row or row[0] == "-DOCSTART-":
            assert line == sep.join(row)
        else:
            assert line == sep.join(row) + sep + row[column].upper()


def test_tag_conll_splits_every_line_as_the_reader_does(tmp_path):
    # A -DOCSTART- line written with a tab, and indented lines, in a file read with the default
    # whitespace separator: tag_conll once switched to the first token line's separator for later
    # lines, took these lines for tokens and crashed with StopIteration.
    path = tmp_path / "mixed.conll"
    path.write_text("EU B-ORG\n  rejects O\n\n-DOCSTART-\tO\n\n  -DOCSTART- O\nPeter B-PER\nsings O\n")
    assert _stub_tagger(0).tag_conll(path) == ["EU B-ORG EU", "  rejects O REJECTS", "", "-DOCSTART-\tO", "",
                                               "  -DOCSTART- O", "Peter B-PER PETER", "sings O SINGS"]


def test_stray_inside_tag_keeps_an_iob2_file_iob2_and_is_noted(tmp_path):
    # One I- after O in an IOB2 training file made the whole file IOB1, so every prediction came
    # back in IOB1 (I-PER for a name's first token); now the majority decides and the log names the line.
    train = _write_conll(tmp_path / "t.txt", 20, 0, extra_tag="I-ORG")  # 'Acme I-ORG' after '. O'
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path), "--name", "r",
                                 *FAST, "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "tags.json").read_text())["file_scheme"] == "IOB2"
    log = (tmp_path / "r" / "train.log").read_text()
    assert f"note: {train}:9: tag 'I-ORG' follows 'O', which IOB2 does not allow (1 of " in log
    assert "fix the tags, or set data.scheme" in log
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data", str(train)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"note: {train}:9: tag 'I-ORG' follows 'O', which IOB2 does not allow (1 of " in evaluated.output
    assert "evaluated sentences break IOB2" in evaluated.output


def test_empty_training_file_and_bilou_tags_name_file_and_fix(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- -X- O O\n\n\n")
    message = _error(tmp_path, "--train", str(empty))
    assert message.startswith(f"error: {empty}: no non-empty sentences in the training data") and "one token" in message
    dev = tmp_path / "dev.txt"
    dev.write_text("")
    message = _error(tmp_path, "--train", str(_write_conll(tmp_path / "t.txt", 5, 0)), "--dev", str(dev))
    assert message.startswith(f"error: {dev}: no non-empty sentences in the dev data")
    bilou = tmp_path / "bilou.txt"
    bilou.write_text("EU NNP B-NP U-ORG\nrejects VBZ B-VP O\n\nParis NNP B-NP U-LOC\n")
    one = tmp_path / "one.txt"  # a single sentence: held out for dev, nothing left to train on
    one.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert _error(tmp_path, "--train", str(one)).startswith(f"error: {one}: only 1 non-empty sentence(s), all held out")
    assert _error(tmp_path, "--train", str(bilou), "--dev", str(bilou)) == (
        f"error: {bilou}:1: tag 'U-ORG' is a BILOU tag, a scheme rnnkit does not read; fix: write the file in BIOES "
        "(U- becomes S-, L- becomes E-) and keep data.scheme=auto or BIOES")


def test_tag_conll_bad_layout_names_the_run_setting(tmp_path):
    path = tmp_path / "one-column.conll"
    path.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"one-column.conll:1: .*reads tokens from column 2.*fix: give a file"):
        _stub_tagger(2).tag_conll(path)


def test_token_scores_sum_the_model_tags_behind_the_shown_tag():
    tags = ["B-PER", "E-PER", "I-PER", "O", "S-PER"]
    same = _stub_tagger(0, tags=tuple(tags))._shown_as()  # BIOES model, IOB2 file
    expected = torch.tensor([[1, 0, 0, 0, 1], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 1]])
    assert torch.equal(same, expected.float())
    assert torch.equal(_stub_tagger(0, "BIOES", "BIOES", tuple(tags))._shown_as(), torch.eye(5))
    assert torch.equal(_stub_tagger(0, "IOB2", "IOB1", tuple(tags))._shown_as(), torch.eye(5))


def test_lr_decay_halves_the_rate_after_each_epoch_without_dev_improvement(ner_run):
    rows = list(csv.DictReader((ner_run[0] / "history.csv").read_text().splitlines()))
    best, decayed = -1.0, 0
    for row, after in zip(rows, rows[1:]):
        improved = float(row["dev_f1"]) > best
        best = max(best, float(row["dev_f1"]))
        assert float(after["lr"]) == pytest.approx(float(row["lr"]) * (1.0 if improved else 0.5))
        decayed += not improved
    assert decayed > 0, "the fixture run should have at least one epoch without improvement"
    with pytest.raises(ConfigError, match=r"train.lr_decay: must be in \(0, 1\]"):
        load_config(Config, overrides=["train.lr_decay=1.5"])


def test_softmax_decoder_cnn_chars_and_pos_tags(tmp_path):
    train = _write_conll(tmp_path / "t.txt", 60, 3)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path), "--name", "pos",
                                 "--set", "data.tag_column=1", "--set", "data.scheme=none",
                                 "--set", "model.decoder=softmax", "--set", "model.char_encoder=cnn", *FAST])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "pos" / "metrics.json").read_text())
    assert metrics["dev"]["token_accuracy"] == 1.0  # every token is NNP
    prediction = TrainedTagger.load(tmp_path / "pos").predict(["Anna visited Lima ."])[0]
    assert prediction["tags"] == ["NNP"] * 4 and prediction["entities"] == []  # POS tags are not chunks
    assert all(0.5 < p <= 1 for p in prediction["scores"])  # softmax probability of the chosen tag


def test_pretrained_vectors_are_loaded(tmp_path):
    from rnnkit.data.vectors import load_word_vectors

    vec = tmp_path / "vec.txt"
    vec.write_text("3 2\nparis 0.5 1.5\nAnna 1 2\nbad 1\n".replace("bad 1\n", ""))
    vectors, found = load_word_vectors(vec, ["<pad>", "Paris", "Anna", "zzz"], 2)
    assert found.tolist() == [False, True, True, False]
    assert vectors[1].tolist() == [0.5, 1.5]
    vec.write_text("paris 0.5 1.5 2\n")
    with pytest.raises(ValueError, match="vec.txt.*1"):
        load_word_vectors(vec, ["paris"], 2)


def _error(tmp_path: Path, *args: str) -> str:
    result = runner.invoke(app, ["train", "tagging", "--out", str(tmp_path), *args, *FAST])
    assert result.exit_code == 2, result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")][0]


def test_bad_inputs(tmp_path):
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("John NNP B-PER\nlives VBZ\nhere RB O\n")
    assert "ragged.txt" in _error(tmp_path, "--train", str(ragged)) and ":2" in _error(tmp_path, "--train", str(ragged))
    train = _write_conll(tmp_path / "t.txt", 20, 0)
    dev = _write_conll(tmp_path / "d.txt", 5, 1, extra_tag="B-ORG")
    message = _error(tmp_path, "--train", str(train), "--dev", str(dev))
    assert "'B-ORG'" in message or "'S-ORG'" in message
    assert "appears in dev data but not in training data" in message
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n-DOCSTART- -X- O O\n\n")
    assert "no non-empty sentences" in _error(tmp_path, "--train", str(empty))


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(ConfigError, match="choose one of 'auto', 'IOB1', 'IOB2', 'BIOES', 'none'"):
        load_config(Config, None, ["data.scheme=IOB3"])


@pytest.mark.data
def test_conll2003_sample(shared_data, tmp_path):
    src = shared_data / "conll2003"
    train = tmp_path / "train.txt"
    train.write_text("\n".join((src / "train.txt").read_text().splitlines()[:20000]) + "\n")
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(src / "valid.txt"),
                                 "--out", str(tmp_path), "--name", "c", "--set", "train.epochs=2",
                                 "--set", "model.hidden_size=32", "--set", "train.learning_rate=0.01", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["dev"]["f1"] > 0.3


def test_zero_digits_maps_digits_in_words_but_not_in_characters():
    from rnnkit.tasks.tagging import DataConfig, Preprocessor

    sentences = [SimpleNamespace(tokens=["In", "1996", "and", "1997"], tags=["O", "O", "O", "O"])]
    prep = Preprocessor.fit(sentences, DataConfig(zero_digits=True))
    assert "0000" in prep.words and "1996" not in prep.words and prep.words.counts["0000"] == 2
    words, chars = prep.encode(["2024"])
    assert words == [prep.words.token_to_id("0000")] and chars[0] == [prep.chars.token_to_id(c) for c in "2024"]
    plain = Preprocessor.fit(sentences, DataConfig())
    assert "1996" in plain.words and "0000" not in plain.words


def test_singleton_dropout_replaces_only_words_seen_once():
    from rnnkit.tasks.tagging import SequenceTagger

    model = SequenceTagger(10, 5, 3, embedding_dim=4, char_encoder="none", hidden_size=3, dropout=0.0,
                           word_dropout=0.0, singleton_dropout=1.0, unk_id=1)
    model.set_singletons([3, 4])
    seen = []
    model.word_embedding.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    words = torch.tensor([[2, 3, 4, 5, 0]])
    chars, char_lengths, lengths = torch.zeros(1, 5, 1, dtype=torch.long), torch.ones(1, 5, dtype=torch.long), torch.tensor([4])
    model.train()(words, chars, char_lengths, lengths)
    assert seen[-1].tolist() == [[2, 1, 1, 5, 0]]  # singletons -> <unk>, padding untouched
    model.eval()(words, chars, char_lengths, lengths)
    assert seen[-1].tolist() == words.tolist()  # never at inference
    assert "singletons" not in model.state_dict()  # a training aid, not part of the saved model


def test_singleton_dropout_trains_end_to_end(tmp_path):
    train = _write_conll(tmp_path / "t.txt", 60, 3)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path), "--name", "s",
                                 "--set", "model.singleton_dropout=0.5", "--set", "data.zero_digits=true", *FAST])
    assert result.exit_code == 0, result.output
    assert "singleton dropout:" in (tmp_path / "s" / "train.log").read_text()
    assert TrainedTagger.load(tmp_path / "s").prep.cfg.zero_digits
    with pytest.raises(ConfigError, match="singleton_dropout"):
        load_config(Config, overrides=["model.singleton_dropout=1.5"])
    assert load_config(Config, overrides=["train.average_weights=true"]).train.average_weights is True


# -- review fixes: evaluate refuses unseen tags, POS columns, the per-type table -----------------
def test_evaluate_refuses_tags_never_seen_in_training_naming_them_as_written(ner_run, tmp_path):
    run, _ = ner_run
    test = _write_conll(tmp_path / "test.txt", 5, 3, extra_tag="I-ORG")  # an IOB1-style start: S-ORG in BIOES
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(test)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {test}:9: tag 'I-ORG' appears in evaluation data but not in training data (known: O and "
                     "the types LOC, PER); add training sentences with it or remove it"]
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- -X- O O\n\n")
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(empty)])
    assert result.exit_code == 2 and "no tagged sentences read" in result.output


def test_dev_error_names_the_tag_written_in_the_file(tmp_path):
    train = _write_conll(tmp_path / "t.txt", 20, 0)
    dev = _write_conll(tmp_path / "d.txt", 5, 1, extra_tag="I-ORG")
    message = _error(tmp_path, "--train", str(train), "--dev", str(dev))
    assert f"{dev}:9: tag 'I-ORG' appears in dev data" in message and "S-ORG" not in message


def test_a_longer_entity_of_a_trained_type_is_not_an_unseen_tag(tmp_path):
    """Training persons are two tokens (BIOES B-, E-); a three-token one needs BIOES I-PER, which the
    file writes as I-PER, a tag the training file has: dev and evaluate take it."""
    train = _write_conll(tmp_path / "t.txt", 20, 0)
    dev = tmp_path / "d.txt"
    dev.write_text("Anna NNP B-NP B-PER\nMaria NNP I-NP I-PER\nSmith NNP I-NP I-PER\nsaw VBD B-VP O\n"
                   "Paris NNP B-NP B-LOC\n. . O O\n")
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path),
                                 "--name", "run", "--set", "train.epochs=1", "--set", "model.hidden_size=4",
                                 "--set", "model.embedding_dim=4", "--set", "model.char_hidden_size=2", "--quiet"])
    assert result.exit_code == 0, result.output
    tags = json.loads((tmp_path / "run" / "tags.json").read_text())["tags"]
    assert {"B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"} <= set(tags)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(dev)])
    assert result.exit_code == 0, result.output


def test_pos_column_with_the_default_scheme_names_file_line_and_the_fix(ner_run, tmp_path):
    train = _write_conll(tmp_path / "t.txt", 20, 0)
    message = _error(tmp_path, "--train", str(train), "--set", "data.tag_column=1")
    assert message.startswith(f"error: {train}:3: tag 'NNP' (column 1, data.tag_column) is not a chunk tag")
    assert "add --set data.scheme=none" in message
    run, dev = ner_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--set", "data.tag_column=1"])
    assert result.exit_code == 2 and f"{dev}:3: tag 'NNP'" in result.output and "read from the last column" in result.output
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--set", "data.scheme=none"])
    assert result.exit_code == 2 and "data.scheme: fixed at training" in result.output


def test_evaluate_prints_the_per_type_table(ner_run):
    run, dev = ner_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines.index("type  precision  recall      f1  support")
    assert [line.split()[0] for line in lines[header + 1:]] == ["LOC", "PER"]
    assert [line.split()[-1] for line in lines[header + 1:]] == ["30", "30"]
    assert any(line.startswith("sentences  ") and line.split()[1] == "30" for line in lines)


def test_tab_separated_tokens_with_spaces(tmp_path):
    path = tmp_path / "spaces.txt"
    path.write_text("New York\tB-LOC\nis\tO\n\nSan Jose\tB-LOC\nis\tO\n")
    message = _error(tmp_path, "--train", str(path))
    assert f"{path}:1" in message or f"{path}:2" in message
    assert "add --set data.separator=tab if tokens contain spaces" in message
    sentences = read_sentences(path, load_config(Config, None, ["data.separator=tab"]).data)
    assert [s.tokens for s in sentences] == [("New York", "is"), ("San Jose", "is")]
