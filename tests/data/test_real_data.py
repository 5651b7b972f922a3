"""Readers on the real datasets in ../shared/data (run with: pytest tests/data -m data).

Every test skips with a clear reason when the folder (or a file) is absent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.data import (
    MFCC,
    BPTTIterator,
    CharTokenizer,
    StandardScaler,
    WordTokenizer,
    batchify,
    build_vocab_from_file,
    chronological_split,
    detect_scheme,
    images_to_sequences,
    list_audio_folder,
    make_forecasting_splits,
    pad_batch,
    read_class_folders,
    read_conll,
    read_digits_csv,
    read_idx,
    read_label_sentence,
    read_parallel,
    read_timeseries,
    read_ts_file,
    tags_to_spans,
    tokenize_to_memmap,
    validate_tags,
)

pytestmark = pytest.mark.data


def need(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"dataset file missing: {path}")
    return path


def test_imdb_from_tar_xz(shared_data: Path) -> None:
    archive = need(shared_data, "imdb", "aclImdb_v1_labeled.tar.xz")
    train = read_class_folders(archive, member_prefix="aclImdb/train", classes=("neg", "pos"))
    assert len(train) == 25_000
    assert Counter(e.label for e in train) == {"neg": 12_500, "pos": 12_500}
    assert train[0].source.endswith("aclImdb/train/neg/0_3.txt")
    lengths = [len(WordTokenizer().tokenize(e.text)) for e in train[:200]]
    assert 50 < np.mean(lengths) < 600


def test_sst2(shared_data: Path) -> None:
    counts = {}
    for split in ("train", "dev", "test"):
        examples = read_label_sentence(need(shared_data, "sst2", f"stsa.binary.{split}"))
        counts[split] = len(examples)
        assert {e.label for e in examples} == {"0", "1"}
    assert counts == {"train": 6920, "dev": 872, "test": 1821}


def test_conll2003(shared_data: Path) -> None:
    expected = {"train": 14_041, "valid": 3_250, "test": 3_453}
    for split, n in expected.items():
        sents = read_conll(need(shared_data, "conll2003", f"{split}.txt"))
        assert len(sents) == n
    train = read_conll(shared_data / "conll2003" / "train.txt")
    assert detect_scheme([s.tags for s in train]) == "IOB2"
    for s in train[:2000]:
        validate_tags(s.tags, "IOB2")
    labels = Counter(span.label for s in train for span in tags_to_spans(s.tags, "IOB2"))
    assert set(labels) == {"PER", "LOC", "ORG", "MISC"}
    assert labels["LOC"] == 7140 and labels["PER"] == 6600  # entity counts of eng.train



def test_conll2003_stray_inside_tag_does_not_make_it_iob1(shared_data: Path) -> None:
    lines = need(shared_data, "conll2003", "train.txt").read_text(encoding="utf-8").splitlines()[:3000]
    tags = [[line.split()[-1] for line in block.splitlines() if not line.startswith("-DOCSTART-")]
            for block in "\n".join(lines).split("\n\n")]
    tags = [t for t in tags if t]
    first_o = next(i for i, t in enumerate(tags) if t[0] == "O" and len(t) > 1 and t[1] == "O")
    tags[first_o][1] = "I-LOC"  # one annotation slip in an IOB2 file
    assert detect_scheme(tags) == "IOB2"

def test_ptb_memmap_and_bptt(shared_data: Path, tmp_path: Path) -> None:
    src = need(shared_data, "ptb", "ptb.train.txt")
    vocab = build_vocab_from_file(src, str.split, pad_token=None, bos_token=None, unk_token="<unk>")
    assert len(vocab) == 10_000  # 9999 words incl. <unk> + <eos>
    ids = tokenize_to_memmap(src, tmp_path / "ptb.train.ids", str.split, vocab)
    assert len(ids) == 929_589  # the standard PTB training token count (words + one <eos> per line)
    streams = batchify(ids, 20)
    it = BPTTIterator(streams, 35)
    first = it.window(0)
    assert first.inputs.shape == (20, 35)
    torch.testing.assert_close(first.targets[:, :-1], first.inputs[:, 1:])


def test_tinyshakespeare_chars(shared_data: Path, tmp_path: Path) -> None:
    src = need(shared_data, "tinyshakespeare", "input.txt")
    tok = CharTokenizer()
    vocab = build_vocab_from_file(src, tok.tokenize, line_ending="keep", bos_token=None, eos_token=None)
    assert len(vocab) == 65 + 2  # 65 characters + <pad>, <unk>
    ids = tokenize_to_memmap(src, tmp_path / "shakespeare.ids", tok.tokenize, vocab, line_ending="keep")
    assert len(ids) == 1_115_394
    assert "".join(vocab.decode(ids[:14].tolist())) == "First Citizen:"


def test_multi30k(shared_data: Path) -> None:
    train = read_parallel(
        need(shared_data, "multi30k", "train.en.gz"), need(shared_data, "multi30k", "train.de.gz")
    )
    val = read_parallel(shared_data / "multi30k" / "val.en.gz", shared_data / "multi30k" / "val.de.gz")
    assert len(train) + train.num_skipped_empty == 29_000 and len(val) + val.num_skipped_empty == 1_014
    assert train[0][0].startswith("Two young, White males")


def test_fsdd_mfcc(shared_data: Path) -> None:
    folder = need(shared_data, "fsdd", "recordings")
    items = list_audio_folder(folder)
    assert len(items) == 3000
    assert Counter(i.label for i in items) == {str(d): 300 for d in range(10)}
    test_split = [i for i in items if int(i.metadata["index"]) <= 4]
    assert len(test_split) == 300
    mfcc = MFCC(n_mfcc=13, sample_rate=8000, n_fft=256, hop_length=80, n_mels=40, normalize="utterance")
    feats = [mfcc(items[k].load().waveform) for k in range(0, 3000, 300)]
    batch = pad_batch(feats)
    assert batch.padded.shape[0] == 10 and batch.padded.shape[2] == 13
    assert all(items[k].load().sample_rate == 8000 for k in (0, 1500))


def test_ett_standard_split(shared_data: Path) -> None:
    f = need(shared_data, "ett", "ETTh1.csv")
    covs = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"]
    ds = read_timeseries(f, "date", "OT", past_covariates=covs)
    s = ds.only()
    assert len(s) == 17_420 and s.freq == "1h" and ds.reports["0"].num_gaps == 0
    splits = make_forecasting_splits(
        s,
        lookback=96,
        horizon=24,
        train=8640,
        val=2880,
        test=2880,
        target_scaler=StandardScaler(),
        covariate_scaler=StandardScaler(),
    )
    assert splits.bounds["0"].test == (11_520, 14_400)
    assert len(splits.train) == 8640 - 96 - 24 + 1
    assert splits.val is not None and len(splits.val) == 2880 - 24 + 1
    assert splits.target_scaler is not None
    center, _ = splits.target_scaler.stats["__all__"]
    np.testing.assert_allclose(center, s.targets[:8640].mean(axis=0))


def test_airline_monthly(shared_data: Path) -> None:
    s = read_timeseries(need(shared_data, "airline-passengers", "Airline.csv"), "Date", "Passengers").only()
    assert len(s) == 144 and s.freq == "1M" and s.targets[0, 0] == 112
    b = chronological_split(len(s), None, 0, 12)
    assert b.train == (0, 132)


def test_mnist_idx(shared_data: Path) -> None:
    images = read_idx(need(shared_data, "mnist", "train-images.idx3-ubyte.gz"))
    labels = read_idx(need(shared_data, "mnist", "train-labels.idx1-ubyte.gz"))
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert images.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    seq = images_to_sequences(images[:8], "pixels", scale=1 / 255)
    assert seq.shape == (8, 784, 1)
    test = read_idx(shared_data / "mnist" / "t10k-images.idx3-ubyte.gz")
    assert test.shape == (10_000, 28, 28)


def test_sklearn_digits(shared_data: Path) -> None:
    images, labels = read_digits_csv(need(shared_data, "sklearn-digits", "digits.csv.gz"))
    assert images.shape == (1797, 8, 8) and labels[:10].tolist() == list(range(10))
    assert images.max() == 16 and images_to_sequences(images, "rows").shape == (1797, 8, 8)


def test_ucr_files(shared_data: Path) -> None:
    expected = {
        "ItalyPowerDemand": (67, 24, 1),
        "GunPoint": (50, 150, 1),
        "ArrowHead": (36, 251, 1),
        "BasicMotions": (40, 100, 6),
    }
    for name, (n, length, dims) in expected.items():
        ds = read_ts_file(need(shared_data, "ucr-uea", name, f"{name}_TRAIN.ts"))
        assert len(ds) == n and ds.series[0].shape == (length, dims)
        assert set(ds.labels) <= set(ds.class_labels)
