"""Review of the speech task: independent references for the features (a hand-written NumPy STFT and
mel filterbank) and for lexicon-constrained CTC beam search (brute force), and the defects found:
streaming ignored the lexicon at beam 1, the CTC feasibility warning ignored repeated labels, word
lists were not lowercased like the transcripts, and API misuse (a bare path or waveform, stereo or
integer samples pushed to a stream) gave cryptic errors or silently wrong transcripts."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import DataError
from rnnkit.nn.ctc import Lexicon, collapse_alignment, ctc_prefix_beam_search
from rnnkit.tasks.speech import (
    BLANK,
    DataConfig,
    DecodeConfig,
    Prepared,
    SpeechFeatures,
    SpeechModel,
    TrainedSpeechModel,
    ctc_min_frames,
)

sf = pytest.importorskip("soundfile")
runner = CliRunner()
RATE = 8000


def _sines(seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 700 * t) + 0.1 * np.sin(2 * np.pi * 2100 * t)).astype(np.float32)


def _wave(seconds: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f = rng.uniform(300, 3000, size=4)
    wave = sum(0.2 * np.sin(2 * np.pi * fi * t + i) * (np.sin(np.pi * (i + 1) * t / seconds) ** 2)
               for i, fi in enumerate(f))
    return torch.from_numpy((wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32))


def _random_ctc() -> TrainedSpeechModel:
    """A streamable (unidirectional, stacked) CTC model with random weights over blank, space, a, b, c."""
    torch.manual_seed(0)
    feats = SpeechFeatures(RATE, "logmel", n_mels=24)
    tokens = [BLANK, " ", "a", "b", "c"]
    model = SpeechModel(feats.size, len(tokens), head="ctc", hidden_size=24, num_layers=2, bidirectional=False,
                        subsampling="stack", subsample_factor=2, dropout=0.0)
    with torch.no_grad():
        model.output.weight.mul_(4.0)
        model.output.bias.copy_(torch.tensor([0.0, -0.5, 0.0, 0.0, 0.0]))
        allf = feats(_wave(3.0, seed=5))
        model.feat_mean.copy_(allf.mean(0))
        model.feat_std.copy_(allf.std(0))
    prep = Prepared(feats, "ctc", "chars", tokens, True, ["ab", "ca"], DataConfig())
    return TrainedSpeechModel(model.eval(), prep, DecodeConfig())


# -- independent references ----------------------------------------------------------------------
def _numpy_logmel(x: np.ndarray, rate: int, win: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Centred, reflect-padded periodic-Hann frames, |rfft|^2, HTK triangles drawn in Hz, log(+1e-6)."""
    pad = n_fft // 2
    xp = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    window = np.zeros(n_fft)
    off = (n_fft - win) // 2
    window[off : off + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([xp[i * hop : i * hop + n_fft] * window for i in range(1 + (len(xp) - n_fft) // hop)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    points = 700 * (10 ** (np.linspace(mel(0), mel(rate / 2), n_mels + 2) / 2595) - 1)
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, mid, hi = points[m : m + 3]
        fb[:, m] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return np.log(power @ fb + 1e-6)


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
@pytest.mark.parametrize(("frame_ms", "hop_ms", "n_mels"), [(25, 10, 40), (20, 5, 23)])
def test_features_match_a_hand_written_numpy_stft_and_mel_filterbank(kind, frame_ms, hop_ms, n_mels):
    scipy_fft = pytest.importorskip("scipy.fft")
    x = _sines()
    feats = SpeechFeatures(RATE, kind, n_mels=n_mels, n_mfcc=13, frame_ms=frame_ms, hop_ms=hop_ms)
    ref = _numpy_logmel(x, RATE, round(RATE * frame_ms / 1000), feats.n_fft, feats.hop, n_mels)
    if kind == "mfcc":
        ref = scipy_fft.dct(ref, type=2, norm="ortho", axis=1)[:, :13]
    out = feats(torch.from_numpy(x)).double().numpy()
    assert out.shape == ref.shape == (1 + x.size // feats.hop, feats.size)
    np.testing.assert_allclose(out, ref, atol=5e-4, rtol=1e-4)


def test_lexicon_beam_search_equals_brute_force_over_valid_labellings():
    tokens = [BLANK, "a", "b", " "]
    words = {"ab", "a", "ba"}
    lexicon = Lexicon.from_words(sorted(words), tokens)

    def valid(text: str) -> bool:  # words separated by single spaces, one trailing space allowed
        if not text:
            return True
        body = text[:-1] if text.endswith(" ") else text
        return all(w in words for w in body.split(" "))

    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        steps = int(torch.randint(1, 6, (1,), generator=gen))
        lp = torch.log_softmax(2 * torch.randn(steps, 4, generator=gen), -1).double()
        expected: dict[str, float] = {}
        for path in itertools.product(range(4), repeat=steps):
            text = "".join(tokens[i] for i in collapse_alignment(path, 0))
            if valid(text):
                key = text[:-1] if text.endswith(" ") else text
                score = float(sum(lp[t, p] for t, p in enumerate(path)))
                expected[key] = float(np.logaddexp(expected.get(key, -np.inf), score))
        got = {"".join(tokens[i] for i in lab): s
               for lab, s in ctc_prefix_beam_search(lp, beam_size=10**6, token_threshold=None, lexicon=lexicon)}
        assert got.keys() == expected.keys()
        for key, score in expected.items():
            assert got[key] == pytest.approx(score, abs=1e-9)


# -- streaming with a lexicon at beam 1 -----------------------------------------------------------
def test_streaming_applies_the_lexicon_at_beam_1_like_the_whole_file_pass(tmp_path):
    """Whole-file decoding runs the beam search whenever a lexicon is given (even beam 1); the streamer
    decoded greedily and dropped the lexicon, so ``transcribe --stream --lexicon`` wrote non-words."""
    trained = _random_ctc()
    words = tmp_path / "words.txt"
    words.write_text("ab\nca\nb\n")
    allowed = {"ab", "ca", "b"}
    for seed in range(3):
        wave = _wave(1.2, seed=seed)
        greedy = trained.recognize([wave], beam_size=1)[0]["text"]
        full = trained.recognize([wave], beam_size=1, lexicon=str(words))[0]["text"]
        assert set(full.split()) <= allowed
        if seed == 0:
            assert not set(greedy.split()) <= allowed  # the lexicon matters here: a meaningful check
        for chunk in (1, 333, wave.numel()):
            streamed = trained.transcribe_stream(wave, chunk, beam_size=1, lexicon=str(words))
            assert streamed == full, (seed, chunk, streamed, full)


# -- CTC feasibility with repeated labels ---------------------------------------------------------
def test_ctc_min_frames_is_where_torch_ctc_loss_becomes_infinite():
    gen = torch.Generator().manual_seed(0)
    assert ctc_min_frames([]) == 0 and ctc_min_frames([1, 1, 2]) == 4 and ctc_min_frames([3, 3, 3]) == 5
    for _ in range(40):
        target = torch.randint(1, 3, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
        for steps in range(1, 11):
            lp = torch.log_softmax(torch.randn(steps, 1, 3, generator=gen), -1)
            loss = F.ctc_loss(lp, torch.tensor([target]), torch.tensor([steps]), torch.tensor([len(target)]),
                              reduction="sum")
            assert bool(torch.isinf(loss)) == (ctc_min_frames(target) > steps), (target, steps)


def _train_on_manifests(tmp_path, transcripts: list[str], samples: int, seed: int) -> tuple[object, Path]:
    """Train 1 epoch on noise wavs: the first len-1 transcripts as training, the first and the last as dev."""
    rng = np.random.default_rng(seed)
    (tmp_path / "w").mkdir()
    rows = ["path,label"]
    for i, text in enumerate(transcripts):
        sf.write(tmp_path / "w" / f"{i}.wav", (0.2 * rng.standard_normal(samples)).astype(np.float32), RATE)
        rows.append(f"w/{i}.wav,{text}")
    (tmp_path / "train.csv").write_text("\n".join(rows[:-1]) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join([rows[0], rows[1], rows[-1]]) + "\n")
    result = runner.invoke(app, ["train", "speech", "--train", str(tmp_path / "train.csv"), "--dev",
                                 str(tmp_path / "dev.csv"), "--out", str(tmp_path / "runs"), "--name", "r",
                                 "--set", "data.mode=transcripts", "--set", "data.split=none",
                                 "--set", "train.epochs=1", "--set", "model.hidden_size=8",
                                 "--set", "model.num_layers=1", "--set", "data.n_mels=16",
                                 "--set", "train.accelerator=cpu", "--quiet"])
    return result, tmp_path / "runs" / "r"


def test_training_warns_about_transcripts_infeasible_only_because_of_repeats(tmp_path):
    """0.3 s at 8 kHz is 31 frames, 16 after stacking by 2: 'aabbaabbaabb' has 12 labels (fewer than
    16) but needs 18 frames (6 blanks between equal neighbours); its loss was silently zeroed."""
    result, run = _train_on_manifests(tmp_path, ["aabbaabbaabb", "ab ba", "ab ba", "ab ba", "ab ba", "ab ba"], 2400, 0)
    assert result.exit_code == 0, result.output
    log = (run / "train.log").read_text()
    assert "warning: 1 training transcripts are longer than their subsampled frames" in log, log
    assert "0.wav" in log


# -- word lists are lowercased like the transcripts ------------------------------------------------
def test_a_capitalised_word_list_constrains_a_lowercase_model(tmp_path):
    trained = _random_ctc()  # data.lowercase=true: it writes lowercase only
    lower, upper = tmp_path / "lower.txt", tmp_path / "upper.txt"
    lower.write_text("ab\nca\nb\n")
    upper.write_text("AB\nCa\nB\n")
    wave = _wave(1.2, seed=0)
    expected = trained.recognize([wave], beam_size=4, lexicon=str(lower))[0]["text"]
    assert trained.recognize([wave], beam_size=4, lexicon=str(upper))[0]["text"] == expected
    lex = trained.lexicon(str(upper))
    assert lex is not None and lex.num_words == 3


def test_a_word_list_that_is_not_utf8_names_the_file(tmp_path):
    trained = _random_ctc()
    words = tmp_path / "latin1.txt"
    words.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:1: cannot decode .*utf-8"):
        trained.lexicon(str(words))


# -- API misuse -----------------------------------------------------------------------------------
def test_transcribe_and_recognize_refuse_a_bare_path_or_waveform(tmp_path):
    trained = _random_ctc()
    wav = tmp_path / "a.wav"
    sf.write(wav, _wave(0.6, seed=1).numpy(), RATE)
    with pytest.raises(TypeError, match=r"wrap it in a list: transcribe\(\[path\]\)"):
        trained.transcribe(str(wav))  # was: "a: audio file not found" (one character taken as a path)
    wave = _wave(0.6, seed=1)
    with pytest.raises(TypeError, match=r"wrap it in a list: recognize\(\[wave\]\)"):
        trained.recognize(wave)  # was: IndexError from iterating the samples
    one = trained.recognize([wave])[0]["text"]
    assert trained.recognize([wave[None]])[0]["text"] == one  # [1, T] is a mono waveform
    assert trained.recognize([wave.numpy()])[0]["text"] == one
    assert trained.transcribe([wav])[0]["text"] == one
    with pytest.raises(DataError, match="audio 1: 100 samples is shorter than one frame"):
        trained.recognize([wave[:100]])


def test_streaming_refuses_multichannel_or_integer_chunks_instead_of_interleaving_them():
    trained = _random_ctc()
    wave = _wave(0.8, seed=2)
    expected = trained.transcribe_stream(wave, 400)
    rec = trained.streamer()
    for start in range(0, wave.numel(), 400):
        rec.push(wave[start : start + 400, None].numpy())  # [n, 1], as sounddevice gives mono input
    assert rec.finish() == expected
    rec = trained.streamer()
    with pytest.raises(ValueError, match=r"expected a mono waveform .*got shape \[400, 2\]"):
        rec.push(torch.stack([wave[:400], wave[:400]], 1))  # was: the two channels interleaved, silently
    with pytest.raises(ValueError, match="expected float samples"):
        rec.push((wave[:400].numpy() * 32767).astype(np.int16))  # was: read as samples of +-32767


@pytest.mark.data
def test_real_fsdd_files_transcribe_with_the_streamer_equal_to_whole_file(shared_data, tmp_path):
    root = shared_data / "fsdd" / "recordings"
    trained = _random_ctc()
    words = tmp_path / "words.txt"
    words.write_text("ab ca b\n")
    files = [root / "3_theo_0.wav", root / "7_jackson_4.wav"]
    whole = trained.transcribe(files, lexicon=str(words))
    streamed = trained.transcribe(files, lexicon=str(words), stream=True, chunk_ms=50)
    assert [r["text"] for r in streamed] == [r["text"] for r in whole]
    assert json.dumps(whole)  # JSON-serialisable, as `transcribe --json` prints it


def test_a_character_only_in_dev_transcripts_is_scored_not_fatal(tmp_path):
    """An apostrophe the dev split holds whole used to stop training ("was not in the training
    transcripts"); now it is an output never trained towards, and the dev WER counts it."""
    result, run = _train_on_manifests(tmp_path, ["ab", "ab", "ab", "ab", "ab", chr(39) + "ab"], 4000, 1)
    assert result.exit_code == 0, result.output
    assert "1 char(s) occur only in dev transcripts (\"'\")" in (run / "train.log").read_text()
    labels = json.loads((run / "speech.json").read_text())["labels"]
    assert labels == [BLANK, "a", "b", "'"]  # training units sorted, then the dev-only ones
    trained = TrainedSpeechModel.load(run)
    assert "'" in trained.prep.labels


def test_global_feature_statistics_are_exact_for_constant_features_and_match_numpy():
    from rnnkit.tasks.speech import feature_statistics

    rng = np.random.default_rng(0)
    utterances = [torch.tensor(rng.normal(3.0, 2.0, (n, 4)), dtype=torch.float32) for n in (7, 1, 30, 12)]
    for u in utterances:
        u[:, 2] = -13.815510749816895  # log(1e-6): an empty mel filter is this constant everywhere
    mean, std = feature_statistics(utterances)
    every = np.concatenate([u.double().numpy() for u in utterances])
    np.testing.assert_allclose(mean.numpy(), every.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), every.std(0), rtol=1e-10)
    normalised = (utterances[0] - mean.float()) / std.float().clamp(min=1e-5)
    assert torch.equal(normalised[:, 2], torch.zeros(7))  # float32 statistics gave +-0.3 here
