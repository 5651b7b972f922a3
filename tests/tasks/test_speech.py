"""Speech task: features (whole-file and streamed), SpecAugment, splits, connected digits,
streaming equals whole-file decoding, end to end on generated wav files, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data import MFCC, DataError, LogMelSpectrogram
from rnnkit.tasks.config import ConfigError, load_config
from rnnkit.tasks.speech import (
    BLANK,
    Config,
    DataConfig,
    DecodeConfig,
    Prepared,
    SpeechFeatures,
    SpeechModel,
    StreamingRecognizer,
    TrainedSpeechModel,
    Utterance,
    connect_digits,
    spec_augment,
    split_dev,
    split_test,
)

sf = pytest.importorskip("soundfile")
runner = CliRunner()
RATE = 8000
FREQS = {"0": 440.0, "1": 1100.0, "2": 2300.0}


def _tone(label: str, seconds: float, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """A chirp around the class frequency with a fade in/out and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = FREQS[label] * rng.uniform(0.95, 1.05)
    wave = 0.5 * np.sin(2 * np.pi * (f0 * t + 150.0 * t * t)) * np.hanning(t.size)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _folder(root: Path, speakers=("ann", "bob"), per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for label in FREQS:
        for speaker in speakers:
            for index in range(per_class):
                sf.write(root / f"{label}_{speaker}_{index}.wav", _tone(label, rng.uniform(0.25, 0.4), rng), RATE)
    return root


def _wave(seconds: float = 1.3, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    parts = [_tone(str(rng.integers(0, 3)), 0.3, rng) for _ in range(4)]
    return torch.from_numpy(np.concatenate(parts)[: int(seconds * RATE)])


# -- features ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_features_match_the_data_layer(kind):
    wave = _wave()
    feats = SpeechFeatures(RATE, kind, n_mels=32, n_mfcc=13, frame_ms=25, hop_ms=10)
    opts = dict(sample_rate=RATE, n_fft=256, hop_length=80, win_length=200, n_mels=32)
    ref = MFCC(n_mfcc=13, **opts)(wave) if kind == "mfcc" else LogMelSpectrogram(**opts)(wave)
    out = feats(wave)
    assert out.shape == ref.shape == (1 + wave.numel() // 80, feats.size)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 37, 80, 1000, 1600, 10**6])
def test_streamed_frames_equal_whole_file_frames_exactly(chunk):
    wave = _wave(1.01)
    feats = SpeechFeatures(RATE, "mfcc", n_mels=32)
    whole = feats(wave)
    stream = feats.stream()
    parts = [stream.push(wave[i : i + chunk]) for i in range(0, wave.numel(), chunk)] + [stream.flush()]
    streamed = torch.cat(parts)
    assert torch.equal(streamed, whole)  # bitwise: chunk boundaries do not change frames


def test_short_clip_is_a_one_line_error_in_both_paths():
    feats = SpeechFeatures(RATE)
    with pytest.raises(DataError, match="shorter than one frame") as err:
        feats(torch.zeros(100))
    assert "\n" not in str(err.value)
    stream = feats.stream()
    stream.push(torch.zeros(100))
    with pytest.raises(DataError, match="shorter than one frame"):
        stream.flush()
    with pytest.raises(ValueError, match="whole clip"):
        SpeechFeatures(RATE, normalize="utterance").stream()


def test_spec_augment_masks_inside_each_utterance_and_only_in_training():
    feats = torch.ones(2, 50, 20)
    lengths = torch.tensor([50, 30])
    feats[1, 30:] = 7.0  # padding must stay untouched
    out = spec_augment(feats, lengths, freq_masks=2, freq_width=5, time_masks=2, time_width=10,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[1, 30:], feats[1, 30:])  # padding untouched
    assert bool((out[0] == 0).any()) and out.shape == feats.shape
    assert torch.equal(feats[0], torch.ones(50, 20))  # the input is not modified
    zero_frames = (out[1, :30] == 0).all(-1).sum()
    assert zero_frames <= 2 * 6  # time masks are at most 20% of the 30 frames each
    model = SpeechModel(20, 4, spec_augment={"freq_masks": 2, "freq_mask_width": 5, "time_masks": 2,
                                             "time_mask_width": 10}).eval()
    x = torch.randn(2, 50, 20)
    a, _ = model(x, lengths)
    b, _ = model(x, lengths)
    assert torch.equal(a, b)  # no masking at evaluation


# -- data --------------------------------------------------------------------------------------
def _utts() -> list[Utterance]:
    return [Utterance(f"{d}_{s}_{i}.wav", str(d), s, i) for d in range(3) for s in ("ann", "bob", "cy")
            for i in range(10)]


def test_fsdd_and_speaker_splits_and_dev_carving():
    items = _utts()
    train, test = split_test(items, DataConfig(split="fsdd"))
    assert {u.index for u in test} == set(range(5)) and all(u.index >= 5 for u in train)
    train, test = split_test(items, DataConfig(split="speaker", test_speakers=["cy"]))
    assert {u.speaker for u in test} == {"cy"} and "cy" not in {u.speaker for u in train}
    with pytest.raises(ConfigError, match="not a speaker"):
        split_test(items, DataConfig(split="speaker", test_speakers=["zed"]))
    tr, dev = split_dev(train, DataConfig(dev_split="speaker", dev_fraction=0.3), seed=0)
    assert len({u.speaker for u in dev}) == 1 and not {u.speaker for u in dev} & {u.speaker for u in tr}
    tr, dev = split_dev(items, DataConfig(dev_fraction=0.1), seed=0)
    assert len(dev) == 9 and len(tr) == 81 and not {u.key for u in dev} & {u.key for u in tr}
    with pytest.raises(ConfigError, match="index"):
        split_test([Utterance("a.wav", "x")], DataConfig(split="fsdd"))


def test_connected_digits_join_recordings_with_silence_and_noise():
    sources = [Utterance(f"{d}.wav", str(d), wave=torch.full((800,), 0.1 * (d + 1))) for d in range(3)]
    cfg = DataConfig(mode="connected_digits", silence_ms=[10.0, 20.0], snr_db=[30.0, 30.0])
    utts = connect_digits(sources, 50, cfg, RATE, seed=0, name="t")
    assert len(utts) == 50
    for u in utts:
        words = u.target.split()
        assert 2 <= len(words) <= 7 and words == [p.target for p in u.parts]
        assert u.wave is not None
        n = u.wave.numel() - 800 * len(words)
        assert 80 * (len(words) + 1) <= n <= 160 * (len(words) + 1)  # silences of 10-20 ms
    again = connect_digits(sources, 50, cfg, RATE, seed=0, name="t")
    assert all(torch.equal(a.wave, b.wave) for a, b in zip(utts, again))  # type: ignore[arg-type]


def test_config_rejects_bad_combinations():
    with pytest.raises(ConfigError, match="test_speakers"):
        load_config(Config, overrides=["data.split=speaker"])
    with pytest.raises(ConfigError, match="classifier needs data.mode=words"):
        load_config(Config, overrides=["data.mode=connected_digits", "model.head=classifier"])
    with pytest.raises(ConfigError, match="power of two"):
        load_config(Config, overrides=["model.subsampling=conv", "model.subsample_factor=3"])
    assert load_config(Config, overrides=["data.mode=transcripts"]).head() == "ctc"


# -- streaming ---------------------------------------------------------------------------------
def _random_ctc(bidirectional: bool = False, subsampling: str = "stack") -> TrainedSpeechModel:
    torch.manual_seed(0)
    feats = SpeechFeatures(RATE, "logmel", n_mels=24)
    tokens = [BLANK, " ", "a", "b", "c"]
    model = SpeechModel(feats.size, len(tokens), head="ctc", hidden_size=24, num_layers=2,
                        bidirectional=bidirectional, subsampling=subsampling, subsample_factor=2, dropout=0.0)
    with torch.no_grad():
        model.output.weight.mul_(4.0)
        model.output.bias.copy_(torch.tensor([0.0, -0.5, 0.0, 0.0, 0.0]))
        allf = feats(_wave(3.0, seed=5))
        model.feat_mean.copy_(allf.mean(0))
        model.feat_std.copy_(allf.std(0))
    prep = Prepared(feats, "ctc", "chars", tokens, True, ["ab", "ca"], DataConfig())
    return TrainedSpeechModel(model.eval(), prep, DecodeConfig())


@pytest.mark.parametrize("beam", [1, 4])
def test_streaming_transcript_equals_whole_file_pass(beam):
    trained = _random_ctc()
    wave = _wave(1.37, seed=1)
    full = trained.recognize([wave], beam_size=beam)[0]["text"]
    assert len(full) >= 3  # a random model emits plenty of tokens: a meaningful comparison
    recs = {}
    for chunk in (1, 333, 1600, wave.numel()):
        rec = trained.streamer(beam_size=beam)
        for i in range(0, wave.numel(), chunk):
            rec.push(wave[i : i + chunk])
        assert rec.finish() == full
        recs[chunk] = torch.cat(rec.log_probs)
    first = recs[1]
    assert all(torch.equal(v, first) for v in recs.values())  # chunk-invariant, bitwise
    batched, lengths = trained.scores([wave])
    assert int(lengths[0]) == first.shape[0]
    torch.testing.assert_close(first, batched[0], atol=1e-4, rtol=0)


def test_streaming_partial_results_grow_and_lexicon_applies():
    trained = _random_ctc()
    wave = _wave(1.0, seed=2)
    rec = trained.streamer(beam_size=4, lexicon="train")
    partials = [rec.push(wave[i : i + 800]) for i in range(0, wave.numel(), 800)]
    final = rec.finish()
    assert isinstance(partials[-1], str)
    assert all(w in ("ab", "ca") for w in final.split())
    assert trained.transcribe_stream(wave, 800, beam_size=4, lexicon="train") == final


def test_bidirectional_or_conv_models_refuse_to_stream():
    for kw in ({"bidirectional": True}, {"subsampling": "conv"}):
        trained = _random_ctc(**kw)
        with pytest.raises(ValueError, match="unidirectional"):
            StreamingRecognizer(trained.model, trained.prep.features, trained.prep.labels, "chars")


# -- end to end --------------------------------------------------------------------------------
def _train(tmp_path: Path, *sets: str) -> Path:
    data = _folder(tmp_path / "rec")
    args = ["train", "speech", "--train", str(data), "--out", str(tmp_path / "runs"), "--name", "r", "--json",
            "--set", "train.epochs=4", "--set", "model.hidden_size=24", "--set", "model.num_layers=1",
            "--set", "data.n_mels=20", "--set", "train.batch_size=8", "--set", "train.accelerator=cpu"]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "r"


def test_isolated_words_end_to_end(tmp_path):
    run = _train(tmp_path, "train.learning_rate=0.01")
    for name in ("config.yaml", "model.json", "model.safetensors", "speech.json", "metrics.json", "report.md"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["utterances"] == 30  # indices 0-4 of 3 classes x 2 speakers
    assert metrics["test"]["accuracy"] >= 0.8, metrics
    assert metrics["test"]["rtf"] < 1
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "rec"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    wav = tmp_path / "rec" / "2_ann_0.wav"
    result = runner.invoke(app, ["transcribe", str(run), str(wav)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\t")[0] == str(wav)
    predicted = TrainedSpeechModel.load(run).predict([str(wav)])[0]
    assert set(predicted["probabilities"]) == {"0", "1", "2"}
    assert math.isclose(sum(predicted["probabilities"].values()), 1.0, rel_tol=1e-5)


def test_connected_digits_ctc_end_to_end_and_streaming_cli(tmp_path):
    run = _train(tmp_path, "data.mode=connected_digits", "data.connected_train=40", "data.connected_eval=6",
                 "model.bidirectional=false", "train.epochs=2", "data.max_digits=3")
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"wer", "cer", "rtf", "sentence_accuracy"} <= set(metrics["test"])
    speech = json.loads((run / "speech.json").read_text())
    assert speech["labels"] == [BLANK, "0", "1", "2"] and speech["units"] == "words"
    wav = tmp_path / "digits.wav"
    rng = np.random.default_rng(1)
    sf.write(wav, np.concatenate([_tone("1", 0.3, rng), np.zeros(800, np.float32), _tone("2", 0.3, rng)]), RATE)
    outs = []
    for extra in ([], ["--stream", "--chunk-ms", "30"], ["--stream", "--chunk-ms", "200"],
                  ["--set", "decode.max_chunk_seconds=0.1"]):
        result = runner.invoke(app, ["transcribe", str(run), str(wav), "--json", *extra])
        assert result.exit_code == 0, result.output
        outs.append(json.loads(result.stdout.splitlines()[0])["text"])
    assert outs[0] == outs[1] == outs[2] == outs[3]
    assert "decoded in 8 chunks of at most 0.1 s (decode.max_chunk_seconds; state carried" in result.output
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "rec"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["wer"] == pytest.approx(metrics["test"]["wer"])
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "rec"), "--json",
                                 "--set", "decode.max_chunk_seconds=0.5"])
    assert result.exit_code == 0, result.output
    assert "utterances are longer than decode.max_chunk_seconds=0.5 and were decoded in chunks" in result.output
    chunked = json.loads(result.stdout[result.stdout.index("{"):])
    assert chunked["wer"] == pytest.approx(metrics["test"]["wer"]) and chunked["chunked_utterances"] > 0


def test_transcript_manifest_with_character_units(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    words = {"0": "a", "1": "b", "2": "c"}
    for i in range(24):
        labels = [str(rng.integers(0, 3)) for _ in range(2)]
        wave = np.concatenate([_tone(labels[0], 0.3, rng), np.zeros(400, np.float32), _tone(labels[1], 0.3, rng)])
        sf.write(tmp_path / f"u{i}.wav", wave, RATE)
        rows.append(f"u{i}.wav,{words[labels[0]]} {words[labels[1]].upper()}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["train", "speech", "--train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "runs"),
                                 "--name", "m", "--json", "--set", "data.mode=transcripts", "--set", "data.split=none",
                                 "--set", "train.epochs=1", "--set", "model.hidden_size=16", "--set",
                                 "decode.beam_size=3", "--set", "decode.lexicon=train"])
    assert result.exit_code == 0, result.output
    speech = json.loads((tmp_path / "runs" / "m" / "speech.json").read_text())
    assert speech["labels"] == [BLANK, " ", "a", "b", "c"]  # lowercased characters
    assert speech["lexicon_words"] == ["a", "b", "c"]
    assert "test" not in json.loads(result.stdout)


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("bad"), "train.epochs=1")


def test_bad_audio_gives_one_line_errors(trained_run, tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....not a wav at all")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), RATE)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(50, np.float32), RATE)
    for path, message in ((garbage, "cannot read audio"), (empty, "no samples"), (short, "shorter than one frame"),
                          (tmp_path / "missing.wav", "not found")):
        result = runner.invoke(app, ["transcribe", str(trained_run), str(path)])
        assert result.exit_code == 2, (path, result.output)
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_other_rates_are_resampled_and_stereo_down_mixed_with_notes(trained_run, tmp_path):
    rng = np.random.default_rng(0)
    mono8 = _tone("1", 0.35, rng)
    hi = tmp_path / "hi.wav"
    sf.write(hi, _tone("1", 0.35, rng, rate=16000), 16000)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([mono8, mono8], 1), RATE)
    result = runner.invoke(app, ["transcribe", str(trained_run), str(hi), str(stereo), "--json"])
    assert result.exit_code == 0, result.output
    assert "resampled 16000 Hz -> 8000 Hz" in result.output and "down-mixed 2 channels" in result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["notes"] for r in lines] == [["resampled 16000 Hz -> 8000 Hz"], ["down-mixed 2 channels to mono"]]
    result = runner.invoke(app, ["transcribe", str(trained_run), str(hi), "--stream"])
    assert result.exit_code == 2 and "cannot stream" in result.output


@pytest.mark.data
def test_fsdd_reads_with_the_official_split(shared_data):
    from rnnkit.tasks.speech import list_items

    items = list_items(shared_data / "fsdd" / "recordings", DataConfig())
    train, test = split_test(items, DataConfig())
    assert len(items) == 3000 and len(test) == 300 and len(train) == 2700
    assert {u.speaker for u in items} >= {"jackson", "theo", "george"}


def test_transcribe_set_changes_how_audio_is_read(trained_run, tmp_path):
    mono8 = _tone("1", 0.35, np.random.default_rng(0))
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([mono8, mono8], 1), RATE)
    result = runner.invoke(app, ["transcribe", str(trained_run), str(stereo), "--set", "data.mono=error"])
    assert result.exit_code == 2
    assert "audio has 2 channels, expected mono; fix: add --set data.mono=downmix (or first)" in result.output
    result = runner.invoke(app, ["transcribe", str(trained_run), str(stereo), "--set", "data.n_mels=33"])
    assert result.exit_code == 2 and "data.n_mels: fixed at training" in result.output
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,word\nx.wav,1\n")
    result = runner.invoke(app, ["evaluate", str(trained_run), "--data", str(manifest)])
    assert result.exit_code == 2 and "fix: add --set data.path_column=<name> with one of those names" in result.output


# -- review: padding, long audio, evaluation notes, empty labels ---------------------------------
@pytest.mark.parametrize("head", ["ctc", "classifier"])
def test_conv_subsampling_scores_do_not_depend_on_batch_padding(head):
    """With two stride-2 convolutions the second one read the first one's outputs past an
    utterance's end (ReLU(bias), not zero) when it was padded in a batch."""
    torch.manual_seed(0)
    feats = SpeechFeatures(RATE, "logmel", n_mels=16)
    tokens = [BLANK, "a", "b"] if head == "ctc" else ["0", "1", "2"]
    model = SpeechModel(feats.size, len(tokens), head=head, hidden_size=12, num_layers=1, subsampling="conv",
                        subsample_factor=4, conv_channels=8, dropout=0.0)
    with torch.no_grad():
        for conv in model.conv:
            if isinstance(conv, torch.nn.Conv1d):
                conv.bias.fill_(0.5)
    trained = TrainedSpeechModel(model.eval(), Prepared(feats, head, "chars", tokens, True, [], DataConfig()))
    waves = [_wave(0.49, seed=1), _wave(1.3, seed=2), _wave(0.89, seed=3)]  # 50 and 90 frames: odd after one conv
    batched, lengths = trained.scores(waves)
    for i, wave in enumerate(waves):
        alone, alone_lengths = trained.scores([wave])
        n = int(alone_lengths[0])
        assert int(lengths[i]) == n
        if head == "ctc":
            torch.testing.assert_close(batched[i, :n], alone[0, :n], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=0)


def test_long_audio_features_do_not_build_a_huge_temporary():
    """The row-wise mel projection formed a [frames, n_fft/2+1, n_mels] tensor at once: 1.2 GB
    for 10 minutes at 8 kHz. It is now blocked; frames stay bitwise equal to streamed ones."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    feats = SpeechFeatures(RATE, "mfcc", n_mels=40)
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(30 * RATE).astype(np.float32)) * 0.1
    with Largest():
        whole = feats(wave)
    assert whole.shape == (1 + wave.numel() // feats.hop, 13)
    assert Largest.numel < 4_000_000, Largest.numel  # all at once: 3001 x 129 x 40 = 15.5 M
    stream = feats.stream()
    parts = [stream.push(wave[i : i + 4000]) for i in range(0, wave.numel(), 4000)] + [stream.flush()]
    assert torch.equal(torch.cat(parts), whole)


def test_streaming_equals_whole_file_beyond_one_projection_block():
    trained = _random_ctc()
    wave = torch.cat([_wave(1.2, seed=s) for s in range(3)])  # 361 frames: more than one block of rows
    full = trained.recognize([wave])[0]["text"]
    assert trained.transcribe_stream(wave, 37) == full


def test_evaluate_notes_unknown_references_and_resampled_files(trained_run, tmp_path):
    rng = np.random.default_rng(3)
    sf.write(tmp_path / "a.wav", _tone("1", 0.35, rng), RATE)
    sf.write(tmp_path / "b.wav", _tone("2", 0.35, rng, rate=16000), 16000)
    (tmp_path / "m.csv").write_text("path,label\na.wav,1\nb.wav,7\n")
    result = runner.invoke(app, ["evaluate", str(trained_run), "--data", str(tmp_path / "m.csv"),
                                 "--set", "data.split=none", "--json"])
    assert result.exit_code == 0, result.output
    assert "note: 1 of 2 references have labels that are not trained classes ('7'); they count as errors" \
        in result.output
    assert "note: 1 files resampled 16000 Hz -> 8000 Hz" in result.output
    trained = _random_ctc()
    items = [Utterance("x", "ab!"), Utterance("y", "ab"), Utterance("z", "c? a!")]
    assert trained.unknown_reference_notes(items) == [
        "2 of 3 references have characters the model cannot output ('!', '?'); they count as errors"]


def test_empty_labels_in_a_manifest(tmp_path):
    rng = np.random.default_rng(4)
    rows = ["path,label"]
    for i in range(12):
        label = str(i % 3)
        sf.write(tmp_path / f"u{i}.wav", _tone(label, 0.3, rng), RATE)
        rows.append(f"u{i}.wav,{label if i != 5 else ''}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    base = ["train", "speech", "--train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "runs"),
            "--set", "data.split=none", "--set", "train.epochs=1", "--set", "model.hidden_size=8",
            "--set", "model.num_layers=1", "--set", "data.n_mels=16"]
    result = runner.invoke(app, base)  # words: an empty label would become a class ''
    assert result.exit_code == 2, result.output
    assert "u5.wav has an empty label; fill in its 'label' column or remove the row" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("remove the row"), result.output  # one line
    result = runner.invoke(app, [*base, "--set", "data.mode=transcripts"])
    assert result.exit_code == 0, result.output
    assert "1 transcripts are empty" in " ".join(result.output.split())


def test_missing_audio_data_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rnnkit.tasks.speech import DataConfig, list_items

    with pytest.raises(FileNotFoundError, match="audio data not found: .*; fix: give a folder of wav files"):
        list_items(tmp_path / "nowhere", DataConfig())


# -- long files: chunked decoding, training limit ------------------------------------------------
@pytest.mark.parametrize(("frames", "window", "context", "factor"),
                         [(1, 50, 0, 1), (601, 50, 0, 2), (601, 50, 12, 2), (600, 50, 200, 2), (97, 8, 3, 4),
                          (1000, 64, 16, 4), (5, 1, 0, 2), (49, 50, 12, 2)])
def test_chunk_windows_tile_the_frames_once_on_subsampling_cuts(frames, window, context, factor):
    from rnnkit.tasks.speech import chunk_windows

    windows = chunk_windows(frames, window, context, factor)
    kept = [i for _, _, s, e in windows for i in range(s, e)]
    assert kept == list(range(frames))  # no frame dropped, none repeated, in order
    for start, stop, keep_start, keep_stop in windows:
        assert 0 <= start <= keep_start < keep_stop <= stop <= frames
        assert stop - start <= max(window, factor)  # the network never sees more than the window
        assert keep_start % factor == 0 and start % factor == 0
        assert keep_start - start <= window // 4 and stop - keep_stop <= window // 4
    with pytest.raises(ValueError, match="chunk_windows"):
        chunk_windows(0, 10)


class _Recording(torch.nn.Module):
    """Wraps an encoder and records the longest input it ran on."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.longest = inner, 0

    def forward(self, x, hx=None, *, lengths=None):
        self.longest = max(self.longest, x.shape[1])
        return self.inner(x, hx, lengths=lengths)


class _FrameLocal(torch.nn.Module):
    """An 'encoder' whose output at a step depends on that step's input only: chunked decoding
    must then give one pass's outputs at every frame, so any frame dropped, repeated or shifted
    at a cut shows."""

    def __init__(self, size_in: int, size_out: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(size_in, size_out)

    def forward(self, x, hx=None, *, lengths=None):
        return torch.tanh(self.linear(x)), None


def _long_wave() -> torch.Tensor:
    return torch.cat([_wave(1.2, seed=s) for s in range(5)])  # 6 s: 601 frames, 301 after stacking


@pytest.mark.parametrize("beam", [1, 4])
def test_chunked_decoding_with_carried_state_equals_one_pass(beam):
    trained = _random_ctc()  # unidirectional, frame stacking: streamable
    wave = _long_wave()
    one = trained.recognize([wave], beam_size=beam, max_chunk_seconds=60)[0]
    assert "chunks" not in one and len(one["text"]) >= 20
    recording = _Recording(trained.model.encoder)
    trained.model.encoder = recording  # type: ignore[assignment]
    chunked = trained.recognize([wave], beam_size=beam, max_chunk_seconds=0.5)[0]
    assert chunked == {"text": one["text"], "chunks": 13}  # 601 frames in windows of 50
    assert recording.longest == 25  # 50 frames, stacked in pairs: the network never saw more
    decode = trained.chunking(0.5)
    blocks = list(trained.chunk_log_probs(trained.prep.features(wave), decode))
    whole, lengths = trained.scores([wave])
    assert sum(b.shape[0] for b in blocks) == int(lengths[0]) == 301
    torch.testing.assert_close(torch.cat(blocks), whole[0], atol=1e-5, rtol=0)  # exact up to kernel rounding


@pytest.mark.parametrize("subsampling", ["stack", "conv", "none"])
def test_chunked_decoding_of_a_bidirectional_model_keeps_every_frame_once(subsampling):
    trained = _random_ctc(bidirectional=True, subsampling=subsampling)
    wave = _long_wave()
    decode = trained.chunking(0.5)
    feats = trained.prep.features(wave)
    # the real BiLSTM: as many output frames as one pass, in windows of at most 50 input frames
    whole, lengths = trained.scores([wave])
    recording = _Recording(trained.model.encoder)
    trained.model.encoder = recording  # type: ignore[assignment]
    blocks = list(trained.chunk_log_probs(feats, decode))
    assert sum(b.shape[0] for b in blocks) == int(lengths[0])
    assert recording.longest <= 50 // trained.model.factor
    result = trained.recognize([wave], max_chunk_seconds=0.5)[0]
    assert result["chunks"] == len(trained.chunk_windows(601, decode)) > 12 and result["text"]
    # a frame-local encoder: every chunked frame equals one pass's (nothing dropped, repeated or shifted)
    size_in = recording.inner.input_size  # type: ignore[union-attr]
    trained.model.encoder = _FrameLocal(size_in, trained.model.output.in_features)  # type: ignore[assignment]
    blocks = list(trained.chunk_log_probs(feats, decode))
    whole, lengths = trained.scores([wave])
    torch.testing.assert_close(torch.cat(blocks), whole[0], atol=1e-5, rtol=0)
    one = trained.recognize([wave], max_chunk_seconds=60)[0]["text"]
    assert trained.recognize([wave], max_chunk_seconds=0.5)[0]["text"] == one


def test_features_in_blocks_equal_whole_file_features_bitwise():
    wave = _long_wave()
    for normalize in ("global", "utterance"):
        feats = SpeechFeatures(RATE, "mfcc", n_mels=32, normalize=normalize)
        whole = feats(wave)
        for block in (333, 4000, 10**6):
            assert torch.equal(feats.in_blocks(wave, block), whole)


def test_max_chunk_seconds_is_checked_in_the_api_and_the_config():
    trained = _random_ctc()
    wave = _wave(1.0)
    for bad in (0, -2.5, float("nan")):
        with pytest.raises(ConfigError, match=r"decode.max_chunk_seconds: must be > 0") as err:
            trained.recognize([wave], max_chunk_seconds=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="decode.max_chunk_seconds: must be > 0"):
        load_config(Config, overrides=["decode.max_chunk_seconds=0"])
    with pytest.raises(ConfigError, match="decode.chunk_context_seconds: must be >= 0"):
        load_config(Config, overrides=["decode.chunk_context_seconds=-1"])
    with pytest.raises(ConfigError, match="data.max_seconds: must be > 0"):
        load_config(Config, overrides=["data.max_seconds=0"])
    cfg = load_config(Config, overrides=["data.max_seconds=null"])
    assert cfg.data.max_seconds is None and cfg.decode.max_chunk_seconds == 30.0


def test_transcribe_and_evaluate_chunk_long_files_from_the_command_line(trained_run, tmp_path):
    """The fixture run is an isolated-word classifier: it refuses to label a file in chunks."""
    wav = tmp_path / "w.wav"
    sf.write(wav, _tone("1", 0.35, np.random.default_rng(0)), RATE)
    for value, message in (("0", "decode.max_chunk_seconds: must be > 0"),
                           ("-1", "decode.max_chunk_seconds: must be > 0"),
                           ("0.1", "an isolated-word classifier labels a clip as a whole"),
                           ("abc", "decode.max_chunk_seconds")):
        result = runner.invoke(app, ["transcribe", str(trained_run), str(wav), "--set",
                                     f"decode.max_chunk_seconds={value}"])
        assert result.exit_code == 2, (value, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    result = runner.invoke(app, ["evaluate", str(trained_run), "--data", str(tmp_path), "--set", "data.split=none",
                                 "--set", "data.pattern=(?P<label>w)", "--set", "decode.max_chunk_seconds=0"])
    assert result.exit_code == 2 and "decode.max_chunk_seconds: must be > 0" in result.output, result.output
    result = runner.invoke(app, ["transcribe", str(trained_run), str(wav), "--set", "decode.max_chunk_seconds=5",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert "chunks" not in json.loads(result.stdout.splitlines()[0])


def test_transcribe_notes_chunked_files_and_evaluate_counts_them(tmp_path):
    trained = _random_ctc()
    path = tmp_path / "long.wav"
    wave = _long_wave()
    sf.write(path, wave.numpy(), RATE)
    one = trained.transcribe([path], max_chunk_seconds=60)[0]
    chunked = trained.transcribe([path], max_chunk_seconds=0.5)[0]
    assert chunked["text"] == one["text"] and chunked["chunks"] == 13 and not one["notes"]
    assert chunked["notes"] == ["decoded in 13 chunks of at most 0.5 s (decode.max_chunk_seconds; state carried "
                                "across chunks: the same transcript as one pass)"]
    predicted = trained.predict([str(path)])[0]  # the run's limit: 30 s
    assert predicted["text"] == one["text"] and "note" not in predicted and "chunks" not in predicted
    trained.use_overrides(["decode.max_chunk_seconds=0.5"])
    assert trained.predict([str(path)])[0]["note"] == chunked["notes"][0]
    items = [Utterance("long", "ab", wave=wave), Utterance("short", "ab", wave=_wave(0.4))]
    metrics = trained.score(items)
    assert metrics["chunked_utterances"] == 1
    assert metrics["notes"] == ["1 of 2 utterances are longer than decode.max_chunk_seconds=0.5 and were decoded in "
                                "chunks (state carried across chunks: the same transcript as one pass)"]
    assert metrics["wer"] == trained.score(items, max_chunk_seconds=60)["wer"]


def test_training_skips_utterances_longer_than_max_seconds_with_a_count():
    from rnnkit.tasks.speech import drop_long

    def utts(seconds):
        return [Utterance(f"u{i}.wav", "1", wave=torch.zeros(int(s * RATE))) for i, s in enumerate(seconds)]

    train, dev = utts([1, 2, 90, 600]), utts([1, 70])
    kept_train, kept_dev, line = drop_long(train, dev, RATE, 60.0)
    assert [u.key for u in kept_train] == ["u0.wav", "u1.wav"] and [u.key for u in kept_dev] == ["u0.wav"]
    assert line == ("skipped 2 training and 1 dev utterances longer than data.max_seconds=60 (the longest, u3.wav, "
                    "has 600 s); cut them into shorter utterances or raise data.max_seconds to train on them")
    assert drop_long(train, dev, RATE, None) == (train, dev, "")
    assert drop_long(train, dev, RATE, 1000.0) == (train, dev, "")
    with pytest.raises(ConfigError, match=r"every dev utterance is longer than data.max_seconds=10 .*fix: cut"):
        drop_long(utts([1]), utts([20]), RATE, 10.0)


def test_training_logs_and_records_skipped_long_utterances(tmp_path):
    run = _train(tmp_path, "train.epochs=1", "data.max_seconds=0.36")  # tones are 0.25-0.4 s
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["notes"][0].startswith("skipped ") and "longer than data.max_seconds=0.36" in metrics["notes"][0]
    assert "skipped " in (run / "report.md").read_text()


# -- WER with empty references -------------------------------------------------------------------
def test_error_rates_match_jiwer_and_are_undefined_when_every_reference_is_empty():
    from rnnkit.nn.ctc import error_counts
    from rnnkit.tasks.speech import error_rates

    jiwer = pytest.importorskip("jiwer")
    for refs, hyps in ((["3 5 1 9", "the cat sat", "one"], ["3 1 9 9 2", "the bat sat down", ""]),
                       (["", "a b"], ["x y", "a b"])):  # some references empty: insertions count against the rest
        rates = error_rates([error_counts(r, h) for r, h in zip(refs, hyps)])
        assert rates["wer"] == pytest.approx(jiwer.wer(refs, hyps))
        assert rates["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    rates = error_rates([error_counts("", "a b"), error_counts(" ", ""), error_counts("", "c")])
    assert rates == {"wer": None, "cer": None, "inserted_words": 3, "inserted_chars": 4}
    assert error_rates([error_counts("", "")]) == {"wer": None, "cer": None, "inserted_words": 0, "inserted_chars": 0}


def test_scoring_all_empty_references_reports_null_wer_with_a_note():
    trained = _random_ctc()
    items = [Utterance(f"u{i}", "", wave=_wave(0.6, seed=i)) for i in range(3)]
    metrics = trained.score(items)
    hyps = trained.last_hypotheses
    assert metrics["wer"] is None and metrics["cer"] is None
    assert metrics["inserted_words"] == sum(len(h.split()) for h in hyps) > 0
    assert metrics["notes"] == [f"every reference transcript is empty (3 utterances): WER and CER are undefined "
                                f"(reported as null); the hypotheses have {metrics['inserted_words']} words, all "
                                f"insertions (inserted_words)"]
    assert json.loads(json.dumps(metrics))["wer"] is None  # valid JSON: null, not NaN
    mixed = trained.score([*items, Utterance("x", "ab ca", wave=_wave(0.6, seed=9))])
    assert isinstance(mixed["wer"], float) and "inserted_words" not in mixed and "notes" not in mixed


def test_evaluate_and_training_with_all_empty_references(tmp_path):
    rng = np.random.default_rng(5)
    rows, empty = ["path,label"], ["path,label"]
    for i in range(10):
        sf.write(tmp_path / f"u{i}.wav", _tone(str(i % 3), 0.3, rng), RATE)
        rows.append(f"u{i}.wav,{'abc'[i % 3]}")
        empty.append(f"u{i}.wav,")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "empty.csv").write_text("\n".join(empty) + "\n")
    base = ["train", "speech", "--train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "runs"), "--name", "e",
            "--set", "data.mode=transcripts", "--set", "data.split=none", "--set", "train.epochs=1", "--set",
            "model.hidden_size=8", "--set", "model.num_layers=1", "--set", "data.n_mels=16"]
    result = runner.invoke(app, [*base, "--dev", str(tmp_path / "empty.csv")])
    assert result.exit_code == 2, result.output
    assert "every dev transcript is empty (10 utterances): WER, the dev metric, is undefined" in result.output
    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "runs" / "e"), "--data", str(tmp_path / "empty.csv"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert "note: every reference transcript is empty (10 utterances): WER and CER are undefined" in result.output
    metrics = json.loads(result.stdout[result.stdout.index("{"):])
    assert metrics["wer"] is None and metrics["cer"] is None and metrics["inserted_words"] >= 0


def test_training_a_classifier_refuses_clips_longer_than_the_chunk_limit_before_training(tmp_path):
    data = _folder(tmp_path / "rec", per_class=6)
    result = runner.invoke(app, ["train", "speech", "--train", str(data), "--out", str(tmp_path / "runs"),
                                 "--set", "decode.max_chunk_seconds=0.3", "--set", "train.epochs=1"])
    assert result.exit_code == 2, result.output
    assert "an isolated-word classifier labels a clip as a whole" in result.output
    assert "epoch" not in result.output.lower() and not list((tmp_path / "runs").glob("*/model.safetensors"))


def test_a_lexicon_the_model_cannot_write_is_refused_before_training(tmp_path):
    """Connected digits output the units 0-9: a word list of 'three' and 'seven' used to train fully
    and then fail with 'the lexicon is empty'; now it is refused first, naming the units."""
    data = _folder(tmp_path / "rec", per_class=6)
    words = tmp_path / "words.txt"
    words.write_text("three\nseven\n")
    result = runner.invoke(app, ["train", "speech", "--train", str(data), "--out", str(tmp_path / "runs"),
                                 "--set", "data.mode=connected_digits", "--set", f"decode.lexicon={words}",
                                 "--set", "train.epochs=1"])
    assert result.exit_code == 2, result.output
    assert "none of the 2 lexicon words (e.g. 'seven') can be written with the model's output" in result.output
    assert "epoch" not in result.output.lower() and not list((tmp_path / "runs").glob("*/model.safetensors"))


def test_beam_options_on_a_classifier_run_say_they_do_not_apply(tmp_path):
    run = _train(tmp_path, "train.epochs=1")
    wav = next((tmp_path / "rec").rglob("*.wav"))
    result = runner.invoke(app, ["transcribe", str(run), str(wav), "--beam", "4"])
    assert result.exit_code == 0, result.output
    assert "--beam and --lexicon apply to CTC runs only" in result.output
