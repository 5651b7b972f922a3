"""Throughput of the rnnkit.data text pipeline on the IMDB training set (25,000 reviews).

    python benchmarks/bench_data.py                  # full run on ../shared/data/imdb
    python benchmarks/bench_data.py --limit 2000     # smoke run on the first 2,000 reviews

Stages, each timed once with time.perf_counter (run it on a quiet machine):

1. read: stream the 25,000 review files out of aclImdb_v1_labeled.tar.xz (never extracted);
2. tokenize: WordTokenizer (NFKC, lowercase, regex) over every review;
3. vocab: Vocabulary.build (min_freq=2, max_size=30,000) from the token lists;
4. encode: tokens -> ids;
5. batch: pad every batch of 32 with pad_batch (max_length=400), once in plain shuffled order and
   once with BucketBatchSampler, reporting the padding efficiency (real steps / padded steps).

Prints a human summary and one Markdown table row (header included with --header).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from rnnkit.data import (
    BucketBatchSampler,
    Vocabulary,
    WordTokenizer,
    pad_batch,
    padding_efficiency,
    read_class_folders,
    sequential_batches,
)

DEFAULT_ARCHIVE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imdb" / "aclImdb_v1_labeled.tar.xz"
)
HEADER = (
    "| reviews | read s | tokenize reviews/s | tokenize tokens/s | vocab s | encode tokens/s | "
    "pad plain batches/s | pad bucketed batches/s | padding eff. plain | padding eff. bucketed | machine |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def pad_all(ids: list[torch.Tensor], batches: list[list[int]], max_length: int) -> float:
    """Pad every batch; return the elapsed seconds."""
    start = time.perf_counter()
    for batch in batches:
        pad_batch([ids[i] for i in batch], max_length=max_length)
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="aclImdb tar.xz archive")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N reviews")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=400)
    parser.add_argument("--header", action="store_true", help="print the Markdown table header too")
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"IMDB archive not found: {args.archive} (pass --archive PATH)")
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    examples = read_class_folders(args.archive, member_prefix="aclImdb/train", classes=("neg", "pos"))
    read_s = time.perf_counter() - t0
    if args.limit is not None:
        examples = examples[: args.limit]
    texts = [e.text for e in examples]
    n = len(texts)

    tokenizer = WordTokenizer()
    t0 = time.perf_counter()
    tokens = [tokenizer.tokenize(t) for t in texts]
    tokenize_s = time.perf_counter() - t0
    num_tokens = sum(len(t) for t in tokens)

    t0 = time.perf_counter()
    vocab = Vocabulary.build(tokens, min_freq=2, max_size=30_000)
    vocab_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ids = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in tokens]
    encode_s = time.perf_counter() - t0

    lengths = [len(x) for x in ids]
    plain = sequential_batches(n, args.batch_size, seed=0)
    bucketed = list(BucketBatchSampler(lengths, args.batch_size, seed=0, max_length=args.max_length))
    plain_s = pad_all(ids, plain, args.max_length)
    bucket_s = pad_all(ids, bucketed, args.max_length)
    eff_plain = padding_efficiency(lengths, plain, max_length=args.max_length)
    eff_bucket = padding_efficiency(lengths, bucketed, max_length=args.max_length)

    print(f"reviews: {n}, tokens: {num_tokens:,}, vocabulary: {len(vocab):,} (min_freq=2, max 30,000)")
    print(f"read tar.xz: {read_s:.2f} s ({25_000 / read_s:,.0f} reviews/s over the whole train split)")
    print(
        f"tokenize: {tokenize_s:.2f} s = {n / tokenize_s:,.0f} reviews/s, {num_tokens / tokenize_s:,.0f} tokens/s"
    )
    print(f"vocab: {vocab_s:.2f} s; encode: {encode_s:.2f} s = {num_tokens / encode_s:,.0f} tokens/s")
    print(
        f"pad (max_length={args.max_length}, batch {args.batch_size}): plain {len(plain) / plain_s:,.0f} batches/s, "
        f"bucketed {len(bucketed) / bucket_s:,.0f} batches/s"
    )
    print(f"padding efficiency: plain {eff_plain}; bucketed {eff_bucket}")
    machine = f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}, torch {torch.__version__}"
    if args.header:
        print(HEADER)
    print(
        f"| {n:,} | {read_s:.2f} | {n / tokenize_s:,.0f} | {num_tokens / tokenize_s:,.0f} | {vocab_s:.2f} | "
        f"{num_tokens / encode_s:,.0f} | {len(plain) / plain_s:,.0f} | {len(bucketed) / bucket_s:,.0f} | "
        f"{eff_plain.efficiency:.1%} | {eff_bucket.efficiency:.1%} | {machine} |"
    )


if __name__ == "__main__":
    main()
