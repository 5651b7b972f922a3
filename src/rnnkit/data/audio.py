"""Audio: reading wav files (folder or manifest), labels from file names, mono handling,
resampling, and log-mel / MFCC features computed with ``torch.stft``.

* :func:`list_audio_folder` lists a folder of audio files, taking labels (and any other
  named fields) from the file names with a regex, e.g. FSDD's
  ``<digit>_<speaker>_<index>.wav``; :func:`read_audio_manifest` reads a CSV of
  ``path,label`` (or transcript) rows.
* :func:`read_wav` loads one file with ``soundfile`` as float32 ``[T]``: stereo is
  down-mixed (with a note) or rejected (``mono='error'``); an unreadable or empty file
  raises an error naming it.
* :func:`resample` is a windowed-sinc (Hann) polyphase resampler.
* :class:`LogMelSpectrogram` and :class:`MFCC` are saveable feature extractors producing
  ``[frames, features]`` (time-major for RNNs), with optional per-utterance normalization.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError, fixes, name_of, setting
from .io import PathLike_, check_file, read_text
from .serialization import JsonSerializable

__all__ = [
    "AudioClip",
    "AudioItem",
    "FSDD_PATTERN",
    "MONO_POLICIES",
    "read_wav",
    "list_audio_folder",
    "read_audio_manifest",
    "resample",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "dct_matrix",
    "normalize_utterance",
    "LogMelSpectrogram",
    "MFCC",
]

logger = logging.getLogger("rnnkit.data")

FSDD_PATTERN = r"(?P<label>\d+)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav"
MONO_POLICIES = ("downmix", "first", "error")
_AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
#: Largest feature sizes a :class:`LogMelSpectrogram` / :class:`MFCC` accepts. Real front ends use
#: frames of 10-100 ms (an FFT of 256-4096 samples) and 20-256 mel bands; the limits are far above
#: that (32768 samples: 0.68 s at 48 kHz, 2 s at 16 kHz) yet keep the filterbank that is built at
#: construction (``n_fft // 2 + 1`` by ``n_mels`` in float64, a few temporaries) under about 0.5 GB,
#: so a configuration read from a file cannot ask for gigabytes (``n_mels: 10000000``).
MAX_N_FFT = 1 << 15
MAX_N_MELS = 1024


@dataclass
class AudioClip:
    """A loaded waveform.

    Attributes:
        waveform: float32 ``[T]`` samples in ``[-1, 1]``.
        sample_rate: Samples per second.
        path: Source file.
        label: Label, if known.
        notes: What was done on loading (down-mixing, resampling).
    """

    waveform: Tensor
    sample_rate: int
    path: str
    label: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return float(self.waveform.shape[-1]) / self.sample_rate


@dataclass(frozen=True)
class AudioItem:
    """A not-yet-loaded audio file with its label and metadata.

    Attributes:
        path: The file.
        label: Label (from the file name, folder or manifest), or ``None``.
        metadata: Other fields (regex groups, manifest columns).
    """

    path: str
    label: str | None
    metadata: dict[str, str] = field(default_factory=dict, hash=False)

    def load(self, target_rate: int | None = None, mono: str = "downmix") -> AudioClip:
        """Read the file (see :func:`read_wav`).

        Args:
            target_rate: Resample to this rate.
            mono: Multi-channel policy.

        Returns:
            The clip, labelled.
        """
        clip = read_wav(self.path, target_rate=target_rate, mono=mono)
        clip.label = self.label
        return clip


def read_wav(path: PathLike_, target_rate: int | None = None, mono: str = "downmix") -> AudioClip:
    """Read an audio file as mono float32.

    Args:
        path: A file soundfile can read (wav, flac, ogg...).
        target_rate: Resample to this rate (``None`` keeps the file's rate).
        mono: For multi-channel files: ``'downmix'`` (average the channels, noted in
            ``notes``), ``'first'`` (keep channel 0) or ``'error'``.

    Returns:
        An :class:`AudioClip`. Integer PCM is scaled as soundfile does (``x / 2**(bits-1)``,
        8-bit unsigned ``(x - 128) / 128``), so it lies in ``[-1, 1)``; float files are
        returned as stored (values beyond +-1 are not clipped). A WAV file cut short (its data
        chunk declares more samples than the file holds) is read as far as it goes, with a note.

    Raises:
        DataError: The file is missing, empty (0 bytes or no samples), not audio, has a
            damaged header (e.g. a sample rate of 0), or holds NaN/inf samples.
    """
    if mono not in MONO_POLICIES:
        raise DataError(f"mono must be one of {MONO_POLICIES}, got {mono!r}", hint="use mono='downmix'")
    p = check_file(path, "audio file")
    try:
        import soundfile as sf
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(
            "reading audio needs the 'soundfile' package", path=p, hint="pip install 'rnnkit[audio]'"
        ) from None
    if p.stat().st_size == 0:
        raise DataError("audio file is empty (0 bytes)", path=p, hint="re-export the file or remove it")
    header = _wav_header(p)
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        problem = header.get("problem")
        raise DataError(
            f"cannot read audio ({problem})" if problem else f"cannot read audio ({type(exc).__name__}: {exc})",
            path=p,
            hint="check the file is a valid, complete audio file (re-export it, or remove it)",
        ) from None
    if int(rate) <= 0:  # pragma: no cover - libsndfile refuses such files itself
        raise DataError(f"audio header gives a sample rate of {rate} Hz", path=p, hint="re-export the file")
    if data.shape[0] == 0:
        raise DataError("audio file contains no samples", path=p, hint="remove the empty file")
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise DataError(
            f"audio has {int((~finite).sum())} NaN/inf samples (first at sample {first})",
            path=p,
            hint="re-export the file or remove it",
        )
    notes: list[str] = []
    declared = header.get("frames")
    if declared is not None and int(declared) > data.shape[0]:
        notes.append(f"truncated file: the header declares {declared} samples, read the {data.shape[0]} present")
    if data.shape[1] > 1:
        if mono == "error":
            raise DataError(
                f"audio has {data.shape[1]} channels, expected mono",
                path=p,
                hint=setting("mono", "downmix", "first"),
            )
        if mono == "downmix":
            notes.append(f"down-mixed {data.shape[1]} channels to mono")
            data = data.mean(axis=1, keepdims=True)
        else:
            notes.append(f"kept channel 0 of {data.shape[1]}")
            data = data[:, :1]
    wave = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    if target_rate is not None and int(target_rate) != int(rate):
        wave = resample(wave, int(rate), int(target_rate))
        notes.append(f"resampled {rate} Hz -> {target_rate} Hz")
        rate = int(target_rate)
    return AudioClip(wave, int(rate), str(p), None, tuple(notes))


def _wav_header(path: Path) -> dict[str, Any]:
    """What a RIFF/WAVE file's header says, to name the problem when libsndfile refuses it.

    Returns ``{}`` for other formats, else some of ``rate``, ``channels``, ``frames`` (from
    the data chunk's declared size, when the file is shorter than that) and ``problem`` (a
    short phrase: a sample rate of 0, no ``fmt``/``data`` chunk, a header cut short).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        size = path.stat().st_size
    except OSError:  # pragma: no cover - check_file has opened it already
        return {}
    if head[:4] not in (b"RIFF", b"RIFX"):
        return {}
    if len(head) < 12:
        return {"problem": f"the RIFF header is cut short ({len(head)} bytes)"}
    if head[8:12] != b"WAVE":  # another RIFF format (AVI, WebP...): libsndfile's message stands
        return {}
    order = "<" if head[:4] == b"RIFF" else ">"
    out: dict[str, Any] = {}
    pos, block = 12, 0
    while pos + 8 <= len(head):
        cid, (clen,) = head[pos : pos + 4], struct.unpack(order + "I", head[pos + 4 : pos + 8])
        if cid == b"fmt ":
            if clen < 16 or pos + 24 > len(head):
                return {**out, "problem": "the WAV 'fmt ' chunk is cut short"}
            _, channels, rate, _, block, _ = struct.unpack(order + "HHIIHH", head[pos + 8 : pos + 24])
            out.update(rate=rate, channels=channels)
            if rate == 0:
                return {**out, "problem": "the WAV header gives a sample rate of 0 Hz"}
            if channels == 0:
                return {**out, "problem": "the WAV header gives 0 channels"}
        elif cid == b"data":
            if "rate" not in out:
                return {**out, "problem": "the WAV file has no 'fmt ' chunk before its data"}
            held = size - (pos + 8)
            if block and 0 < clen < 0xFFFFFFFF and clen > held:  # 0 / 0xFFFFFFFF: a streaming writer's
                out["frames"] = clen // block
            return out
        pos += 8 + clen + (clen & 1)
    if "rate" not in out:
        return {**out, "problem": f"the WAV header is cut short (no 'fmt ' chunk in {size} bytes)"}
    if size <= 1 << 16:
        return {**out, "problem": f"the WAV file has no 'data' chunk ({size} bytes; cut short?)"}
    return out


def list_audio_folder(
    root: PathLike_,
    pattern: str | None = FSDD_PATTERN,
    *,
    label_group: str = "label",
    recursive: bool = False,
    on_mismatch: str = "error",
    extensions: Sequence[str] = _AUDIO_EXTENSIONS,
) -> list[AudioItem]:
    """List the audio files of a folder with labels taken from their names.

    Args:
        root: The folder.
        pattern: Regex matched against the whole file name; its group ``label_group`` (or
            group 1) is the label and named groups go to ``metadata``. ``None``: the label is
            the parent folder's name (folder-per-class layout, implies ``recursive``).
        label_group: Name of the label group.
        recursive: Search sub-folders too.
        on_mismatch: ``'error'`` or ``'skip'`` for files not matching ``pattern``.
        extensions: File extensions to consider.

    Returns:
        Items sorted by path. Hidden files and folders (names starting with ``.``, e.g. the
        ``._3_jackson_0.wav`` resource forks of archives made on a Mac) are skipped.
    """
    rp = Path(root)
    if not rp.is_dir():
        raise DataError("audio folder not found", path=rp, hint="check the path")
    if on_mismatch not in ("error", "skip"):
        raise DataError(
            f"on_mismatch must be 'error' or 'skip', got {on_mismatch!r}", hint="use 'error' or 'skip'"
        )
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise DataError(
                f"invalid file-name pattern {pattern!r}: {exc}", hint="pass a valid regular expression"
            ) from None
    exts = {e.lower() for e in extensions}
    files = rp.rglob("*") if (recursive or pattern is None) else rp.iterdir()
    items: list[AudioItem] = []
    for f in sorted(files):
        if not f.is_file() or f.suffix.lower() not in exts:
            continue
        if any(part.startswith(".") for part in f.relative_to(rp).parts):
            continue  # hidden: macOS's ._name.wav resource forks, .Trash and the like hold no audio
        if regex is None:
            items.append(AudioItem(str(f), f.parent.name if f.parent != rp else None, {}))
            continue
        m = regex.fullmatch(f.name)
        if m is None:
            if on_mismatch == "skip":
                continue
            raise DataError(
                f"file name does not match the pattern {pattern!r}",
                path=f,
                hint=fixes("rename the file", f"fix {name_of('pattern')}", setting("on_mismatch", "skip")),
            )
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        if label_group in groups:
            label: str | None = groups[label_group]
        elif m.groups():
            label = m.group(1)
        else:
            label = None
        items.append(AudioItem(str(f), label, groups))
    if not items:
        below = sorted(
            {str(f.parent) for f in rp.rglob("*") if f.is_file() and f.suffix.lower() in exts and f.parent != rp}
        ) if rp.is_dir() and not (recursive or pattern is None) else []
        raise DataError(
            f"no audio files ({', '.join(sorted(exts))}) found"
            + (f" directly in the folder (its subfolder {below[0]} has some)" if below else ""),
            path=rp,
            hint=f"give that subfolder, e.g. {below[0]}" if below else "check the folder and extensions",
        )
    return items


def read_audio_manifest(
    path: PathLike_,
    path_column: str = "path",
    label_column: str | None = "label",
    *,
    delimiter: str | None = None,
    check_exists: bool = True,
) -> list[AudioItem]:
    """Read a CSV/TSV manifest of audio files (paths relative to the manifest's folder).

    Args:
        path: The manifest.
        path_column: Column of file paths.
        label_column: Column of labels or transcripts (``None`` for none).
        delimiter: Separator (default from the suffix: tab for ``.tsv``, else comma).
        check_exists: Raise if a listed file does not exist.

    Returns:
        Items in manifest order; other columns go to ``metadata``.
    """
    p = check_file(path, "manifest")
    if delimiter is None:
        delimiter = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.DictReader(io.StringIO(read_text(p), newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    for col in (path_column, label_column):
        if col is not None and col not in header:
            raise DataError(
                f"no column {col!r}; columns are {list(header)}",
                path=p,
                line=1,
                hint=setting(
                    "path_column" if col == path_column else "label_column",
                    ("<name>", "<name>"),
                    then=" with one of those names",
                ),
            )
    items: list[AudioItem] = []
    for row in reader:
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            raise DataError(
                f"row has the wrong number of fields (header has {len(header)})",
                path=p,
                line=line,
                hint="fix the row",
            )
        rel = row[path_column].strip()
        if not rel:
            raise DataError("empty path", path=p, line=line, hint="fill the path column")
        fp = Path(rel) if Path(rel).is_absolute() else p.parent / rel
        if check_exists and not fp.is_file():
            raise DataError(
                f"listed audio file {str(fp)!r} not found",
                path=p,
                line=line,
                hint="fix the path (relative to the manifest)",
            )
        meta = {k: v for k, v in row.items() if k not in (path_column, label_column)}
        items.append(AudioItem(str(fp), None if label_column is None else row[label_column], meta))
    if not items:
        raise DataError("manifest lists no files", path=p, hint="add rows")
    return items


_MAX_RESAMPLE_TAPS = 1 << 25  # filter-bank size beyond which a rate ratio is refused (256 MiB in float64)


def resample(
    waveform: Tensor, orig_rate: int, new_rate: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> Tensor:
    """Resample with a Hann-windowed sinc filter (band-limited polyphase interpolation).

    The rate ratio is reduced by its gcd; each of the ``new`` output phases gets its own
    kernel of ``2 * width + orig`` taps applied with a strided convolution. The cutoff is
    ``rolloff * min(orig, new) / 2`` (the filter's -6 dB point; the kernel is the published
    ``sinc_interp_hann`` one of torchaudio), so down-sampling removes content above the new
    Nyquist: against :func:`scipy.signal.resample_poly`, the passband is flat to 0.03 dB up to
    60% of the lower Nyquist (-0.5 dB at 80%), and a tone 20% above the new Nyquist is
    attenuated by about 28 dB (50% above: 55 dB). Samples outside the clip count as zeros.

    Args:
        waveform: ``[..., T]`` tensor (or NumPy array, returned as a tensor).
        orig_rate: Input rate (Hz).
        new_rate: Output rate (Hz).
        lowpass_filter_width: Zero crossings of the sinc on each side (sharper when larger).
        rolloff: Cutoff as a fraction of the lower Nyquist frequency.

    Returns:
        ``[..., ceil(T * new / orig)]`` tensor (the length of ``resample_poly``'s output).
    """
    for rate in (orig_rate, new_rate):
        if isinstance(rate, bool) or not float(rate).is_integer():
            raise DataError(
                f"sample rates must be whole numbers of Hz, got {orig_rate} -> {new_rate}",
                hint="pass integer rates in Hz",
            )
    if orig_rate <= 0 or new_rate <= 0:
        raise DataError(
            f"sample rates must be positive, got {orig_rate} -> {new_rate}", hint="pass rates in Hz"
        )
    if not isinstance(waveform, Tensor):
        waveform = torch.as_tensor(np.asarray(waveform))
    if orig_rate == new_rate:
        return waveform
    if waveform.ndim == 0:
        raise DataError("cannot resample a scalar", hint="pass a waveform [..., T]")
    if waveform.shape[-1] == 0:  # nothing to filter (conv1d cannot reshape an empty batch)
        dtype0 = waveform.dtype if waveform.is_floating_point() else torch.float32
        return waveform.to(dtype0)
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    dtype = waveform.dtype if waveform.is_floating_point() else torch.float32
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    taps = new * (2 * width + orig)
    if taps > _MAX_RESAMPLE_TAPS:  # e.g. 16000 -> 16001 Hz: 16001 phases of 16014 taps, 2 GB
        raise DataError(
            f"resampling {orig_rate} -> {new_rate} Hz reduces to the ratio {orig}:{new}, whose polyphase "
            f"filter would hold {taps:,} taps ({taps * 8 / 2**30:.1f} GiB)",
            hint="resample to a rate with a simpler ratio to the source rate (e.g. 8000, 16000, 22050, 44100 or 48000 Hz)",
        )
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base_freq).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    scale = base_freq / orig
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * scale
    kernels = kernels.to(dtype)
    shape = waveform.shape
    x = waveform.reshape(-1, shape[-1]).to(dtype)
    length = shape[-1]
    x = torch.nn.functional.pad(x, (width, width + orig))
    y = torch.nn.functional.conv1d(x[:, None], kernels, stride=orig)  # [B, new, L]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    target = math.ceil(new * length / orig)
    return y[..., :target].reshape(*shape[:-1], -1)


# ------------------------------------------------------------------------ mel / DCT

_MEL_SCALES = ("htk", "slaney")


def hz_to_mel(freq: Any, mel_scale: str = "htk") -> Any:
    """Convert Hz to mels.

    Args:
        freq: Frequency (float, array or tensor).
        mel_scale: ``'htk'`` (``2595 log10(1 + f/700)``) or ``'slaney'`` (linear below
            1 kHz, logarithmic above, as in the Auditory Toolbox / librosa).

    Returns:
        Mels, same type.
    """
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)
    if mel_scale != "slaney":
        raise DataError(
            f"unknown mel_scale {mel_scale!r}; valid: {_MEL_SCALES}", hint="use 'htk' or 'slaney'"
        )
    f = np.asarray(freq, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(
        f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp
    )


def mel_to_hz(mels: Any, mel_scale: str = "htk") -> Any:
    """Convert mels to Hz (inverse of :func:`hz_to_mel`).

    Args:
        mels: Mel values.
        mel_scale: ``'htk'`` or ``'slaney'``.

    Returns:
        Frequencies in Hz.
    """
    m = np.asarray(mels, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise DataError(
            f"unknown mel_scale {mel_scale!r}; valid: {_MEL_SCALES}", hint="use 'htk' or 'slaney'"
        )
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(
    n_freqs: int,
    sample_rate: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: str = "htk",
    norm: str | None = None,
    *,
    n_fft: int | None = None,
) -> Tensor:
    """Triangular mel filters over the STFT frequency bins.

    Filter ``m`` rises linearly from mel point ``m`` to ``m+1`` and falls to ``m+2`` (points
    equally spaced in mels between ``f_min`` and ``f_max``, triangles drawn in Hz): the
    construction of librosa's ``filters.mel`` (``htk=True`` for ``'htk'``, ``norm='slaney'``)
    and torchaudio's ``melscale_fbanks``.

    Args:
        n_freqs: Number of STFT bins (``n_fft // 2 + 1``).
        sample_rate: Sample rate (Hz).
        n_mels: Number of filters.
        f_min: Lowest frequency.
        f_max: Highest frequency (default Nyquist).
        mel_scale: ``'htk'`` or ``'slaney'``.
        norm: ``None`` (peak 1) or ``'slaney'`` (each filter has unit area in Hz).
        n_fft: The FFT size, which places bin ``k`` at ``k * sample_rate / n_fft``. ``None``
            assumes an even one (bins evenly spaced from 0 to ``sample_rate / 2``), which is
            wrong for an odd ``n_fft``, whose last bin lies below the Nyquist frequency.

    Returns:
        float32 ``[n_freqs, n_mels]``.
    """
    if sample_rate <= 0:
        raise DataError(f"sample_rate must be positive, got {sample_rate}", hint="pass the rate in Hz")
    if n_mels < 1 or n_freqs < 2:
        raise DataError(
            f"need n_mels >= 1 and n_freqs >= 2, got n_mels={n_mels}, n_freqs={n_freqs}",
            hint="use n_mels >= 1 and n_fft >= 2",
        )
    if n_fft is not None and n_fft // 2 + 1 != n_freqs:
        raise DataError(
            f"n_freqs={n_freqs} does not match n_fft={n_fft} (n_fft // 2 + 1 = {n_fft // 2 + 1})",
            hint="pass n_freqs = n_fft // 2 + 1",
        )
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise DataError(
            f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, rate={sample_rate}",
            hint="fix the mel range",
        )
    if norm not in (None, "slaney"):
        raise DataError(f"norm must be None or 'slaney', got {norm!r}", hint="use None or 'slaney'")
    if n_fft is None or n_fft % 2 == 0:
        all_freqs: np.ndarray = np.linspace(0, sample_rate / 2, n_freqs)
    else:  # odd: the last bin is (n_fft - 1) / 2 * rate / n_fft, below the Nyquist frequency
        all_freqs = np.arange(n_freqs, dtype=np.float64) * (sample_rate / n_fft)
    m_pts = np.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = mel_to_hz(m_pts, mel_scale)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    if norm == "slaney":
        fb *= 2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])
    return torch.as_tensor(fb, dtype=torch.float32)


def dct_matrix(n_out: int, n_in: int, norm: str | None = "ortho") -> Tensor:
    """DCT-II matrix: ``features @ D`` gives the first ``n_out`` DCT coefficients.

    ``D[n, k] = cos(pi / n_in * (n + 0.5) * k)``, times ``sqrt(1/n_in)`` for ``k = 0`` and
    ``sqrt(2/n_in)`` otherwise when ``norm='ortho'`` (times 2 when ``norm=None``).

    Args:
        n_out: Number of coefficients kept.
        n_in: Input size (number of mel bands).
        norm: ``'ortho'`` or ``None``.

    Returns:
        float32 ``[n_in, n_out]``.
    """
    if n_out > n_in:
        raise DataError(f"cannot keep {n_out} DCT coefficients of {n_in} inputs", hint="use n_mfcc <= n_mels")
    if n_out < 1:
        raise DataError(f"need at least one DCT coefficient, got n_mfcc={n_out}", hint="use n_mfcc >= 1")
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.cos(np.pi / n_in * (n + 0.5) * k)
    if norm == "ortho":
        d[:, 0] *= math.sqrt(1.0 / n_in)
        d[:, 1:] *= math.sqrt(2.0 / n_in)
    elif norm is None:
        d *= 2.0
    else:
        raise DataError(f"norm must be 'ortho' or None, got {norm!r}", hint="use 'ortho'")
    return torch.as_tensor(d, dtype=torch.float32)


def normalize_utterance(features: Tensor, eps: float = 1e-5, lengths: Tensor | Sequence[int] | None = None) -> Tensor:
    """Per-utterance mean and variance normalization over time, per feature (CMVN).

    ``(x - mean) / (std + eps)`` with the population standard deviation. The statistics are
    accumulated in float64, so a feature that is constant over the utterance (silence at the
    log floor, a mel filter that covers no FFT bin) becomes exactly 0 (in float32 the mean's
    rounding error, divided by ``eps``, left values up to about 0.4).

    Args:
        features: ``[frames, F]`` or ``[B, frames, F]``.
        eps: Added to the standard deviation.
        lengths: For a zero-padded batch ``[B, frames, F]``: the real frames of each
            utterance. The statistics then cover those frames only and the padding stays 0.

    Returns:
        Normalized features, same shape and dtype.
    """
    wide = torch.float64 if features.device.type != "mps" else torch.float32  # MPS has no float64
    x = features.to(wide) if features.dtype in (torch.float32, torch.float16, torch.bfloat16) else features
    if lengths is None:
        mean = x.mean(dim=-2, keepdim=True)
        std = x.std(dim=-2, keepdim=True, unbiased=False)
        return ((x - mean) / (std + eps)).to(features.dtype)
    if x.ndim != 3:
        raise DataError(
            f"lengths need batched features [B, frames, F], got shape {tuple(features.shape)}",
            hint="pass lengths only with a padded batch",
        )
    n = torch.as_tensor(lengths, device=x.device).reshape(-1)
    if n.numel() != x.shape[0] or bool((n < 1).any()) or bool((n > x.shape[1]).any()):
        raise DataError(
            f"lengths must give 1..{x.shape[1]} frames for each of the {x.shape[0]} utterances, got {n.tolist()}",
            hint="pass the real (unpadded) frame count of each utterance",
        )
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]).unsqueeze(-1).to(x.dtype)
    count = n.to(x.dtype)[:, None, None]
    mean = (x * mask).sum(dim=1, keepdim=True) / count
    var = (((x - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return ((x - mean) / (var.sqrt() + eps) * mask).to(features.dtype)


class LogMelSpectrogram(JsonSerializable):
    """Log-mel spectrogram ``[frames, n_mels]`` from ``torch.stft`` (Hann window, centred frames).

    ``log(mel_filterbank^T |STFT|^power + log_offset)`` (natural log; silence gives
    ``log(log_offset)``, -13.8 by default), optionally normalized per utterance. The window is
    the periodic Hann window of ``win_length`` samples (``scipy.signal.get_window('hann', N)``),
    centred in the ``n_fft``-sample frame; the STFT is unscaled. With ``center=True`` the clip
    is reflect-padded by ``n_fft // 2`` samples on each side (``numpy.pad(mode='reflect')``,
    librosa's and torch's default), so frame ``t`` is centred on sample ``t * hop_length``.
    A waveform with NaN/inf samples is an error (they would turn whole frames into NaN);
    mel filters that cover no FFT bin (too many ``n_mels`` for ``n_fft``) are logged.

    Args:
        sample_rate: Expected input rate (Hz).
        n_fft: FFT size (samples per frame).
        hop_length: Samples between frames (default ``n_fft // 4``).
        win_length: Window length (default ``n_fft``).
        n_mels: Number of mel bands.
        f_min: Lowest mel frequency.
        f_max: Highest mel frequency (default Nyquist).
        mel_scale: ``'htk'`` or ``'slaney'``.
        mel_norm: ``None`` or ``'slaney'``.
        power: 2 for power, 1 for magnitude.
        log_offset: Added before the log.
        normalize: ``'utterance'`` (per-utterance CMVN) or ``None``.
        center: Pad so that frame ``t`` is centred on sample ``t * hop_length``.
        fft_bins: Where the mel filters place FFT bin ``k``: ``'exact'`` (``k * sample_rate /
            n_fft``) or ``'legacy'`` (evenly from 0 to ``sample_rate / 2``, as before this
            option existed: wrong for an odd ``n_fft``). The two are identical for an even
            ``n_fft``; configurations saved without this key load as ``'legacy'``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int | None = None,
        win_length: int | None = None,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "htk",
        mel_norm: str | None = None,
        power: float = 2.0,
        log_offset: float = 1e-6,
        normalize: str | None = None,
        center: bool = True,
        fft_bins: str = "exact",
    ) -> None:
        if normalize not in (None, "utterance"):
            raise DataError(
                f"normalize must be None or 'utterance', got {normalize!r}", hint="use 'utterance' or None"
            )
        if fft_bins not in ("exact", "legacy"):
            raise DataError(f"fft_bins must be 'exact' or 'legacy', got {fft_bins!r}", hint="use 'exact'")
        if int(sample_rate) <= 0:
            raise DataError(
                f"sample_rate must be positive, got {sample_rate}", hint="pass the audio's rate in Hz (e.g. 16000)"
            )
        if int(n_mels) < 1:
            raise DataError(f"n_mels must be >= 1, got {n_mels}", hint="use e.g. n_mels=40")
        if int(n_mels) > MAX_N_MELS:
            raise DataError(
                f"n_mels must be at most {MAX_N_MELS}, got {n_mels}", hint="use e.g. n_mels=40 (speech) or 128 (music)"
            )
        if not 2 <= int(n_fft) <= MAX_N_FFT:
            raise DataError(
                f"n_fft must be between 2 and {MAX_N_FFT} samples, got {n_fft}",
                hint="use frames of 10-100 ms, e.g. n_fft=400 at 16 kHz",
            )
        if not float(log_offset) > 0:
            raise DataError(
                f"log_offset must be > 0, got {log_offset} (silence would give log(0) = -inf)",
                hint="use e.g. log_offset=1e-6",
            )
        if not float(power) > 0:
            raise DataError(f"power must be > 0, got {power}", hint="use 2 (power) or 1 (magnitude)")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length) if hop_length is not None else self.n_fft // 4
        self.win_length = int(win_length) if win_length is not None else self.n_fft
        if not 0 < self.win_length <= self.n_fft or self.hop_length < 1:
            raise DataError(
                f"need 0 < win_length <= n_fft and hop_length >= 1 (got {self.win_length}, {self.n_fft}, {self.hop_length})",
                hint="fix the frame sizes",
            )
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = None if f_max is None else float(f_max)
        self.mel_scale = mel_scale
        self.mel_norm = mel_norm
        self.power = float(power)
        self.log_offset = float(log_offset)
        self.normalize = normalize
        self.center = bool(center)
        self.fft_bins = fft_bins
        self._fb = mel_filterbank(
            self.n_fft // 2 + 1,
            self.sample_rate,
            self.n_mels,
            self.f_min,
            self.f_max,
            mel_scale,
            mel_norm,
            n_fft=self.n_fft if fft_bins == "exact" else None,
        )
        self._window = torch.hann_window(self.win_length)
        empty = int((self._fb.max(dim=0).values == 0).sum())
        if empty:
            logger.warning(
                "LogMelSpectrogram: %d of %d mel filters cover no FFT bin (n_fft=%d is too small for "
                "n_mels=%d), their features are constant; use fewer n_mels or a larger n_fft",
                empty,
                self.n_mels,
                self.n_fft,
                self.n_mels,
            )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a clip of ``num_samples``.

        Args:
            num_samples: Clip length.

        Returns:
            Frame count (that of :meth:`power_spectrogram`; ``torch.stft``'s count).
        """
        if self.center:  # padded by n_fft // 2 on each side: one frame fewer at some lengths for an odd n_fft
            return 1 + (num_samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def power_spectrogram(self, waveform: Tensor) -> Tensor:
        """``|STFT|^power`` as ``[..., frames, n_fft // 2 + 1]``.

        Args:
            waveform: ``[T]`` or ``[B, T]``.

        Returns:
            The spectrogram.
        """
        x = torch.as_tensor(waveform)
        if x.ndim not in (1, 2):
            raise DataError(
                f"waveform must be [T] or [B, T], got shape {tuple(x.shape)}",
                hint="pass mono samples (e.g. x.mean(-1) for [T, channels])",
            )
        if not x.is_floating_point():
            x = x.float()
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            first = int(torch.nonzero(~finite.reshape(-1))[0, 0]) % x.shape[-1]
            raise DataError(
                f"waveform has {bad} NaN/inf samples (first at sample {first})",
                hint="fix or drop the clip (a corrupt file or a division by zero upstream)",
            )
        if x.shape[-1] < self.n_fft:
            raise DataError(
                f"clip has {x.shape[-1]} samples, shorter than one frame (n_fft={self.n_fft}, "
                f"{1000 * self.n_fft / self.sample_rate:.1f} ms)",
                hint="pad short clips or use a smaller n_fft",
            )
        spec = torch.stft(
            x.to(torch.float32),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self._window.to(x.device),
            center=self.center,
            pad_mode="reflect",
            return_complex=True,
        )
        return spec.abs().pow(self.power).transpose(-1, -2)

    def __call__(self, waveform: Tensor) -> Tensor:
        """Compute features.

        Args:
            waveform: ``[T]`` or ``[B, T]`` at ``sample_rate``.

        Returns:
            ``[frames, n_mels]`` (or ``[B, frames, n_mels]``).
        """
        mel = self.power_spectrogram(waveform) @ self._fb.to(torch.as_tensor(waveform).device)
        feats = torch.log(mel + self.log_offset)
        if self.normalize == "utterance":
            feats = normalize_utterance(feats)
        return feats

    def to_config(self) -> dict[str, Any]:
        """Return the options."""
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "mel_scale": self.mel_scale,
            "mel_norm": self.mel_norm,
            "power": self.power,
            "log_offset": self.log_offset,
            "normalize": self.normalize,
            "center": self.center,
            "fft_bins": self.fft_bins,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LogMelSpectrogram:
        """Rebuild from :meth:`to_config` output (one saved without ``fft_bins``: ``'legacy'``)."""
        return cls(**{"fft_bins": "legacy", **config})


class MFCC(JsonSerializable):
    """Mel-frequency cepstral coefficients ``[frames, n_mfcc]``: DCT-II (orthonormal) of the
    natural-log mel spectrogram, optionally normalized per utterance.

    Coefficient ``k`` of a frame is ``scipy.fft.dct(logmel, type=2, norm='ortho')[k]``, for
    ``k < n_mfcc``; no liftering is applied, and c0 (the log energy term) is kept.

    Args:
        n_mfcc: Coefficients kept (including c0).
        normalize: ``'utterance'`` or ``None`` (applied to the MFCCs).
        **melspec: Options of :class:`LogMelSpectrogram` (its own ``normalize`` is off).
    """

    def __init__(self, n_mfcc: int = 13, normalize: str | None = None, **melspec: Any) -> None:
        melspec.pop("normalize", None)
        self.melspec = LogMelSpectrogram(**melspec)
        if normalize not in (None, "utterance"):
            raise DataError(
                f"normalize must be None or 'utterance', got {normalize!r}", hint="use 'utterance' or None"
            )
        if int(n_mfcc) < 1:
            raise DataError(f"n_mfcc must be >= 1, got {n_mfcc}", hint="use e.g. n_mfcc=13")
        if int(n_mfcc) > self.melspec.n_mels:  # at most MAX_N_MELS: the DCT matrix stays small
            raise DataError(
                f"n_mfcc must be at most n_mels={self.melspec.n_mels}, got {n_mfcc}", hint="use e.g. n_mfcc=13"
            )
        self.n_mfcc = int(n_mfcc)
        self.normalize = normalize
        self._dct = dct_matrix(self.n_mfcc, self.melspec.n_mels)

    @property
    def sample_rate(self) -> int:
        """Expected input rate."""
        return self.melspec.sample_rate

    def __call__(self, waveform: Tensor) -> Tensor:
        """Compute MFCCs.

        Args:
            waveform: ``[T]`` or ``[B, T]``.

        Returns:
            ``[frames, n_mfcc]`` (or batched).
        """
        feats = self.melspec(waveform) @ self._dct.to(torch.as_tensor(waveform).device)
        if self.normalize == "utterance":
            feats = normalize_utterance(feats)
        return feats

    def to_config(self) -> dict[str, Any]:
        """Return the options."""
        cfg = self.melspec.to_config()
        cfg.pop("normalize")
        return {"n_mfcc": self.n_mfcc, "normalize": self.normalize, **cfg}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MFCC:
        """Rebuild from :meth:`to_config` output (one saved without ``fft_bins``: ``'legacy'``)."""
        return cls(**{"fft_bins": "legacy", **config})
