"""Review of sequence labelling as a user with a real CoNLL file meets it: schemes, readers, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.conll import read_conll
from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.run import RunDir
from rnnkit.tasks.tagging import Config, Preprocessor, TrainedTagger, build_model, collate, read_sentences

runner = CliRunner()
TINY = ["--set", "train.epochs=1", "--set", "model.hidden_size=4", "--set", "model.embedding_dim=4",
        "--set", "model.char_hidden_size=2", "--set", "model.char_embedding_dim=2", "--quiet"]


def _write(path: Path, sentences: list[list[tuple[str, str]]], sep: str = " ") -> Path:
    lines: list[str] = []
    for sentence in sentences:
        lines += [f"{w}{sep}{t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tagger(path: Path, **data: object) -> TrainedTagger:
    """An untrained tagger (random weights) fitted to the tags and words of ``path``."""
    cfg = Config().data
    for key, value in data.items():
        setattr(cfg, key, value)
    prep = Preprocessor.fit(read_sentences(path, cfg), cfg)
    torch.manual_seed(0)
    model = build_model({"vocab_size": len(prep.words), "num_chars": len(prep.chars), "num_tags": len(prep.tags),
                         "embedding_dim": 4, "char_embedding_dim": 2, "char_hidden_size": 2, "hidden_size": 4}, prep)
    return TrainedTagger(model, prep)


SINGLE_LOC = [[("Anna", "S-PER"), ("visited", "O"), ("Paris", "S-LOC"), (".", "O")]] * 12
TWO_TOKEN_LOC = [[("Anna", "S-PER"), ("visited", "O"), ("New", "B-LOC"), ("York", "E-LOC"), (".", "O")]] * 3


def test_bioes_file_with_a_longer_entity_of_a_trained_type_in_dev_trains(tmp_path):
    # A BIOES file trained in BIOES (the default): training saw only one-token LOCs (S-LOC), dev has
    # a two-token one (B-LOC E-LOC). Training stopped with "tag 'B-LOC' appears in dev data but not
    # in training data (known: O and the types LOC, PER)": the spellings of a seen type were only
    # added when the model's scheme differed from the file's.
    train = _write(tmp_path / "train.txt", SINGLE_LOC)
    dev = _write(tmp_path / "dev.txt", TWO_TOKEN_LOC)
    result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out",
                                 str(tmp_path), "--name", "run", *TINY])
    assert result.exit_code == 0, result.output
    tags = json.loads((tmp_path / "run" / "tags.json").read_text())["tags"]
    assert {"B-LOC", "I-LOC", "E-LOC", "S-LOC"} <= set(tags)
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(dev), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["per_type"]["LOC"]["support"] == 3


def test_same_scheme_training_learns_well_formed_tags(tmp_path):
    # data.train_scheme=same on an IOB2 file with a stray I-PER after O (read as conlleval reads it,
    # as a PER chunk): the gold path kept the O -> I-PER move the CRF forbids, so each such sentence
    # added 10000 to the loss (a logged train loss in the thousands) and the model learnt a tag it
    # can never decode there.
    train = _write(tmp_path / "t.txt", [[("Anna", "B-PER"), ("Smith", "I-PER"), ("sang", "O")],
                                        [("said", "O"), ("Smith", "I-PER"), (".", "O")]])
    tagger = _tagger(train, train_scheme="same")
    prep = tagger.prep
    assert prep.model_scheme == prep.file_scheme == "IOB2"
    stray = read_sentences(train, prep.cfg)[1]
    assert prep.to_model_tags(stray.tags) == ["O", "B-PER", "O"]
    words, chars = prep.encode(list(stray.tokens))
    w, c, cl, lengths, tags = collate([(words, chars, prep.encode_tags(stray, "training"))])
    model = tagger.model
    loss = model.loss(model(w, c, cl, lengths), tags, lengths)
    assert loss.item() < 100, loss.item()


def test_predict_conll_on_a_missing_file_says_not_found(tmp_path):
    # It said "nope.conll:None: file not found (this run reads tokens from column 0 of UTF-8 text,
    # ...); fix: give a file with the training files' column layout, re-encoded as UTF-8".
    tagger = _tagger(_write(tmp_path / "t.txt", SINGLE_LOC))
    with pytest.raises(FileNotFoundError, match="not found") as caught:
        tagger.tag_conll(tmp_path / "nope.conll")
    assert "None" not in str(caught.value) and "column" not in str(caught.value)


def test_tab_file_with_a_space_separated_docstart_line(tmp_path):
    # With data.separator=tab, a "-DOCSTART- -X- -X- O" line written with spaces (as CoNLL-2003 writes
    # it) was read as a one-column token line, and the first real line then failed with "line has 2
    # columns, expected 1 (as on line 1)", pointing at the line the docs say is skipped.
    path = tmp_path / "t.tsv"
    path.write_text("-DOCSTART- -X- -X- O\n\nNew York\tB-LOC\nis\tO\n\n-DOCSTART- -X- O\nParis\tB-LOC\n")
    sentences = read_conll(path, separator="\t")
    assert [(s.tokens, s.document) for s in sentences] == [(("New York", "is"), 0), (("Paris",), 1)]
    tagger = _tagger(path, separator="tab")
    out = tagger.tag_conll(path)
    assert out[0] == "-DOCSTART- -X- -X- O" and out[5] == "-DOCSTART- -X- O"
    assert out[2].startswith("New York\tB-LOC\t") and out[6].startswith("Paris\tB-LOC\t")


def test_tab_separated_columns_are_stripped_of_padding_spaces(tmp_path):
    # "EU\tB-ORG " (a trailing space, or columns padded for alignment) read the tag as 'B-ORG ', an
    # entity type 'ORG ' of its own next to 'ORG': silently split types and wrong scores.
    path = tmp_path / "t.tsv"
    path.write_text("EU \tB-ORG \nNew York\tB-LOC\n\nthe\tO\nEU\tB-ORG\n")
    sentences = read_conll(path, separator="\t")
    assert sentences[0].tokens == ("EU", "New York") and sentences[0].tags == ("B-ORG", "B-LOC")
    prep = _tagger(path, separator="tab").prep
    assert sorted({t[2:] for t in prep.tags if t != "O"}) == ["LOC", "ORG"]


def test_unseen_tag_error_with_an_all_o_training_file_says_so(tmp_path):
    # The list of known types was empty: "(known: O and the types )".
    train = _write(tmp_path / "t.txt", [[("a", "O"), ("b", "O")]])
    prep = _tagger(train).prep
    dev = read_conll(_write(tmp_path / "d.txt", [[("EU", "B-ORG")]]))[0]
    with pytest.raises(ConfigError, match="O only") as caught:
        prep.encode_tags(dev, "dev")
    assert "the types )" not in str(caught.value)


def test_evaluate_note_on_another_scheme_gives_advice_that_evaluate_can_follow(tmp_path):
    # A run trained on an IOB1 file evaluating an IOB2 file: the note said "set data.scheme to the
    # files' scheme", which evaluate refuses (data.scheme is fixed at training), and explained only
    # I- tags while the tag it named was a B-.
    iob1 = [[("Anna", "I-PER"), ("Smith", "I-PER"), ("sang", "O")]] * 4
    tagger = _tagger(_write(tmp_path / "t.txt", iob1))
    assert tagger.prep.file_scheme == "IOB1"
    iob2 = _write(tmp_path / "e.txt", [[("Anna", "B-PER"), ("Smith", "I-PER"), ("sang", "O")]])
    note = tagger.evaluate(iob2)["notes"][0]
    assert "set data.scheme" not in note and "fixed at training" in note
    assert "a tag that cannot continue a chunk starts one" in note


@pytest.mark.parametrize("train_scheme", ["BIOES", "same"])
def test_underscore_tags_are_answered_as_the_files_write_them(tmp_path, train_scheme):
    # A file that writes B_PER: the model's tags are B-PER/S-PER, and answers came back as B-PER, so
    # `--conll` wrote another spelling than the file's and `evaluate` counted every entity token as
    # wrong in token_accuracy (0.40 beside an F1 of 1.0 on a perfectly tagged file).
    sentence = [("Anna", "B_PER"), ("Smith", "I_PER"), ("sang", "O"), ("in", "O"), ("Oslo", "B_LOC")]
    path = _write(tmp_path / "t.txt", [sentence] * 3)
    prep = _tagger(path, train_scheme=train_scheme).prep
    gold = [t for _, t in sentence]
    assert prep.to_file_tags(prep.to_model_tags(gold)) == gold
    assert all("_" not in t for t in prep.tags)  # the model (and its CRF constraints) reads one spelling
    run = RunDir.create(tmp_path / "runs", "tagging")
    prep.save(run)
    assert Preprocessor.load(run).tag_separator == "_"


def test_collate_pads_like_a_plain_loop():
    """collate builds each tensor from padded Python lists in one call; a plain per-row loop is the reference."""
    import random

    import torch

    from rnnkit.tasks.tagging import collate

    rng = random.Random(0)
    items = [([rng.randint(1, 99) for _ in range(n)], [[rng.randint(1, 50) for _ in range(rng.randint(1, 9))]
                                                       for _ in range(n)], [rng.randint(0, 8) for _ in range(n)])
             for n in (rng.randint(1, 12) for _ in range(7))]
    items += [([], [], []), ([5, 6], [[1], [2, 3]], None)]  # an empty sentence; no tags (prediction)
    words, chars, char_lengths, lengths, tags = collate(items)
    steps = max(len(w) for w, _, _ in items)
    width = max(len(c) for _, cs, _ in items for c in cs)
    assert words.shape == (9, steps) and chars.shape == (9, steps, width) and tags.shape == (9, steps)
    for b, (w, cs, t) in enumerate(items):
        assert lengths[b] == len(w)
        assert words[b].tolist() == w + [0] * (steps - len(w))
        assert tags[b].tolist() == (t or []) + [-1] * (steps - len(t or []))
        for i in range(steps):
            c = cs[i] if i < len(cs) else []
            assert chars[b, i].tolist() == c + [0] * (width - len(c))
            assert char_lengths[b, i] == len(c)
    assert all(x.dtype == torch.long for x in (words, chars, char_lengths, lengths, tags))
    empty = collate([([], [], [])])
    assert [tuple(x.shape) for x in empty] == [(1, 1), (1, 1, 1), (1, 1), (1,), (1, 1)]
