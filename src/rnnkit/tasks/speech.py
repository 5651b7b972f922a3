"""Speech recognition with recurrent networks: isolated words, CTC transcripts, connected digits
and streaming.

Pipeline: wav -> log-mel or MFCC frames (``rnnkit.data.audio``) -> global (training-set) or
per-utterance normalisation -> SpecAugment time and frequency masks in training (Park et al.
2019, "SpecAugment", sec. 2) -> frame stacking or strided convolutions (subsampling) -> a deep
(bi)directional recurrent encoder -> either a classifier over the pooled outputs (isolated
words) or a CTC head over characters or words (Graves et al. 2006), decoded greedily or with
prefix beam search and an optional lexicon (``rnnkit.nn.ctc``).

Streaming: a unidirectional model with frame stacking (or no subsampling) runs on audio chunks
with carried state. Frames are computed from a carried sample buffer with the same centred,
reflect-padded framing as the whole-file pass, and every frame goes through the network and
decoder alone, so the result does not depend on how the audio was cut into chunks (bitwise),
and the transcript equals the whole-file batched pass (the batched recurrent kernels round
differently in the last bits, which does not change the decoded tokens).

Long files: evaluation and transcription run at most ``decode.max_chunk_seconds`` of audio through
the network at once. A longer file is decoded in chunks: streamable models carry their state
across chunks (the same transcript as one pass); others see ``decode.chunk_context_seconds`` of
context each side of a chunk and keep only its own outputs (:func:`chunk_windows`). The kept
log-probabilities are decoded as one sequence. Training skips utterances longer than
``data.max_seconds`` (with a count). WER and CER are undefined (null, with the insertions counted
apart) when every reference is empty (:func:`error_rates`).

Connected digits (``data.mode=connected_digits``): utterances of 2 to 7 isolated recordings
joined with random silences and white noise; training, dev and test utterances are built from
disjoint sets of recordings (FSDD's official split: indices 0-4 are test).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import CELLS
from ..data.audio import FSDD_PATTERN
from ..nn import recurrent_layer
from ..nn.ctc import CTCPrefixBeamSearch, Lexicon, collapse_alignment, ctc_greedy_decode, error_counts
from ..nn.pooling import masked_max, masked_mean
from .config import (
    MAX_MINUTES_HELP,
    PRECISION_HELP,
    ConfigError,
    PrecisionName,
    check_at_least_one,
    check_batch,
    check_cell,
    check_max_minutes,
    check_precision,
    option,
    seconds_budget,
    section,
)
from .run import RunDir, RunError

NAME = "speech"
# config keys that name files: made absolute when a run starts, so evaluate, transcribe and --resume
# find them from any folder
PATH_KEYS = ("decode.lexicon",)
# The data readers' arguments as config keys, for one-line errors worded for the command line.
CONFIG_KEYS = {"path_column": "data.path_column", "label_column": "data.label_column", "pattern": "data.pattern",
               "mono": "data.mono"}
# data.* keys that ``evaluate --set`` may change: how the evaluation files are read, labelled, split and (for
# connected digits) joined. The others (features, sample rate, units, lowercasing, dev split) were fixed by
# training, and changing one would silently do nothing: a one-line error instead.
EVALUATE_DATA_KEYS = ("mode", "pattern", "path_column", "label_column", "split", "test_speakers", "mono",
                      "min_digits", "max_digits", "connected_eval", "silence_ms", "snr_db")
DESCRIPTION = ("Speech recognition from wav files: isolated words, CTC transcripts (chars or words), "
               "connected digits, streaming")
BLANK = "<blank>"


# -- config ------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    mode: Literal["words", "transcripts", "connected_digits"] = option(
        "words", "words: one label per file; transcripts: a CSV/TSV manifest of path,transcript; "
                 "connected_digits: utterances built by joining isolated recordings")
    pattern: str = option(FSDD_PATTERN, "regex on file names of a folder: group 'label', optional 'speaker' and 'index'")
    path_column: str = option("path", "manifest column of file paths")
    label_column: str = option("label", "manifest column of labels or transcripts")
    split: Literal["fsdd", "speaker", "none"] = option(
        "fsdd", "test set carved from --train: fsdd (index 0-4 test, FSDD's official split), speaker "
                "(data.test_speakers), none (no test set)")
    test_speakers: list[str] = option([], "speakers held out as test data when data.split=speaker")
    dev_split: Literal["random", "speaker"] = option("random", "dev set carved from training data (without --dev)")
    dev_fraction: float = option(0.1, "fraction of training recordings held out as dev")
    units: Literal["chars", "words"] = option("chars", "CTC output units for transcripts")
    lowercase: bool = option(True, "lowercase transcripts")
    sample_rate: int | None = option(None, "model sample rate (null: the first training file's); others are resampled")
    mono: Literal["downmix", "first", "error"] = option("downmix", "multi-channel files: average, first channel, or error")
    features: Literal["logmel", "mfcc"] = option("logmel", "acoustic features")
    n_mels: int = option(40, "mel bands")
    n_mfcc: int = option(13, "cepstral coefficients (features=mfcc)")
    frame_ms: float = option(25.0, "analysis window in milliseconds (FFT size: the next power of two)")
    hop_ms: float = option(10.0, "frame shift in milliseconds")
    normalize: Literal["global", "utterance"] = option(
        "global", "global: training-set mean/std per feature (streamable); utterance: per-utterance CMVN")
    min_digits: int = option(2, "connected digits: fewest words per utterance")
    max_digits: int = option(7, "connected digits: most words per utterance")
    connected_train: int = option(3000, "connected digits: training utterances")
    connected_eval: int = option(500, "connected digits: dev and test utterances (each)")
    silence_ms: list[float] = option([30.0, 250.0], "connected digits: silence between words, min,max in ms")
    snr_db: list[float] = option([15.0, 40.0], "connected digits: white-noise SNR range in dB (empty: no noise)")
    max_seconds: float | None = option(
        60.0, "training and dev utterances longer than this are skipped, with a count in the log (null: no "
              "limit); evaluation and transcription decode long files in chunks (decode.max_chunk_seconds)")


@dataclass
class ModelConfig:
    head: Literal["auto", "classifier", "ctc"] = option("auto", "auto: classifier for data.mode=words, else ctc")
    cell: str = option("lstm", f"recurrent cell: {', '.join(sorted(CELLS))}")
    hidden_size: int = option(128, "encoder units per direction")
    num_layers: int = option(2, "stacked encoder layers")
    bidirectional: bool = option(True, "bidirectional encoder (false: unidirectional, needed for streaming)")
    subsampling: Literal["none", "stack", "conv"] = option("stack", "frame rate reduction: stack frames or strided convs")
    subsample_factor: int = option(2, "subsampling factor (conv: a power of two)")
    conv_channels: int = option(128, "channels of the subsampling convolutions")
    pooling: Literal["mean", "max", "last"] = option("mean", "classifier pooling over time")
    dropout: float = option(0.2, "dropout between layers and before the output layer")


@dataclass
class TrainConfig:
    epochs: int = option(30, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(32, "utterances per batch")
    learning_rate: float = option(2e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = option("adam", "optimizer")
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(5.0, "gradient norm clipping (null: none)")
    patience: int | None = option(5, "early-stopping patience in epochs on the dev metric (null: never)")
    freq_masks: int = option(2, "SpecAugment: frequency masks per utterance (0: off)")
    freq_mask_width: int = option(6, "SpecAugment: widest frequency mask (features)")
    time_masks: int = option(2, "SpecAugment: time masks per utterance (0: off)")
    time_mask_width: int = option(8, "SpecAugment: widest time mask (frames, at most 20% of an utterance)")
    seed: int = option(0, "random seed")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class DecodeConfig:
    beam_size: int = option(1, "CTC decoding: 1 greedy, > 1 prefix beam search")
    lexicon: str | None = option(None, "restrict CTC output to words: 'train' (training words) or a word-list file")
    token_threshold: float = option(-12.0, "beam search skips tokens below this log-probability at a frame")
    max_chunk_seconds: float = option(
        30.0, "longest audio run through the network at once when evaluating or transcribing; longer files are "
              "decoded in chunks (streamable models carry their state across chunks: same transcript)")
    chunk_context_seconds: float = option(
        2.0, "chunked decoding of bidirectional or conv-subsampled models: audio on each side of a chunk that "
             "the network sees but whose outputs are dropped")

    def validate(self) -> None:
        """One-line errors for chunk limits that cannot work."""
        if not self.max_chunk_seconds > 0:  # also NaN
            raise ConfigError(f"decode.max_chunk_seconds: must be > 0 (seconds of audio per decoding chunk), "
                              f"got {self.max_chunk_seconds}")
        if not self.chunk_context_seconds >= 0:
            raise ConfigError(f"decode.chunk_context_seconds: must be >= 0, got {self.chunk_context_seconds}")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "reading audio, splits and features")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "optimisation and SpecAugment")
    decode: DecodeConfig = section(DecodeConfig, "CTC decoding for evaluation")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        if self.data.max_seconds is not None and not self.data.max_seconds > 0:
            raise ConfigError(f"data.max_seconds: must be > 0 (or null for no limit), got {self.data.max_seconds}")
        check_cell(self.model.cell)
        check_at_least_one(("model.hidden_size", self.model.hidden_size), ("model.num_layers", self.model.num_layers),
                           ("model.subsample_factor", self.model.subsample_factor),
                           ("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size),
                           ("decode.beam_size", self.decode.beam_size), ("data.n_mels", self.data.n_mels),
                           ("data.min_digits", self.data.min_digits))
        f = self.model.subsample_factor
        if self.model.subsampling == "conv" and f & (f - 1):
            raise ConfigError(f"model.subsample_factor: conv subsampling needs a power of two, got {f}")
        if not 0 <= self.model.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.model.dropout}")
        if not 0 < self.data.dev_fraction < 1:
            raise ConfigError(f"data.dev_fraction: must be in (0, 1), got {self.data.dev_fraction}")
        if self.data.features == "mfcc" and self.data.n_mfcc > self.data.n_mels:
            raise ConfigError(f"data.n_mfcc: {self.data.n_mfcc} is more than data.n_mels={self.data.n_mels}")
        if self.data.min_digits > self.data.max_digits:
            raise ConfigError(f"data.min_digits ({self.data.min_digits}) > data.max_digits ({self.data.max_digits})")
        if len(self.data.silence_ms) != 2 or not 0 <= self.data.silence_ms[0] <= self.data.silence_ms[1]:
            raise ConfigError(f"data.silence_ms: expected min,max with 0 <= min <= max, got {self.data.silence_ms}")
        if self.data.snr_db and (len(self.data.snr_db) != 2 or self.data.snr_db[0] > self.data.snr_db[1]):
            raise ConfigError(f"data.snr_db: expected min,max (or empty for no noise), got {self.data.snr_db}")
        if self.data.frame_ms <= 0 or not 0 < self.data.hop_ms <= self.data.frame_ms:
            raise ConfigError(f"data.frame_ms/hop_ms: need 0 < hop_ms <= frame_ms, got {self.data.frame_ms}, "
                              f"{self.data.hop_ms}")
        if self.data.split == "speaker" and not self.data.test_speakers:
            raise ConfigError("data.split=speaker needs data.test_speakers (e.g. data.test_speakers=[theo])")
        if self.head() == "classifier" and self.data.mode != "words":
            raise ConfigError(f"model.head=classifier needs data.mode=words, got data.mode={self.data.mode}")

    def head(self) -> str:
        """The output layer after resolving ``auto``."""
        if self.model.head != "auto":
            return self.model.head
        return "classifier" if self.data.mode == "words" else "ctc"


# -- features ----------------------------------------------------------------------------------
_PROJECT_ROWS = 256


def _project(frames: Tensor, matrix: Tensor) -> Tensor:
    """``frames @ matrix`` computed row by row the same way whatever the number of rows.

    A matrix product's blocking depends on the row count, so its last bits do; a broadcast
    product summed over one axis does not: this keeps streamed frames identical to the
    whole-file ones. The broadcast product is ``[rows, n_in, n_out]``, so it is formed
    ``_PROJECT_ROWS`` rows at a time (each row's sum is the same either way): all at once,
    an hour of 16 kHz audio would need about 15 GB.
    """
    rows = frames.shape[-2]
    if rows <= _PROJECT_ROWS:
        return (frames.unsqueeze(-1) * matrix).sum(-2)
    # written into one preallocated output: collecting the blocks' results for a torch.cat
    # interleaves small allocations with the large temporaries, and the heap then grows by
    # most of a temporary per block
    out = frames.new_empty((*frames.shape[:-1], matrix.shape[-1]), dtype=torch.result_type(frames, matrix))
    for start in range(0, rows, _PROJECT_ROWS):
        block = frames[..., start : start + _PROJECT_ROWS, :]
        out[..., start : start + _PROJECT_ROWS, :] = (block.unsqueeze(-1) * matrix).sum(-2)
    return out


class SpeechFeatures:
    """Log-mel or MFCC frames ``[frames, F]`` with a streaming twin (:meth:`stream`).

    Built on :class:`rnnkit.data.LogMelSpectrogram` (centred Hann frames, reflect padding): the
    STFT and mel filterbank are the data layer's; the projections are computed row-wise
    (:func:`_project`).

    Args:
        sample_rate: Input rate (Hz).
        kind: ``'logmel'`` or ``'mfcc'``.
        n_mels: Mel bands.
        n_mfcc: Cepstral coefficients (``kind='mfcc'``).
        frame_ms: Window length (ms); the FFT size is the next power of two.
        hop_ms: Frame shift (ms).
        normalize: ``'utterance'`` applies per-utterance CMVN here; ``'global'`` leaves it to
            the model (its training-set statistics).
    """

    def __init__(self, sample_rate: int, kind: str = "logmel", n_mels: int = 40, n_mfcc: int = 13,
                 frame_ms: float = 25.0, hop_ms: float = 10.0, normalize: str = "global") -> None:
        from ..data.audio import LogMelSpectrogram, dct_matrix

        self.sample_rate, self.kind, self.n_mels, self.n_mfcc = int(sample_rate), kind, int(n_mels), int(n_mfcc)
        self.frame_ms, self.hop_ms, self.normalize = float(frame_ms), float(hop_ms), normalize
        win = max(2, round(self.sample_rate * self.frame_ms / 1000))
        self.n_fft = 1 << (win - 1).bit_length()
        self.hop = max(1, round(self.sample_rate * self.hop_ms / 1000))
        opts = dict(sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop, win_length=win,
                    n_mels=self.n_mels)
        self.melspec = LogMelSpectrogram(**opts)  # type: ignore[arg-type]
        self._framer = LogMelSpectrogram(**opts, center=False)  # type: ignore[arg-type]
        self._dct = dct_matrix(self.n_mfcc, self.n_mels) if kind == "mfcc" else None

    @property
    def size(self) -> int:
        """Features per frame."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def to_config(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "kind": self.kind, "n_mels": self.n_mels, "n_mfcc": self.n_mfcc,
                "frame_ms": self.frame_ms, "hop_ms": self.hop_ms, "normalize": self.normalize}

    def _from_power(self, power: Tensor) -> Tensor:
        mel = _project(power, self.melspec._fb)
        feats = torch.log(mel + self.melspec.log_offset)
        if self._dct is not None:
            feats = _project(feats, self._dct)
        return feats

    def check_length(self, num_samples: int, source: str = "clip") -> None:
        """One-line error for audio shorter than one analysis window."""
        from ..data.errors import DataError

        if num_samples < self.n_fft:
            raise DataError(f"{source}: {num_samples} samples is shorter than one frame ({self.n_fft} samples, "
                            f"{1000 * self.n_fft / self.sample_rate:.0f} ms at {self.sample_rate} Hz)",
                            hint="record a longer clip or pad it with silence")

    def __call__(self, waveform: Tensor) -> Tensor:
        """Frames of a whole clip ``[T]`` -> ``[1 + T // hop, F]``."""
        from ..data.audio import normalize_utterance

        self.check_length(int(waveform.shape[-1]))
        feats = self._from_power(self.melspec.power_spectrogram(waveform))
        return normalize_utterance(feats) if self.normalize == "utterance" else feats

    def in_blocks(self, waveform: Tensor, block_samples: int) -> Tensor:
        """The frames of :meth:`__call__`, bitwise, computed ``block_samples`` of audio at a time.

        For long files: the whole-file STFT holds a complex ``[n_fft/2+1, frames]`` spectrum
        (about 0.7 GB for an hour at 16 kHz); here only one block's is. Frames come from a
        :class:`FeatureStream` (the same framing); per-utterance CMVN is applied to the joined
        frames, as :meth:`__call__` does.
        """
        from ..data.audio import normalize_utterance

        self.check_length(int(waveform.shape[-1]))
        stream = FeatureStream(self)
        wave = waveform.reshape(-1)
        step = max(1, int(block_samples))
        parts = [stream.push(wave[i : i + step]) for i in range(0, wave.numel(), step)] + [stream.flush()]
        feats = torch.cat(parts)
        return normalize_utterance(feats) if self.normalize == "utterance" else feats

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of ``num_samples`` (centred framing: one per hop, plus one)."""
        return 1 + int(num_samples) // self.hop

    def window_frames(self, seconds: float) -> int:
        """Whole frames in ``seconds`` of audio (at least one): a decoding chunk's length."""
        return max(1, int(seconds * self.sample_rate) // self.hop)

    def stream(self) -> FeatureStream:
        """A chunk-by-chunk extractor giving exactly the frames of :meth:`__call__`."""
        if self.normalize == "utterance":
            raise ValueError("per-utterance normalization needs the whole clip; train with data.normalize=global "
                             "to stream")
        return FeatureStream(self)


class FeatureStream:
    """Frames from audio pushed in chunks of any size (a carried sample buffer).

    The whole-file pass reflect-pads ``n_fft // 2`` samples at both ends and takes a frame every
    ``hop`` samples. Here the left padding is built once ``n_fft // 2 + 1`` samples have arrived,
    a frame is emitted as soon as its window is complete, and :meth:`flush` adds the right
    padding and emits the rest.
    """

    def __init__(self, features: SpeechFeatures) -> None:
        self.f = features
        self.pad = features.n_fft // 2
        self._head: list[Tensor] = []  # samples before the left padding can be built
        self._buffer = torch.zeros(0)
        self._tail = torch.zeros(0)  # the last pad + 1 samples, for the right padding
        self._received = 0
        self._started = False

    def _frames(self, final: bool) -> Tensor:
        n_fft, hop = self.f.n_fft, self.f.hop
        count = 0 if self._buffer.numel() < n_fft else 1 + (self._buffer.numel() - n_fft) // hop
        if count == 0:
            return torch.zeros(0, self.f.size)
        used = (count - 1) * hop + n_fft
        power = self.f._framer.power_spectrogram(self._buffer[:used])
        self._buffer = self._buffer[count * hop:]
        return self.f._from_power(power)

    def push(self, samples: Tensor) -> Tensor:
        """Add samples; returns the frames completed by them ``[n, F]`` (``n`` may be 0)."""
        x = torch.as_tensor(samples, dtype=torch.float32).reshape(-1)
        self._received += x.numel()
        keep = self.pad + 1
        self._tail = torch.cat([self._tail, x])[-keep:]
        if not self._started:
            self._head.append(x)
            head = torch.cat(self._head)
            if head.numel() <= self.pad:
                return torch.zeros(0, self.f.size)
            self._started, self._head = True, []
            left = head[1 : self.pad + 1].flip(0)
            self._buffer = torch.cat([left, head])
        else:
            self._buffer = torch.cat([self._buffer, x])
        return self._frames(final=False)

    def flush(self) -> Tensor:
        """End of audio: the remaining frames (error if the clip is shorter than one frame)."""
        self.f.check_length(self._received, "audio")
        right = self._tail[-self.pad - 1 : -1].flip(0)
        self._buffer = torch.cat([self._buffer, right])
        return self._frames(final=True)


# -- model -------------------------------------------------------------------------------------
def spec_augment(feats: Tensor, lengths: Tensor, *, freq_masks: int, freq_width: int, time_masks: int,
                 time_width: int, generator: torch.Generator | None = None) -> Tensor:
    """SpecAugment's frequency and time masking (Park et al. 2019, sec. 2), set to 0 (the mean
    of normalized features). ``feats`` is ``[B, T, F]``; masks stay inside each utterance and a
    time mask covers at most 20% of it."""
    out = feats.clone()
    num_feats = feats.shape[-1]
    for b, n in enumerate(lengths.tolist()):
        for _ in range(freq_masks):
            w = int(torch.randint(0, min(freq_width, num_feats) + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, num_feats - w + 1, (1,), generator=generator))
            out[b, :n, f0 : f0 + w] = 0
        limit = min(time_width, int(0.2 * n))
        for _ in range(time_masks if limit > 0 else 0):
            w = int(torch.randint(0, limit + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, n - w + 1, (1,), generator=generator))
            out[b, t0 : t0 + w] = 0
    return out


class SpeechModel(nn.Module):
    """Features -> normalisation -> SpecAugment (training) -> subsampling -> RNN -> head.

    ``forward(feats [B, T, F], lengths [B])`` returns ``(scores, out_lengths)``: CTC
    log-probabilities ``[B, T', V]`` (blank = 0) or classifier logits ``[B, C]``.
    """

    feat_mean: Tensor
    feat_std: Tensor

    def __init__(self, num_features: int, num_outputs: int, *, head: str = "ctc", cell: str = "lstm",
                 hidden_size: int = 128, num_layers: int = 2, bidirectional: bool = True, subsampling: str = "stack",
                 subsample_factor: int = 2, conv_channels: int = 128, pooling: str = "mean", dropout: float = 0.2,
                 spec_augment: dict[str, int] | None = None) -> None:
        super().__init__()
        self.head_kind, self.pooling, self.subsampling = head, pooling, subsampling
        self.factor = subsample_factor if subsampling != "none" else 1
        self.bidirectional = bidirectional
        self.augment = dict(spec_augment or {})
        self.register_buffer("feat_mean", torch.zeros(num_features))
        self.register_buffer("feat_std", torch.ones(num_features))
        if subsampling == "conv":
            layers: list[nn.Module] = []
            channels = num_features
            for _ in range(int(math.log2(self.factor))):
                layers += [nn.Conv1d(channels, conv_channels, kernel_size=3, stride=2, padding=1), nn.ReLU()]
                channels = conv_channels
            self.conv = nn.Sequential(*layers)
            enc_in = channels
        else:
            self.conv = None  # type: ignore[assignment]
            enc_in = num_features * self.factor
        self.encoder = recurrent_layer(cell, enc_in, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                                       dropout=dropout if num_layers > 1 else 0.0)
        out = hidden_size * (2 if bidirectional else 1)
        self.drop = nn.Dropout(dropout)
        self.output = nn.Linear(out, num_outputs)

    @property
    def streamable(self) -> bool:
        """Unidirectional, frame stacking or none, CTC head."""
        return not self.bidirectional and self.subsampling != "conv" and self.head_kind == "ctc"

    def normalize(self, feats: Tensor) -> Tensor:
        return (feats - self.feat_mean) / self.feat_std

    def subsample(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, T, F]`` -> ``[B, T', F']`` and the new lengths."""
        if self.subsampling == "stack" and self.factor > 1:
            k = self.factor
            batch, steps, feats = x.shape
            pad = (-steps) % k
            if pad:
                x = F.pad(x, (0, 0, 0, pad))
            return x.reshape(batch, (steps + pad) // k, feats * k), (lengths + k - 1) // k
        if self.conv is not None:
            # Each stride-2 layer is followed by zeroing the frames past every utterance's new
            # length: they hold ReLU(bias) and more, which the next layer's kernel would read at
            # the boundary, so a padded utterance would differ from the same one alone.
            x = x.transpose(1, 2)
            for layer in self.conv:
                x = layer(x)
                if isinstance(layer, nn.Conv1d):
                    lengths = (lengths + 1) // 2
                else:
                    positions = torch.arange(x.shape[-1], device=x.device)
                    x = x * (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1).to(x.dtype)
            return x.transpose(1, 2), lengths
        return x, lengths

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder outputs ``[B, T', H]`` and their lengths."""
        steps = feats.shape[1]
        mask = torch.arange(steps, device=feats.device).unsqueeze(0) < lengths.unsqueeze(1)
        # where, not a product: NaN or inf in the padding would survive ``* 0`` and, with frame stacking,
        # reach the real frame stacked with it
        x = torch.where(mask.unsqueeze(-1), self.normalize(feats), feats.new_zeros(()))
        if self.training and self.augment:
            x = spec_augment(x, lengths, freq_masks=self.augment.get("freq_masks", 0),
                             freq_width=self.augment.get("freq_mask_width", 0),
                             time_masks=self.augment.get("time_masks", 0),
                             time_width=self.augment.get("time_mask_width", 0))
        x, lengths = self.subsample(x, lengths)
        out, _ = self.encoder(x, lengths=lengths.clamp(min=1))
        return out, lengths

    def ctc_chunk(self, feats: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """CTC log-probabilities ``[T', V]`` of a piece ``[T, F]`` of one utterance's frames, run
        from the encoder state ``state`` (``None``: the start), and the state after it.

        For a streamable model, pieces cut at multiples of :attr:`factor` frames and run in order
        with the state carried give the whole-utterance outputs of :meth:`forward` (frame
        stacking never crosses such a cut; the last piece is zero padded as the whole pass is),
        up to the last-bit rounding of the batched kernels.
        """
        if not self.streamable:
            raise ValueError("ctc_chunk needs a streamable model (unidirectional, CTC head, subsampling=stack "
                             "or none)")
        x, _ = self.subsample(self.normalize(feats).unsqueeze(0), torch.tensor([feats.shape[0]]))
        out, state = self.encoder(x, state)
        return torch.log_softmax(self.output(self.drop(out)), -1)[0], state

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out, lengths = self.encode(feats, lengths)
        if self.head_kind == "ctc":
            return torch.log_softmax(self.output(self.drop(out)), -1), lengths
        mask = torch.arange(out.shape[1], device=out.device).unsqueeze(0) < lengths.unsqueeze(1)
        if self.pooling == "mean":
            pooled = masked_mean(out, mask)
        elif self.pooling == "max":
            pooled = masked_max(out, mask)
        else:
            idx = (lengths - 1).clamp(min=0)
            pooled = out[torch.arange(out.shape[0]), idx]
            if self.bidirectional:  # the backward direction's summary is at step 0
                half = out.shape[-1] // 2
                pooled = torch.cat([pooled[:, :half], out[:, 0, half:]], -1)
        return self.output(self.drop(pooled)), lengths


class StreamingRecognizer:
    """Recognise audio pushed chunk by chunk with a unidirectional CTC model.

    Each feature frame is normalised, stacked, run through ``encoder.step`` with the carried
    state and the output layer on its own, so the log-probabilities (and the transcript) do not
    depend on the chunking.

    Args:
        model: A streamable :class:`SpeechModel`.
        features: Its feature extractor.
        tokens: Token strings by id (0 = blank).
        units: ``'chars'`` or ``'words'`` (how tokens are joined).
        beam_size: 1 for greedy decoding, else prefix beam search.
        lexicon: Optional word constraint (with it, even ``beam_size=1`` runs the beam search, as
            whole-file decoding does).
        token_threshold: Beam-search token pruning.
    """

    def __init__(self, model: SpeechModel, features: SpeechFeatures, tokens: Sequence[str], units: str,
                 beam_size: int = 1, lexicon: Lexicon | None = None, token_threshold: float = -12.0) -> None:
        if not model.streamable:
            raise ValueError("streaming needs a unidirectional CTC model with model.subsampling=stack or none "
                             "(train with model.bidirectional=false)")
        self.model, self.features, self.tokens, self.units = model.eval(), features, list(tokens), units
        self.beam_size = beam_size
        # the whole-file pass (decode_ctc, decode_blocks) decodes greedily only without a lexicon
        use_search = beam_size > 1 or lexicon is not None
        self.search = CTCPrefixBeamSearch(max(1, beam_size), 0, lexicon, token_threshold) if use_search else None
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self.stream = self.features.stream()
        self._pending = torch.zeros(0, self.features.size)
        self._state: Any = None
        self._last = 0
        self._labels: list[int] = []
        self.log_probs: list[Tensor] = []
        if self.search is not None:
            self.search.reset()

    def _run_frames(self, frames: Tensor, final: bool) -> None:
        x = torch.cat([self._pending, self.model.normalize(frames)]) if frames.numel() else self._pending
        k = self.model.factor
        usable = x.shape[0] - x.shape[0] % k
        if final and usable < x.shape[0]:
            x = torch.cat([x, x.new_zeros(k - x.shape[0] % k, x.shape[1])])
            usable = x.shape[0]
        self._pending = x[usable:]
        rows = []
        with torch.no_grad():
            for start in range(0, usable, k):
                step_in = x[start : start + k].reshape(1, -1)
                out, self._state = self.model.encoder.step(step_in, self._state)  # type: ignore[operator]
                rows.append(torch.log_softmax(self.model.output(out), -1))
        if not rows:
            return
        lp = torch.cat(rows)  # [n, V]
        self.log_probs.append(lp)
        if self.search is not None:
            self.search.advance(lp)
        else:
            best = lp.argmax(-1).tolist()
            self._labels += collapse_alignment(best, 0, self._last)
            self._last = best[-1]

    def push(self, samples: Tensor) -> str:
        """Feed audio (mono ``[n]``, or ``[n, 1]`` / ``[1, n]``); returns the transcript so far."""
        self._run_frames(self.stream.push(mono_samples(samples, "streamed audio")), final=False)
        return self.partial()

    def partial(self) -> str:
        labels = self.search.best() if self.search is not None else self._labels
        return join_tokens([self.tokens[i] for i in labels], self.units)

    def finish(self) -> str:
        """End of audio: the final transcript."""
        self._run_frames(self.stream.flush(), final=True)
        return self.partial()


def mono_samples(samples: Any, source: str = "audio") -> Tensor:
    """A waveform as a float32 ``[T]`` tensor: ``[T]``, ``[1, T]`` and ``[T, 1]`` are accepted; a
    multi-channel array is a one-line error (flattening ``[T, 2]`` would interleave the channels)."""
    x = torch.as_tensor(samples)
    if x.dim() > 1 and sum(int(n) > 1 for n in x.shape) > 1:
        raise ValueError(f"{source}: expected a mono waveform [samples], got shape {list(x.shape)}; down-mix it "
                         f"(e.g. x.mean(-1) for [samples, channels]) or read the file with rnnkit.data.read_wav")
    x = x.reshape(-1)
    if not x.is_floating_point():
        raise ValueError(f"{source}: expected float samples in [-1, 1], got dtype {x.dtype}; scale integer PCM "
                         f"(e.g. x / 32768 for int16) or read the file with rnnkit.data.read_wav")
    return x.to(torch.float32)


# -- text and data -----------------------------------------------------------------------------
def normalize_text(text: str, lowercase: bool) -> str:
    """Collapse whitespace (and lowercase)."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def join_tokens(tokens: Sequence[str], units: str) -> str:
    """Tokens to text: characters concatenated, words joined by spaces."""
    text = "".join(tokens) if units == "chars" else " ".join(tokens)
    return " ".join(text.split())


def split_units(text: str, units: str) -> list[str]:
    return list(text) if units == "chars" else text.split()


@dataclass
class Utterance:
    """One training or test example (a file, or a synthesized connected-digit utterance)."""

    key: str
    target: str
    speaker: str = ""
    index: int | None = None
    wave: Tensor | None = None
    parts: list[Utterance] = field(default_factory=list)


def list_items(path: str | Path, cfg: DataConfig) -> list[Utterance]:
    """Files of a folder (labels from names by ``data.pattern``) or of a CSV/TSV manifest."""
    from ..data.audio import list_audio_folder, read_audio_manifest

    p = Path(path)
    if p.is_dir():
        items = list_audio_folder(p, cfg.pattern)
    elif p.is_file():
        items = read_audio_manifest(p, cfg.path_column, cfg.label_column)
    else:
        raise FileNotFoundError(f"audio data not found: {p}; fix: give a folder of wav files or a CSV/TSV manifest "
                                f"(relative paths start at {Path.cwd()})")
    out = []
    for it in items:
        if it.label is None:
            raise ConfigError(f"{it.path}: no label; add a 'label' group to data.pattern or a label column")
        if cfg.mode == "words" and not it.label.strip():
            raise ConfigError(f"{p}: {it.path} has an empty label; fill in its {cfg.label_column!r} column or "
                              f"remove the row")
        index = it.metadata.get("index")
        out.append(Utterance(it.path, normalize_text(it.label, cfg.lowercase), it.metadata.get("speaker", ""),
                             int(index) if index is not None and str(index).isdigit() else None))
    return out


def split_test(items: list[Utterance], cfg: DataConfig) -> tuple[list[Utterance], list[Utterance]]:
    """``(train, test)`` by ``data.split``."""
    if cfg.split == "none":
        return items, []
    if cfg.split == "fsdd":
        missing = [u.key for u in items if u.index is None]
        if missing:
            raise ConfigError(f"data.split=fsdd needs an 'index' group in data.pattern (FSDD names "
                              f"<digit>_<speaker>_<index>.wav); {missing[0]} has none: set data.split=none")
        return [u for u in items if u.index >= 5], [u for u in items if u.index < 5]  # type: ignore[operator]
    held = set(cfg.test_speakers)
    speakers = {u.speaker for u in items}
    unknown = sorted(held - speakers)
    if unknown:
        raise ConfigError(f"data.test_speakers: {unknown[0]!r} is not a speaker of the data "
                          f"(speakers: {', '.join(sorted(speakers))})")
    return [u for u in items if u.speaker not in held], [u for u in items if u.speaker in held]


def split_dev(items: list[Utterance], cfg: DataConfig, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """``(train, dev)``: a random fraction, or whole speakers until the fraction is reached."""
    rng = random.Random(seed)
    if cfg.dev_split == "speaker":
        speakers = sorted({u.speaker for u in items})
        if len(speakers) < 2:
            raise ConfigError("data.dev_split=speaker needs at least two speakers in the training data")
        rng.shuffle(speakers)
        dev_speakers: set[str] = set()
        count = 0
        for s in speakers[:-1]:
            dev_speakers.add(s)
            count += sum(u.speaker == s for u in items)
            if count >= cfg.dev_fraction * len(items):
                break
        return [u for u in items if u.speaker not in dev_speakers], [u for u in items if u.speaker in dev_speakers]
    order = list(range(len(items)))
    rng.shuffle(order)
    n_dev = max(1, round(cfg.dev_fraction * len(items)))
    dev = set(order[:n_dev])
    return [u for i, u in enumerate(items) if i not in dev], [u for i, u in enumerate(items) if i in dev]


class AudioLoader:
    """Reads files at the model's rate, counting resampled and down-mixed files."""

    def __init__(self, sample_rate: int | None, mono: str) -> None:
        self.sample_rate, self.mono = sample_rate, mono
        self.notes: Counter[str] = Counter()

    def __call__(self, path: str) -> Tensor:
        from ..data.audio import read_wav

        clip = read_wav(path, target_rate=self.sample_rate, mono=self.mono)
        if self.sample_rate is None:
            self.sample_rate = clip.sample_rate
        for note in clip.notes:
            self.notes[re.sub(r"\d+ channels", "channels", note)] += 1
        return clip.waveform

    def summary(self) -> str:
        return "; ".join(f"{n} files {note}" for note, n in self.notes.items())


def connect_digits(sources: Sequence[Utterance], count: int, cfg: DataConfig, sample_rate: int, seed: int,
                   name: str) -> list[Utterance]:
    """Synthesize ``count`` utterances of ``min_digits..max_digits`` recordings from ``sources``
    (loaded waves) joined with random silences, plus white noise at a random SNR."""
    if not sources:
        return []
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = (ms * sample_rate / 1000 for ms in cfg.silence_ms)
    out = []
    for i in range(count):
        parts = [rng.choice(sources) for _ in range(rng.randint(cfg.min_digits, cfg.max_digits))]
        pieces = [torch.zeros(int(rng.uniform(lo, hi)))]
        for part in parts:
            assert part.wave is not None
            pieces += [part.wave, torch.zeros(int(rng.uniform(lo, hi)))]
        wave = torch.cat(pieces)
        if cfg.snr_db:
            speech = torch.cat([p.wave for p in parts if p.wave is not None])
            power = float(speech.pow(2).mean()) or 1e-8
            snr = rng.uniform(cfg.snr_db[0], cfg.snr_db[1])
            wave = wave + torch.randn(wave.shape, generator=gen) * math.sqrt(power / 10 ** (snr / 10))
        out.append(Utterance(f"{name}-{i}", " ".join(p.target for p in parts), wave=wave, parts=parts))
    return out


@dataclass
class Prepared:
    """Everything fitted on the training data that prediction needs."""

    features: SpeechFeatures
    head: str
    units: str
    labels: list[str]  # classifier classes, or CTC tokens with the blank first
    lowercase: bool
    lexicon_words: list[str]
    data: DataConfig

    def to_json(self) -> dict[str, Any]:
        return {"features": self.features.to_config(), "head": self.head, "units": self.units, "labels": self.labels,
                "lowercase": self.lowercase, "lexicon_words": self.lexicon_words, "data": asdict(self.data)}

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> Prepared:
        return cls(SpeechFeatures(**meta["features"]), meta["head"], meta["units"], list(meta["labels"]),
                   bool(meta["lowercase"]), list(meta.get("lexicon_words", [])), DataConfig(**meta["data"]))

    def encode_target(self, text: str, source: str) -> list[int]:
        index = {t: i for i, t in enumerate(self.labels)}
        if self.head == "classifier":
            if text not in index:
                raise ConfigError(f"{source}: label {text!r} is not a trained class ({', '.join(self.labels)}); "
                                  f"fix: remove the file or add training recordings of that class")
            return [index[text]]
        units = split_units(text, self.units)
        unknown = [u for u in units if u not in index]
        if unknown:
            raise ConfigError(f"{source}: {self.units[:-1]} {unknown[0]!r} was not in the training transcripts; "
                              f"fix: remove it from this transcript or add training transcripts that have it")
        return [index[u] for u in units]


def collate(items: Sequence[tuple[Tensor, list[int]]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """feats ``[B, T, F]`` (zero padded), lengths ``[B]``, targets ``[B, S]`` (-1 padded), target lengths."""
    lengths = torch.tensor([f.shape[0] for f, _ in items], dtype=torch.long)
    feats = torch.zeros(len(items), int(lengths.max()), items[0][0].shape[1])
    width = max(1, max(len(t) for _, t in items))
    targets = torch.full((len(items), width), -1, dtype=torch.long)
    for b, (f, t) in enumerate(items):
        feats[b, : f.shape[0]] = f
        targets[b, : len(t)] = torch.tensor(t, dtype=torch.long)
    return feats, lengths, targets, torch.tensor([len(t) for _, t in items], dtype=torch.long)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[Tensor, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, list[int]]:
        return self.items[i]


def make_loader(items: list[tuple[Tensor, list[int]]], batch_size: int, *, shuffle: bool,
                seed: int) -> torch.utils.data.DataLoader:
    from ..data import BucketBatchSampler

    sampler = BucketBatchSampler([f.shape[0] for f, _ in items], batch_size, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(_ListDataset(items), batch_sampler=sampler, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed))  # seed draws off the global random state


def ctc_min_frames(target: Sequence[int]) -> int:
    """The fewest frames a CTC alignment of ``target`` needs: one per label, plus a blank between
    each pair of equal neighbours (``"ee"`` needs 3), else no alignment exists and the loss is
    infinite (zeroed by ``zero_infinity``: the utterance teaches nothing)."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


def feature_statistics(features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Mean and (population) standard deviation of every feature over all frames of ``features``
    (``[frames, F]`` each), in float64 and in two passes over the utterances: no concatenated copy
    of the training set, and a feature that never changes gets exactly its value as mean and 0 as
    spread (in float32 the mean's rounding error, divided by the clamped std, came out as +-0.3)."""
    count = sum(f.shape[0] for f in features)
    wide = torch.float64 if features[0].device.type != "mps" else torch.float32  # MPS has no float64
    mean = torch.stack([f.to(wide).sum(0) for f in features]).sum(0) / count
    var = torch.stack([(f.to(wide) - mean).square().sum(0) for f in features]).sum(0) / count
    return mean, var.sqrt()


def build_model(hyper: dict[str, Any]) -> SpeechModel:
    return SpeechModel(**hyper)


def read_word_list(path: str | Path, lowercase: bool = False) -> list[str]:
    """The words of a lexicon file (whitespace separated), lowercased like the transcripts when
    ``lowercase`` (``data.lowercase``): the model never writes capitals then."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"lexicon word list not found: {p} (one word per line, or decode.lexicon=train)")
    from ..data.io import read_text

    words = sorted({normalize_text(w, lowercase) for line in read_text(p).splitlines() for w in line.split()})
    if not words:
        raise ConfigError(f"lexicon word list {p} is empty")
    return words


# -- chunked decoding of long files ------------------------------------------------------------
def chunk_windows(frames: int, window: int, context: int = 0, factor: int = 1) -> list[tuple[int, int, int, int]]:
    """How chunked decoding cuts ``frames`` feature frames: ``(start, stop, keep_start, keep_stop)``
    per chunk, in order.

    The network sees ``[start, stop)``, at most ``window`` frames; only the outputs of the kept
    part ``[keep_start, keep_stop)`` are used, and the kept parts tile ``[0, frames)`` with no
    gap or overlap. Up to ``context`` frames each side (at most a quarter of the window, so at
    least half of it is kept) give a bidirectional or convolutional network the audio around its
    kept part. Every cut falls on a multiple of ``factor`` (the subsampling), so the kept
    subsampled outputs also tile the utterance's.
    """
    if frames < 1 or window < 1 or context < 0 or factor < 1:
        raise ValueError(f"chunk_windows: need frames, window, factor >= 1 and context >= 0, got {frames}, "
                         f"{window}, {context}, {factor}")
    window = max(factor, window // factor * factor)
    context = min(context, window // 4) // factor * factor
    keep = window - 2 * context
    return [(max(0, s - context), min(frames, s + keep + context), s, min(frames, s + keep))
            for s in range(0, frames, keep)]


def decode_blocks(blocks: Iterable[Tensor], beam_size: int = 1, lexicon: Lexicon | None = None,
                  token_threshold: float = -12.0) -> list[int]:
    """The CTC labelling of log-probabilities given as consecutive blocks ``[n, V]`` of one
    utterance: the same as decoding them joined (greedy collapses across blocks; the beam search
    advances block by block), holding one block at a time."""
    if beam_size <= 1 and lexicon is None:
        labels: list[int] = []
        last: int | None = None
        for lp in blocks:
            best = lp.argmax(-1).tolist()
            labels += collapse_alignment(best, 0, last)
            last = best[-1] if best else last
        return labels
    search = CTCPrefixBeamSearch(max(beam_size, 1), 0, lexicon, token_threshold)
    for lp in blocks:
        search.advance(lp)
    return search.best()


# -- scoring -----------------------------------------------------------------------------------
def error_rates(counts: Sequence[tuple[int, int, int, int]]) -> dict[str, Any]:
    """Corpus-level WER and CER from :func:`rnnkit.nn.ctc.error_counts` rows: total word
    (character) errors over total reference words (characters), as jiwer computes them.

    With no reference word at all (every reference empty) a rate is undefined: ``wer`` and
    ``cer`` are ``None`` (null in metrics.json) and the errors, all insertions, are given as
    ``inserted_words`` and ``inserted_chars``. (jiwer 3 raises here and jiwer 4 returns the
    insertion count as the WER; neither is a rate, and averaging one into a table would mislead.)
    When only some references are empty, their insertions count against the others' words.
    """
    word_errors, words, char_errors, chars = (sum(c[i] for c in counts) for i in range(4))
    if words == 0:
        return {"wer": None, "cer": None, "inserted_words": word_errors, "inserted_chars": char_errors}
    return {"wer": word_errors / words, "cer": char_errors / chars}


def empty_references_note(utterances: int, inserted_words: int) -> str:
    """The note that goes with :func:`error_rates`' undefined WER and CER."""
    return (f"every reference transcript is empty ({utterances} utterances): WER and CER are undefined "
            f"(reported as null); the hypotheses have {inserted_words} words, all insertions (inserted_words)")


def check_classifier_clip(features: SpeechFeatures, num_samples: int, decode: DecodeConfig, source: str) -> None:
    """One-line error for a clip longer than ``decode.max_chunk_seconds`` for an isolated-word
    classifier: it labels a clip as a whole (pooled over time), so it is not decoded in chunks."""
    if features.num_frames(num_samples) <= features.window_frames(decode.max_chunk_seconds):
        return
    seconds = num_samples / features.sample_rate
    raise ConfigError(f"{source}: {seconds:.1f} s is longer than decode.max_chunk_seconds="
                      f"{decode.max_chunk_seconds:g}, and an isolated-word classifier labels a clip as a whole "
                      f"(it is not decoded in chunks); fix: trim the clip, or add --set "
                      f"decode.max_chunk_seconds={math.ceil(seconds)}")


def _split_decode_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--set`` items as ``(data.* and others, decode.*)``."""
    decode = [o for o in overrides if o.strip().startswith("decode.")]
    return [o for o in overrides if o not in decode], decode


def _with_decode_overrides(decode: DecodeConfig, overrides: Sequence[str]) -> DecodeConfig:
    """``decode`` with ``decode.KEY=VALUE`` items applied and checked (one-line errors)."""
    from .config import apply_overrides, from_dict

    if not overrides:
        return decode
    return from_dict(DecodeConfig, apply_overrides({"decode": asdict(decode)}, list(overrides))["decode"], "decode.")


# -- trained model -----------------------------------------------------------------------------
class TrainedSpeechModel:
    """A speech model with its features and tokens: transcribe or classify wav files, score data."""

    def __init__(self, model: SpeechModel, prep: Prepared, decode: DecodeConfig | None = None) -> None:
        self.model, self.prep = model.eval(), prep
        self.decode = decode or DecodeConfig()

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedSpeechModel:
        run, meta = RunDir.open_task(run_dir, NAME)
        speech = run.read_json("speech.json")
        try:
            prep = Prepared.from_json(speech)
            decode = DecodeConfig(**speech.get("decode", {}))
        except (KeyError, TypeError, ValueError) as err:  # ValueError: sizes past the feature limits, bad data options
            raise RunError(f"{run.file('speech.json')} is corrupt ({err}); train again") from None
        model = run.load_into(run.build_model(meta, build_model))
        return cls(model, prep, decode)  # type: ignore[arg-type]

    @property
    def sample_rate(self) -> int:
        return self.prep.features.sample_rate

    def lexicon(self, spec: str | None = None) -> Lexicon | None:
        """The beam-search lexicon for ``spec`` (``'train'``, a word-list path, or ``None``)."""
        spec = self.decode.lexicon if spec is None else spec
        if not spec or spec == "none" or self.prep.head != "ctc":
            return None
        words = self.prep.lexicon_words if spec == "train" else read_word_list(spec, self.prep.lowercase)
        return Lexicon.from_words(words, self.prep.labels, " ", self.prep.units)

    def load_audio(self, path: str | Path) -> tuple[Tensor, tuple[str, ...]]:
        """A file at the model's rate (resampled and down-mixed as needed, with notes)."""
        from ..data.audio import read_wav

        clip = read_wav(path, target_rate=self.sample_rate, mono=self.prep.data.mono)
        self.prep.features.check_length(int(clip.waveform.shape[0]), str(path))
        return clip.waveform, clip.notes

    def scores(self, waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Model outputs for waveforms: ``(log-probs [B, T', V], lengths)`` or ``(logits [B, C], _)``."""
        feats = [self.prep.features(w) for w in waves]
        batch = collate([(f, []) for f in feats])
        with torch.no_grad():
            return self.model(batch[0], batch[1])

    def decode_ctc(self, log_probs: Tensor, lengths: Tensor, beam_size: int | None = None,
                   lexicon: Lexicon | None = None) -> list[str]:
        beam = self.decode.beam_size if beam_size is None else beam_size
        if beam <= 1 and lexicon is None:
            labels = ctc_greedy_decode(log_probs, lengths)
        else:
            labels = []
            for b, n in enumerate(lengths.tolist()):
                search = CTCPrefixBeamSearch(max(beam, 1), 0, lexicon, self.decode.token_threshold)
                search.advance(log_probs[b, :n])
                labels.append(search.best())
        return [join_tokens([self.prep.labels[i] for i in row], self.prep.units) for row in labels]

    def chunking(self, max_chunk_seconds: float | None = None) -> DecodeConfig:
        """The run's decoding options with ``max_chunk_seconds`` (when given) in place, checked:
        a limit that is not positive is a one-line :class:`ConfigError`."""
        decode = self.decode if max_chunk_seconds is None else replace(self.decode,
                                                                         max_chunk_seconds=max_chunk_seconds)
        decode.validate()
        return decode

    def window_frames(self, decode: DecodeConfig) -> int:
        """Feature frames in ``decode.max_chunk_seconds`` of audio (at least one)."""
        return self.prep.features.window_frames(decode.max_chunk_seconds)

    def num_frames(self, wave: Tensor) -> int:
        """Feature frames of a waveform."""
        return self.prep.features.num_frames(int(wave.shape[-1]))

    def check_classifier_length(self, wave: Tensor, decode: DecodeConfig, source: str = "audio") -> None:
        """One-line error for a clip that an isolated-word classifier would have to label in chunks."""
        if self.prep.head == "classifier":
            check_classifier_clip(self.prep.features, int(wave.shape[-1]), decode, source)

    def chunk_windows(self, frames: int, decode: DecodeConfig) -> list[tuple[int, int, int, int]]:
        """:func:`chunk_windows` for this model: streamable models run chunks of the whole window
        with carried state (no context needed); others see ``decode.chunk_context_seconds`` of
        context each side."""
        context = 0
        if not self.model.streamable:
            context = int(decode.chunk_context_seconds * self.sample_rate) // self.prep.features.hop
        return chunk_windows(frames, self.window_frames(decode), context, self.model.factor)

    def chunk_log_probs(self, feats: Tensor, decode: DecodeConfig) -> Iterator[Tensor]:
        """CTC log-probabilities of one utterance's frames ``[T, F]``, chunk by chunk: blocks that
        join into the utterance's ``[T', V]`` with no subsampled frame dropped or repeated.

        A streamable model runs the chunks in order with its recurrent state carried: the same
        outputs as one pass (up to the kernels' last-bit rounding). Another model runs each chunk
        with its context and keeps the chunk's own outputs, which differ from one pass near the
        cuts by what the network would have seen beyond the context.
        """
        k = self.model.factor
        state: Any = None
        for start, stop, keep_start, keep_stop in self.chunk_windows(int(feats.shape[0]), decode):
            with torch.no_grad():
                if self.model.streamable:
                    lp, state = self.model.ctc_chunk(feats[start:stop], state)
                    yield lp
                    continue
                scores, _ = self.model(feats[start:stop].unsqueeze(0), torch.tensor([stop - start]))
            first = (keep_start - start) // k
            yield scores[0, first : first + (keep_stop - keep_start + k - 1) // k]

    def recognize_long(self, wave: Tensor, decode: DecodeConfig, beam_size: int | None = None,
                       lexicon: Lexicon | None = None) -> dict[str, Any]:
        """A CTC transcript of one long waveform decoded in chunks (:meth:`chunk_log_probs`), with
        ``chunks``: how many. Features are computed in blocks of the window's length; the
        decoder takes the chunks' outputs in order, so memory does not grow with the file."""
        feats = self.prep.features.in_blocks(wave, self.window_frames(decode) * self.prep.features.hop)
        beam = self.decode.beam_size if beam_size is None else beam_size
        labels = decode_blocks(self.chunk_log_probs(feats, decode), beam, lexicon, self.decode.token_threshold)
        return {"text": join_tokens([self.prep.labels[i] for i in labels], self.prep.units),
                "chunks": len(self.chunk_windows(int(feats.shape[0]), decode))}

    def chunk_method(self, decode: DecodeConfig) -> str:
        """How this model decodes in chunks, for notes."""
        if self.model.streamable:
            return "state carried across chunks: the same transcript as one pass"
        return (f"up to {decode.chunk_context_seconds:g} s of context each side: words at a cut may differ from "
                f"one pass")

    def chunk_note(self, result: dict[str, Any], decode: DecodeConfig) -> list[str]:
        """The note for a result decoded in chunks (none for one pass)."""
        if "chunks" not in result:
            return []
        return [f"decoded in {result['chunks']} chunks of at most {decode.max_chunk_seconds:g} s "
                f"(decode.max_chunk_seconds; {self.chunk_method(decode)})"]

    def recognize(self, waves: Sequence[Tensor], beam_size: int | None = None,
                  lexicon: str | None = None, batch_size: int = 32, *, max_chunk_seconds: float | None = None,
                  names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Transcripts (CTC) or labels with probabilities (classifier) for waveforms at the model's rate.

        Waveforms longer than ``max_chunk_seconds`` (default: ``decode.max_chunk_seconds``) are
        decoded in chunks (:meth:`recognize_long`; their results say how many ``chunks``); the
        rest in batches of ``batch_size``. A classifier refuses them (one line naming ``names``).
        ``waves`` is a list: one waveform is ``[wave]``."""
        if getattr(waves, "ndim", 2) < 2:  # one tensor or array [T]: iterating it would give T scalars
            raise TypeError(f"recognize takes a list of waveforms, got a single {type(waves).__name__} of shape "
                            f"{list(getattr(waves, 'shape', []))}; wrap it in a list: recognize([wave])")
        sources = [names[i] if names is not None else f"audio {i + 1}" for i in range(len(waves))]
        waves = [mono_samples(w, source) for w, source in zip(waves, sources)]
        for wave, source in zip(waves, sources):
            self.prep.features.check_length(int(wave.shape[0]), source)
        decode = self.chunking(max_chunk_seconds)
        window = self.window_frames(decode)
        for i, wave in enumerate(waves):
            self.check_classifier_length(wave, decode, names[i] if names is not None else f"audio {i + 1}")
        lex = self.lexicon(lexicon)
        out: list[dict[str, Any]] = [{} for _ in waves]
        short = [i for i, w in enumerate(waves) if self.num_frames(w) <= window]
        for start in range(0, len(short), batch_size):
            batch = short[start : start + batch_size]
            for i, res in zip(batch, self._recognize_batch([waves[i] for i in batch], beam_size, lex)):
                out[i] = res
        for i in sorted(set(range(len(waves))) - set(short)):
            out[i] = self.recognize_long(waves[i], decode, beam_size, lex)
        return out

    def _recognize_batch(self, waves: Sequence[Tensor], beam_size: int | None,
                         lex: Lexicon | None) -> list[dict[str, Any]]:
        scores, lengths = self.scores(waves)
        if self.prep.head == "ctc":
            return [{"text": t} for t in self.decode_ctc(scores, lengths, beam_size, lex)]
        out = []
        for row in torch.softmax(scores, -1).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"text": self.prep.labels[best], "label": self.prep.labels[best],
                        "probabilities": dict(zip(self.prep.labels, row))})
        return out

    def streamer(self, beam_size: int | None = None, lexicon: str | None = None) -> StreamingRecognizer:
        """A :class:`StreamingRecognizer` for this model."""
        beam = self.decode.beam_size if beam_size is None else beam_size
        return StreamingRecognizer(self.model, self.prep.features, self.prep.labels, self.prep.units, beam,
                                   self.lexicon(lexicon), self.decode.token_threshold)

    def transcribe_stream(self, wave: Tensor, chunk_samples: int, beam_size: int | None = None,
                          lexicon: str | None = None) -> str:
        """Feed ``wave`` in chunks of ``chunk_samples`` to a streaming recognizer."""
        if chunk_samples < 1:
            raise ValueError(f"chunk size must be at least one sample, got {chunk_samples}")
        rec = self.streamer(beam_size, lexicon)
        for start in range(0, int(wave.shape[0]), chunk_samples):
            rec.push(wave[start : start + chunk_samples])
        return rec.finish()

    def transcribe(self, paths: Sequence[str | Path], *, beam_size: int | None = None, lexicon: str | None = None,
                   stream: bool = False, chunk_ms: float = 200.0,
                   max_chunk_seconds: float | None = None) -> list[dict[str, Any]]:
        """Recognise files: ``{"path", "text", "seconds", "rtf", "notes"}`` per file (plus
        ``label`` and ``probabilities`` for a classifier). ``rtf`` is processing time over audio
        duration. Files longer than ``max_chunk_seconds`` (default: ``decode.max_chunk_seconds``)
        are decoded in chunks, with ``chunks`` and a note saying so."""
        check_batch(paths, "files", "transcribe", "transcribe([path])")
        if stream and not self.model.streamable:
            raise ValueError("this model cannot stream: it needs model.bidirectional=false, model.head=ctc and "
                             "model.subsampling=stack or none; transcribe without --stream")
        decode = self.chunking(max_chunk_seconds)
        results = []
        for path in paths:
            wave, notes = self.load_audio(path)
            start = time.perf_counter()
            if stream:
                chunk = max(1, round(chunk_ms * self.sample_rate / 1000))
                res: dict[str, Any] = {"text": self.transcribe_stream(wave, chunk, beam_size, lexicon)}
            else:
                res = self.recognize([wave], beam_size, lexicon, max_chunk_seconds=decode.max_chunk_seconds,
                                     names=[str(path)])[0]
            seconds = time.perf_counter() - start
            duration = wave.shape[0] / self.sample_rate
            results.append({"path": str(path), **res, "seconds": seconds, "rtf": seconds / duration,
                            "notes": [*notes, *self.chunk_note(res, decode)]})
        return results

    def use_overrides(self, overrides: Sequence[str]) -> None:
        """Read and decode later audio files (``transcribe``, ``predict``) with ``--set`` overrides:
        ``data.mono`` (how multi-channel files become mono) is the data key that can change after
        training; ``decode.*`` keys (beam, lexicon, chunk limits) all can."""
        from .config import reading_overrides

        data, decode = _split_decode_overrides(overrides)
        self.prep.data = reading_overrides(self.prep.data, data, ("mono",), "--set")
        self.decode = _with_decode_overrides(self.decode, decode)

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """``rnnkit predict RUN a.wav b.wav``: transcripts or labels of wav files (with a ``note``
        when a file was resampled, down-mixed or decoded in chunks)."""
        check_batch(inputs, "audio files")
        out = []
        for r in self.transcribe(inputs):
            row = {k: v for k, v in r.items() if k not in ("seconds", "notes")}
            if r["notes"]:
                row["note"] = "; ".join(r["notes"])
            out.append(row)
        return out

    def evaluate(self, path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Metrics on labelled audio read as in training (``data.*`` overrides of
        :data:`EVALUATE_DATA_KEYS` change how; ``decode.*`` ones how it is decoded, e.g. ``decode.max_chunk_seconds``). With
        ``data.split=fsdd`` or ``speaker`` only the test part is scored; ``data.split=none``
        scores every file. Connected-digit runs build test utterances from those files."""
        from .config import apply_overrides, reading_overrides

        data_overrides, decode_overrides = _split_decode_overrides(overrides)
        data = apply_overrides({"data": asdict(self.prep.data)}, data_overrides)
        if set(data) != {"data"}:
            raise ConfigError(f"evaluate --set accepts data.* and decode.* keys only, got "
                              f"{sorted(set(data) - {'data'})}")
        # only EVALUATE_DATA_KEYS apply to new files: e.g. data.n_mels=80 was ignored (the features are the model's)
        cfg = reading_overrides(self.prep.data, data_overrides, EVALUATE_DATA_KEYS, "evaluate --set")
        saved, self.decode = self.decode, _with_decode_overrides(self.decode, decode_overrides)
        try:
            return self._evaluate_items(path, cfg)
        finally:  # the overrides hold for this call only
            self.decode = saved

    def _evaluate_items(self, path: str | Path, cfg: DataConfig) -> dict[str, Any]:
        items = list_items(path, cfg)
        _, test = split_test(items, cfg)
        items = test if cfg.split != "none" else items
        if not items:
            raise ConfigError(f"no test recordings in {path} under data.split={cfg.split}; set data.split=none")
        loader = AudioLoader(self.sample_rate, cfg.mono)
        for u in items:
            u.wave = loader(u.key)
        if cfg.mode == "connected_digits":
            items = connect_digits(items, cfg.connected_eval, cfg, self.sample_rate, seed=2, name="test")
        notes = [loader.summary()] if loader.notes else []
        notes += self.unknown_reference_notes(items)
        metrics = self.score(items)
        notes += metrics.pop("notes", [])
        if notes:
            metrics["notes"] = notes
        return metrics

    def unknown_reference_notes(self, items: Sequence[Utterance]) -> list[str]:
        """Notes on references the model cannot produce: classes it was not trained on, or
        characters/words outside its CTC tokens (they are scored as errors, not skipped)."""
        known = set(self.prep.labels[1:] if self.prep.head == "ctc" else self.prep.labels)
        unknown: Counter[str] = Counter()
        count = 0
        for u in items:
            units = [u.target] if self.prep.head == "classifier" else split_units(u.target, self.prep.units)
            missing = [x for x in units if x not in known]
            count += bool(missing)
            unknown.update(missing)
        if not count:
            return []
        what = {"classifier": "labels that are not trained classes", "chars": "characters the model cannot output",
                "words": "words the model cannot output"}["classifier" if self.prep.head == "classifier"
                                                            else self.prep.units]
        shown = ", ".join(repr(x) for x, _ in unknown.most_common(5)) + (", ..." if len(unknown) > 5 else "")
        return [f"{count} of {len(items)} references have {what} ({shown}); they count as errors"]

    def score(self, items: Sequence[Utterance], beam_size: int | None = None, lexicon: str | None = None,
              max_chunk_seconds: float | None = None) -> dict[str, Any]:
        """Accuracy (classifier) or WER/CER (CTC, :func:`error_rates`) and the real-time factor on
        loaded utterances, with ``notes`` on utterances decoded in chunks and on WER/CER left
        undefined (every reference empty)."""
        waves = [u.wave for u in items if u.wave is not None]
        if len(waves) != len(items) or not items:
            raise ValueError("score() needs loaded utterances (wave set)")
        decode = self.chunking(max_chunk_seconds)
        start = time.perf_counter()
        results = self.recognize(waves, beam_size, lexicon, max_chunk_seconds=decode.max_chunk_seconds,
                                 names=[u.key for u in items])
        seconds = time.perf_counter() - start
        hyps = [r["text"] for r in results]
        audio = sum(w.shape[0] for w in waves) / self.sample_rate
        metrics: dict[str, Any] = {"utterances": len(items)}
        notes: list[str] = []
        refs = [u.target for u in items]
        if self.prep.head == "classifier":
            metrics["accuracy"] = sum(r == h for r, h in zip(refs, hyps)) / len(refs)
        else:
            metrics.update(error_rates([error_counts(r, h) for r, h in zip(refs, hyps)]))
            metrics["sentence_accuracy"] = sum(r == h for r, h in zip(refs, hyps)) / len(refs)
            if metrics["wer"] is None:
                notes.append(empty_references_note(len(items), metrics["inserted_words"]))
        metrics["rtf"] = seconds / audio
        metrics["audio_seconds"] = audio
        chunked = [r for r in results if "chunks" in r]
        if chunked:
            metrics["chunked_utterances"] = len(chunked)
            notes.append(f"{len(chunked)} of {len(items)} utterances are longer than decode.max_chunk_seconds="
                         f"{decode.max_chunk_seconds:g} and were decoded in chunks ({self.chunk_method(decode)})")
        if notes:
            metrics["notes"] = notes
        self.last_hypotheses = hyps
        return metrics


# -- training ----------------------------------------------------------------------------------
def _load_all(items: list[Utterance], loader: AudioLoader) -> None:
    for u in items:
        u.wave = loader(u.key)


def split_table(metrics: dict[str, Any], splits: Sequence[str], head: str) -> str:
    """The report's table of dev/test scores, with the columns of the model's head only: accuracy for
    a classifier, WER, CER and sentence accuracy for CTC (a column that cannot apply would read ``nan``)."""
    from .report import markdown_table

    keys = ["accuracy"] if head == "classifier" else ["wer", "cer", "sentence_accuracy"]
    names = {"accuracy": "accuracy", "wer": "WER", "cer": "CER", "sentence_accuracy": "sentence accuracy"}
    rows = [[split, *(_cell(metrics[split].get(k, math.nan)) for k in (*keys, "rtf")), metrics[split]["utterances"]]
            for split in splits]
    return markdown_table(["split", *(names[k] for k in keys), "real-time factor", "utterances"], rows)


def _cell(value: Any) -> Any:
    """A report table cell: an undefined metric (``None``, e.g. WER with every reference empty) as "n/a"."""
    return "n/a" if value is None else value


def drop_long(train_items: list[Utterance], dev_items: list[Utterance], sample_rate: int,
              max_seconds: float | None) -> tuple[list[Utterance], list[Utterance], str]:
    """Training and dev utterances without those longer than ``data.max_seconds``, and the log line
    saying how many went (empty when none). Training runs an utterance whole (activations for
    back-propagation grow with its length, and a bidirectional model cannot be cut), so a
    minutes-long recording would exhaust memory; evaluation and transcription decode such files in
    chunks instead. Every training (or dev) utterance too long is a one-line error."""
    if max_seconds is None:
        return train_items, dev_items, ""
    limit = max_seconds * sample_rate

    def short(items: list[Utterance]) -> list[Utterance]:
        return [u for u in items if u.wave is not None and u.wave.shape[0] <= limit]

    kept_train, kept_dev = short(train_items), short(dev_items)
    gone = [u for u in train_items + dev_items if u.wave is not None and u.wave.shape[0] > limit]
    if not gone:
        return train_items, dev_items, ""
    longest = max(gone, key=lambda u: u.wave.shape[0])  # type: ignore[union-attr]
    seconds = longest.wave.shape[0] / sample_rate  # type: ignore[union-attr]
    for name, kept in (("training", kept_train), ("dev", kept_dev)):
        if not kept:
            raise ConfigError(f"every {name} utterance is longer than data.max_seconds={max_seconds:g} (the longest, "
                              f"{longest.key}, has {round(seconds, 1):g} s); fix: cut the recordings into shorter "
                              f"utterances, or raise data.max_seconds")
    return kept_train, kept_dev, (
        f"skipped {len(train_items) - len(kept_train)} training and {len(dev_items) - len(kept_dev)} dev utterances "
        f"longer than data.max_seconds={max_seconds:g} (the longest, {longest.key}, has {round(seconds, 1):g} s); cut them "
        f"into shorter utterances or raise data.max_seconds to train on them")


def dev_metrics(config: Config) -> dict[str, str | None]:
    """Every quality metric ``train`` reports under ``metrics["dev"]`` for ``config``, with its
    direction: ``"max"`` (higher is better), ``"min"`` (lower is better) or ``None`` (no better
    direction). Counts and speeds are left out. ``rnnkit compare`` reads it."""
    if config.head() == "classifier":
        return {"accuracy": "max"}
    return {"wer": "min", "cer": "min", "sentence_accuracy": "max"}


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: the one that selects the best epoch (accuracy for
    the classifier head, WER for CTC)."""
    return "accuracy" if config.head() == "classifier" else "wer"


def train(config: Config, train_path: str | Path, dev_path: str | Path | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import plot_confusion, plot_learning_curves

    cfg, t0 = config, time.perf_counter()
    d, m = cfg.data, cfg.model
    head = cfg.head()
    torch.manual_seed(cfg.train.seed)
    items = list_items(train_path, d)
    train_items, test_items = split_test(items, d)
    if dev_path is not None:
        dev_items = list_items(dev_path, d)
    else:
        train_items, dev_items = split_dev(train_items, d, cfg.train.seed)
    if not train_items or not dev_items:
        raise ConfigError(f"no {'training' if not train_items else 'dev'} recordings after the splits "
                          f"(data.split={d.split}, data.dev_split={d.dev_split})")
    loader = AudioLoader(d.sample_rate, d.mono)
    for group in (train_items, dev_items, test_items):
        _load_all(group, loader)
    rate = loader.sample_rate
    assert rate is not None
    log(f"{len(train_items)} training / {len(dev_items)} dev / {len(test_items)} test recordings at {rate} Hz"
        + (f"; {loader.summary()}" if loader.notes else ""))
    if head == "ctc":
        empty = [u.key for u in train_items + dev_items if not u.target]
        if empty:
            log(f"warning: {len(empty)} transcripts are empty (e.g. {empty[0]}): trained as silence; fill in "
                f"the {d.label_column!r} column if they are missing")
    if head == "ctc" and all(not u.target for u in dev_items):
        raise ConfigError(f"every dev transcript is empty ({len(dev_items)} utterances): WER, the dev metric, is "
                          f"undefined; fix: fill in the {d.label_column!r} column of the dev data (or give --dev "
                          f"with transcripts)")
    if d.mode == "connected_digits":
        train_items = connect_digits(train_items, d.connected_train, d, rate, cfg.train.seed, "train")
        dev_items = connect_digits(dev_items, d.connected_eval, d, rate, cfg.train.seed + 1, "dev")
        test_items = connect_digits(test_items, d.connected_eval, d, rate, 2, "test")
        log(f"connected digits: {len(train_items)} / {len(dev_items)} / {len(test_items)} utterances of "
            f"{d.min_digits}-{d.max_digits} words")
    train_items, dev_items, skipped = drop_long(train_items, dev_items, rate, d.max_seconds)
    if skipped:
        log(skipped)
    units = "words" if d.mode == "connected_digits" else d.units
    if head == "classifier":
        labels = sorted({u.target for u in train_items}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    else:
        labels = [BLANK] + sorted({t for u in train_items for t in split_units(u.target, units)})
        # a rare character (an apostrophe, an accented letter) that the random dev split took whole would
        # stop training with an error the user cannot act on: it becomes an output the model never trains
        # towards, so dev counts it as an error, as evaluate does with characters the model cannot output
        dev_only = sorted({t for u in dev_items for t in split_units(u.target, units)} - set(labels))
        if dev_only:
            labels += dev_only
            shown = ", ".join(repr(t) for t in dev_only[:5]) + (", ..." if len(dev_only) > 5 else "")
            log(f"note: {len(dev_only)} {units[:-1]}(s) occur only in dev transcripts ({shown}); they are outputs "
                "the model never trains towards, so dev scores count them as errors (add training transcripts "
                "that have them)")
    features = SpeechFeatures(rate, d.features, d.n_mels, d.n_mfcc, d.frame_ms, d.hop_ms, d.normalize)
    if head == "classifier":  # scored after training: refuse a clip it cannot label before training, not after
        for u in dev_items + test_items:
            assert u.wave is not None
            check_classifier_clip(features, int(u.wave.shape[0]), cfg.decode, u.key)
    words = sorted({w for u in train_items for w in u.target.split()})
    prep = Prepared(features, head, units, labels, d.lowercase, words, d)
    if head == "ctc" and cfg.decode.lexicon not in (None, "", "train"):  # a word list the model cannot write: now
        try:
            Lexicon.from_words(read_word_list(cfg.decode.lexicon, d.lowercase), labels, " ", units)
        except ValueError as err:
            raise ConfigError(f"decode.lexicon: {err}") from None

    def encode(group: list[Utterance], split: str) -> list[tuple[Tensor, list[int]]]:
        out = []
        for u in group:
            assert u.wave is not None
            features.check_length(int(u.wave.shape[0]), u.key)
            out.append((features(u.wave), prep.encode_target(u.target, f"{u.key} ({split})")))
        return out

    train_data, dev_data = encode(train_items, "training"), encode(dev_items, "dev")
    hyper: dict[str, Any] = {
        "num_features": features.size, "num_outputs": len(labels), "head": head, "cell": m.cell,
        "hidden_size": m.hidden_size, "num_layers": m.num_layers, "bidirectional": m.bidirectional,
        "subsampling": m.subsampling, "subsample_factor": m.subsample_factor, "conv_channels": m.conv_channels,
        "pooling": m.pooling, "dropout": m.dropout,
        "spec_augment": {"freq_masks": cfg.train.freq_masks, "freq_mask_width": cfg.train.freq_mask_width,
                         "time_masks": cfg.train.time_masks, "time_mask_width": cfg.train.time_mask_width}}
    model = build_for_run(run, lambda: build_model(hyper))
    if d.normalize == "global":
        mean, std = feature_statistics([f for f, _ in train_data])
        model.feat_mean.copy_(mean)
        model.feat_std.copy_(std.clamp(min=1e-5))
    if head == "ctc":
        too_long = [(u.key, len(t)) for u, (f, t) in zip(train_items, train_data)
                    if ctc_min_frames(t) > (f.shape[0] + model.factor - 1) // model.factor]
        if too_long:
            log(f"warning: {len(too_long)} training transcripts are longer than their subsampled frames "
                f"(e.g. {too_long[0][0]}; CTC needs a frame per label and a blank between repeated labels); "
                f"CTC ignores them (lower model.subsample_factor)")
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {d.features} x{features.size} -> {m.subsampling} x{model.factor} -> "
        f"{'Bi' if m.bidirectional else ''}{m.cell.upper()} x{m.num_layers} ({m.hidden_size}) -> {head} "
        f"({len(labels)} outputs), {params:,} parameters")

    def loss_fn(mdl: nn.Module, batch: Any) -> Tensor:
        feats, lengths, targets, target_lengths = batch
        scores, out_lengths = mdl(feats, lengths)
        if head == "classifier":
            return F.cross_entropy(scores, targets[:, 0])
        flat = targets[targets >= 0]
        return F.ctc_loss(scores.transpose(0, 1), flat, out_lengths, target_lengths, blank=0, reduction="mean",
                          zero_infinity=True)

    def predict_fn(mdl: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        feats, lengths, targets, target_lengths = batch
        scores, out_lengths = mdl(feats, lengths)
        if head == "classifier":
            return scores.argmax(-1), targets[:, 0]
        rows = []
        for hyp, ref, n in zip(ctc_greedy_decode(scores, out_lengths), targets.tolist(), target_lengths.tolist()):
            h = join_tokens([labels[i] for i in hyp], units)
            r = join_tokens([labels[i] for i in ref[:n]], units)
            rows.append(error_counts(r, h))
        return torch.tensor(rows, dtype=torch.long), torch.zeros(len(rows), dtype=torch.long)

    def metric_fn(pred: Tensor, gold: Tensor) -> dict[str, float]:
        if head == "classifier":
            return {"accuracy": float((pred == gold).float().mean())}
        rates = error_rates([tuple(pred.sum(0).tolist())])  # type: ignore[list-item]
        return {k: math.nan if rates[k] is None else rates[k] for k in ("wer", "cer")}

    monitor, mode = ("accuracy", "max") if head == "classifier" else ("wer", "min")
    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate,
                            optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay,
                            clip_norm=cfg.train.clip_norm, patience=cfg.train.patience, monitor=monitor, mode=mode,
                            tie_break=None if head == "classifier" else "cer", seed=cfg.train.seed, accelerator=cfg.train.accelerator, progress=progress,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    history = fit(model, make_loader(train_data, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed),
                  make_loader(dev_data, 2 * cfg.train.batch_size, shuffle=False, seed=0),
                  loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn, options=options, run=run, log=log)
    run.write_json("speech.json", {**prep.to_json(), "decode": asdict(cfg.decode)})
    run.save_model(model, NAME, hyper)
    trained = TrainedSpeechModel(model, prep, cfg.decode)
    metrics: dict[str, Any] = {"dev": trained.score(dev_items)}
    test_hyps: list[str] = []
    if test_items:
        metrics["test"] = trained.score(test_items)
        test_hyps = list(trained.last_hypotheses)
    seconds = time.perf_counter() - t0 + prior_seconds()  # a resumed run: its whole training
    best = 0
    if history:
        key = f"dev_{monitor}"
        if head == "classifier":
            best = int(max(history, key=lambda r: r.get(key, -math.inf))["epoch"])
        else:  # the engine's choice: the lowest WER, ties broken by the lowest CER, then the earliest epoch
            best = int(min(history, key=lambda r: (r.get(key, math.inf), r.get("dev_cer", math.inf)))["epoch"])
    metrics.update({"train_seconds": seconds, "parameters": params, "best_epoch": best, "epochs_run": len(history), "stopped": stop_reason(),
                    "sample_rate": rate})
    if skipped:
        metrics["notes"] = [skipped]
    run.write_json("metrics.json", metrics)
    curves = plot_learning_curves(history, run.file("learning_curves.png"))
    report = [f"# Speech recognition run: {run.path.name}", "",
              f"Trained on `{train_path}` ({len(train_items)} {'utterances' if d.mode == 'connected_digits' else 'recordings'}"
              f", {d.mode}, {head} head) in {seconds:.0f} s; best epoch {best} of {len(history)}; {params:,} parameters.",
              ""]
    splits = [split for split in ("dev", "test") if split in metrics]
    report += [split_table(metrics, splits, head), ""]
    notes = [*metrics.get("notes", []), *(f"{split}: {n}" for split in splits for n in metrics[split].get("notes", []))]
    if notes:
        report += [*(f"* {n}" for n in notes), ""]
    if head == "classifier" and test_items:
        index = {label: i for i, label in enumerate(labels)}
        matrix = [[0] * len(labels) for _ in labels]
        for u, h in zip(test_items, test_hyps):
            if u.target in index:
                matrix[index[u.target]][index[h]] += 1
        plot_confusion(matrix, labels, run.file("confusion.png"))
        report += ["## Test confusion matrix", "", "![confusion matrix](confusion.png)", ""]
    if curves:
        report += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    run.write_text("report.md", "\n".join(report))
    return metrics
