"""Every saved transform of rnnkit.data round-trips through JSON (never pickle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnkit.data import (
    MFCC,
    CharTokenizer,
    DataError,
    DifferenceTransform,
    JsonSerializable,
    LabelEncoder,
    LogMelSpectrogram,
    LogTransform,
    MinMaxScaler,
    PixelPermutation,
    RobustScaler,
    StandardScaler,
    SubwordTokenizer,
    TextEncoder,
    Vocabulary,
    WordTokenizer,
    load_transform,
)
from rnnkit.data.serialization import registered_types, transform_from_config

TEXTS = ["a small corpus of text", "another small text", "text text text"] * 5

FACTORIES: dict[str, Callable[[], JsonSerializable]] = {
    "CharTokenizer": lambda: CharTokenizer(lowercase=True, normalization="NFKC"),
    "WordTokenizer": lambda: WordTokenizer(pattern=r"\w+", lowercase=False),
    "SubwordTokenizer": lambda: SubwordTokenizer.train(TEXTS, "wordpiece", vocab_size=60, min_frequency=1),
    "Vocabulary": lambda: Vocabulary.build([t.split() for t in TEXTS], min_freq=2),
    "LabelEncoder": lambda: LabelEncoder.fit(["b", "a"]),
    "TextEncoder": lambda: TextEncoder.fit(TEXTS, WordTokenizer(), add_eos=True, max_length=9),
    "StandardScaler": lambda: StandardScaler().fit(np.arange(12.0).reshape(6, 2)),
    "MinMaxScaler": lambda: MinMaxScaler((-1, 1), per_series=True).fit(
        {"a": np.arange(4.0), "b": np.ones(3)}
    ),
    "RobustScaler": lambda: RobustScaler().fit(np.arange(10.0)),
    "LogTransform": lambda: LogTransform(1.0),
    "DifferenceTransform": lambda: DifferenceTransform(lag=2, order=2),
    "LogMelSpectrogram": lambda: LogMelSpectrogram(sample_rate=8000, n_fft=256, n_mels=20),
    "MFCC": lambda: MFCC(n_mfcc=10, sample_rate=8000, n_fft=256, n_mels=20, normalize="utterance"),
    "PixelPermutation": lambda: PixelPermutation(16, seed=5),
}

# Base classes that are never saved themselves.
ABSTRACT = {"JsonSerializable", "Tokenizer", "Scaler"}


def test_every_registered_type_is_covered() -> None:
    concrete = {name for name in registered_types() if name not in ABSTRACT}
    assert concrete <= set(FACTORIES), f"add a factory for {sorted(concrete - set(FACTORIES))}"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_round_trip(name: str, tmp_path: Path) -> None:
    obj = FACTORIES[name]()
    path = obj.save(tmp_path / f"{name}.json")
    document = json.loads(path.read_text(encoding="utf-8"))  # plain JSON
    assert document["type"] == name and document["format_version"] == 1
    loaded = load_transform(path)
    assert type(loaded) is type(obj)
    assert (
        json.dumps(loaded.to_config(), sort_keys=True) == json.dumps(obj.to_config(), sort_keys=True)
        or name == "SubwordTokenizer"
    )
    via_config = type(obj).from_config(json.loads(json.dumps(obj.to_config())))
    assert type(via_config) is type(obj)
    assert type(obj).load(path).to_document()["type"] == name


def test_load_errors(tmp_path: Path) -> None:
    path = LogTransform().save(tmp_path / "log.json")
    with pytest.raises(DataError, match="holds a LogTransform, not a StandardScaler"):
        StandardScaler.load(path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:1: invalid JSON"):
        load_transform(bad)
    with pytest.raises(DataError, match="unknown transform type 'Nope'"):
        transform_from_config({"type": "Nope", "config": {}})
    with pytest.raises(DataError, match="not an rnnkit transform document"):
        transform_from_config({"config": {}})
    with pytest.raises(DataError, match="unsupported format_version"):
        transform_from_config({"type": "LogTransform", "format_version": 99, "config": {}})
    with pytest.raises(DataError, match="file not found"):
        load_transform(tmp_path / "missing.json")


def test_equality_is_by_config() -> None:
    a: Any = LogTransform(1.0)
    assert a == LogTransform(1.0) and a != LogTransform(2.0) and a != StandardScaler()
