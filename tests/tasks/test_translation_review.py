"""Review of machine translation: defects found by trying it as a user, plus independent checks of
the decoders (brute force, padding, teacher forcing) written from scratch."""

from __future__ import annotations

import gzip
import itertools
import math
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.run import RunDir
from rnnkit.tasks.seq2seq import Seq2Seq, beam_search, greedy_search, normalized
from rnnkit.tasks.translation import Config, TrainedTranslator, corpus_scores, train

runner = CliRunner()
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"

WORDS = dict(zip(["ka", "lu", "mi", "no", "pe", "ri", "so", "tu"],
                 ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]))
SMALL = ["data.vocab_size=60", "model.embedding_dim=16", "model.hidden_size=16", "model.dropout=0.0",
         "train.batch_size=32", "train.learning_rate=0.005", "decode.beam_size=3", "train.epochs=1"]


def _pairs(n: int, seed: int, lo: int = 2, hi: int = 5) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(list(WORDS)) for _ in range(rng.randint(lo, hi))]
        src.append(" ".join(words))
        tgt.append(" ".join(WORDS[w] for w in reversed(words)))
    return src, tgt


def _write(folder: Path, name: str, src: list[str], tgt: list[str]) -> tuple[str, str]:
    (folder / f"{name}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return str(folder / f"{name}.src"), str(folder / f"{name}.tgt")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("review")
    tr, dv = _write(folder, "train", *_pairs(200, 0)), _write(folder, "dev", *_pairs(20, 1))
    args = ["train", "translation", "--train", *tr, "--dev", *dv, "--out", str(folder), "--name", "toy", "--quiet"]
    for item in SMALL:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "toy"


# -- defects -------------------------------------------------------------------------------------
def test_training_survives_a_first_dev_sentence_over_the_source_limit(tmp_path):
    """The docs say a dev source longer than the maximum is truncated for the dev score; the attention
    plot of the first dev sentence at the end of training refused it and training died after all epochs."""
    tr = _write(tmp_path, "train", *_pairs(120, 0, 2, 3))
    dev_src, dev_tgt = _pairs(10, 1, 2, 3)
    long_src, long_tgt = _pairs(1, 2, 12, 12)
    dv = _write(tmp_path, "dev", long_src + dev_src, long_tgt + dev_tgt)
    cfg = load_config(Config, overrides=[*SMALL, "data.max_source_tokens=10", "data.max_target_tokens=40"])
    run = RunDir.create(tmp_path, "run")
    metrics = train(cfg, tr, dv, run, log=lambda m: None, progress=False)
    assert (run.path / "attention.png").is_file() and metrics["dev"]["sentences"] == 11


def test_translate_scores_are_length_normalised_for_greedy_too(run_dir):
    """``translate(beam_size=1)`` returned the raw log-probability as ``score`` while every beam size > 1
    (and ``beam_search(beam_size=1)``) returns ``log_prob / length ** length_penalty``."""
    model = TrainedTranslator.load(run_dir)
    model.use_overrides(["decode.length_penalty=1.0"])
    sentences = ["ka lu mi", "so pe"]
    greedy = model.translate(sentences, beam_size=1)
    for text, result in zip(sentences, greedy):
        hyp = model.hypotheses([text], beam_size=1)[0][0]
        # (float32: a batch of two and a batch of one may differ in the last bits)
        assert math.isclose(result["score"], normalized(hyp.log_prob, len(hyp.tokens) + 1, 1.0), rel_tol=1e-5)
        assert math.isclose(result["nbest"][0]["log_prob"], hyp.log_prob, rel_tol=1e-5)
        source, lengths = torch.tensor([model.prep.encode_source(text)]), torch.tensor([len(model.prep.encode_source(text))])
        ((beam1,),) = beam_search(model.model, source, lengths, beam_size=1, length_penalty=1.0)
        assert math.isclose(result["score"], beam1.score, rel_tol=1e-5)


def test_translate_refuses_a_bare_string(run_dir):
    """``translate("ka lu")`` translated each character as a sentence (a list of 5 results)."""
    model = TrainedTranslator.load(run_dir)
    with pytest.raises(TypeError, match=r"list of sentences.*translate\(\[text\]\)"):
        model.translate("ka lu")
    with pytest.raises(TypeError, match="list of sentences"):
        model.score_pairs("ka lu", "bravo alpha")


@pytest.mark.parametrize("item,key", [("decode.batch_size=0", "decode.batch_size"),
                                      ("decode.beam_size=0", "decode.beam_size"),
                                      ("decode.nbest=0", "decode.nbest"),
                                      ("decode.max_length_ratio=.nan", "decode.max_length_ratio"),
                                      ("decode.max_length_ratio=-1", "decode.max_length_ratio"),
                                      ("decode.length_penalty=.nan", "decode.length_penalty")])
def test_decode_overrides_are_checked_when_translating_and_evaluating(run_dir, tmp_path, item, key):
    """``--set decode.batch_size=0`` failed with "range() arg 3 must not be zero", ``decode.beam_size=0``
    with "nbest (1) cannot exceed the beam size (0)", and NaN limits decoded nonsense."""
    src, tgt = _write(tmp_path, "test", *_pairs(3, 5))
    cli = runner.invoke(app, ["translate", str(run_dir), "ka lu", "--set", item])
    assert cli.exit_code == 2 and key in cli.output, cli.output
    cli = runner.invoke(app, ["evaluate", str(run_dir), "--data", src, tgt, "--set", item])
    assert cli.exit_code == 2 and key in cli.output, cli.output
    with pytest.raises(ConfigError, match=key):
        load_config(Config, overrides=[item])


def test_translate_refuses_a_beam_or_nbest_below_one(run_dir):
    """``translate(beam_size=0)`` silently decoded with the run's default beam."""
    model = TrainedTranslator.load(run_dir)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        model.translate(["ka lu"], beam_size=0)
    with pytest.raises(ValueError, match="nbest must be >= 1"):
        model.translate(["ka lu"], nbest=0)


def test_evaluate_with_greedy_override_still_works_when_the_run_keeps_an_nbest(run_dir, tmp_path):
    """The decode checks must not refuse ``--set decode.beam_size=1`` on a run whose decode.nbest > 1."""
    model = TrainedTranslator.load(run_dir)
    model.use_overrides(["decode.nbest=2"])
    src, tgt = _write(tmp_path, "test", *_pairs(4, 6))
    assert model.evaluate((src, tgt), ["decode.beam_size=1"])["beam_size"] == 1


def test_cli_translate_prints_the_runs_nbest_and_caps_it_at_the_beam(run_dir):
    """rnnkit translate passed nbest=1 always, so --set decode.nbest=3 was silently ignored."""
    listed = runner.invoke(app, ["translate", str(run_dir), "ein hund", "--beam", "4", "--set", "decode.nbest=3"])
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.stdout.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith("0 ||| ") for line in lines), listed.stdout
    greedy = runner.invoke(app, ["translate", str(run_dir), "ein hund", "--beam", "1", "--set", "decode.nbest=3"])
    assert greedy.exit_code == 0, greedy.output  # the run's n-best is capped at the beam asked for
    assert len([line for line in greedy.stdout.splitlines() if line.strip()]) == 1
    explicit = runner.invoke(app, ["translate", str(run_dir), "ein hund", "--beam", "4", "--nbest", "2"])
    assert len([line for line in explicit.stdout.splitlines() if " ||| " in line]) == 2


# -- independent checks (pass; they guard the decoders) -----------------------------------------
def _tiny(seed: int, vocab: int = 6, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(8, vocab, embedding_dim=5, hidden_size=4, dropout=0.0, **kw).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.5)
    return model


def _step_log_prob(model: Seq2Seq, src: torch.Tensor, tokens: list[int]) -> float:
    memory, state = model.encode(src, torch.tensor([src.shape[1]]))
    previous, total = torch.tensor([model.bos_id]), 0.0
    for token in [*tokens, model.eos_id]:
        log_probs, state, _ = model.step(previous, state, memory)
        total += float(log_probs[0, token])
        previous = torch.tensor([token])
    return total


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("kw", [dict(attention="luong_general", cell="gru", coverage=True, decoder_layers=2),
                                dict(attention="bahdanau", cell="lstm", input_feeding=False, tie_embeddings=False,
                                     num_layers=2)])
def test_wide_beam_equals_brute_force(alpha, kw):
    model = _tiny(7, **kw)
    src = torch.tensor([[4, 6, 5, 7]])
    producible = [1, 4, 5]
    with torch.no_grad():
        ranked = sorted(((normalized(_step_log_prob(model, src, list(c)), len(c) + 1, alpha), list(c))
                         for n in range(4) for c in itertools.product(producible, repeat=n)), key=lambda x: -x[0])
        (found,) = beam_search(model, src, torch.tensor([4]), beam_size=27, nbest=4, length_penalty=alpha,
                               max_length_ratio=0.0, max_length_offset=3)
    assert [h.tokens for h in found] == [c for _, c in ranked[:4]]
    for h, (score, _) in zip(found, ranked):
        assert math.isclose(h.score, score, rel_tol=1e-9)


def test_padding_changes_nothing_and_attention_is_zero_on_it():
    model = _tiny(3, vocab=9, attention="bahdanau", cell="gru", coverage=True, num_layers=2, decoder_layers=2)
    src = torch.tensor([[4, 5, 6, 7, 3], [5, 6, 3, 0, 0], [7, 3, 0, 0, 0]])
    lengths = torch.tensor([5, 3, 2])
    wide = torch.cat([src, torch.zeros(3, 4, dtype=torch.long)], 1)  # extra padding columns
    greedy = greedy_search(model, wide, lengths)
    beams = beam_search(model, wide, lengths, beam_size=3, nbest=3, length_penalty=0.6)
    for b, n in enumerate(lengths.tolist()):
        (alone,) = greedy_search(model, src[b:b + 1, :n], lengths[b:b + 1])
        assert alone.tokens == greedy[b].tokens and math.isclose(alone.log_prob, greedy[b].log_prob, rel_tol=1e-9)
        (alone_beam,) = beam_search(model, src[b:b + 1, :n], lengths[b:b + 1], beam_size=3, nbest=3,
                                    length_penalty=0.6)
        assert [h.tokens for h in alone_beam] == [h.tokens for h in beams[b]]
        (b1,) = beam_search(model, src[b:b + 1, :n], lengths[b:b + 1], beam_size=1)
        assert b1[0].tokens == alone.tokens
    target_in = torch.tensor([[2, 4, 5], [2, 6, 0], [2, 0, 0]])
    _, attn, _ = model(wide, lengths, target_in)
    mask = torch.arange(wide.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 3, dtype=torch.float64))
    assert torch.all(attn.masked_select(~mask.unsqueeze(1).expand_as(attn)) == 0)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_teacher_forced_loss_equals_a_plain_loop(eps):
    model = _tiny(11, vocab=9, attention="luong_dot", cell="lstm", decoder_layers=2)
    src = torch.tensor([[4, 5, 6, 3], [7, 3, 0, 0]])
    lengths = torch.tensor([4, 2])
    targets = [[4, 5, 6], [7]]
    target_in = torch.tensor([[2, 4, 5, 6], [2, 7, 0, 0]])
    target_out = torch.tensor([[4, 5, 6, 3], [7, 3, 0, 0]])
    loss = model.loss(src, lengths, target_in, target_out, label_smoothing=eps)
    total, count = 0.0, 0
    valid = [c for c in range(9) if c not in (model.pad_id, model.bos_id)]
    with torch.no_grad():
        for b, tgt in enumerate(targets):
            n = int(lengths[b])
            memory, state = model.encode(src[b:b + 1, :n], lengths[b:b + 1])
            previous = torch.tensor([model.bos_id])
            for token in [*tgt, model.eos_id]:
                log_probs, state, _ = model.step(previous, state, memory)
                total += -(1 - eps) * float(log_probs[0, token]) - eps / len(valid) * sum(
                    float(log_probs[0, c]) for c in valid)
                count += 1
                previous = torch.tensor([token])
    assert math.isclose(float(loss.detach()), total / count, rel_tol=1e-9)


def test_translator_batches_equal_one_sentence_at_a_time(run_dir):
    model = TrainedTranslator.load(run_dir)
    sentences = ["ka lu mi no", "so", "", "pe ri tu ka lu", "mi mi"]
    model.use_overrides(["decode.batch_size=2"])
    for beam in (1, 3):
        together = model.translate(sentences, beam_size=beam)
        for text, result in zip(sentences, together):
            alone = model.translate([text], beam_size=beam)[0]
            assert alone["translation"] == result["translation"]
            assert math.isclose(alone["score"], result["score"], rel_tol=1e-4, abs_tol=1e-6)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found: {DATA} (shared/data is absent)")
def test_multi30k_slice_bleu_matches_sacrebleu(tmp_path):
    sacrebleu = pytest.importorskip("sacrebleu")

    def lines(name: str, n: int) -> list[str]:
        with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
            return [next(f).rstrip("\n") for _ in range(n)]

    tr = _write(tmp_path, "train", lines("train.de.gz", 200), lines("train.en.gz", 200))
    dv = _write(tmp_path, "dev", lines("val.de.gz", 10), lines("val.en.gz", 10))
    test_src, test_ref = lines("test_2016_flickr.de.gz", 20), lines("test_2016_flickr.en.gz", 20)
    te = _write(tmp_path, "test", test_src, test_ref)
    args = ["train", "translation", "--train", *tr, "--dev", *dv, "--out", str(tmp_path), "--name", "m", "--quiet"]
    for item in [*SMALL, "data.vocab_size=200", "decode.beam_size=2"]:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = TrainedTranslator.load(tmp_path / "m")
    metrics = model.evaluate(te)
    hyps = [r["translation"] for r in model.translate(test_src, truncate=True)]
    assert math.isclose(metrics["bleu"], sacrebleu.corpus_bleu(hyps, [test_ref], tokenize="13a").score, abs_tol=1e-9)
    assert math.isclose(metrics["chrf"], sacrebleu.corpus_chrf(hyps, [test_ref]).score, abs_tol=1e-9)
    assert corpus_scores(hyps, test_ref)["bleu"] == metrics["bleu"]


def test_evaluate_notes_tsv_lines_with_a_tab_inside_a_sentence(run_dir, tmp_path):
    """A stray tab shifts a TSV line's columns (the pair is cut or crossed): counted and noted, not silent."""
    src, tgt = _pairs(4, 9)
    rows = [f"{s}\t{t}" for s, t in zip(src, tgt)]
    rows[2] = rows[2].replace(" ", "\t", 1)  # a tab inside the source sentence
    path = tmp_path / "test.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    metrics = TrainedTranslator.load(run_dir).evaluate(str(path))
    assert any("1 line(s) have another number of tab-separated fields than line 1" in n
               for n in metrics.get("notes", [])), metrics.get("notes")
