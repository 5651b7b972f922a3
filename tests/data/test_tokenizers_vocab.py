"""Tests for rnnkit.data.tokenizers, vocab and encoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnkit.data import (
    CharTokenizer,
    DataError,
    LabelEncoder,
    SubwordTokenizer,
    TextEncoder,
    Vocabulary,
    WordTokenizer,
    load_transform,
    normalize_text,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A quick movie, and an unbelievably good one!",
    "Don't stop believing: the fox isn't lazy.",
    "Unbelievable things happen to good dogs every day.",
] * 10


def test_normalization() -> None:
    assert normalize_text("\ufb01ne \uff21", "NFKC") == "fine A"  # ligature and full-width A
    assert normalize_text("Caf\u00e9", "NFD", lowercase=True) == "cafe\u0301"
    with pytest.raises(DataError, match="unknown Unicode normalization"):
        normalize_text("x", "NFX")


def test_char_tokenizer() -> None:
    tok = CharTokenizer(lowercase=True, normalization="NFKC")
    assert tok.tokenize("Ab\ufb01") == ["a", "b", "f", "i"]
    assert tok.detokenize(tok("héllo")) == "héllo"
    assert CharTokenizer().tokenize("A b") == ["A", " ", "b"]


def test_word_tokenizer() -> None:
    tok = WordTokenizer()
    assert tok.tokenize("Don't STOP, believing!") == ["don't", "stop", ",", "believing", "!"]
    assert WordTokenizer(pattern=None, lowercase=False).tokenize(" a  B\tc ") == ["a", "B", "c"]
    assert WordTokenizer(pattern=r"[a-z]+").tokenize("ab1cd") == ["ab", "cd"]
    assert tok.detokenize(["a", "b"]) == "a b"
    with pytest.raises(DataError, match="invalid token pattern"):
        WordTokenizer(pattern="(")


def test_vocabulary_build_and_encode() -> None:
    tok = WordTokenizer()
    vocab = Vocabulary.build((tok(t) for t in CORPUS), min_freq=20)
    assert vocab.pad_id == 0 and vocab.unk_id == 1 and vocab.bos_id == 2 and vocab.eos_id == 3
    assert vocab.specials == ("<pad>", "<unk>", "<bos>", "<eos>")
    # frequency order, ties alphabetical
    assert list(vocab)[4:7] == [".", "the", "fox"] or vocab.counts["."] >= vocab.counts["the"]
    assert all(c >= 20 for c in vocab.counts.values())
    ids = vocab.encode(["the", "zebra"], add_bos=True, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 3 and ids[2] == vocab.unk_id
    assert vocab.decode(ids) == ["the", "<unk>"]
    assert vocab.decode(ids, skip_specials=False) == ["<bos>", "the", "<unk>", "<eos>"]
    assert "the" in vocab and "zebra" not in vocab
    small = Vocabulary.build((tok(t) for t in CORPUS), max_size=6)
    assert len(small) == 6
    with pytest.raises(DataError, match="smaller than the 4 special tokens"):
        Vocabulary.build([["a"]], max_size=3)
    with pytest.raises(DataError, match="min_freq"):
        Vocabulary.build([["a"]], min_freq=0)
    with pytest.raises(DataError, match="out of range"):
        vocab.id_to_token(10_000)


def test_vocabulary_without_unk_and_custom_specials() -> None:
    vocab = Vocabulary(["a", "b"], unk_token=None, bos_token=None, eos_token=None, extra_specials=["<mask>"])
    assert vocab.specials == ("<pad>", "<mask>") and vocab.token_to_id("a") == 2
    with pytest.raises(DataError, match="no unk token"):
        vocab.encode(["c"])
    with pytest.raises(DataError, match="no bos token"):
        vocab.encode(["a"], add_bos=True)
    with pytest.raises(DataError, match="distinct"):
        Vocabulary(pad_token="<x>", unk_token="<x>")


def test_vocabulary_deterministic_ties() -> None:
    v1 = Vocabulary.build([["b", "a", "c"], ["c"]])
    v2 = Vocabulary.build([["c"], ["c", "a", "b"]])
    assert list(v1) == list(v2) == ["<pad>", "<unk>", "<bos>", "<eos>", "c", "a", "b"]


def test_label_encoder(tmp_path: Path) -> None:
    enc = LabelEncoder.fit(["pos", "neg", "pos"])
    assert enc.classes == ("neg", "pos") and enc.encode(["pos", "neg"]) == [1, 0]
    assert enc.decode([0, 1]) == ["neg", "pos"] and len(enc) == 2
    assert LabelEncoder.fit(["10", "9", "1"]).classes == ("1", "9", "10")
    with pytest.raises(DataError, match=r"unknown label 'meh'; known labels: \['neg', 'pos'\]"):
        enc.encode(["meh"])
    with pytest.raises(DataError, match="out of range"):
        enc.decode([5])
    assert LabelEncoder.load(enc.save(tmp_path / "labels.json")) == enc


@pytest.mark.parametrize("model", ["bpe", "wordpiece", "unigram"])
def test_subword_tokenizers(model: str, tmp_path: Path) -> None:
    tok = SubwordTokenizer.train(CORPUS, model=model, vocab_size=120, min_frequency=1, lowercase=True)
    assert tok.token_to_id("<pad>") == 0 and tok.pad_id == 0 and tok.token_to_id("<unk>") == 1
    assert 20 < tok.vocab_size <= 120
    text = "the quick fox"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.tokenize(text) and all(isinstance(t, str) for t in tok.tokenize(text))
    with_specials = tok.encode(text, add_bos=True, add_eos=True)
    assert with_specials[0] == tok.token_to_id("<bos>") and with_specials[-1] == tok.token_to_id("<eos>")
    assert tok.encode_many([text, "lazy dog"]) == [ids, tok.encode("lazy dog")]
    path = tok.save(tmp_path / f"{model}.json")
    loaded = SubwordTokenizer.load(path)
    for t in CORPUS[:4]:
        assert loaded.encode(t) == tok.encode(t)
    assert loaded.model == model and loaded.vocab_size == tok.vocab_size
    # a string outside the vocabulary shows as the unknown token instead of vanishing
    pieces = tok.tokenize(text)
    assert tok.detokenize([*pieces, "\u2603not-a-piece"]) == tok.decode([*tok.encode(text), 1], skip_specials=False)
    assert "<unk>" in tok.detokenize(["\u2603not-a-piece"])


def test_subword_errors() -> None:
    with pytest.raises(DataError, match="unknown subword model"):
        SubwordTokenizer.train(CORPUS, model="sentencepiece")
    with pytest.raises(DataError, match="at least a padding and an unknown"):
        SubwordTokenizer.train(CORPUS, special_tokens=("<pad>",))


def test_text_encoder_word_and_char(tmp_path: Path) -> None:
    enc = TextEncoder.fit(CORPUS, WordTokenizer(), min_freq=2, add_eos=True, max_length=5)
    ids = enc.encode("the lazy zebra")
    assert ids[-1] == enc.vocab.eos_id and ids[2] == enc.vocab.unk_id and enc.pad_id == 0  # type: ignore[union-attr]
    long = enc.encode("the quick brown fox jumps over the lazy dog")
    assert len(long) == 5 and enc.num_truncated == 1 and enc.tokens_dropped == 5
    assert enc.decode(enc.encode("the fox")) == "the fox"
    loaded = TextEncoder.load(enc.save(tmp_path / "enc.json"))
    assert loaded == enc and loaded.encode_many(CORPUS[:3]) == enc.encode_many(CORPUS[:3])
    assert loaded.vocab_size == enc.vocab_size
    chars = TextEncoder.fit(["abc", "abd"], CharTokenizer(), add_bos=True, truncation="pre", max_length=3)
    assert chars.encode("abcd") == chars.vocab.encode(["c", "d"], add_bos=True)  # type: ignore[union-attr]
    with pytest.raises(DataError, match="needs a Vocabulary"):
        TextEncoder(WordTokenizer())


def test_text_encoder_subword(tmp_path: Path) -> None:
    sub = SubwordTokenizer.train(CORPUS, model="bpe", vocab_size=100, min_frequency=1)
    enc = TextEncoder(sub, add_bos=True)
    assert enc.encode("the fox")[0] == sub.token_to_id("<bos>") and enc.vocab_size == sub.vocab_size
    assert enc.decode(enc.encode("the fox")) == "the fox"
    loaded = load_transform(enc.save(tmp_path / "sub.json"))
    assert isinstance(loaded, TextEncoder) and loaded.encode("lazy dog") == enc.encode("lazy dog")


def test_vocabulary_refuses_non_string_tokens_which_would_not_survive_saving(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"vocabulary tokens must be strings, got int 3; fix: convert the tokens"):
        Vocabulary.build([[2, 3], [3]])  # type: ignore[list-item]
    with pytest.raises(DataError, match="special tokens must be strings, got 0"):
        Vocabulary(["a"], pad_token=0)  # type: ignore[arg-type]
    vocab = Vocabulary.build([["2", "3"], ["3"]])  # as strings they round-trip
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.encode(["3", "2", "9"]) == vocab.encode(["3", "2", "9"]) and len(again) == len(vocab)
