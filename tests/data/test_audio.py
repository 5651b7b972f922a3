"""Tests for rnnkit.data.audio (reading, resampling, mel and MFCC features)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.data import (
    MFCC,
    DataError,
    LogMelSpectrogram,
    dct_matrix,
    hz_to_mel,
    list_audio_folder,
    load_transform,
    mel_filterbank,
    mel_to_hz,
    normalize_utterance,
    read_audio_manifest,
    read_wav,
    resample,
)

sf = pytest.importorskip("soundfile")


def _tone(freq: float, rate: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, data: np.ndarray, rate: int = 8000) -> Path:
    sf.write(str(path), data, rate)
    return path


# ------------------------------------------------------------------------------- reading


def test_read_mono_and_stereo(tmp_path: Path) -> None:
    mono = _write(tmp_path / "m.wav", _tone(440, 8000))
    clip = read_wav(mono)
    assert (
        clip.sample_rate == 8000 and clip.waveform.shape == (4000,) and clip.waveform.dtype == torch.float32
    )
    assert clip.notes == () and clip.duration == pytest.approx(0.5)
    left, right = _tone(440, 8000), _tone(440, 8000, amp=0.1)
    stereo = _write(tmp_path / "s.wav", np.stack([left, right], axis=1))
    down = read_wav(stereo)
    np.testing.assert_allclose(down.waveform.numpy(), (left + right) / 2, atol=1e-4)
    assert "down-mixed 2 channels" in down.notes[0]
    first = read_wav(stereo, mono="first")
    np.testing.assert_allclose(first.waveform.numpy(), left, atol=1e-4)
    with pytest.raises(DataError, match=r"s\.wav: audio has 2 channels, expected mono"):
        read_wav(stereo, mono="error")
    with pytest.raises(DataError, match="mono must be one of"):
        read_wav(stereo, mono="left")


def test_read_with_resampling(tmp_path: Path) -> None:
    clip = read_wav(_write(tmp_path / "m.wav", _tone(440, 8000)), target_rate=16000)
    assert clip.sample_rate == 16000 and clip.waveform.shape == (8000,)
    assert "resampled 8000 Hz -> 16000 Hz" in clip.notes


def test_unreadable_and_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really a wav")
    with pytest.raises(DataError) as err:
        read_wav(bad)
    assert str(bad) in str(err.value) and "cannot read audio" in str(err.value) and "\n" not in str(err.value)
    empty = _write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(DataError, match=r"empty\.wav: audio file contains no samples"):
        read_wav(empty)
    with pytest.raises(DataError, match="not found"):
        read_wav(tmp_path / "missing.wav")


def test_list_folder_with_fsdd_names(tmp_path: Path) -> None:
    for name in ("3_jackson_12.wav", "0_george_0.wav", "7_lucas_3.wav"):
        _write(tmp_path / name, _tone(300, 8000, 0.1))
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    items = list_audio_folder(tmp_path)
    assert [i.label for i in items] == ["0", "3", "7"]
    assert items[1].metadata == {"label": "3", "speaker": "jackson", "index": "12"}
    assert items[0].load().label == "0"
    _write(tmp_path / "odd.wav", _tone(300, 8000, 0.1))
    with pytest.raises(DataError, match=r"odd\.wav: file name does not match the pattern"):
        list_audio_folder(tmp_path)
    assert len(list_audio_folder(tmp_path, on_mismatch="skip")) == 3
    speakers = list_audio_folder(tmp_path, r"\d_([a-z]+)_\d+\.wav", on_mismatch="skip")
    assert [i.label for i in speakers] == ["george", "jackson", "lucas"]


def test_list_folder_per_class(tmp_path: Path) -> None:
    for label in ("yes", "no"):
        (tmp_path / label).mkdir()
        _write(tmp_path / label / "a.wav", _tone(300, 8000, 0.1))
    items = list_audio_folder(tmp_path, pattern=None)
    assert sorted(i.label or "" for i in items) == ["no", "yes"]
    with pytest.raises(DataError, match="no audio files"):
        list_audio_folder(tmp_path / "yes", pattern=None, extensions=(".flac",))


def test_manifest(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    _write(tmp_path / "clips" / "a.wav", _tone(300, 8000, 0.1))
    _write(tmp_path / "clips" / "b.wav", _tone(300, 8000, 0.1))
    m = tmp_path / "manifest.csv"
    m.write_text("path,transcript,speaker\nclips/a.wav,hello world,x\nclips/b.wav,bye,y\n", encoding="utf-8")
    items = read_audio_manifest(m, label_column="transcript")
    assert [i.label for i in items] == ["hello world", "bye"] and items[1].metadata == {"speaker": "y"}
    assert Path(items[0].path) == tmp_path / "clips" / "a.wav"
    with pytest.raises(
        DataError, match=r"no column 'label'; columns are \['path', 'transcript', 'speaker'\]"
    ):
        read_audio_manifest(m)
    m.write_text("path,label\nclips/zzz.wav,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"manifest\.csv:2: listed audio file .* not found"):
        read_audio_manifest(m)


# ---------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("orig,new", [(8000, 16000), (16000, 8000), (44100, 16000), (8000, 11025)])
def test_resample_tone_matches_analytic(orig: int, new: int) -> None:
    freq = 440.0
    x = torch.from_numpy(_tone(freq, orig, 0.25))
    y = resample(x, orig, new)
    assert y.shape[-1] == math.ceil(x.shape[-1] * new / orig)
    t = np.arange(y.shape[-1]) / new
    ref = 0.5 * np.sin(2 * np.pi * freq * t)
    inner = slice(50, y.shape[-1] - 50)  # ignore filter edge effects
    assert np.max(np.abs(y.numpy()[inner] - ref[inner])) < 2e-3


def test_resample_removes_aliases_and_batches() -> None:
    def rms_ratio(y: torch.Tensor) -> float:
        return float(y[100:-100].pow(2).mean().sqrt()) / (0.5 / math.sqrt(2))

    x = torch.from_numpy(_tone(3000, 16000, 0.25))  # below the 4 kHz Nyquist of 8 kHz: kept
    assert rms_ratio(resample(x, 16000, 8000)) > 0.95
    high = torch.from_numpy(_tone(6000, 16000, 0.25))  # above it: would alias to 2 kHz, must be removed
    gone = resample(high, 16000, 8000)
    assert rms_ratio(gone) < 0.01
    batch = torch.stack([x, high])
    torch.testing.assert_close(resample(batch, 16000, 8000)[1], gone)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(DataError, match="positive"):
        resample(x, 0, 8000)


# ------------------------------------------------------------------------------ features


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_scale_round_trip(scale: str) -> None:
    f = np.array([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, atol=1e-6)
    assert hz_to_mel(1000.0, "htk") == pytest.approx(1000.0, abs=0.1)  # HTK's 1 kHz ~ 1000 mel
    assert hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)
    with pytest.raises(DataError, match="unknown mel_scale"):
        hz_to_mel(1.0, "bark")


@pytest.mark.parametrize("scale,norm", [("htk", None), ("slaney", "slaney")])
def test_mel_filterbank_against_loops(scale: str, norm: str | None) -> None:
    n_freqs, rate, n_mels, f_min, f_max = 65, 8000, 10, 50.0, 3800.0
    fb = mel_filterbank(n_freqs, rate, n_mels, f_min, f_max, scale, norm).numpy()
    assert fb.shape == (n_freqs, n_mels)
    lo_mel, hi_mel = float(hz_to_mel(f_min, scale)), float(hz_to_mel(f_max, scale))
    points = [
        float(mel_to_hz(lo_mel + (hi_mel - lo_mel) * i / (n_mels + 1), scale)) for i in range(n_mels + 2)
    ]
    for k in range(n_freqs):
        f = k * (rate / 2) / (n_freqs - 1)
        for m in range(n_mels):
            left, center, right = points[m], points[m + 1], points[m + 2]
            if left <= f <= center:
                w = (f - left) / (center - left)
            elif center < f <= right:
                w = (right - f) / (right - center)
            else:
                w = 0.0
            if norm == "slaney":
                w *= 2.0 / (right - left)
            assert fb[k, m] == pytest.approx(w, abs=1e-6)
    with pytest.raises(DataError, match="f_min"):
        mel_filterbank(65, 8000, 10, 100.0, 5000.0)


def test_dct_matrix_against_loops() -> None:
    n_in, n_out = 12, 5
    d = dct_matrix(n_out, n_in).numpy()
    x = np.random.default_rng(0).normal(size=n_in)
    for k in range(n_out):
        s = sum(x[n] * math.cos(math.pi / n_in * (n + 0.5) * k) for n in range(n_in))
        s *= math.sqrt(1 / n_in) if k == 0 else math.sqrt(2 / n_in)
        assert (x @ d)[k] == pytest.approx(s, abs=1e-5)
    full = dct_matrix(n_in, n_in).numpy()
    np.testing.assert_allclose(full.T @ full, np.eye(n_in), atol=1e-5)  # orthonormal
    unnorm = dct_matrix(3, 4, norm=None).numpy()
    assert unnorm[0, 0] == pytest.approx(2.0)
    with pytest.raises(DataError, match="cannot keep"):
        dct_matrix(5, 4)


def test_log_mel_peak_at_tone_frequency() -> None:
    rate, freq = 8000, 1000.0
    feat = LogMelSpectrogram(sample_rate=rate, n_fft=256, hop_length=80, n_mels=40)
    wave = torch.from_numpy(_tone(freq, rate, 0.5))
    out = feat(wave)
    assert out.shape == (feat.num_frames(4000), 40) == (51, 40)
    mean = out.mean(dim=0).numpy()
    m_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), 42)
    centers = mel_to_hz(m_pts[1:-1])
    assert int(np.argmax(mean)) == int(np.argmin(np.abs(centers - freq)))
    # power spectrum: the tone's energy is in bin freq / (rate / n_fft) = 32
    spec = feat.power_spectrogram(wave).mean(dim=0)
    assert int(torch.argmax(spec)) == 32
    # batched input gives the same per-utterance result
    torch.testing.assert_close(feat(torch.stack([wave, wave]))[1], out)


def test_mfcc_is_dct_of_log_mel(tmp_path: Path) -> None:
    wave = torch.from_numpy(
        _tone(700, 8000, 0.3) + 0.01 * np.random.default_rng(0).normal(size=2400).astype(np.float32)
    )
    mfcc = MFCC(n_mfcc=13, sample_rate=8000, n_fft=200, n_mels=30)
    logmel = LogMelSpectrogram(sample_rate=8000, n_fft=200, n_mels=30)(wave).numpy()
    out = mfcc(wave).numpy()
    assert out.shape == (logmel.shape[0], 13)
    t = 3
    for k in range(13):
        s = sum(logmel[t, n] * math.cos(math.pi / 30 * (n + 0.5) * k) for n in range(30))
        s *= math.sqrt(1 / 30) if k == 0 else math.sqrt(2 / 30)
        assert out[t, k] == pytest.approx(s, rel=1e-4, abs=1e-3)
    normed = MFCC(n_mfcc=13, normalize="utterance", sample_rate=8000, n_fft=200, n_mels=30)(wave)
    torch.testing.assert_close(normed.mean(dim=0), torch.zeros(13), atol=1e-4, rtol=0)
    loaded = load_transform(mfcc.save(tmp_path / "mfcc.json"))
    assert isinstance(loaded, MFCC) and loaded == mfcc
    torch.testing.assert_close(loaded(wave), mfcc(wave))


def test_short_clip_and_normalization() -> None:
    feat = LogMelSpectrogram(sample_rate=8000, n_fft=256)
    with pytest.raises(
        DataError, match="clip has 100 samples, shorter than one frame \\(n_fft=256, 32.0 ms\\)"
    ):
        feat(torch.zeros(100))
    x = torch.randn(30, 4) * 3 + 5
    y = normalize_utterance(x)
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    with pytest.raises(DataError, match="normalize must be"):
        LogMelSpectrogram(normalize="global")
    with pytest.raises(DataError, match="win_length"):
        LogMelSpectrogram(n_fft=256, win_length=512)


def test_log_mel_save_load(tmp_path: Path) -> None:
    feat = LogMelSpectrogram(
        sample_rate=16000, n_fft=512, n_mels=64, mel_scale="slaney", mel_norm="slaney", normalize="utterance"
    )
    loaded = LogMelSpectrogram.load(feat.save(tmp_path / "mel.json"))
    assert loaded == feat
    wave = torch.from_numpy(_tone(500, 16000, 0.2))
    torch.testing.assert_close(loaded(wave), feat(wave))


def test_read_wav_names_a_file_with_nan_samples(tmp_path):
    sf = pytest.importorskip("soundfile")
    from rnnkit.data.audio import read_wav

    bad = tmp_path / "nan.wav"
    data = np.zeros(800, np.float32)
    data[100] = np.nan
    sf.write(bad, data, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match="audio has 1 NaN/inf samples \\(first at sample 100\\)") as err:
        read_wav(bad)
    assert "nan.wav" in str(err.value) and "\n" not in str(err.value)
