"""Language modelling: perplexity, carried state, sampling filters, generation, end to end."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.config import ConfigError
from rnnkit.tasks.language_model import (
    RNNLanguageModel,
    TrainedLanguageModel,
    lm_metrics,
    stream_nll,
    top_k_filter,
    top_p_filter,
)

runner = CliRunner()


def test_perplexity_on_a_hand_checkable_example():
    # a uniform model over 4 tokens: cross-entropy ln 4, perplexity 4, 2 bits per character
    m = lm_metrics(nll=10 * math.log(4), count=10, level="char")
    assert m["perplexity"] == pytest.approx(4.0) and m["bits_per_character"] == pytest.approx(2.0)
    model = RNNLanguageModel(4, embedding_dim=3, hidden_size=3, num_layers=1)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    nll, count = stream_nll(model, np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]), batch_size=1, bptt=4)
    assert count == 10 and nll == pytest.approx(10 * math.log(4), rel=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "layernorm_lstm"])
def test_carried_state_across_windows_equals_one_long_pass(cell):
    model = RNNLanguageModel(20, embedding_dim=8, hidden_size=12, num_layers=2, cell=cell, tie_weights=False).eval()
    ids = torch.randint(0, 20, (3, 17))
    with torch.no_grad():
        full, _ = model(ids)
        state, parts = None, []
        for start in range(0, 17, 5):
            logits, state = model(ids[:, start:start + 5], state)
            parts.append(logits)
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
        # one step at a time (generation's path) agrees too
        state, steps = None, []
        for t in range(17):
            logits, state = model.step(ids[:, t], state)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))
    kept = torch.isfinite(top_k_filter(logits, 2)).tolist()
    assert kept == [True, True, False, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [True, False, False, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.6)).tolist() == [True, True, False, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.85)).tolist() == [True, True, True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.86)).tolist() == [True, True, True, True, False]
    shuffled = logits[[3, 0, 4, 2, 1]]
    assert torch.isfinite(top_p_filter(shuffled, 0.6)).tolist() == [False, True, False, False, True]
    assert torch.equal(top_p_filter(logits, 1.0), logits) and torch.equal(top_k_filter(logits, 0), logits)


def test_weight_drop_and_tied_weights():
    model = RNNLanguageModel(30, embedding_dim=10, hidden_size=16, num_layers=2, weight_drop=0.5)
    assert model.decoder.weight is model.embedding.weight
    model.train()
    logits, _ = model(torch.randint(0, 30, (2, 6)))
    logits.sum().backward()
    assert model.layers[0].weight_hh_l0.grad is not None and model.layers[0].weight_hh_l0.grad.abs().sum() > 0
    model.eval()
    a, _ = model(torch.arange(6).view(1, 6))
    b, _ = model(torch.arange(6).view(1, 6))
    torch.testing.assert_close(a, b)


def _corpus(path, lines=400, seed=0):
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the king"], ["sees", "likes", "eats"], ["fish", "bread", "the moon"]
    path.write_text("\n".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(lines)) + "\n")
    return path


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    corpus = _corpus(root / "train.txt")
    dev = _corpus(root / "dev.txt", 60, 1)
    result = runner.invoke(app, ["train", "language-model", "--train", str(corpus), "--dev", str(dev), "--out", str(root),
                                 "--name", "run", "--set", "train.epochs=4", "--set", "model.hidden_size=32",
                                 "--set", "model.embedding_dim=32", "--set", "train.batch_size=8",
                                 "--set", "train.bptt=10", "--set", "train.learning_rate=0.01", "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "run", dev


def test_language_model_end_to_end(word_run):
    run, dev = word_run
    metrics = json.loads((run / "metrics.json").read_text())
    # 14 word types; the grammar allows about 4-5 choices per position, far below the vocabulary
    assert metrics["dev"]["perplexity"] < 6
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["perplexity"] == pytest.approx(metrics["dev"]["perplexity"], rel=1e-4)
    out = runner.invoke(app, ["generate", str(run), "--prompt", "the cat", "--length", "20", "--seed", "3"])
    again = runner.invoke(app, ["generate", str(run), "--prompt", "the cat", "--length", "20", "--seed", "3"])
    assert out.exit_code == 0 and out.output == again.output and out.output.startswith("the cat ")
    assert out.output.splitlines()[0] != "the cat"  # the continuation goes on the prompt's line
    model = TrainedLanguageModel.load(run)
    greedy = model.generate("the king", greedy=True, length=10)
    assert greedy["tokens"][-1] in ("<eos>",) or len(greedy["tokens"]) == 10
    note = runner.invoke(app, ["generate", str(run), "--prompt", "the zebra", "--length", "3", "--seed", "0"])
    assert "not in the vocabulary" in note.output and "'zebra'" in note.output


def test_bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = runner.invoke(app, ["train", "language-model", "--train", str(empty), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "error:" in result.output
    short = tmp_path / "short.txt"
    short.write_text("a b c d e f g h\n")
    result = runner.invoke(app, ["train", "language-model", "--train", str(short), "--out", str(tmp_path),
                                 "--set", "train.bptt=35", "--quiet"])
    assert result.exit_code == 2 and "lower train.batch_size or train.bptt" in result.output
    result = runner.invoke(app, ["train", "language-model", "--set", "train.bptt=0", "--print-config"])
    assert result.exit_code == 2 and "train.bptt: must be >= 1" in result.output


def test_adaptive_softmax_scores_and_nll_agree():
    torch.manual_seed(0)
    model = RNNLanguageModel(50, embedding_dim=8, hidden_size=16, num_layers=1, tie_weights=False,
                             softmax="adaptive", adaptive_cutoffs=[5, 20]).eval()
    assert model.decoder is None and model.adaptive is not None
    ids, targets = torch.randint(0, 50, (3, 7)), torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        scores, _ = model(ids)
        # the scores are log-probabilities: each row is a distribution over all 50 tokens
        torch.testing.assert_close(scores.exp().sum(-1), torch.ones(3, 7))
        nll, _ = model.nll(ids, targets)
        expected = torch.nn.functional.cross_entropy(scores.reshape(-1, 50), targets.reshape(-1), reduction="sum")
        torch.testing.assert_close(nll, expected)
        state, steps = None, []
        for t in range(7):
            step, state = model.step(ids[:, t], state)
            steps.append(step)
        torch.testing.assert_close(torch.stack(steps, 1), scores, atol=1e-5, rtol=0)


def test_full_softmax_nll_is_the_cross_entropy_of_the_logits():
    model = RNNLanguageModel(30, embedding_dim=8, hidden_size=8, num_layers=2).eval()
    ids, targets = torch.randint(0, 30, (2, 5)), torch.randint(0, 30, (2, 5))
    with torch.no_grad():
        logits, _ = model(ids)
        nll, _ = model.nll(ids, targets)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 30), targets.reshape(-1), reduction="sum")
    torch.testing.assert_close(nll, expected)


def test_adaptive_softmax_settings_are_checked():
    from rnnkit.tasks.language_model import check_cutoffs, default_cutoffs

    assert default_cutoffs(10000) == [2000, 5000]
    assert check_cutoffs([], 100) == [20, 50]
    with pytest.raises(ConfigError, match="must increase strictly"):
        check_cutoffs([50, 20], 100)
    with pytest.raises(ConfigError, match="must increase strictly"):
        check_cutoffs([20, 99], 100)
    with pytest.raises(ConfigError, match="too small"):
        check_cutoffs([], 2)
    # a narrow model still gets tail projections at least one unit wide
    tiny = RNNLanguageModel(40, embedding_dim=4, hidden_size=3, num_layers=1, tie_weights=False, softmax="adaptive",
                            adaptive_cutoffs=[4, 10, 20])
    assert all(proj[0].out_features >= 1 for proj in tiny.adaptive.tail)
    result = runner.invoke(app, ["train", "language-model", "--set", "model.softmax=adaptive", "--print-config"])
    assert result.exit_code == 2 and "model.tie_weights=false" in result.output
    result = runner.invoke(app, ["train", "language-model", "--set", "model.adaptive_cutoffs=10,20", "--print-config"])
    assert result.exit_code == 2 and "model.softmax=adaptive" in result.output


def test_adaptive_softmax_end_to_end(tmp_path):
    corpus, dev = _corpus(tmp_path / "train.txt"), _corpus(tmp_path / "dev.txt", 60, 1)
    result = runner.invoke(app, ["train", "language-model", "--train", str(corpus), "--dev", str(dev), "--out",
                                 str(tmp_path), "--name", "run", "--set", "train.epochs=4", "--set",
                                 "model.hidden_size=32", "--set", "model.embedding_dim=32", "--set",
                                 "train.batch_size=8", "--set", "train.bptt=10", "--set", "train.learning_rate=0.01",
                                 "--set", "model.softmax=adaptive", "--set", "model.tie_weights=false", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dev"]["perplexity"] < 6
    out = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(dev), "--json"])
    assert json.loads(out.output)["perplexity"] == pytest.approx(metrics["dev"]["perplexity"], rel=1e-4)
    model = TrainedLanguageModel.load(tmp_path / "run")
    assert model.model.adaptive is not None
    assert model.generate("the cat", length=5, seed=1) == model.generate("the cat", length=5, seed=1)


@pytest.mark.data
def test_tiny_shakespeare_char_model(shared_data, tmp_path):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()[:100000]
    corpus = tmp_path / "shakes.txt"
    corpus.write_text(text)
    result = runner.invoke(app, ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path), "--name", "c",
                                 "--set", "data.level=char", "--set", "train.epochs=2", "--set", "model.hidden_size=64",
                                 "--set", "train.bptt=50", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["dev"]["bits_per_character"] < 4.5


def test_evaluate_prints_the_token_count_as_an_integer(word_run):
    run, dev = word_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(dev)])
    assert result.exit_code == 0, result.output
    tokens = [line.split() for line in result.output.splitlines() if line.startswith("tokens")]
    assert len(tokens) == 1 and tokens[0][1].isdigit()
    assert isinstance(json.loads(runner.invoke(app, ["evaluate", str(run), "--data", str(dev), "--json"]).output)[
        "tokens"], int)


# -- review: perplexity, stream layout, generation rules, bad settings, the dev split -----------
def _prep(tmp_path, text, **data):
    from rnnkit.tasks.language_model import DataConfig, Preprocessor

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    return Preprocessor.fit(corpus, DataConfig(**data))


def test_perplexity_is_the_token_mean_whatever_the_window_length():
    torch.manual_seed(0)
    model = RNNLanguageModel(12, embedding_dim=6, hidden_size=8, num_layers=2, tie_weights=False).eval()
    ids = np.random.default_rng(0).integers(0, 12, 41)
    total, state = 0.0, None  # independent: one token at a time with the step API
    with torch.no_grad():
        for a, b in zip(ids[:-1], ids[1:], strict=True):
            logits, state = model.step(torch.tensor([int(a)]), state)
            total -= float(logits[0].log_softmax(-1)[int(b)])
    for bptt in (1, 3, 7, 40, 1000):
        nll, count = stream_nll(model, ids, batch_size=1, bptt=bptt)
        assert count == 40 and nll == pytest.approx(total, rel=1e-5)
    # more streams: contiguous parts, each first token unscored and the remainder dropped (documented)
    nll, count = stream_nll(model, ids, batch_size=3, bptt=4)
    assert count == 3 * (41 // 3 - 1)


def test_windows_walk_each_stream_in_order_and_keep_the_last_short_window():
    from rnnkit.data.corpus import batchify
    from rnnkit.tasks.language_model import StreamWindows

    ids = np.arange(23)
    streams = np.asarray(batchify(ids, 3))  # 3 x 7: each row a contiguous stretch, 2 ids dropped
    assert streams.tolist() == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21))]
    for variable in (False, True):
        windows = list(StreamWindows(streams, 4, variable=variable, seed=1))
        inputs = torch.cat([w[0] for w in windows], 1)
        targets = torch.cat([w[1] for w in windows], 1)
        assert torch.equal(inputs, torch.from_numpy(streams[:, :-1])) and torch.equal(targets, inputs + 1)
        assert [w[2] for w in windows][0] == 0
    assert [w[0].shape[1] for w in StreamWindows(streams, 4)] == [4, 2]
    long = np.zeros((2, 2001), dtype=np.int64)  # variable windows never exceed a short bptt's floor
    lengths = [n for _, n in StreamWindows(long, 3, variable=True, seed=0).bounds()]
    assert min(lengths[:-1]) == 3 and max(lengths) > 3
    lengths = [n for _, n in StreamWindows(long, 35, variable=True, seed=0).bounds()]
    assert min(lengths[:-1]) >= 5 and 30 < np.mean(lengths) < 36


def test_generated_text_reads_eos_as_a_line_break():
    from rnnkit.tasks.language_model import render_tokens

    tokens = ["the", "cat", "<eos>", "a", "<unk>", "dog", "<eos>"]
    assert render_tokens(tokens, "word") == "the cat\na <unk> dog\n"
    pieces = ["\u2581the", "\u2581ca", "t", "<eos>", "\u2581a", "<unk>"]
    assert render_tokens(pieces, "subword") == "the cat\na <unk>"
    assert render_tokens(["a", "\n", "b"], "char") == "a\nb"


def _unk_loving_model(prep, **kw):
    model = RNNLanguageModel(len(prep.vocab), embedding_dim=4, hidden_size=4, num_layers=1, tie_weights=False, **kw)
    with torch.no_grad():
        model.decoder.bias.zero_()
        model.decoder.bias[prep.vocab.unk_id] = 30.0  # <unk> and <eos> far more likely than anything else
        model.decoder.bias[prep.vocab.eos_id] = 25.0
    return TrainedLanguageModel(model.eval(), prep)


def test_generation_never_samples_unk_nor_an_eos_the_text_never_had(tmp_path):
    word = _unk_loving_model(_prep(tmp_path, "a b c\nb c a\n"))
    out = word.generate("a", length=5, seed=0)
    assert out["tokens"] == ["<eos>"]  # <eos> ends a line of a word model: allowed, and the default stop
    assert "<unk>" not in word.generate("a", length=5, seed=0, stop="")["tokens"]
    assert "<unk>" not in word.generate("a", length=5, greedy=True, stop="")["tokens"]
    char = _unk_loving_model(_prep(tmp_path, "ab\nba\n", level="char"))
    out = char.generate("a", length=6, seed=0)
    assert len(out["tokens"]) == 6 and not {"<unk>", "<eos>"} & set(out["tokens"])


def test_generation_settings_are_checked(tmp_path):
    lm = _unk_loving_model(_prep(tmp_path, "the cat sat .\n"))
    with pytest.raises(ValueError, match="not in the vocabulary.*'' to never stop"):
        lm.generate("the", stop="zebra")
    with pytest.raises(ValueError, match="greedy"):
        lm.generate("the", temperature=0)
    with pytest.raises(ValueError, match="length"):
        lm.generate("the", length=-1)
    assert lm.generate("the", length=4, stop="", seed=0)["tokens"] == ["<eos>"] * 4
    assert lm.generate("the", length=4, top_k=1000, seed=0)["tokens"] == ["<eos>"]


def test_empty_prompt_starts_at_a_line_break(tmp_path, monkeypatch):
    for level, start in (("word", "<eos>"), ("char", "\n")):
        lm = _unk_loving_model(_prep(tmp_path, "ab\nba\n", level=level))
        seen = []
        features = lm.model.features
        monkeypatch.setattr(lm.model, "features", lambda ids, state, f=features, s=seen: (s.append(ids), f(ids, state))[1])
        lm.generate("", length=1, seed=0)
        assert [lm.prep.vocab.id_to_token(int(i)) for i in seen[0][0]] == [start]


def test_subword_generation_is_detokenized_and_stops_at_eos(tmp_path):
    prep = _prep(tmp_path, "the cat sees the moon .\nthe dog eats fish .\n" * 20, level="subword", vocab_size=40)
    model = RNNLanguageModel(len(prep.vocab), embedding_dim=4, hidden_size=4, num_layers=1, tie_weights=False)
    lm = TrainedLanguageModel(model.eval(), prep)
    pieces = [p for p in prep.tokenizer.tokenize("the cat sees the moon .") if p in prep.vocab]
    with torch.no_grad():  # the first piece from the prompt's scores, the others from a scripted step
        model.decoder.bias.zero_()
        model.decoder.bias[prep.vocab.token_to_id(pieces[0])] = 50.0
        script = iter([*pieces[1:], "<eos>", "\u2581the"])
        lm.model.step = lambda ids, state: (_one_hot(prep, next(script)), state)
        out = lm.generate("", length=20, seed=0)
    assert out["tokens"][-1] == "<eos>" and "\u2581" not in out["text"]
    assert out["text"] == "the cat sees the moon .\n"  # <eos> reads as a line break


def _one_hot(prep, token):
    row = torch.full((1, len(prep.vocab)), -50.0)
    row[0, prep.vocab.token_to_id(token)] = 50.0
    return row


@pytest.mark.parametrize(("setting", "message"), [
    ("data.vocab_size=2", "data.vocab_size: must be >= 3"),
    ("data.min_freq=0", "data.min_freq: must be >= 1"),
    ("data.dev_fraction=0", "data.dev_fraction: must be between 0 and 1"),
    ("data.dev_fraction=1", "data.dev_fraction: must be between 0 and 1"),
    ("data.dev_fraction=-0.5", "data.dev_fraction: must be between 0 and 1"),
    # these trained silently (no learning, sign-flipped clipping, a stop after one epoch) or failed with torch's words
    ("train.learning_rate=0", "train.learning_rate: must be > 0"),
    ("train.learning_rate=-1", "train.learning_rate: must be > 0"),
    ("train.clip_norm=-1", "train.clip_norm: must be > 0"),
    ("train.clip_norm=0", "train.clip_norm: must be > 0"),
    ("train.patience=0", "train.patience: must be >= 1"),
    ("train.weight_decay=-0.1", "train.weight_decay: must be >= 0"),
])
def test_bad_settings_name_the_key(setting, message):
    result = runner.invoke(app, ["train", "language-model", "--set", setting, "--print-config"])
    assert result.exit_code == 2 and message in result.output
    assert "fix:" in result.output or not setting.startswith("data.")


def _train(tmp_path, corpus, *settings, dev=None):
    args = ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path), "--name", "run", "--quiet",
            "--set", "train.epochs=1", "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
            "--set", "train.batch_size=2", "--set", "train.bptt=5"]
    for s in settings:
        args += ["--set", s]
    return runner.invoke(app, args + (["--dev", str(dev)] if dev else []))


def test_a_vocabulary_of_special_tokens_only_is_an_error(tmp_path):
    result = _train(tmp_path, _corpus(tmp_path / "train.txt", 40), "data.min_freq=100000")
    assert result.exit_code == 2 and "every token would be <unk>" in result.output
    assert "data.min_freq" in result.output and not (tmp_path / "run").exists()


def test_the_held_out_dev_tail_is_not_in_the_vocabulary(tmp_path):
    corpus = _corpus(tmp_path / "train.txt", 200)
    corpus.write_text(corpus.read_text() + "zebra zebra zebra zebra .\n" * 10)  # only in the last 5% of lines
    result = _train(tmp_path, corpus)
    assert result.exit_code == 0, result.output
    tokens = json.loads((tmp_path / "run" / "vocab.json").read_text())["config"]["tokens"]
    assert "cat" in tokens and "zebra" not in tokens
    assert "the last 10 lines (5%)" in (tmp_path / "run" / "train.log").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dev"]["tokens"] == 10 * 6 - 1  # the 10 held-out lines, each 5 words and <eos>


def test_the_dev_tail_of_a_single_line_and_a_too_short_tail(tmp_path):
    from rnnkit.tasks.language_model import split_dev_tail

    one = tmp_path / "one.txt"
    one.write_text("abc def ghi jkl mno pqr stu vwx")
    assert split_dev_tail(one, 0.2, tmp_path / "h", tmp_path / "t") == 0
    assert (tmp_path / "h").read_text() + (tmp_path / "t").read_text() == one.read_text()
    assert (tmp_path / "t").read_text() == " vwx"
    blank_tail = tmp_path / "blank.txt"
    blank_tail.write_text("a b c d e f g h i j k l m n o p\n\n")
    result = _train(tmp_path, blank_tail, "data.dev_fraction=0.1", "data.line_ending=drop")
    assert result.exit_code == 2 and "data.dev_fraction" in result.output and "--dev" in result.output


def test_perplexity_is_exp_of_the_cross_entropy_without_a_cap():
    import math

    from rnnkit.tasks.language_model import lm_metrics

    assert lm_metrics(60.0 * 10, 10, "word")["perplexity"] == pytest.approx(math.exp(60.0))  # was capped at e^50
    assert lm_metrics(800.0, 1, "word")["perplexity"] == math.inf


# -- review 2: prompt line breaks, long prompts, extreme sampling settings, <eos> in char models --
@pytest.mark.parametrize("data", [{"level": "word"}, {"level": "char"}, {"level": "char", "line_ending": "drop"},
                                  {"level": "char", "line_ending": "eos"}, {"level": "word", "line_ending": "drop"}])
def test_a_prompt_reads_its_line_breaks_as_the_training_file_does(tmp_path, data):
    # a prompt's line breaks were tokenized as spaces (word: no <eos>) or as an unknown '\n' (char, drop/eos)
    prep = _prep(tmp_path, "the cat sat\non the mat\n", **data)
    text = "the cat\non the" if prep.line_ending == "keep" else "the cat\r\non the"  # keep: '\r' is a character
    ids, unknown = prep.encode_prompt(text)
    reference = tmp_path / "prompt.txt"  # independent: the same text read as a file (which ends every line)
    reference.write_bytes(text.encode())
    file_ids = [int(i) for i in prep.ids_of_file(reference, tmp_path / "prompt.bin")]
    if prep.line_ending == "eos":
        file_ids = file_ids[:-1]  # the file's last line gets an <eos> too; the prompt's open line does not
    assert ids == file_ids and unknown == [] and prep.vocab.unk_id not in ids
    if prep.line_ending == "eos":
        assert prep.encode_prompt("the cat\n")[0][-1] == prep.vocab.eos_id  # a final break starts a new line


def test_a_long_prompt_is_scored_at_its_last_position_only(tmp_path, monkeypatch):
    # priming built the [T, V] scores of every prompt position: memory grew with prompt length x vocabulary
    lm = _unk_loving_model(_prep(tmp_path, "a b c d e f\nb c a\n"))
    prompt = " ".join(random.Random(0).choice("abcdef") for _ in range(3000))
    with torch.no_grad():
        full, _ = lm.model(torch.tensor([lm.prep.encode_prompt(prompt)[0]]))
    scored = []
    scores = lm.model.scores
    monkeypatch.setattr(lm.model, "scores", lambda x, f=scores, s=scored: (s.append(x.shape), f(x))[1])
    with torch.no_grad():
        lm.model.decoder.bias.zero_()  # make the full softmax's last row decide the greedy token
    out = lm.generate(prompt, length=1, greedy=True, stop="")
    assert all(math.prod(shape[:-1]) == 1 for shape in scored)
    expected = full[0, -1].clone()
    expected[lm.prep.vocab.unk_id] = float("-inf")
    assert out["tokens"] == [lm.prep.vocab.id_to_token(int(expected.argmax()))]


def test_extreme_temperatures_and_seeds(word_run):
    run, _ = word_run
    lm = TrainedLanguageModel.load(run)
    greedy = lm.generate("the cat", length=12, greedy=True, stop="")
    # a tiny temperature overflowed the logits to nan ("probability tensor contains inf, nan") instead of greedy
    assert lm.generate("the cat", length=12, temperature=1e-300, stop="", seed=0)["tokens"] == greedy["tokens"]
    for bad in (math.inf, -math.inf, math.nan, 0.0):
        with pytest.raises(ValueError, match="temperature must be > 0 and finite"):
            lm.generate("the cat", temperature=bad)
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        lm.generate("the cat", seed=2 ** 70)
    assert lm.generate("the cat", length=3, seed=2 ** 64 - 1) == lm.generate("the cat", length=3, seed=2 ** 64 - 1)
    for option in (["--temperature", "inf"], ["--seed", str(10 ** 30)]):
        result = runner.invoke(app, ["generate", str(run), "--prompt", "the", "--length", "3", *option])
        assert result.exit_code == 2 and "error:" in result.output, result.output
        assert not result.output.startswith("the"), result.output  # the prompt shows only once generation starts


def test_eos_of_a_char_model_reads_as_a_line_break(capsys):
    from rnnkit.tasks.language_model import TerminalStream, render_tokens

    # a char model trained with data.line_ending=eos printed a literal "<eos>" inside its text
    assert render_tokens(["a", "<eos>", "b"], "char") == "a\nb"
    stream = TerminalStream("char")
    for token in ("a", "<eos>", "b"):
        stream(token)
    assert capsys.readouterr().out == "a\nb"


@pytest.mark.parametrize("level,tokens,text", [
    ("word", ["the", "cat", "<eos>", "a", "dog", "sat", "<eos>"], "the cat\na dog sat\n"),
    ("word", ["<unk>", "x", "<eos>", "<eos>", "y"], "<unk> x\n\ny"),
    ("subword", ["\u2581the", "\u2581ca", "t", "<eos>", "\u2581a", "\u2581", "<eos>", "dog", "\u2581<unk>"],
     "the cat\na\ndog <unk>"),
    ("subword", ["\u2581", "\u2581hi", "\u2581", "\u2581"], "hi"),
    ("char", ["h", "i", "<eos>", " ", "x"], "hi\n x"),
])
def test_streamed_text_reads_as_the_returned_text(capsys, level, tokens, text):
    """The terminal stream wrote a space after every word (before line breaks and at the end) and began
    subword lines with a space: it now writes what the returned text (render_tokens) holds."""
    from rnnkit.tasks.language_model import TerminalStream, render_tokens

    stream = TerminalStream(level)
    for token in tokens:
        stream(token)
    assert capsys.readouterr().out == text
    assert render_tokens(tokens, level) == text


def test_evaluate_counts_the_tokens_read_as_unk(word_run, tmp_path):
    run, dev = word_run
    assert "notes" not in TrainedLanguageModel.load(run).evaluate(dev)
    odd = tmp_path / "odd.txt"
    odd.write_text("the zebra sees the moon .\nthe cat sees a unicorn .\n")  # 'zebra', 'unicorn' unknown
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(odd)])
    assert result.exit_code == 0, result.output
    assert "note: 2 of the 14 tokens of odd.txt were read as <unk>" in result.output
    assert math.isfinite(float(next(line.split()[1] for line in result.output.splitlines()
                                    if line.startswith("perplexity"))))




def test_a_corpus_of_blank_lines_says_so(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n\n" * 10)
    result = _train(tmp_path, blank)
    assert result.exit_code == 2 and "no tokens, only blank lines" in result.output and "min_freq" not in result.output


def test_a_run_stopped_mid_epoch_resumes_with_the_streams_state(tmp_path, monkeypatch):
    """Ctrl-C in the middle of epoch 2 with a checkpoint after every window: the resumed run goes on
    from the next window with the state the streams had (saved with the checkpoint, not restarted
    from zeros) and ends with the uninterrupted run's weights."""
    from safetensors.torch import load_file

    from rnnkit.tasks import engine

    corpus, dev = _corpus(tmp_path / "train.txt", 200), _corpus(tmp_path / "dev.txt", 30, 1)
    args = ["train", "language-model", "--train", str(corpus), "--dev", str(dev), "--out", str(tmp_path),
            "--set", "train.epochs=2", "--set", "model.hidden_size=16", "--set", "model.embedding_dim=16",
            "--set", "train.batch_size=4", "--set", "train.bptt=12", "--set", "train.variable_bptt=true", "--quiet"]
    update, calls = engine.WeightAverage.update, {"n": 0, "stop": 0}

    def count_or_stop(self: engine.WeightAverage) -> None:  # runs after each window, before its checkpoint
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        update(self)

    monkeypatch.setattr(engine.WeightAverage, "update", count_or_stop)
    assert runner.invoke(app, [*args, "--name", "straight"]).exit_code == 0
    per_epoch = calls["n"] // 2  # the windows of one epoch (about the same in both)
    calls.update(n=0, stop=per_epoch + 5)
    assert runner.invoke(app, [*args, "--name", "split", "--checkpoint-minutes", "1e-9"]).exit_code != 0
    monkeypatch.setattr(engine.WeightAverage, "update", update)
    result = runner.invoke(app, ["train", "language-model", "--resume", str(tmp_path / "split"), "--quiet"])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "split" / "train.log").read_text()
    assert "resuming from checkpoint-last.ckpt in epoch 2 of 2, after batch" in log, log
    straight, split = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert all(torch.equal(straight[k], split[k]) for k in straight)
