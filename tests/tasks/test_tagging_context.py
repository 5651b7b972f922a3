"""Document context for sequence labelling: documents from -DOCSTART-, grouping, and the task end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.conll import read_conll
from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.tagging import Config, TaggerEnsemble, TrainedTagger, decode_tags, group_sentences

from .test_tagging import FAST, _write_conll

runner = CliRunner()


def test_read_conll_numbers_documents(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("-DOCSTART- O\n\nA O\nB O\n\nC O\n\n-DOCSTART- O\n\nD O\n")
    assert [s.document for s in read_conll(path)] == [0, 0, 1]
    path.write_text("A O\n\n-DOCSTART- O\n\nB O\n\n-DOCSTART- O\n-DOCSTART- O\n\nC O\n")  # text before the first
    assert [s.document for s in read_conll(path)] == [0, 1, 3]
    path.write_text("A O\n\nB O\n")
    assert [s.document for s in read_conll(path)] == [0, 0]


def test_group_sentences_packs_neighbours_of_one_document():
    lengths, documents = [3, 4, 5, 2, 9, 1], [0, 0, 0, 1, 1, 1]
    assert group_sentences(lengths, documents, 8) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5), range(5, 6)]
    assert group_sentences(lengths, documents, 100) == [range(0, 3), range(3, 6)]
    assert group_sentences(lengths, documents, 0) == [range(i, i + 1) for i in range(6)]
    assert group_sentences(lengths, None, 100) == [range(i, i + 1) for i in range(6)]
    assert group_sentences([], [], 10) == []


def _recording_tagger(context: int) -> tuple[TrainedTagger, list]:
    """A tagger without a network that tags each token upper-cased and records the sequences it reads."""
    seen: list = []
    tagger = object.__new__(TrainedTagger)
    tagger.prep = SimpleNamespace(cfg=SimpleNamespace(document_context=context))

    def tag(sequences, with_scores):
        seen.extend(list(s) for s in sequences)
        return [([t.upper() for t in s], []) for s in sequences]

    tagger._tag = tag  # type: ignore[method-assign]
    return tagger, seen


def test_sentences_of_a_document_are_read_together_and_split_back():
    sentences = [["a", "b"], ["c"], [], ["d", "e", "f"], ["g"]]
    tagger, seen = _recording_tagger(context=4)
    tags = tagger.tag_tokens(sentences, documents=[0, 0, 0, 0, 1])
    assert tags == [["A", "B"], ["C"], [], ["D", "E", "F"], ["G"]]
    assert seen == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    tagger, seen = _recording_tagger(context=4)
    assert tagger.tag_tokens(sentences) == tags and seen == sentences  # no documents: one by one
    tagger, seen = _recording_tagger(context=0)
    assert tagger.tag_tokens(sentences, documents=[0] * 5) == tags and seen == sentences


def test_document_context_end_to_end_and_errors(tmp_path):
    train = _write_conll(tmp_path / "train.txt", 120, 1)
    dev = _write_conll(tmp_path / "dev.txt", 30, 2)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path),
                                 "--name", "ctx", "--set", "data.document_context=20", *FAST[:-1]])
    assert result.exit_code == 0, result.output
    assert "document context:" in result.output and "sequences of consecutive sentences" in result.output
    metrics = json.loads((tmp_path / "ctx" / "metrics.json").read_text())
    assert metrics["dev"]["f1"] > 0.9, metrics["dev"]
    tagger = TrainedTagger.load(tmp_path / "ctx")
    assert tagger.prep.cfg.document_context == 20
    evaluated = json.loads(runner.invoke(app, ["evaluate", str(tmp_path / "ctx"), "--data", str(dev), "--json"]).output)
    assert evaluated["f1"] == pytest.approx(metrics["dev"]["f1"])
    lines = (tmp_path / "ctx" / "dev.predictions.conll").read_text().split("\n\n")
    assert len([block for block in lines if block.strip()]) == 30  # still one block per sentence

    bad = runner.invoke(app, ["train", "tagging", "--train", str(train), "--out", str(tmp_path),
                              "--set", "data.document_context=-5", *FAST])
    assert bad.exit_code != 0 and "data.document_context=-5" in bad.output
    with pytest.raises(ConfigError, match="document_context"):
        cfg = Config()
        cfg.data.document_context = 10**9
        cfg.validate()

    plain = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path),
                                "--name", "plain", *FAST])
    assert plain.exit_code == 0, plain.output
    # An ensemble of a run with context and one without: each member reads the file as it was trained.
    sentences = read_conll(dev, 0, -1)[:12]
    tokens, documents = [s.tokens for s in sentences], [s.document for s in sentences]
    ensemble = TaggerEnsemble.load([tmp_path / "ctx", tmp_path / "plain"])
    context, alone = ensemble.members
    groups = group_sentences([len(s) for s in tokens], documents, 20)
    assert any(len(g) > 1 for g in groups)
    expected = []
    with torch.no_grad():
        for group in groups:  # reference: one group, one sentence at a time
            joined = [t for i in group for t in tokens[i]]
            in_context = context._emissions([joined])[0][0]
            position = 0
            for i in group:
                n = len(tokens[i])
                mean = (in_context[position:position + n] + alone._emissions([tokens[i]])[0][0]) / 2
                position += n
                path = decode_tags(ensemble.crf, mean.unsqueeze(0), torch.tensor([n]))[0]
                expected.append(ensemble.prep.to_file_tags([ensemble.prep.tags[k] for k in path]))
    assert ensemble.tag_tokens(tokens, documents) == expected
    scored = ensemble.evaluate(dev)
    assert scored["f1"] > 0.9 and scored["sentences"] == 30
