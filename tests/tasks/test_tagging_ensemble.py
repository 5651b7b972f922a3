"""Tagger ensembles: decoding and scores against brute force over every tag sequence, and the CLI."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.tagging import (
    Config,
    Preprocessor,
    TrainedTagger,
    build_model,
    read_sentences,
    tag_probabilities,
)
from rnnkit.tasks.tagging_ensemble import TaggerEnsemble

from .test_tagging import FAST, _write_conll

runner = CliRunner()
SENTENCE = ["Anna", "Smith", "visited", "Quito"]


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    cfg = Config().data
    return Preprocessor.fit(read_sentences(_write_conll(tmp_path_factory.mktemp("ens") / "t.txt", 20, 1), cfg), cfg)


def _member(prep: Preprocessor, seed: int, decoder: str = "crf") -> TrainedTagger:
    """A small untrained tagger with random weights (so members disagree)."""
    torch.manual_seed(seed)
    model = build_model({"vocab_size": len(prep.words), "num_chars": len(prep.chars), "num_tags": len(prep.tags),
                         "embedding_dim": 6, "char_embedding_dim": 4, "char_hidden_size": 3, "hidden_size": 5,
                         "decoder": decoder}, prep)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    return TrainedTagger(model, prep)


def _log_probs(member: TrainedTagger, paths: torch.Tensor) -> torch.Tensor:
    """``log p(y | SENTENCE)`` under one member for every row ``y`` of ``paths`` ``[N, T]``."""
    emissions, lengths = member._emissions([SENTENCE])
    emissions = emissions.expand(paths.shape[0], -1, -1)
    mask = torch.ones(paths.shape, dtype=torch.bool)
    if member.model.crf is not None:
        return member.model.crf.log_likelihood(emissions, paths, mask)
    return emissions.log_softmax(-1).gather(2, paths.unsqueeze(2)).squeeze(2).sum(1)


@pytest.mark.parametrize("decoders", [("crf", "crf", "crf"), ("crf", "softmax"), ("softmax", "softmax")])
def test_ensemble_decodes_the_best_mean_log_probability_and_its_marginals(prep, decoders):
    members = [_member(prep, seed, d) for seed, d in enumerate(decoders)]
    ensemble = TaggerEnsemble(members)
    k, n = len(prep.tags), len(SENTENCE)
    paths = torch.tensor(list(itertools.product(range(k), repeat=n)))  # every tag sequence
    with torch.no_grad():
        mean = torch.stack([_log_probs(m, paths) for m in members]).mean(0)  # [N]
        emissions, lengths = ensemble._emissions([SENTENCE])
        decoded = ensemble.tag_tokens([SENTENCE])[0]
        marginals = tag_probabilities(ensemble._crf, emissions, lengths)[0]  # [T, K]
    best = paths[int(mean.argmax())].tolist()
    assert decoded == prep.to_file_tags([prep.tags[i] for i in best])
    weights = (mean - mean.logsumexp(0)).exp()  # the normalised geometric mean of the members
    brute = torch.stack([torch.zeros(k).index_add_(0, paths[:, t], weights) for t in range(n)])
    torch.testing.assert_close(marginals, brute, atol=1e-5, rtol=1e-4)
    if "crf" in decoders:  # the scheme's constraints hold: no I- or E- tag opens the sentence
        assert not prep.tags[best[0]].startswith(("I-", "E-"))


def test_ensemble_of_copies_equals_the_single_tagger_and_tag_order_does_not_matter(prep):
    single = _member(prep, 3)
    texts = ["Anna Smith visited Quito .", "Elena met Boris in Lima today ."]
    expected = single.predict(texts)
    assert TaggerEnsemble([single]).predict(texts) == expected
    assert TaggerEnsemble([single, copy.deepcopy(single)]).predict(texts) == expected

    # The same network with its tags listed in reverse: every per-tag row and column reversed.
    reordered = copy.deepcopy(single)
    reordered.prep = copy.copy(prep)
    reordered.prep.tags = prep.tags[::-1]
    flip = torch.arange(len(prep.tags) - 1, -1, -1)
    model = reordered.model
    assert model.crf is not None
    with torch.no_grad():
        model.emit.weight.copy_(model.emit.weight[flip])
        model.emit.bias.copy_(model.emit.bias[flip])
        model.crf.start.copy_(model.crf.start[flip])
        model.crf.end.copy_(model.crf.end[flip])
        model.crf.transitions.copy_(model.crf.transitions[flip][:, flip])
        for name in ("start_ok", "end_ok"):
            getattr(model.crf, name).copy_(getattr(model.crf, name)[flip])
        model.crf.transitions_ok.copy_(model.crf.transitions_ok[flip][:, flip])
    assert reordered.predict(texts)[0]["tags"] == expected[0]["tags"]
    both = TaggerEnsemble([single, reordered]).predict(texts)
    assert [r["tags"] for r in both] == [r["tags"] for r in expected]
    for got, want in zip(both, expected):
        assert got["scores"] == pytest.approx(want["scores"], abs=2e-4)


def test_ensemble_members_must_share_tags_and_schemes(prep, tmp_path):
    member = _member(prep, 0)
    other_cfg = Config().data
    other_cfg.train_scheme = "IOB2"
    other_prep = Preprocessor.fit(read_sentences(_write_conll(tmp_path / "t.txt", 20, 1), other_cfg), other_cfg)
    with pytest.raises(ValueError, match="must share their tags"):
        TaggerEnsemble([member, _member(other_prep, 1)])
    iob1_cfg = Config().data
    iob1_cfg.scheme = "IOB1"  # the same tags (BIOES in the model), another scheme for the files
    iob1_prep = Preprocessor.fit(read_sentences(_write_conll(tmp_path / "u.txt", 20, 1), iob1_cfg), iob1_cfg)
    assert iob1_prep.tags == prep.tags and iob1_prep.file_scheme != prep.file_scheme
    with pytest.raises(ValueError, match="must share the tag schemes"):
        TaggerEnsemble([member, _member(iob1_prep, 1)])
    with pytest.raises(ValueError, match="at least one"):
        TaggerEnsemble([])


def test_ensemble_from_the_command_line(tmp_path):
    train = _write_conll(tmp_path / "train.txt", 80, 1)
    dev = _write_conll(tmp_path / "dev.txt", 20, 2)
    for seed in (0, 1):
        result = runner.invoke(app, ["train", "tagging", "--train", str(train), "--dev", str(dev), "--out",
                                     str(tmp_path), "--name", f"s{seed}", "--set", f"train.seed={seed}", *FAST])
        assert result.exit_code == 0, result.output
    runs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    result = runner.invoke(app, ["evaluate", runs[0], "--ensemble", runs[1], "--data", str(dev), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    expected = TaggerEnsemble.load(runs).evaluate(dev)
    assert metrics["f1"] == pytest.approx(expected["f1"]) and metrics["f1"] > 0.9
    out = runner.invoke(app, ["predict", runs[0], "--ensemble", runs[1], "Carla Smith visited Oslo .", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["tags"] == TaggerEnsemble.load(runs).tag_tokens([["Carla", "Smith", "visited",
                                                                                      "Oslo", "."]])[0]
    # A run of another task cannot join.
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"task": "text-classification"}))
    (other / "config.yaml").write_text("data: {}\n")
    (other / "model.safetensors").write_bytes(b"")
    bad = runner.invoke(app, ["evaluate", runs[0], "--ensemble", str(other), "--data", str(dev)])
    assert bad.exit_code == 2 and "ensembles combine tagging runs" in bad.output
