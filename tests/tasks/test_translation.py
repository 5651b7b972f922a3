"""Translation: decoding against brute force, masks, BLEU by hand, bad input, and the task end to end."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import DataError
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.run import RunDir
from rnnkit.tasks.seq2seq import Seq2Seq, beam_search, greedy_search, normalized
from rnnkit.tasks.translation import (
    Config,
    DataConfig,
    Preprocessor,
    TrainedTranslator,
    corpus_scores,
    read_pairs,
    train,
)

runner = CliRunner()

# -- a toy language pair: a word-for-word dictionary, target in reversed order -------------------
SOURCE_WORDS = ["ka", "lu", "mi", "no", "pe", "ri", "so", "tu", "va", "ze"]
TARGET_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
DICTIONARY = dict(zip(SOURCE_WORDS, TARGET_WORDS))


def toy_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    sources, targets = [], []
    for _ in range(n):
        words = [rng.choice(SOURCE_WORDS) for _ in range(rng.randint(2, 6))]
        sources.append(" ".join(words))
        targets.append(" ".join(DICTIONARY[w] for w in reversed(words)))
    return sources, targets


def write_pair(folder: Path, name: str, n: int, seed: int) -> tuple[str, str]:
    src, tgt = toy_pairs(n, seed)
    (folder / f"{name}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return str(folder / f"{name}.src"), str(folder / f"{name}.tgt")


SMALL = ["data.vocab_size=60", "model.embedding_dim=32", "model.hidden_size=32", "model.dropout=0.0",
         "train.batch_size=32", "train.learning_rate=0.005", "decode.beam_size=3"]


def _model(attention: str = "bahdanau", cell: str = "lstm", coverage: bool = False, vocab: int = 9,
           seed: int = 0, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(7, vocab, cell=cell, embedding_dim=6, hidden_size=5, attention=attention, coverage=coverage,
                    dropout=0.0, **kw).double().eval()
    with torch.no_grad():  # larger weights: peaked, varied distributions
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _source() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([4, 2, 3])
    src = torch.randint(4, 7, (3, 4))
    src[1, 2:] = 0
    src[2, 3:] = 0
    return src, lengths


def _sequence_log_prob(model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor, tokens: list[int]) -> float:
    """Teacher-forced log-probability of ``tokens + <eos>`` for one sentence, one step at a time."""
    with torch.no_grad():
        return _forced(model, src, lengths, tokens)


def _forced(model: Seq2Seq, src: torch.Tensor, lengths: torch.Tensor, tokens: list[int]) -> float:
    memory, state = model.encode(src, lengths)
    previous, total = torch.tensor([model.bos_id]), 0.0
    for token in [*tokens, model.eos_id]:
        log_probs, state, _ = model.step(previous, state, memory)
        total += float(log_probs[0, token])
        previous = torch.tensor([token])
    return total


# -- decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,cell,coverage", [("bahdanau", "lstm", False), ("luong_general", "gru", True),
                                                     ("luong_dot", "lstm", False), ("bahdanau", "layernorm_gru", True)])
def test_beam_one_equals_greedy(attention, cell, coverage):
    model = _model(attention, cell, coverage, decoder_layers=2)
    src, lengths = _source()
    greedy = greedy_search(model, src, lengths, max_length_ratio=2.0, max_length_offset=3)
    beam = beam_search(model, src, lengths, beam_size=1, max_length_ratio=2.0, max_length_offset=3)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert math.isclose(g.log_prob, b.log_prob, rel_tol=1e-9, abs_tol=1e-9)
        torch.testing.assert_close(g.attention, b.attention)


@pytest.mark.parametrize("beam,alpha", [(2, 0.0), (3, 1.0), (5, 0.6)])
def test_beam_search_over_a_batch_equals_each_sentence_alone(beam, alpha):
    """The batched bookkeeping (sentences finishing at different steps) changes nothing per sentence."""
    model = _model("luong_general", "gru", vocab=8, seed=5)
    torch.manual_seed(1)
    lengths = torch.tensor([5, 1, 3, 4, 2])
    src = torch.randint(4, 7, (5, 5))
    for i, n in enumerate(lengths.tolist()):
        src[i, n:] = 0
    together = beam_search(model, src, lengths, beam_size=beam, nbest=beam, length_penalty=alpha,
                           max_length_ratio=1.0, max_length_offset=4)
    for i, n in enumerate(lengths.tolist()):
        (alone,) = beam_search(model, src[i:i + 1, :n], lengths[i:i + 1], beam_size=beam, nbest=beam,
                               length_penalty=alpha, max_length_ratio=1.0, max_length_offset=4)
        assert [h.tokens for h in together[i]] == [h.tokens for h in alone]
        for a, b in zip(together[i], alone, strict=True):
            assert math.isclose(a.score, b.score, rel_tol=1e-9, abs_tol=1e-12)
            torch.testing.assert_close(a.attention, b.attention)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_beam_search_finds_the_brute_force_best_of_a_tiny_model(alpha, attention):
    """Vocabulary pad, unk, bos, eos, a, b (4 producible tokens with <eos>), at most 3 tokens: a beam of
    27 keeps every prefix, so its n-best list must equal the brute-force ranking of all 40 outputs."""
    model = _model(attention, vocab=6, seed=3)
    src, lengths = torch.tensor([[4, 5, 6]]), torch.tensor([3])
    producible = [1, 4, 5]  # unk, a, b (pad and bos are never produced)
    candidates = [list(seq) for n in range(4) for seq in itertools.product(producible, repeat=n)]
    scored = sorted(((normalized(_sequence_log_prob(model, src, lengths, c), len(c) + 1, alpha), c)
                     for c in candidates), key=lambda x: -x[0])
    (found,) = beam_search(model, src, lengths, beam_size=27, nbest=5, length_penalty=alpha,
                           max_length_ratio=0.0, max_length_offset=3)
    assert [h.tokens for h in found] == [c for _, c in scored[:5]]
    for h, (score, _) in zip(found, scored):
        assert math.isclose(h.score, score, rel_tol=1e-9)
    # a small beam returns a real hypothesis whose score is bookkept exactly
    (small,) = beam_search(model, src, lengths, beam_size=2, nbest=2, length_penalty=alpha, max_length_ratio=0.0,
                           max_length_offset=3)
    for h in small:
        exact = _sequence_log_prob(model, src, lengths, h.tokens)
        assert math.isclose(h.log_prob, exact, rel_tol=1e-9)
        assert h.score <= scored[0][0] + 1e-12
    assert small[0].score >= small[1].score


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_a_wider_beam_never_scores_below_greedy(attention):
    """Pruning can drop the greedy path from a beam (seed 2, luong_general, beam 3, no length penalty
    did before the greedy output became a candidate); the best hypothesis must never score lower
    than greedy decoding under the same length normalisation, and n-best lists hold no duplicates."""
    for seed in range(6):
        model = _model(attention, "gru", vocab=12, seed=seed)
        torch.manual_seed(seed)
        lengths = torch.tensor([5, 3, 4, 2])
        src = torch.randint(4, 7, (4, 5))
        for i, n in enumerate(lengths.tolist()):
            src[i, n:] = 0
        greedy = greedy_search(model, src, lengths, max_length_ratio=1.0, max_length_offset=4)
        for beam, alpha in itertools.product((2, 3, 5), (0.0, 1.0)):
            found = beam_search(model, src, lengths, beam_size=beam, nbest=beam, length_penalty=alpha,
                                max_length_ratio=1.0, max_length_offset=4)
            for i, (g, hyps) in enumerate(zip(greedy, found)):
                assert hyps[0].score >= normalized(g.log_prob, len(g.tokens) + 1, alpha) - 1e-12
                assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
                assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
                for h in hyps:
                    n = int(lengths[i])
                    exact = _sequence_log_prob(model, src[i:i + 1, :n], lengths[i:i + 1], h.tokens)
                    assert math.isclose(h.log_prob, exact, rel_tol=1e-9)
                    assert math.isclose(h.score, normalized(exact, len(h.tokens) + 1, alpha), rel_tol=1e-9)
                    assert h.attention.shape == (len(h.tokens) + 1, n)


def test_batched_decoding_equals_one_sentence_at_a_time_and_respects_the_length_limit():
    model = _model("luong_general", "gru", coverage=True)
    src, lengths = _source()
    greedy = greedy_search(model, src, lengths, max_length_ratio=1.0, max_length_offset=1)
    beams = beam_search(model, src, lengths, beam_size=3, nbest=3, max_length_ratio=1.0, max_length_offset=1)
    for b in range(3):
        n = int(lengths[b])
        (alone,) = greedy_search(model, src[b:b + 1, :n], lengths[b:b + 1], max_length_ratio=1.0, max_length_offset=1)
        assert alone.tokens == greedy[b].tokens
        (alone_beam,) = beam_search(model, src[b:b + 1, :n], lengths[b:b + 1], beam_size=3, nbest=3,
                                    max_length_ratio=1.0, max_length_offset=1)
        assert [h.tokens for h in alone_beam] == [h.tokens for h in beams[b]]
        assert all(len(h.tokens) <= n + 1 for h in beams[b]) and len(greedy[b].tokens) <= n + 1
        assert [h.score for h in beams[b]] == sorted((h.score for h in beams[b]), reverse=True)


def test_model_attention_sums_to_one_over_real_source_tokens_and_is_zero_on_padding():
    for attention in ("bahdanau", "luong_dot", "luong_general"):
        model = _model(attention, coverage=True)
        src, lengths = _source()
        target_in = torch.randint(4, 9, (3, 5))
        logits, attn, penalty = model(src, lengths, target_in)
        mask = torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)
        assert logits.shape == (3, 5, 9) and attn.shape == (3, 5, 4) and penalty is not None
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5, dtype=torch.float64))
        assert torch.all(attn.masked_select(~mask.unsqueeze(1).expand_as(attn)) == 0)
        (hyp,) = greedy_search(model, src[1:2], lengths[1:2])
        assert hyp.attention.shape[1] == 2  # trimmed to the real source
        torch.testing.assert_close(hyp.attention.sum(-1), torch.ones(hyp.attention.shape[0], dtype=torch.float64))


def test_tied_embeddings_share_one_matrix_and_training_reduces_the_loss():
    torch.manual_seed(0)
    model = Seq2Seq(7, 9, embedding_dim=6, hidden_size=5, tie_embeddings=True, dropout=0.0)
    assert model.output is None and "output.weight" not in model.state_dict()
    src, lengths = _source()
    target = torch.randint(4, 9, (3, 4))
    target_in = torch.cat([torch.full((3, 1), 2), target[:, :-1]], 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(src, lengths, target_in, target, label_smoothing=0.1)
        loss.backward()
        first = first if first is not None else loss.item()
        opt.step()
    assert loss.item() < 0.5 * first
    assert model.target_embedding.weight.grad is not None


# -- metrics -----------------------------------------------------------------------------------
def test_bleu_matches_a_hand_computation_and_torchmetrics():
    hyps = ["the cat sat on the mat", "a dog barks"]
    refs = ["the cat sat on a mat", "a dog barks loudly"]
    # clipped n-gram matches / totals summed over the corpus (sacreBLEU's 13a leaves these as is)
    precisions = [(5 + 3) / (6 + 3), (3 + 2) / (5 + 2), (2 + 1) / (4 + 1), (1 + 0) / (3 + 0)]
    bp = math.exp(1 - 10 / 9)
    expected = 100 * bp * math.exp(sum(math.log(p) for p in precisions) / 4)
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == pytest.approx(expected, abs=1e-9)
    assert scores["brevity_penalty"] == pytest.approx(bp)
    assert "tok:13a" in scores["bleu_signature"] and "version:" in scores["bleu_signature"]
    assert "nc:6" in scores["chrf_signature"]
    from torchmetrics.text import SacreBLEUScore

    tm = SacreBLEUScore(tokenize="13a")(hyps, [[r] for r in refs])
    assert scores["bleu"] == pytest.approx(100 * float(tm), abs=1e-4)
    perfect = corpus_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_scores(hyps, refs[:1])


def test_corpus_scores_lowercase_ignores_case_and_says_so_in_the_signature():
    refs = ["The cat sat on the Mat.", "A dog barks loudly in Berlin."]
    hyps = [r.lower() for r in refs]  # what a model trained with data.lowercase outputs
    cased, folded = corpus_scores(hyps, refs), corpus_scores(hyps, refs, lowercase=True)
    assert folded["bleu"] == pytest.approx(100) and folded["chrf"] == pytest.approx(100)
    assert cased["bleu"] < 80 and cased["chrf"] < 100
    assert "case:lc" in folded["bleu_signature"] and "case:mixed" in cased["bleu_signature"]
    assert corpus_scores(refs, refs, lowercase=True)["bleu"] == pytest.approx(100)


@pytest.mark.parametrize("tokenizer,shared", [("bpe", False), ("unigram", True)])
def test_subword_round_trip_gives_back_the_raw_text(tokenizer, shared):
    src, tgt = toy_pairs(200, 0)
    tgt = [t.capitalize() + "." for t in tgt]
    prep = Preprocessor.fit(src, tgt, DataConfig(tokenizer=tokenizer, vocab_size=60, shared_vocabulary=shared))
    assert prep.shared is shared
    for t in tgt[:20]:
        assert prep.detokenize(prep.encode_target(t)) == t
    assert prep.encode_source(src[0])[-1] == prep.eos_id


# -- bad input ---------------------------------------------------------------------------------
def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\ndrei\n")
    with gzip.open(tmp_path / "a.en.gz", "wt") as f:
        f.write("one\ntwo\n")
    with pytest.raises(DataError, match=r"a\.de has 3 lines, .*a\.en\.gz has 2"):
        read_pairs((tmp_path / "a.de", tmp_path / "a.en.gz"), DataConfig())
    result = runner.invoke(app, ["train", "translation", "--train", str(tmp_path / "a.de"), str(tmp_path / "a.en.gz"),
                                 "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 2
    assert "a.de has 3 lines" in result.output and "a.en.gz has 2" in result.output


def test_empty_lines_are_skipped_and_counted_or_stop_with_the_line(tmp_path):
    (tmp_path / "s.txt").write_text("eins\n\ndrei\nvier\n")
    (tmp_path / "t.txt").write_text("one\ntwo\n\nfour\n")
    corpus = read_pairs((str(tmp_path / "s.txt"), str(tmp_path / "t.txt")), DataConfig())
    assert corpus.sources == ["eins", "vier"] and corpus.num_skipped_empty == 2
    with pytest.raises(DataError, match=r"s\.txt:2: empty source sentence"):
        read_pairs((str(tmp_path / "s.txt"), str(tmp_path / "t.txt")), DataConfig(empty="error"))
    (tmp_path / "p.tsv").write_text("eins\tone\n\nzwei\ttwo\n")
    assert read_pairs(str(tmp_path / "p.tsv"), DataConfig()).targets == ["one", "two"]
    with pytest.raises(ConfigError, match="two line-aligned files"):
        read_pairs(str(tmp_path / "s.txt"), DataConfig())


def test_cli_paths_are_checked_per_task(tmp_path):
    (tmp_path / "x.csv").write_text("text,label\na,b\n")
    result = runner.invoke(app, ["train", "text-classification", "--train", str(tmp_path / "x.csv"),
                                 str(tmp_path / "x.csv"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--train takes one path for this task, got 2" in result.output
    result = runner.invoke(app, ["train", "translation", "--train", "a", "b", "--train", "c", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "one or two paths" in result.output


def test_config_validation():
    with pytest.raises(ConfigError, match="luong_dot compares decoder states"):
        load_config(Config, overrides=["model.attention=luong_dot", "model.decoder_hidden_size=100"])
    with pytest.raises(ConfigError, match="decode.nbest"):
        load_config(Config, overrides=["decode.nbest=6"])
    with pytest.raises(ConfigError, match="model.cell"):
        load_config(Config, overrides=["model.cell=transformer"])
    with pytest.raises(ConfigError, match=r"train.lr_decay: must be in \(0, 1\]"):
        load_config(Config, overrides=["train.lr_decay=0"])
    assert load_config(Config, overrides=["model.attention=luong_dot"]).model.attention == "luong_dot"


def test_lr_decay_reaches_the_training_engine(tmp_path, monkeypatch):
    import rnnkit.tasks.engine as engine

    class Reached(Exception):
        pass

    def fake_fit(*args, options, **kwargs):
        raise Reached(options.lr_decay)

    monkeypatch.setattr(engine, "fit", fake_fit)
    train_files, dev_files = write_pair(tmp_path, "train", 40, 0), write_pair(tmp_path, "dev", 5, 1)
    cfg = load_config(Config, overrides=[*SMALL, "train.lr_decay=0.5"])
    with pytest.raises(Reached) as reached:
        train(cfg, train_files, dev_files, RunDir.create(tmp_path, "run"), log=lambda m: None, progress=False)
    assert reached.value.args == (0.5,)


def test_training_data_all_over_the_length_limit_names_the_fix(tmp_path):
    train_files, dev_files = write_pair(tmp_path, "train", 40, 0), write_pair(tmp_path, "dev", 5, 1)
    cfg = load_config(Config, overrides=[*SMALL, "data.max_source_tokens=2"])
    with pytest.raises(ConfigError, match=r"longer than data.max_source_tokens=2 .*"
                                          r"--set data.max_source_tokens=N"):
        train(cfg, train_files, dev_files, RunDir.create(tmp_path, "run"), log=lambda m: None, progress=False)


# -- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("translation")
    train = write_pair(folder, "train", 300, 0)
    dev = write_pair(folder, "dev", 30, 1)
    (folder / "dev.src").write_text((folder / "dev.src").read_text() + "\n")  # one empty pair: skipped
    (folder / "dev.tgt").write_text((folder / "dev.tgt").read_text() + "\n")
    args = ["train", "translation", "--train", *train, "--dev", *dev, "--out", str(folder / "runs"), "--name", "toy",
            "--json"]
    for item in [*SMALL, "train.epochs=2", "model.coverage=true", "data.shared_vocabulary=true", "train.lr_decay=0.5"]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert set(metrics["dev"]) >= {"bleu", "chrf", "bleu_signature", "sentences_per_second"}
    return Path(metrics["run"]), folder


def test_train_writes_a_complete_run_folder(trained_run):
    run, _ = trained_run
    for name in ("model.safetensors", "model.json", "config.yaml", "source_encoder.json", "target_encoder.json",
                 "translation.json", "metrics.json", "report.md", "attention.png", "dev.translations.txt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_empty_pairs"] == 1  # the empty dev pair: skipped, counted and logged
    log = (run / "train.log").read_text()
    assert "skipped 1 pair(s) with an empty side (data.empty=skip" in log and "nrefs:1" in log
    assert "sacreBLEU signature" in (run / "report.md").read_text()


def test_scoring_follows_the_runs_lowercase_setting(trained_run, monkeypatch):
    run, _ = trained_run
    model = TrainedTranslator.load(run)
    sources, refs = ["ka lu mi"], ["Ka Lu Mi"]
    assert "case:mixed" in model.score_pairs(sources, refs, beam_size=1)["bleu_signature"]
    monkeypatch.setattr(model.prep.cfg, "lowercase", True)
    scored = model.score_pairs(sources, refs, beam_size=1)
    assert "case:lc" in scored["bleu_signature"] and "case:lc" in scored["chrf_signature"]


def test_load_translate_and_cli_agree(trained_run, tmp_path):
    run, folder = trained_run
    model = TrainedTranslator.load(run)
    sentences = ["ka lu mi", "", "so pe ze va"]
    results = model.translate(sentences, beam_size=3, nbest=2)
    assert results[1]["translation"] == "" and len(results[0]["nbest"]) == 2
    assert results[0]["nbest"][0]["score"] >= results[0]["nbest"][1]["score"]
    again = TrainedTranslator.load(run).translate(sentences, beam_size=3, nbest=2)
    assert again == results
    greedy = model.translate(sentences, beam_size=1)
    cli = runner.invoke(app, ["translate", str(run), *sentences, "--beam", "1"])
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.splitlines() == [r["translation"] for r in greedy]
    plot = tmp_path / "attention.png"
    cli = runner.invoke(app, ["translate", str(run), "--file", str(folder / "dev.src"), "--nbest", "2", "--beam", "3",
                              "--attention-plot", str(plot)])
    assert cli.exit_code == 0, cli.output
    assert plot.is_file() and plot.stat().st_size > 1000
    assert cli.stdout.splitlines()[0].startswith("0 ||| ")
    piped = runner.invoke(app, ["translate", str(run), "--file", "-", "--beam", "1"], input="\n".join(sentences))
    assert piped.exit_code == 0, piped.output
    assert piped.stdout.splitlines() == [r["translation"] for r in greedy]
    detail = model.translate(["ka lu"], attention=True)[0]
    weights = torch.tensor(detail["attention"])
    assert weights.shape == (len(detail["target_tokens"]), len(detail["source_tokens"]))
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))


def test_evaluate_cli_with_two_files_and_the_source_length_limit(trained_run):
    run, folder = trained_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(folder / "dev.src"), str(folder / "dev.tgt"),
                                 "--set", "decode.beam_size=1", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["beam_size"] == 1 and metrics["sentences"] == 30 and 0 <= metrics["bleu"] <= 100
    model = TrainedTranslator.load(run)
    too_long = " ".join(["ka"] * 150)
    with pytest.raises(ValueError, match=r"input 2 has 151 source tokens .* maximum of 100"):
        model.translate(["ka", too_long])
    assert isinstance(model.translate([too_long], truncate=True)[0]["translation"], str)
    cli = runner.invoke(app, ["translate", str(run), too_long])
    assert cli.exit_code == 2 and "maximum of 100" in cli.output


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["model.cell=lstm", "model.attention=bahdanau"],
                                       ["model.cell=gru", "model.attention=luong_general", "data.tokenizer=unigram"]])
def test_toy_language_pair_reaches_high_bleu(tmp_path, overrides):
    train = write_pair(tmp_path, "train", 1500, 0)
    dev = write_pair(tmp_path, "dev", 100, 1)
    test = write_pair(tmp_path, "test", 100, 2)
    args = ["train", "translation", "--train", *train, "--dev", *dev, "--out", str(tmp_path / "runs"), "--json"]
    for item in [*SMALL, "train.epochs=10", *overrides]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert metrics["dev"]["bleu"] > 80
    scores = TrainedTranslator.load(metrics["run"]).evaluate(test)
    assert scores["bleu"] > 80 and scores["chrf"] > 85


def test_translate_truncate_flag_set_and_empty_evaluation(trained_run, tmp_path):
    run, _ = trained_run
    too_long = " ".join(["ka"] * 150)
    cli = runner.invoke(app, ["translate", str(run), too_long])
    assert cli.exit_code == 2 and "'rnnkit translate --truncate'" in cli.output
    cli = runner.invoke(app, ["translate", str(run), too_long, "--truncate"])
    assert cli.exit_code == 0, cli.output
    cli = runner.invoke(app, ["translate", str(run), "ka lu", "--set", "decode.beam_size=1", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.output)["translation"] == TrainedTranslator.load(run).translate(
        ["ka lu"], beam_size=1)[0]["translation"]
    cli = runner.invoke(app, ["translate", str(run), "ka lu", "--set", "data.lowercase=true"])
    assert cli.exit_code == 2 and "decode.* keys only" in cli.output
    empty = tmp_path / "empty"
    empty.write_text("")
    cli = runner.invoke(app, ["evaluate", str(run), "--data", str(empty), str(empty)])
    assert cli.exit_code == 2 and "no sentence pairs read" in cli.output



def test_attention_plot_honours_truncate(trained_run, tmp_path, monkeypatch):
    run, _ = trained_run
    model = TrainedTranslator.load(run)
    words = ["ka"] * 150  # 150 subwords + <eos>: over the maximum of 100
    too_long = " ".join(words)
    plot = tmp_path / "long.png"
    with pytest.raises(ValueError, match="maximum of 100"):
        model.plot_attention(too_long, plot)
    detail = model.translate([too_long], beam_size=2, truncate=True, attention=True)[0]
    assert detail["source_tokens"] == [*model.prep.source_tokens(" ".join(words[:99]))]
    assert len(detail["source_tokens"]) == 100 and detail["source_tokens"][-1] == "<eos>"
    assert torch.tensor(detail["attention"]).shape == (len(detail["target_tokens"]), 100)
    assert detail["translation"] == model.translate([" ".join(words[:99])], beam_size=2)[0]["translation"]
    import rnnkit.tasks.translation as module

    shown = []
    original = module.plot_attention

    def spy(source_tokens, target_tokens, weights, path):
        shown.append((list(source_tokens), list(target_tokens), weights))
        return original(source_tokens, target_tokens, weights, path)

    monkeypatch.setattr(module, "plot_attention", spy)
    cli = runner.invoke(app, ["translate", str(run), too_long, "--truncate", "--beam", "2",
                              "--attention-plot", str(plot)])
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.splitlines() == [detail["translation"]]
    assert plot.is_file() and plot.stat().st_size > 1000
    assert shown == [(detail["source_tokens"], detail["target_tokens"], detail["attention"])]
