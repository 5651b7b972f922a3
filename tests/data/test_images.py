"""Tests for rnnkit.data.images and rnnkit.data.ucr."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.data import (
    DataError,
    PixelPermutation,
    images_to_sequences,
    load_transform,
    read_digits_csv,
    read_idx,
    read_npz,
    read_ts_file,
)


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_read_idx_plain_gz_and_dtypes(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "img-ubyte").write_bytes(_idx_bytes(images, 0x08))
    with gzip.open(tmp_path / "img-ubyte.gz", "wb") as g:
        g.write(_idx_bytes(images, 0x08))
    np.testing.assert_array_equal(read_idx(tmp_path / "img-ubyte"), images)
    out = read_idx(tmp_path / "img-ubyte.gz")
    np.testing.assert_array_equal(out, images)
    assert out.dtype == np.uint8
    floats = np.array([[1.5, -2.0]], dtype=np.float32)
    (tmp_path / "f.idx").write_bytes(_idx_bytes(floats, 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)
    ints = np.array([1, -70000], dtype=np.int32)
    (tmp_path / "i.idx").write_bytes(_idx_bytes(ints, 0x0C))
    assert read_idx(tmp_path / "i.idx").tolist() == [1, -70000]


def test_read_idx_errors(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "short").write_bytes(_idx_bytes(labels, 0x08)[:-3])
    with pytest.raises(
        DataError,
        match=r"short: idx header announces shape \(10,\) \(10 bytes of data\) but the file holds 7",
    ):
        read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="cannot decompress"):
        read_idx(tmp_path / "broken.gz")


def test_read_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2, 2)), y=np.array([0, 1, 2]))
    images, labels = read_npz(tmp_path / "d.npz")
    assert images.shape == (3, 2, 2) and labels is not None and labels.tolist() == [0, 1, 2]
    assert read_npz(tmp_path / "d.npz", labels_key=None)[1] is None
    with pytest.raises(DataError, match=r"no array 'images'; arrays are \['x', 'y'\]"):
        read_npz(tmp_path / "d.npz", images_key="images")
    np.savez(tmp_path / "m.npz", x=np.zeros((3, 2, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        read_npz(tmp_path / "m.npz")
    np.savez(tmp_path / "s.npz", x=np.float32(3), y=np.int64(1))  # 0-d arrays: len() raised a TypeError
    with pytest.raises(DataError, match="array 'x' is a single value, not one image per row"):
        read_npz(tmp_path / "s.npz")


def test_read_digits_csv(tmp_path: Path) -> None:
    rows = [list(range(64)) + [7], [16] * 64 + [3]]
    f = tmp_path / "digits.csv.gz"
    with gzip.open(f, "wt") as g:
        g.write("\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    images, labels = read_digits_csv(f)
    assert images.shape == (2, 8, 8) and images.dtype == np.uint8 and labels.tolist() == [7, 3]
    assert images[0, 1, 0] == 8
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:1: row has 3 values, expected 65"):
        read_digits_csv(bad)
    bad.write_text(",".join(["x"] * 65) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="non-numeric value 'x'"):
        read_digits_csv(bad)


def test_images_to_sequences_modes() -> None:
    imgs = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    rows = images_to_sequences(imgs, "rows")
    assert rows.shape == (2, 3, 4) and rows.dtype == torch.float32 and rows[0, 1].tolist() == [4, 5, 6, 7]
    pix = images_to_sequences(imgs, "pixels", scale=0.5)
    assert pix.shape == (2, 12, 1) and pix[1, :, 0].tolist() == [v * 0.5 for v in range(12, 24)]
    perm = PixelPermutation(12, seed=3)
    permuted = images_to_sequences(imgs, "permuted", permutation=perm)
    assert permuted[0, :, 0].tolist() == [float(i) for i in perm.order]
    assert sorted(permuted[0, :, 0].tolist()) == list(map(float, range(12)))
    again = images_to_sequences(imgs, "permuted", seed=3)
    torch.testing.assert_close(again, permuted)  # seeded: same permutation
    assert not torch.equal(images_to_sequences(imgs, "permuted", seed=4), permuted)
    color = np.zeros((1, 2, 2, 3))
    assert images_to_sequences(color, "rows").shape == (1, 2, 6)
    assert images_to_sequences(np.zeros((1, 3, 2, 2)), "pixels", channels_last=False).shape == (1, 4, 3)
    with pytest.raises(DataError, match="unknown mode"):
        images_to_sequences(imgs, "columns")
    with pytest.raises(DataError, match="permutation has 5 pixels"):
        images_to_sequences(imgs, "permuted", permutation=PixelPermutation(5))
    with pytest.raises(DataError, match=r"\[N, H, W\]"):
        images_to_sequences(np.zeros(5), "rows")


def test_pixel_permutation_save_load(tmp_path: Path) -> None:
    perm = PixelPermutation(784, seed=0)
    loaded = load_transform(perm.save(tmp_path / "perm.json"))
    assert isinstance(loaded, PixelPermutation) and loaded == perm
    np.testing.assert_array_equal(loaded.order, perm.order)
    with pytest.raises(DataError, match="not a permutation"):
        PixelPermutation(3, order=[0, 0, 1])


TS = """# comment
@problemName Toy
@timeStamps false
@univariate false
@dimensions 2
@classLabel true up down
@data
1,2,3:4,5,6:up
1,?,0:0,0,1:down
"""


def test_read_ts_file(tmp_path: Path) -> None:
    f = tmp_path / "Toy_TRAIN.ts"
    f.write_text(TS, encoding="utf-8")
    ds = read_ts_file(f)
    assert len(ds) == 2 and ds.labels == ["up", "down"] and ds.class_labels == ("up", "down")
    assert ds.series[0].shape == (3, 2) and ds.series[0][:, 1].tolist() == [4, 5, 6]
    assert np.isnan(ds.series[1][1, 0]) and ds.header["problemname"] == "Toy"
    f.write_text(TS.replace("0,0,1:down", "0,0,1:left"), encoding="utf-8")
    with pytest.raises(DataError, match=r"Toy_TRAIN\.ts:9: label 'left' not declared"):
        read_ts_file(f)
    f.write_text(TS.replace("0,0,1:down", "down"), encoding="utf-8")
    with pytest.raises(DataError, match="has no label|dimensions"):
        read_ts_file(f)
    f.write_text("@problemName x\n", encoding="utf-8")
    with pytest.raises(DataError, match="no @data"):
        read_ts_file(f)
