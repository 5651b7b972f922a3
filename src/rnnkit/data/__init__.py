"""rnnkit.data: readers, preprocessing and batching for every kind of sequence.

Raw files in, padded tensors with lengths and masks out; every fitted transform saves to
JSON (``save``/``load``, ``to_config``/``from_config``) so prediction repeats training's
preprocessing exactly. Bad input raises :class:`DataError` (a ``ValueError``) with a one-line
message naming the file and line and saying how to fix it. See ``docs/data.md``.
"""

from __future__ import annotations

from .audio import (
    FSDD_PATTERN,
    MFCC,
    AudioClip,
    AudioItem,
    LogMelSpectrogram,
    dct_matrix,
    hz_to_mel,
    list_audio_folder,
    mel_filterbank,
    mel_to_hz,
    normalize_utterance,
    read_audio_manifest,
    read_wav,
    resample,
)
from .batch import Batch, SequenceCollator, SequenceDataset, collate_sequences
from .bucketing import BucketBatchSampler, PaddingReport, padding_efficiency, sequential_batches
from .conll import (
    TAG_SCHEMES,
    Span,
    TaggedSentence,
    convert_tags,
    detect_scheme,
    normalize_scheme,
    read_conll,
    spans_to_tags,
    tags_to_spans,
    validate_tags,
)
from .corpus import BPTTIterator, batchify, build_vocab_from_file, load_token_memmap, tokenize_to_memmap
from .encoding import TextEncoder
from .errors import DataError
from .images import (
    PixelPermutation,
    images_to_sequences,
    read_digits_csv,
    read_idx,
    read_image_folder,
    read_npz,
    read_picture,
)
from .keras_utils import TimeseriesWindows, WindowBatches, timeseries_dataset_from_array
from .padding import PaddedBatch, lengths_to_mask, pad_batch, pad_sequences
from .parallel import ParallelCorpus, read_parallel, read_parallel_tsv
from .scalers import DifferenceTransform, LogTransform, MinMaxScaler, RobustScaler, Scaler, StandardScaler
from .serialization import JsonSerializable, load_transform
from .text import (
    TextExample,
    read_class_folders,
    read_delimited,
    read_jsonl,
    read_label_sentence,
    texts_and_labels,
)
from .timeseries import (
    FILL_POLICIES,
    SeriesReport,
    TimeSeries,
    TimeSeriesDataset,
    fill_missing,
    parse_freq,
    read_timeseries,
)
from .tokenizers import CharTokenizer, SubwordTokenizer, Tokenizer, WordTokenizer, normalize_text
from .ucr import TsDataset, read_ts_file
from .vocab import LabelEncoder, Vocabulary
from .windows import (
    ForecastingSplits,
    SplitBounds,
    WindowDataset,
    chronological_split,
    make_forecasting_splits,
    window_starts,
)

__all__ = [
    # errors and persistence
    "DataError",
    "JsonSerializable",
    "load_transform",
    # padding and batches
    "pad_sequences",
    "timeseries_dataset_from_array",
    "TimeseriesWindows",
    "WindowBatches",
    "pad_batch",
    "PaddedBatch",
    "lengths_to_mask",
    "Batch",
    "collate_sequences",
    "SequenceCollator",
    "SequenceDataset",
    "BucketBatchSampler",
    "padding_efficiency",
    "PaddingReport",
    "sequential_batches",
    # text
    "TextExample",
    "read_delimited",
    "read_jsonl",
    "read_label_sentence",
    "read_class_folders",
    "texts_and_labels",
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "SubwordTokenizer",
    "normalize_text",
    "Vocabulary",
    "LabelEncoder",
    "TextEncoder",
    # tagging
    "TaggedSentence",
    "Span",
    "TAG_SCHEMES",
    "read_conll",
    "tags_to_spans",
    "spans_to_tags",
    "convert_tags",
    "validate_tags",
    "detect_scheme",
    "normalize_scheme",
    # language modelling
    "build_vocab_from_file",
    "tokenize_to_memmap",
    "load_token_memmap",
    "batchify",
    "BPTTIterator",
    # translation
    "ParallelCorpus",
    "read_parallel",
    "read_parallel_tsv",
    # time series
    "TimeSeries",
    "TimeSeriesDataset",
    "SeriesReport",
    "FILL_POLICIES",
    "read_timeseries",
    "fill_missing",
    "parse_freq",
    "Scaler",
    "StandardScaler",
    "MinMaxScaler",
    "RobustScaler",
    "LogTransform",
    "DifferenceTransform",
    "SplitBounds",
    "chronological_split",
    "window_starts",
    "WindowDataset",
    "ForecastingSplits",
    "make_forecasting_splits",
    "TsDataset",
    "read_ts_file",
    # audio
    "AudioClip",
    "AudioItem",
    "FSDD_PATTERN",
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
    # images
    "read_idx",
    "read_npz",
    "read_image_folder",
    "read_picture",
    "read_digits_csv",
    "PixelPermutation",
    "images_to_sequences",
]
