"""rnnkit.data.audio against independent references built from numpy/scipy and the published
formulas: WAV decoding (hand-written RIFF files), resampling (scipy.signal.resample_poly), STFT
framing (numpy, scipy.signal.ShortTimeFFT), mel filterbanks (librosa's / HTK's construction),
log-mel, MFCC (scipy.fft.dct), per-utterance normalisation, the speech task's frame counts,
and bad inputs."""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import fft as sfft
from scipy import signal

from rnnkit.data import MFCC, DataError, LogMelSpectrogram, load_transform, read_wav, resample
from rnnkit.data.audio import dct_matrix, hz_to_mel, mel_filterbank, mel_to_hz, normalize_utterance

sf = pytest.importorskip("soundfile")

RNG = np.random.default_rng(1234)


# ----------------------------------------------------------------------------- references


def wav_bytes(samples: np.ndarray, rate: int, bits: int, *, float_format: bool = False) -> bytes:
    """A canonical 44-byte-header RIFF/WAVE file; ``samples`` ``[T, channels]`` as stored."""
    channels = samples.shape[1]
    if float_format:
        data = np.asarray(samples, "<f4").tobytes()
    elif bits == 8:
        data = np.asarray(samples, np.uint8).tobytes()
    elif bits == 16:
        data = np.asarray(samples, "<i2").tobytes()
    elif bits == 24:
        data = np.asarray(samples, "<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = np.asarray(samples, "<i4").tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 3 if float_format else 1, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def ref_power(x: np.ndarray, n_fft: int, hop: int, win: int, center: bool = True) -> np.ndarray:
    """|rfft|^2 of reflect-padded frames with a periodic Hann window centred in the frame."""
    w = signal.get_window("hann", win, fftbins=True)
    left = (n_fft - win) // 2
    w = np.pad(w, (left, n_fft - win - left))
    if center:
        x = np.pad(x, n_fft // 2, mode="reflect")
    n = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[i * hop : i * hop + n_fft] for i in range(n)])
    return np.abs(np.fft.rfft(frames * w, axis=1)) ** 2


def ref_hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    f = np.asarray(f, dtype=float)
    if htk:  # HTK book: Mel(f) = 2595 log10(1 + f / 700)
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney's Auditory Toolbox (librosa htk=False): 3 mels per 200 Hz below 1 kHz, then log steps
    return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + 27.0 * np.log(np.maximum(f, 1e-9) / 1000.0) / np.log(6.4))


def ref_mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    m = np.asarray(m, dtype=float)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0))


def ref_filterbank(
    rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, htk: bool = True,
    slaney_norm: bool = False,
) -> np.ndarray:
    """librosa.filters.mel's construction, loop by loop: ``[n_fft // 2 + 1, n_mels]``."""
    fmax = rate / 2 if fmax is None else fmax
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = ref_mel_to_hz(np.linspace(ref_hz_to_mel(fmin, htk), ref_hz_to_mel(fmax, htk), n_mels + 2), htk)
    out = np.zeros((len(bins), n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        out[:, m] = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
        if slaney_norm:
            out[:, m] *= 2.0 / (hi - lo)
    return out


def tone_gain_db(y: np.ndarray, freq: float, rate: int, edge: int = 400) -> float:
    """Amplitude (dB re 1) of the ``freq`` component of ``y`` by least squares, edges skipped."""
    t = np.arange(len(y))[edge:-edge] / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
    coef = np.linalg.lstsq(basis, y[edge:-edge], rcond=None)[0]
    return float(20 * np.log10(np.hypot(*coef)))


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("bits", [8, 16, 24, 32])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_pcm_scaling_and_downmix(tmp_path: Path, bits: int, channels: int) -> None:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)
    raw = RNG.integers(lo, hi, size=(600, channels), dtype=np.int64)
    raw[0], raw[1] = lo, hi - 1  # full scale both ways
    path = tmp_path / f"pcm{bits}.wav"
    path.write_bytes(wav_bytes(raw + 128 if bits == 8 else raw, 8000, bits))  # 8-bit WAV is unsigned
    clip = read_wav(path)
    expected = (raw / 2.0 ** (bits - 1)).mean(axis=1)  # soundfile's scaling, then the channel mean
    assert clip.sample_rate == 8000 and clip.waveform.dtype == torch.float32
    np.testing.assert_allclose(clip.waveform.numpy(), expected, rtol=0, atol=1e-7)
    assert float(clip.waveform.min()) == -1.0 and float(clip.waveform.max()) < 1.0 + 1e-7
    by_sf, rate = sf.read(str(path), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(clip.waveform.numpy(), by_sf.mean(axis=1))
    assert (("down-mixed 2 channels to mono",) if channels == 2 else ()) == clip.notes
    if channels == 2:
        np.testing.assert_array_equal(read_wav(path, mono="first").waveform.numpy(), by_sf[:, 0])


def test_read_float_wav_is_not_rescaled(tmp_path: Path) -> None:
    raw = RNG.uniform(-1, 1, size=(500, 2)).astype(np.float32)
    raw[3, 0] = 1.5  # float files are returned as stored, as soundfile does
    path = tmp_path / "float.wav"
    path.write_bytes(wav_bytes(raw, 16000, 32, float_format=True))
    np.testing.assert_array_equal(read_wav(path).waveform.numpy(), raw.mean(axis=1))


def _error(path: Path) -> str:
    with pytest.raises(DataError) as err:
        read_wav(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "fix:" in message
    return message


def test_read_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    good = wav_bytes(RNG.integers(-1000, 1000, size=(1000, 1)), 8000, 16)
    cases = {
        "zero.wav": (b"", "audio file is empty (0 bytes)"),
        "text.wav": (b"this is not audio\n" * 20, "cannot read audio"),
        "riff.wav": (good[:10], "RIFF header is cut short"),
        "fmt.wav": (good[:30], "'fmt ' chunk is cut short"),
        "nodata.wav": (good[:36], "no 'data' chunk"),
        "avi.wav": (b"RIFF\x04\x00\x00\x00AVI ", "cannot read audio"),
        "rate0.wav": (wav_bytes(RNG.integers(-9, 9, size=(100, 1)), 0, 16), "sample rate of 0 Hz"),
        "header.wav": (good[:44], "audio file contains no samples"),
        "nan.wav": (
            wav_bytes(np.array([[0.0], [np.nan], [np.inf]] * 50, np.float32), 8000, 32, float_format=True),
            "audio has 100 NaN/inf samples (first at sample 1)",
        ),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert expected in _error(tmp_path / name), name


def test_read_truncated_data_is_noted(tmp_path: Path) -> None:
    raw = RNG.integers(-1000, 1000, size=(1000, 1))
    path = tmp_path / "cut.wav"
    path.write_bytes(wav_bytes(raw, 8000, 16)[: 44 + 501])  # 250 whole samples and a byte
    clip = read_wav(path)
    np.testing.assert_array_equal(clip.waveform.numpy(), raw[:250, 0] / 32768.0)
    assert clip.notes == ("truncated file: the header declares 1000 samples, read the 250 present",)
    # a complete file gets no such note
    path.write_bytes(wav_bytes(raw, 8000, 16))
    assert read_wav(path).notes == ()


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (16000, 8000), (48000, 16000), (22050, 16000)])
def test_resample_against_resample_poly(orig: int, new: int) -> None:
    g = math.gcd(orig, new)
    nyquist = min(orig, new) / 2
    n = orig // 2 + 7  # half a second and an odd remainder
    for frac, tol_db in [(0.1, 0.02), (0.3, 0.02), (0.6, 0.05)]:
        freq = frac * nyquist
        x = np.sin(2 * np.pi * freq * np.arange(n) / orig)
        y = resample(torch.from_numpy(x), orig, new).numpy()
        ref = signal.resample_poly(x, new // g, orig // g)
        assert len(y) == len(ref) == math.ceil(n * new / orig)
        assert abs(tone_gain_db(y, freq, new)) < tol_db
        assert abs(tone_gain_db(ref, freq, new)) < tol_db
    # 80% of the lower Nyquist: the Hann-sinc's transition band starts (resample_poly: +0.02 dB)
    x = np.sin(2 * np.pi * 0.8 * nyquist * np.arange(n) / orig)
    assert -0.7 < tone_gain_db(resample(torch.from_numpy(x), orig, new).numpy(), 0.8 * nyquist, new) < 0.1
    # band-limited noise (below 60% of the lower Nyquist): the same signal as resample_poly's
    freqs = RNG.uniform(20, 0.6 * nyquist, size=40)
    phases = RNG.uniform(0, 2 * np.pi, size=40)
    t = np.arange(n) / orig
    x = np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(0) / 40
    y = resample(torch.from_numpy(x), orig, new).numpy()[400:-400]
    ref = signal.resample_poly(x, new // g, orig // g)[400:-400]
    assert np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref**2)) < 2e-3


@pytest.mark.parametrize("orig,new", [(44100, 16000), (16000, 8000)])
def test_resample_aliasing_rejection(orig: int, new: int) -> None:
    n = orig // 2
    for above, limit_db in [(1.2, -25.0), (1.5, -50.0)]:
        freq = above * new / 2  # above the new Nyquist: would fold back to new - freq
        x = np.sin(2 * np.pi * freq * np.arange(n) / orig)
        y = resample(torch.from_numpy(x), orig, new).numpy()[400:-400]
        level = 10 * np.log10(np.mean(y**2) / 0.5)
        assert level < limit_db, (above, level)


def test_resample_edge_cases() -> None:
    assert resample(torch.zeros(0), 16000, 8000).shape == (0,)
    assert resample(torch.zeros(2, 0), 44100, 16000).shape == (2, 0)
    assert resample(torch.ones(3), 8000, 16000).shape == (6,)
    with pytest.raises(DataError, match="whole numbers of Hz"):
        resample(torch.zeros(10), 16000.5, 8000)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="positive"):
        resample(torch.zeros(10), 0, 8000)
    with pytest.raises(DataError, match="scalar"):
        resample(torch.tensor(1.0), 16000, 8000)
    # a long clip: 3 minutes at 44.1 kHz, the exact length and no error
    long = torch.randn(44100 * 180)
    assert resample(long, 44100, 16000).shape == (16000 * 180,)


# ----------------------------------------------------------------------------- STFT framing


@pytest.mark.parametrize(
    "n_fft,hop,win,length,center",
    [
        (400, 160, 400, 16000, True),
        (512, 80, 200, 8001, True),
        (256, 64, 256, 1000, False),
        (401, 100, 401, 4000, True),  # odd n_fft: one frame fewer than 1 + T // hop
        (255, 50, 200, 3000, True),
        (401, 100, 401, 4000, False),
        (256, 256, 256, 256, True),  # exactly one window
    ],
)
def test_power_spectrogram_against_numpy_frames(n_fft: int, hop: int, win: int, length: int, center: bool) -> None:
    x = RNG.normal(size=length).astype(np.float32)
    feat = LogMelSpectrogram(sample_rate=16000, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=20, center=center)
    got = feat.power_spectrogram(torch.from_numpy(x)).numpy()
    ref = ref_power(x.astype(np.float64), n_fft, hop, win, center)
    assert got.shape == ref.shape and feat.num_frames(length) == ref.shape[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * ref.max())


def test_power_spectrogram_against_scipy_short_time_fft() -> None:
    n_fft, hop = 512, 128
    x = RNG.normal(size=8000)
    stft = signal.ShortTimeFFT(signal.get_window("hann", n_fft), hop, fs=1, mfft=n_fft, scale_to=None)
    padded = np.pad(x, n_fft // 2, mode="reflect")
    ref = np.abs(stft.stft(padded, p0=0, p1=(len(padded) - n_fft) // hop + 1, k_offset=n_fft // 2).T) ** 2
    got = LogMelSpectrogram(sample_rate=16000, n_fft=n_fft, hop_length=hop).power_spectrogram(
        torch.from_numpy(x.astype(np.float32))
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=2e-6 * ref.max())


# ----------------------------------------------------------------------------- mel filterbank


def test_mel_scales_match_published_formulas() -> None:
    f = np.array([0.0, 100.0, 700.0, 999.9, 1000.0, 1000.1, 3000.0, 8000.0, 22050.0])
    for htk, scale in [(True, "htk"), (False, "slaney")]:
        np.testing.assert_allclose(hz_to_mel(f, scale), ref_hz_to_mel(f, htk), rtol=1e-12, atol=1e-9)
        m = ref_hz_to_mel(f, htk)
        np.testing.assert_allclose(mel_to_hz(m, scale), ref_mel_to_hz(m, htk), rtol=1e-12, atol=1e-9)
    assert float(hz_to_mel(700.0, "htk")) == pytest.approx(2595 * math.log10(2))
    assert float(hz_to_mel(6400.0, "slaney")) == pytest.approx(15 + 27)  # 27 log steps of 6.4 ** (1/27)


@pytest.mark.parametrize(
    "rate,n_fft,n_mels,fmin,fmax",
    [(16000, 512, 40, 0.0, None), (8000, 256, 23, 20.0, 3800.0), (22050, 2048, 128, 0.0, None),
     (16000, 401, 40, 0.0, None), (11025, 255, 30, 60.0, None)],
)
@pytest.mark.parametrize("scale,norm", [("htk", None), ("slaney", "slaney"), ("slaney", None), ("htk", "slaney")])
def test_mel_filterbank_matches_reference(
    rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, scale: str, norm: str | None
) -> None:
    ref = ref_filterbank(rate, n_fft, n_mels, fmin, fmax, scale == "htk", norm == "slaney")
    fb = mel_filterbank(n_fft // 2 + 1, rate, n_mels, fmin, fmax, scale, norm, n_fft=n_fft).numpy()
    np.testing.assert_allclose(fb, ref, rtol=0, atol=1e-6 * ref.max())
    # the extractor uses the same filters (f_max defaults to the Nyquist frequency)
    feat = LogMelSpectrogram(sample_rate=rate, n_fft=n_fft, n_mels=n_mels, f_min=fmin, f_max=fmax,
                             mel_scale=scale, mel_norm=norm)
    np.testing.assert_allclose(feat._fb.numpy(), ref, rtol=0, atol=1e-6 * ref.max())


def test_odd_n_fft_filters_and_legacy_configs(tmp_path: Path) -> None:
    """An odd n_fft's bins are k * rate / n_fft; the old placement (evenly up to the Nyquist
    frequency) is kept for configurations saved before ``fft_bins`` existed."""
    ref = ref_filterbank(16000, 401, 40)
    old = mel_filterbank(201, 16000, 40).numpy()  # no n_fft: the old, even-n_fft placement
    assert np.abs(old - ref).max() > 0.01
    feat = LogMelSpectrogram(sample_rate=16000, n_fft=401, n_mels=40)
    assert feat.to_config()["fft_bins"] == "exact"
    cfg = feat.to_config()
    del cfg["fft_bins"]
    legacy = LogMelSpectrogram.from_config(cfg)
    np.testing.assert_array_equal(legacy._fb.numpy(), old)
    mfcc_cfg = MFCC(n_mfcc=13, sample_rate=16000, n_fft=401).to_config()
    del mfcc_cfg["fft_bins"]
    assert MFCC.from_config(mfcc_cfg).melspec.fft_bins == "legacy"
    loaded = load_transform(feat.save(tmp_path / "mel.json"))
    assert isinstance(loaded, LogMelSpectrogram) and loaded.fft_bins == "exact"
    # even n_fft: both placements are the same filters, bit for bit (old runs are unchanged)
    even = LogMelSpectrogram(sample_rate=8000, n_fft=256, n_mels=40)
    even_cfg = even.to_config()
    del even_cfg["fft_bins"]
    np.testing.assert_array_equal(LogMelSpectrogram.from_config(even_cfg)._fb.numpy(), even._fb.numpy())
    with pytest.raises(DataError, match="does not match n_fft"):
        mel_filterbank(200, 16000, 40, n_fft=401)


def test_empty_filters_at_small_n_fft_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    ref = ref_filterbank(8000, 64, 40)
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        feat = LogMelSpectrogram(sample_rate=8000, n_fft=64, n_mels=40)
    empty = int((ref.max(axis=0) == 0).sum())
    assert empty > 0 and f"{empty} of 40 mel filters cover no FFT bin" in caplog.text
    out = feat(torch.from_numpy(RNG.normal(size=800).astype(np.float32)))
    dead = ref.max(axis=0) == 0
    np.testing.assert_allclose(out.numpy()[:, dead], math.log(1e-6), rtol=1e-6)


# ----------------------------------------------------------------------------- log-mel, MFCC


def _reference_logmel(x: np.ndarray, rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    return np.log(ref_power(x.astype(np.float64), n_fft, hop, n_fft) @ ref_filterbank(rate, n_fft, n_mels) + 1e-6)


def test_log_mel_and_mfcc_against_reference() -> None:
    rate, n_fft, hop, n_mels = 8000, 256, 80, 32
    t = np.arange(4000) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * RNG.normal(size=t.size)).astype(np.float32)
    ref = _reference_logmel(x, rate, n_fft, hop, n_mels)  # natural log, floor 1e-6
    feat = LogMelSpectrogram(sample_rate=rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    got = feat(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (feat.num_frames(4000), n_mels)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-4)
    mfcc = MFCC(n_mfcc=13, sample_rate=rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)(torch.from_numpy(x))
    ref_mfcc = sfft.dct(ref, type=2, norm="ortho", axis=1)[:, :13]  # orthonormal DCT-II, no liftering
    np.testing.assert_allclose(mfcc.numpy(), ref_mfcc, rtol=0, atol=2e-3)
    m = RNG.normal(size=(5, 40))
    np.testing.assert_allclose(m @ dct_matrix(40, 40).numpy(), sfft.dct(m, type=2, norm="ortho", axis=1), atol=1e-5)
    np.testing.assert_allclose(m @ dct_matrix(7, 40, norm=None).numpy(), sfft.dct(m, type=2, axis=1)[:, :7], atol=1e-4)


def test_silence_is_the_log_floor_and_normalizes_to_zero() -> None:
    silence = torch.zeros(4000)
    out = LogMelSpectrogram(sample_rate=8000, n_fft=256)(silence)
    assert torch.all(out == math.log(1e-6))
    assert torch.all(LogMelSpectrogram(sample_rate=8000, n_fft=256, normalize="utterance")(silence) == 0)
    assert torch.all(MFCC(sample_rate=8000, n_fft=256, normalize="utterance")(silence) == 0)
    const = torch.full((100, 3), math.log(1e-6))  # float32 mean of a constant is inexact: was up to 0.1
    assert torch.all(normalize_utterance(const) == 0)


def test_normalize_utterance_against_numpy_and_padding() -> None:
    a = RNG.normal(3, 2, size=(50, 4))
    b = RNG.normal(-1, 5, size=(20, 4))
    for x in (a, b):
        ref = (x - x.mean(0)) / (x.std(0) + 1e-5)
        np.testing.assert_allclose(normalize_utterance(torch.from_numpy(x)).numpy(), ref, rtol=1e-10)
        got32 = normalize_utterance(torch.from_numpy(x.astype(np.float32)))
        assert got32.dtype == torch.float32
        np.testing.assert_allclose(got32.numpy(), ref, atol=1e-5)
    batch = torch.zeros(2, 50, 4, dtype=torch.float64)
    batch[0], batch[1, :20] = torch.from_numpy(a), torch.from_numpy(b)
    out = normalize_utterance(batch, lengths=[50, 20])
    np.testing.assert_allclose(out[1, :20].numpy(), ((b - b.mean(0)) / (b.std(0) + 1e-5)), rtol=1e-10)
    np.testing.assert_allclose(out[0].numpy(), ((a - a.mean(0)) / (a.std(0) + 1e-5)), rtol=1e-10)
    assert torch.all(out[1, 20:] == 0)  # padding: not in the statistics, left at zero
    with pytest.raises(DataError, match="lengths must give"):
        normalize_utterance(batch, lengths=[50, 0])
    with pytest.raises(DataError, match="batched features"):
        normalize_utterance(batch[0], lengths=[50])


def test_bad_feature_options_and_inputs() -> None:
    cases = [
        (lambda: LogMelSpectrogram(sample_rate=0), "sample_rate must be positive, got 0"),
        (lambda: LogMelSpectrogram(n_mels=0), "n_mels must be >= 1"),
        (lambda: LogMelSpectrogram(log_offset=0.0), "log_offset must be > 0"),
        (lambda: LogMelSpectrogram(power=0.0), "power must be > 0"),
        (lambda: LogMelSpectrogram(fft_bins="odd"), "fft_bins must be"),
        (lambda: MFCC(n_mfcc=0), "n_mfcc must be >= 1"),
        (lambda: mel_filterbank(201, 0, 40), "sample_rate must be positive"),
        (lambda: LogMelSpectrogram()(torch.tensor(0.5)), r"waveform must be \[T\] or \[B, T\]"),
        (lambda: LogMelSpectrogram()(torch.zeros(1, 2, 400)), r"waveform must be \[T\] or \[B, T\]"),
        (lambda: LogMelSpectrogram()(torch.zeros(399)), "clip has 399 samples, shorter than one frame"),
        (lambda: LogMelSpectrogram()(torch.tensor([0.0, float("nan")] * 300)), "1 NaN|300 NaN/inf"),
    ]
    for make, pattern in cases:
        with pytest.raises(DataError, match=pattern) as err:
            make()
        assert "\n" not in str(err.value) and "fix:" in str(err.value)


# ----------------------------------------------------------------------------- speech task


def test_speech_feature_lengths_are_the_real_frames() -> None:
    from rnnkit.tasks.speech import SpeechFeatures, collate

    for rate, kind in [(8000, "logmel"), (16000, "mfcc")]:
        feats = SpeechFeatures(rate, kind, n_mels=40, n_mfcc=13)
        waves = [torch.from_numpy(RNG.normal(size=n).astype(np.float32)) for n in (feats.n_fft, 1234, 4000, 4001)]
        items = []
        for w in waves:
            f = feats(w)
            ref = ref_power(w.numpy().astype(np.float64), feats.n_fft, feats.hop, round(rate * 0.025))
            assert f.shape[0] == ref.shape[0] == feats.num_frames(w.shape[0]) == feats.melspec.num_frames(w.shape[0])
            items.append((f, [1, 2]))
        batch, lengths, _, _ = collate(items)
        assert lengths.tolist() == [f.shape[0] for f, _ in items]  # what the CTC loss receives
        for b, (f, _) in enumerate(items):
            assert torch.equal(batch[b, : f.shape[0]], f) and torch.all(batch[b, f.shape[0] :] == 0)
        logmel = SpeechFeatures(rate, "logmel", n_mels=40)(waves[2]).double().numpy()
        win = round(rate * 0.025)
        n_fft = 1 << (win - 1).bit_length()
        ref_logmel = np.log(
            ref_power(waves[2].numpy().astype(np.float64), n_fft, round(rate * 0.01), win)
            @ ref_filterbank(rate, n_fft, 40) + 1e-6
        )
        np.testing.assert_allclose(logmel, ref_logmel, rtol=0, atol=5e-4)
