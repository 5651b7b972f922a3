"""Document context for sequence labelling: documents from -DOCSTART-, grouping, and the task end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.conll import read_conll
from rnnkit.nn.crf import CRF
from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.tagging import (
    Config,
    Preprocessor,
    TrainedTagger,
    build_model,
    group_sentences,
)
from rnnkit.tasks.tagging_ensemble import TaggerEnsemble

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


def test_sentences_are_read_with_their_neighbours_then_decoded_and_converted_one_by_one(tmp_path):
    path = tmp_path / "iob1.txt"  # an IOB1 file: chunks open with I-, B- only between two of one type
    path.write_text("Oslo I-LOC\n\nLima I-LOC\nand O\n\nx I-LOC\ny B-LOC\n")
    cfg = Config().data
    cfg.scheme, cfg.document_context = "IOB1", 5
    prep = Preprocessor.fit(read_conll(path), cfg)
    assert (prep.file_scheme, prep.model_scheme) == ("IOB1", "BIOES")
    model = build_model({"vocab_size": len(prep.words), "num_chars": len(prep.chars), "num_tags": len(prep.tags),
                         "embedding_dim": 4, "char_embedding_dim": 3, "char_hidden_size": 2, "hidden_size": 3}, prep)
    with torch.no_grad():  # every token scores S-LOC (a one-token location) far above the rest
        model.emit.weight.zero_()
        model.emit.bias.fill_(-5.0)
        model.emit.bias[prep.tags.index("S-LOC")] = 5.0
    tagger = TrainedTagger(model, prep)
    read: list = []
    emissions = tagger._emissions
    tagger._emissions = lambda batch: (read.extend(list(s) for s in batch), emissions(batch))[1]  # type: ignore
    sentences = [["Oslo"], ["Lima"], ["x", "y"], ["z"]]
    tags = tagger.tag_tokens(sentences, documents=[0, 0, 0, 1])
    assert read == [["Oslo", "Lima", "x", "y"], ["z"]]  # neighbours of one document, at most 5 tokens
    # Converted per sentence: each sentence's first location is I-LOC, as if it stood alone.
    assert tags == [["I-LOC"], ["I-LOC"], ["I-LOC", "B-LOC"], ["I-LOC"]]
    read.clear()
    assert tagger.tag_tokens(sentences) == tags and read == sentences  # no documents: one by one
    with pytest.raises(ValueError, match="3 document indices for 4 sentences"):
        tagger.tag_tokens(sentences, documents=[0, 0, 0])


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

    documents = tmp_path / "documents.txt"  # ten documents of 12 sentences; no --dev holds out whole ones
    documents.write_text("".join(_write_conll(tmp_path / f"d{i}.txt", 12, i).read_text() for i in range(10)))
    held = runner.invoke(app, ["train", "tagging", "--train", str(documents), "--out", str(tmp_path), "--name", "held",
                               "--set", "data.document_context=20", "--set", "train.epochs=1", *FAST[2:-1]])
    assert held.exit_code == 0 and "held out 1 training document (12 sentences)" in held.output, held.output

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
    prep = ensemble.prep
    assert context.prep.tags == alone.prep.tags == prep.tags
    crf = CRF(len(prep.tags), prep.constraints())  # the mean of the two CRFs, built here
    with torch.no_grad():
        for name in ("start", "transitions", "end"):
            a, b = getattr(context.model.crf, name), getattr(alone.model.crf, name)
            getattr(crf, name).copy_((a + b) / 2)
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
                path = crf.decode(mean.unsqueeze(0), torch.ones(1, n, dtype=torch.bool))[0][0]
                expected.append(prep.to_file_tags([prep.tags[k] for k in path]))
    assert ensemble.tag_tokens(tokens, documents) == expected
    # Members sharing the context read the same groups: two copies decide as one.
    assert TaggerEnsemble([context, copy.deepcopy(context)]).tag_tokens(tokens, documents) == \
        context.tag_tokens(tokens, documents)
    # --conll output reads the file's documents the same way.
    raw = runner.invoke(app, ["predict", str(tmp_path / "ctx"), "--file", str(dev), "--conll"])
    assert raw.exit_code == 0, raw.output
    every = read_conll(dev, 0, -1)
    conll_tags = [line.split()[-1] for line in raw.output.splitlines() if len(line.split()) == 5]
    assert conll_tags == [t for s in context.tag_tokens([s.tokens for s in every], [s.document for s in every])
                          for t in s]
    scored = ensemble.evaluate(dev)
    assert scored["f1"] > 0.9 and scored["sentences"] == 30


@pytest.mark.data
def test_conll2003_documents_context_and_ensemble(shared_data, tmp_path):
    src = shared_data / "conll2003"
    # Published document counts of CoNLL-2003 English (Tjong Kim Sang and De Meulder 2003, table 1).
    for split, count in (("train", 946), ("valid", 216), ("test", 231)):
        assert max(s.document for s in read_conll(src / f"{split}.txt")) + 1 == count
    train = tmp_path / "train.txt"
    train.write_text("\n".join((src / "train.txt").read_text().splitlines()[:20000]) + "\n")
    for name, extra in (("plain", []), ("ctx", ["--set", "data.document_context=32", "--set", "train.batch_size=2"])):
        result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(src / "valid.txt"),
                                     "--out", str(tmp_path), "--name", name, "--set", "train.epochs=2",
                                     "--set", "model.hidden_size=32", "--set", "train.learning_rate=0.01", *extra, "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / name / "metrics.json").read_text())["dev"]["f1"] > 0.3
    result = runner.invoke(app, ["evaluate", str(tmp_path / "plain"), "--ensemble", str(tmp_path / "ctx"),
                                 "--data", str(src / "valid.txt"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["f1"] > 0.3
