"""Review of task features no other test ran: held-out translation dev sets, language-model embedding
dropout, tied projections, batch predict and bits per character, speech classifier pooling and chunk
notes, image pooling and the digits CSV, stateful layers on packed input, and the layer repr.

Every check compares with an independent computation: a hand count, a plain torch loop or torch.nn."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.nn import GRU, LSTM, Recurrent
from rnnkit.tasks.image_classification import DataConfig as ImageData
from rnnkit.tasks.image_classification import ImageSequenceClassifier, _inference_device, read_images
from rnnkit.tasks.language_model import RNNLanguageModel, TrainedLanguageModel
from rnnkit.tasks.speech import SpeechModel
from rnnkit.tasks.translation import TrainedTranslator, _split_dev

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _sets(*settings: str) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


# == translation: the dev set held out of --train ==================================================
WORDS = ["ka", "lu", "mi", "no", "pe", "ri", "so", "tu"]
TINY_MT = ["data.vocab_size=40", "model.embedding_dim=8", "model.hidden_size=8", "model.dropout=0.0",
           "train.batch_size=8", "train.epochs=1", "decode.beam_size=2", "train.accelerator=cpu"]


def _unique_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` distinct source sentences; the target reverses and upper-cases the words."""
    rng, seen = random.Random(seed), set()
    src: list[str] = []
    while len(src) < n:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        if s not in seen:
            seen.add(s)
            src.append(s)
    return src, [" ".join(w.upper() for w in reversed(s.split())) for s in src]


def _write_pairs(folder: Path, name: str, src: list[str], tgt: list[str]) -> list[str]:
    (folder / f"{name}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return [str(folder / f"{name}.src"), str(folder / f"{name}.tgt")]


@pytest.mark.parametrize("n", [3, 4, 10, 41, 200])
@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.95])
def test_held_out_dev_split_is_disjoint_complete_sized_and_seeded(n, fraction):
    src, tgt = _unique_pairs(n)
    corpus = type("Corpus", (), {"sources": src, "targets": tgt, "__len__": lambda self: n})()
    (tr_s, tr_t), (dv_s, dv_t) = _split_dev(corpus, fraction, seed=3)
    pairs = dict(zip(src, tgt))
    # pairs stay together, nothing is lost or doubled, the two parts share no pair
    assert all(pairs[s] == t for s, t in zip(tr_s + dv_s, tr_t + dv_t))
    assert sorted(tr_s + dv_s) == sorted(src) and not set(tr_s) & set(dv_s)
    # the size asked for (at least 1 dev pair, at least 2 training pairs)
    assert len(dv_s) == min(max(1, round(n * fraction)), n - 2)
    # both parts keep the corpus order
    assert tr_s == [s for s in src if s in set(tr_s)] and dv_s == [s for s in src if s in set(dv_s)]
    # the same seed draws the same pairs; another seed (nearly always) others
    assert _split_dev(corpus, fraction, seed=3) == ((tr_s, tr_t), (dv_s, dv_t))
    if n >= 41 and 0.05 < fraction < 0.95:
        assert _split_dev(corpus, fraction, seed=4)[1][0] != dv_s


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    """A translation run trained without --dev (a quarter of 24 pairs held out), then resumed."""
    root = tmp_path_factory.mktemp("mt_held_out")
    src, tgt = _unique_pairs(24, seed=1)
    files = _write_pairs(root, "train", src, tgt)
    result = runner.invoke(app, ["train", "translation", "--train", *files, "--out", str(root), "--name", "run",
                                 "--quiet", *_sets(*TINY_MT, "data.dev_fraction=0.25", "train.seed=5")])
    assert result.exit_code == 0, result.output
    return root / "run", src, tgt, files


def _report_examples(run: Path) -> list[tuple[str, str]]:
    lines = (run / "report.md").read_text(encoding="utf-8").splitlines()
    return [(a[len("- source: "):], b[len("  - reference: "):]) for a, b in zip(lines, lines[1:])
            if a.startswith("- source: ")]


def test_training_without_dev_holds_out_logs_and_resumes_on_the_same_pairs(held_out_run):
    run, src, tgt, _ = held_out_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["sentences"] == 6 and metrics["training_pairs"] == 18  # round(24 * 0.25) = 6
    assert len((run / "dev.translations.txt").read_text(encoding="utf-8").splitlines()) == 6
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "held out 6 of the 24 training pairs (data.dev_fraction=0.25" in log and "train.seed=5" in log
    examples = _report_examples(run)
    assert len(examples) == 5 and all(dict(zip(src, tgt))[s] == t for s, t in examples)
    # --resume reads the same file and holds out the same pairs
    resumed = runner.invoke(app, ["train", "translation", "--resume", str(run), "--quiet",
                                  *_sets("train.epochs=2")])
    assert resumed.exit_code == 0, resumed.output
    assert _report_examples(run) == examples
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    log = (run / "train.log").read_text(encoding="utf-8")
    assert log.count("held out 6 of the 24 training pairs") == 2


def test_a_held_out_run_evaluates_on_parallel_files(held_out_run, tmp_path):
    run, _, _, files = held_out_run
    result = runner.invoke(app, ["evaluate", str(run), "--data", *files, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert metrics["sentences"] == 24 and 0.0 <= metrics["bleu"] <= 100.0


@pytest.mark.parametrize("n", [1, 2])
def test_a_corpus_too_small_to_hold_out_a_dev_set_is_a_one_line_error(tmp_path, n):
    src, tgt = _unique_pairs(n)
    files = _write_pairs(tmp_path, "train", src, tgt)
    result = runner.invoke(app, ["train", "translation", "--train", *files, "--out", str(tmp_path / "runs"),
                                 "--quiet", *_sets(*TINY_MT)])
    assert result.exit_code != 0
    error = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert f"{n} sentence pair(s)" in error and "--dev" in error and "data.dev_fraction" in error


def test_three_pairs_without_dev_train_on_two_and_select_on_one(tmp_path):
    src, tgt = _unique_pairs(3)
    files = _write_pairs(tmp_path, "train", src, tgt)
    result = runner.invoke(app, ["train", "translation", "--train", *files, "--out", str(tmp_path), "--name", "r",
                                 "--quiet", *_sets(*TINY_MT, "data.dev_fraction=0.9")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["training_pairs"] == 2 and metrics["dev"]["sentences"] == 1


def _plain_greedy(model: TrainedTranslator, text: str) -> tuple[str, float]:
    """Greedy decoding written out: argmax per step, <eos> forced at floor(ratio * n + offset) tokens."""
    seq2seq, prep, dec = model.model, model.prep, model.decode
    ids = prep.encode_source(text)
    limit = max(1, math.floor(len(ids) * dec.max_length_ratio + dec.max_length_offset))
    with torch.no_grad():
        memory, state = seq2seq.encode(torch.tensor([ids]), torch.tensor([len(ids)]))
        previous, out, total = torch.tensor([seq2seq.bos_id]), [], 0.0
        for t in range(limit + 1):
            log_probs, state, _ = seq2seq.step(previous, state, memory)
            row = log_probs[0].double()
            token = seq2seq.eos_id if t >= limit else int(row.argmax())
            total += float(row[token])
            if token == seq2seq.eos_id:
                break
            out.append(token)
            previous = torch.tensor([token])
    return prep.detokenize(out), total / (len(out) + 1) ** dec.length_penalty


def test_batch_predict_equals_a_plain_greedy_loop_and_refuses_a_bare_string(held_out_run):
    run, src, _, _ = held_out_run
    model = TrainedTranslator.load(run)
    model.use_overrides(["decode.beam_size=1", "decode.nbest=1", "decode.batch_size=2"])
    texts = [src[0], "", src[5], "ka ka ka ka", src[2]]
    results = model.predict(texts)
    assert [r["source"] for r in results] == texts
    for text, result in zip(texts, results):
        if not text:
            assert result["translation"] == ""
            continue
        expected, score = _plain_greedy(model, text)
        assert result["translation"] == expected
        assert math.isclose(result["score"], score, rel_tol=1e-4, abs_tol=1e-6)
    with pytest.raises(TypeError, match=r"predict\(\[x\]\)"):
        model.predict("ka lu")


def test_cli_predict_prints_one_json_object_per_translation(held_out_run):
    run, src, _, _ = held_out_run
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["predict", str(run), src[0], src[1], *extra])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert [r["source"] for r in rows] == [src[0], src[1]]
        assert all(isinstance(r["translation"], str) and r["nbest"] for r in rows)


# == language model ================================================================================
def test_embedding_dropout_drops_whole_rows_at_its_rate_and_rescales_the_rest():
    torch.manual_seed(0)
    vocab, p = 4000, 0.3
    model = RNNLanguageModel(vocab, embedding_dim=3, hidden_size=3, num_layers=1, dropout=0.0,
                             embedding_dropout=p, tie_weights=False).train()
    weight = model.embedding.weight.detach()
    ids = torch.arange(vocab).repeat(2, 1)  # every word twice in one batch
    rows = model._embed(ids).detach()
    dropped = (rows[0] == 0).all(-1)
    assert bool(((rows[0] == 0) == dropped.unsqueeze(-1)).all())  # a word is dropped whole, never in part
    assert torch.equal(rows[0], rows[1])  # and the same way wherever it occurs in the batch
    assert abs(float(dropped.float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / vocab)
    torch.testing.assert_close(rows[0][~dropped], weight[~dropped] / (1 - p))  # kept rows: 1/keep
    # the rescaling keeps the expectation: the mean over many draws tends to the weight
    mean = torch.stack([model._embed(torch.arange(50)).detach() for _ in range(4000)]).mean(0)
    torch.testing.assert_close(mean, weight[:50], atol=0.02 * float(weight[:50].abs().max()) + 5e-3, rtol=0)
    # a new draw per call
    assert not torch.equal(model._embed(ids[0]), model._embed(ids[0]))
    # eval: no dropout, the same output every call as a model without embedding dropout
    plain = RNNLanguageModel(vocab, embedding_dim=3, hidden_size=3, num_layers=1, dropout=0.0, tie_weights=False)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    x = torch.randint(0, vocab, (2, 9))
    with torch.no_grad():
        a, b, c = model(x)[0], model(x)[0], plain(x)[0]
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(model._embed(ids[0]), weight)


def _plain_lm_logits(model: RNNLanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """Embedding -> torch.nn.LSTM per layer -> projection -> embedding matrix as output weights."""
    x = F.embedding(ids, model.embedding.weight)
    for layer in model.layers:
        ref = torch.nn.LSTM(layer.input_size, layer.hidden_size, batch_first=True)
        ref.load_state_dict(layer.state_dict())
        x, _ = ref(x)
    assert model.project is not None
    x = x @ model.project.weight.T + model.project.bias
    return x @ model.embedding.weight.T + model.decoder.bias


def test_tied_weights_with_a_projection_score_and_step_like_a_plain_network():
    torch.manual_seed(1)
    model = RNNLanguageModel(13, embedding_dim=5, hidden_size=9, num_layers=2, dropout=0.0, tie_weights=True).eval()
    assert model.decoder.weight is model.embedding.weight and model.project.out_features == 5
    with torch.no_grad():
        model.decoder.bias.normal_()
        ids = torch.randint(0, 13, (3, 7))
        expected = _plain_lm_logits(model, ids)
        torch.testing.assert_close(model(ids)[0], expected, atol=1e-5, rtol=1e-5)
        state, steps = None, []
        for t in range(7):
            logits, state = model.step(ids[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tied_projected_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_tied")
    rng = random.Random(0)
    words = ["the cat", "a dog", "my friend", "sees", "likes", "fish", "the moon"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(4)) + " ." for _ in range(80)) + "\n"
    (root / "train.txt").write_text(text)
    result = runner.invoke(app, ["train", "language-model", "--train", str(root / "train.txt"), "--out", str(root),
                                 "--name", "run", "--quiet",
                                 *_sets("train.epochs=1", "model.embedding_dim=6", "model.hidden_size=10",
                                        "model.tie_weights=true", "model.num_layers=1", "model.dropout=0",
                                        "train.batch_size=3", "train.bptt=7", "train.accelerator=cpu")])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_batch_predict_samples_like_a_plain_loop_over_the_whole_prefix(tied_projected_lm):
    lm = TrainedLanguageModel.load(tied_projected_lm)
    assert lm.model.project is not None  # embedding_dim 6 != hidden_size 10, tied: the projection path
    vocab = lm.prep.vocab
    banned = [i for i in (vocab.unk_id, vocab.pad_id, vocab.bos_id) if i is not None]
    prompts = ["the cat sees", "my friend"]
    results = lm.predict(prompts)
    assert [r["prompt"] for r in results] == prompts
    for prompt, result in zip(prompts, results):
        ids = [vocab.token_to_id(w) for w in prompt.split()]
        generator, tokens = torch.Generator().manual_seed(0), []
        with torch.no_grad():
            for _ in range(50):  # predict: 50 new tokens at most, seed 0, temperature 1, stop at <eos>
                logits = lm.model(torch.tensor([ids]))[0][0, -1].clone()  # the whole prefix, no carried state
                logits[banned] = float("-inf")
                probs = ((logits - logits.max()).double()).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
                tokens.append(vocab.id_to_token(token))
                if token == vocab.eos_id:
                    break
                ids.append(token)
        assert result["tokens"] == tokens
    with pytest.raises(TypeError, match="list of prompts"):
        lm.predict("the cat")


def test_char_level_report_gives_dev_bits_per_character_of_a_plain_loop(tmp_path):
    rng = random.Random(2)
    lines = ["".join(rng.choice("abcab ") for _ in range(rng.randint(5, 12))) for _ in range(60)]
    (tmp_path / "train.txt").write_text("\n".join(lines[:50]) + "\n")
    dev_text = "\n".join(lines[50:]) + "\n"
    (tmp_path / "dev.txt").write_text(dev_text)
    result = runner.invoke(app, ["train", "language-model", "--train", str(tmp_path / "train.txt"), "--dev",
                                 str(tmp_path / "dev.txt"), "--out", str(tmp_path), "--name", "c", "--quiet",
                                 *_sets("data.level=char", "data.line_ending=keep", "train.epochs=1",
                                        "model.embedding_dim=8", "model.hidden_size=8", "model.num_layers=1",
                                        "train.batch_size=4", "train.bptt=10", "train.accelerator=cpu")])
    assert result.exit_code == 0, result.output
    lm = TrainedLanguageModel.load(tmp_path / "c")
    ids = torch.tensor([[lm.prep.vocab.token_to_id(ch) for ch in dev_text]])
    with torch.no_grad():
        logits = lm.model(ids[:, :-1])[0][0]
    nll = float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
    bpc = nll / (len(dev_text) - 1) / math.log(2)
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert math.isclose(metrics["dev"]["bits_per_character"], bpc, rel_tol=1e-4)
    row = next(line for line in (tmp_path / "c" / "report.md").read_text().splitlines()
               if line.startswith("| dev bits per character"))
    assert math.isclose(float(row.split("|")[2]), bpc, rel_tol=1e-3)


# == speech: classifier pooling over padded batches =================================================
def _plain_speech_logits(model: SpeechModel, feats: torch.Tensor) -> torch.Tensor:
    """One utterance ``[n, F]``, no padding: normalise, stack frames by hand, torch.nn.LSTM, pool, classify."""
    x = (feats - model.feat_mean) / model.feat_std
    k = model.factor
    x = F.pad(x, (0, 0, 0, (-x.shape[0]) % k)).reshape(-1, x.shape[1] * k).unsqueeze(0)
    enc = model.encoder
    ref = torch.nn.LSTM(enc.input_size, enc.hidden_size, num_layers=enc.num_layers, batch_first=True,
                        bidirectional=enc.bidirectional)
    ref.load_state_dict(enc.state_dict())
    out, (h_n, _) = ref(x)
    if model.pooling == "max":
        pooled = out[0].amax(0)
    elif model.pooling == "mean":
        pooled = out[0].mean(0)
    elif enc.bidirectional:  # forward summary after the last frame, backward summary after the first
        pooled = torch.cat([h_n[-2, 0], h_n[-1, 0]])
        torch.testing.assert_close(pooled, torch.cat([out[0, -1, : enc.hidden_size], out[0, 0, enc.hidden_size:]]))
    else:
        pooled = h_n[-1, 0]
    return model.output(pooled)


@pytest.mark.parametrize("pooling", ["max", "last", "mean"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("subsampling", ["none", "stack"])
def test_classifier_pooling_of_a_padded_batch_equals_each_utterance_alone(pooling, bidirectional, subsampling):
    torch.manual_seed(3)
    model = SpeechModel(5, 4, head="classifier", cell="lstm", hidden_size=6, num_layers=2,
                        bidirectional=bidirectional, subsampling=subsampling, subsample_factor=2, pooling=pooling,
                        dropout=0.0).eval()
    with torch.no_grad():
        model.feat_mean.normal_()
        model.feat_std.uniform_(0.5, 2.0)
    lengths = [11, 4, 7, 1, 8]
    feats = torch.randn(5, 11, 5)
    for b, n in enumerate(lengths):  # padding that would show if read: huge, negative and NaN
        feats[b, n:] = [1e4, -1e4, float("nan"), 3.0, -7.0][b]
    with torch.no_grad():
        logits, _ = model(feats, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            torch.testing.assert_close(logits[b], _plain_speech_logits(model, feats[b, :n]), atol=1e-5, rtol=1e-5)


def test_long_audio_for_a_bidirectional_model_is_chunked_with_context_and_noted(tmp_path):
    sf = pytest.importorskip("soundfile")
    from rnnkit.tasks.speech import (
        BLANK,
        DataConfig,
        DecodeConfig,
        Prepared,
        SpeechFeatures,
        TrainedSpeechModel,
    )

    torch.manual_seed(0)
    rate = 8000
    feats = SpeechFeatures(rate, "logmel", n_mels=16)
    tokens = [BLANK, " ", "a", "b"]
    model = SpeechModel(feats.size, len(tokens), head="ctc", hidden_size=8, num_layers=1, bidirectional=True,
                        subsampling="stack", subsample_factor=2, dropout=0.0).eval()
    trained = TrainedSpeechModel(model, Prepared(feats, "ctc", "chars", tokens, True, ["ab"], DataConfig()),
                                 DecodeConfig())
    rng = np.random.default_rng(0)
    wave = (0.2 * rng.standard_normal(rate * 3)).astype(np.float32)  # 3 s
    sf.write(tmp_path / "long.wav", wave, rate)
    (result,) = trained.transcribe([tmp_path / "long.wav"], max_chunk_seconds=1.0)
    decode = DecodeConfig(max_chunk_seconds=1.0)
    frames = int(feats(torch.from_numpy(wave)).shape[0])
    window = trained.window_frames(decode)
    context = min(int(decode.chunk_context_seconds * rate) // feats.hop, window // 4) // 2 * 2
    keep = window // 2 * 2 - 2 * context
    assert result["chunks"] == math.ceil(frames / keep) > 1
    note = " ".join(result["notes"])
    assert f"decoded in {result['chunks']} chunks of at most 1 s" in note and "context each side" in note
    # the kept blocks join into the one-pass output length: no subsampled frame dropped or repeated
    blocks = list(trained.chunk_log_probs(feats(torch.from_numpy(wave)), decode))
    assert sum(b.shape[0] for b in blocks) == math.ceil(frames / 2)
    (short,) = trained.transcribe([tmp_path / "long.wav"], max_chunk_seconds=5.0)
    assert "chunks" not in short and not any("chunks" in n for n in short["notes"])


# == image classification ===========================================================================
@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_image_pooling_equals_a_plain_torch_lstm(pooling, bidirectional):
    torch.manual_seed(4)
    model = ImageSequenceClassifier(6, 3, hidden_size=5, num_layers=2, bidirectional=bidirectional,
                                    pooling=pooling, dropout=0.0).eval()
    ref = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=bidirectional)
    ref.load_state_dict(model.encoder.state_dict())
    x = torch.randn(4, 7, 6)
    with torch.no_grad():
        out, (h_n, _) = ref(x)
        pooled = {"mean": out.mean(1), "max": out.amax(1),
                  "last": torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]}[pooling]
        torch.testing.assert_close(model(x), model.classifier(pooled), atol=1e-6, rtol=1e-5)


def _digits_csv(path: Path, n: int, shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 17, size=(n, *shape))
    labels = np.arange(n) % 3
    path.write_text("\n".join(",".join(map(str, [*img.reshape(-1), y])) for img, y in zip(images, labels)) + "\n")
    return images, labels


def test_digits_csv_rows_are_pixels_then_a_label_in_the_given_shape(tmp_path):
    images, labels = _digits_csv(tmp_path / "d.csv", 7, (8, 8))
    got, got_labels = read_images(tmp_path / "d.csv", ImageData())
    assert got.shape[:3] == (7, 8, 8) and np.array_equal(got.reshape(7, 8, 8), images)
    assert np.array_equal(got_labels, labels)
    images, labels = _digits_csv(tmp_path / "s.csv", 5, (3, 4), seed=1)
    got, got_labels = read_images(tmp_path / "s.csv", ImageData(image_shape=[3, 4]))
    assert np.array_equal(got.reshape(5, 3, 4), images) and np.array_equal(got_labels, labels)


def test_training_on_a_digits_csv_works_end_to_end(tmp_path):
    _digits_csv(tmp_path / "train.csv", 60, (8, 8))
    _digits_csv(tmp_path / "dev.csv", 15, (8, 8), seed=2)
    result = runner.invoke(app, ["train", "image-classification", "--train", str(tmp_path / "train.csv"), "--dev",
                                 str(tmp_path / "dev.csv"), "--out", str(tmp_path), "--name", "r", "--quiet",
                                 *_sets("train.epochs=1", "model.hidden_size=8", "train.batch_size=16",
                                        "train.accelerator=cpu")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert 0.0 <= metrics["dev"]["accuracy"] <= 1.0


@pytest.mark.data
def test_the_real_sklearn_digits_csv_reads_1797_eight_by_eight_images():
    path = SHARED / "sklearn-digits" / "digits.csv.gz"
    if not path.is_file():
        pytest.skip(f"real data not found: {path} (shared/data is absent)")
    import gzip

    with gzip.open(path, "rt") as f:
        first = [int(float(v)) for v in f.readline().split(",")]
    images, labels = read_images(path, ImageData())
    assert images.shape[:3] == (1797, 8, 8) and sorted(set(labels.tolist())) == list(range(10))
    assert images[0].reshape(-1).tolist() == first[:64] and labels[0] == first[64]
    assert images.max() == 16


def test_inference_device_is_the_gpu_only_when_training_asked_for_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _inference_device("gpu") == torch.device("cuda") == _inference_device("auto")
    assert _inference_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _inference_device("gpu") == torch.device("cpu") == _inference_device("auto")


# == recurrent layers ===============================================================================
def _torch_twin(layer: torch.nn.Module, kind: str) -> torch.nn.Module:
    ref = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(layer.input_size, layer.hidden_size,
                                                              num_layers=layer.num_layers, batch_first=True)
    ref.load_state_dict(layer.state_dict())
    return ref


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("make,kind", [
    (lambda bf: LSTM(3, 5, num_layers=2, batch_first=bf, stateful=True), "lstm"),  # torch's packed kernel
    (lambda bf: GRU(3, 5, batch_first=bf, stateful=True), "gru"),
    (lambda bf: LSTM(3, 5, batch_first=bf, stateful=True, implementation="reference"), "lstm"),  # padded path
    (lambda bf: Recurrent("lstm", 3, 5, num_layers=2, batch_first=bf, stateful=True), "lstm"),
], ids=["LSTM-fused", "GRU-fused", "LSTM-reference", "Recurrent-lstm"])
def test_stateful_layers_on_packed_input_carry_each_sequences_state(make, kind, batch_first):
    torch.manual_seed(5)
    layer = make(batch_first).eval()
    ref = _torch_twin(layer, kind)
    xs = [torch.randn(4, 6, 3), torch.randn(4, 6, 3)]
    lens = [torch.tensor([6, 3, 5, 1]), torch.tensor([2, 6, 4, 6])]
    with torch.no_grad():
        outs = []
        for x, n in zip(xs, lens):
            packed = pack_padded_sequence(x if batch_first else x.transpose(0, 1), n, batch_first=batch_first,
                                          enforce_sorted=False)
            out, h_n = layer(packed)
            assert isinstance(out, type(packed))
            outs.append(pad_packed_sequence(out, batch_first=True)[0])
        for b in range(4):  # each sequence alone, unpadded, its state carried by hand from call 1 to call 2
            state = None
            for call, (x, n) in enumerate(zip(xs, lens)):
                expected, state = ref(x[b : b + 1, : n[b]], state)
                torch.testing.assert_close(outs[call][b, : n[b]], expected[0], atol=1e-6, rtol=1e-5)
            h = h_n[0] if isinstance(h_n, tuple) else h_n
            ref_h = state[0] if isinstance(state, tuple) else state
            torch.testing.assert_close(h[:, b], ref_h[:, 0], atol=1e-6, rtol=1e-5)


def test_unbatched_step_and_state_match_torch():
    torch.manual_seed(6)
    layer = LSTM(3, 5, num_layers=2, batch_first=True).eval()
    ref = _torch_twin(layer, "lstm")
    x = torch.randn(7, 3)
    h0 = (torch.randn(2, 5), torch.randn(2, 5))
    with torch.no_grad():
        expected, (h_ref, c_ref) = ref(x.unsqueeze(0), tuple(h.unsqueeze(1) for h in h0))
        state, outs = h0, []
        for t in range(7):
            out, state = layer.step(x[t], state)  # one [I] vector and an unbatched [L, H] state
            outs.append(out)
        assert outs[0].shape == (5,) and state[0].shape == (2, 5)
        torch.testing.assert_close(torch.stack(outs), expected[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(state[1], c_ref[:, 0], atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match=r"unbatched input hx\[0\] must be 2-D \[2, 5\]"):
            layer(x, (torch.zeros(2, 1, 5), torch.zeros(2, 1, 5)))


def test_recurrent_repr_shows_every_option_away_from_its_default():
    plain = repr(Recurrent("gru", 4, 6))
    assert plain == "Recurrent('gru', 4, 6, num_layers=1, bidirectional=False, batch_first=True)"
    text = repr(Recurrent("lstm", 4, 6, num_layers=2, dropout=0.25, bias=False, zoneout=0.1, stateful=True,
                          implementation="reference", input_dropout=0.2, recurrent_dropout=0.3))
    for part in ("num_layers=2", "bias=False", "dropout=0.25", "input_dropout=0.2", "recurrent_dropout=0.3",
                 "zoneout=0.1", "implementation='reference'", "stateful=True"):
        assert part in text, text
    with pytest.raises(ValueError, match="rnnkit.nn.LSTM, GRU or RNN"):
        Recurrent("lstm", 4, 6, implementation="fused")


# == CLI ============================================================================================
def test_bench_memory_names_a_bad_length_list():
    result = runner.invoke(app, ["bench", "memory", "--length", "10,x"])
    assert result.exit_code != 0
    assert "--length: expected integers separated by commas, got '10,x'" in result.output
