"""scripts/long_reviews.py: the long-text sets measured by the speed and accuracy benchmarks."""

import csv

import rjieba

from scripts.long_reviews import write_long_half


def read_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_the_long_half_is_split_as_the_recipe_splits_it(tmp_path):
    folder = write_long_half(tmp_path / "long", min_words=30)

    assert sorted(p.name for p in folder.iterdir()) == ["dev.csv", "test.csv", "train.csv"]  # all.csv removed
    splits = {name: read_rows(folder / f"{name}.csv") for name in ("train", "dev", "test")}
    sizes = {name: len(rows) for name, rows in splits.items()}
    # 17,301 reviews of more than 30 words, 8,276 once duplicates and conflicting texts are gone: 80/10/10
    assert sizes == {"train": 6620, "dev": 828, "test": 828}
    texts = [row["text"] for rows in splits.values() for row in rows]
    assert len(set(texts)) == len(texts)  # no text in two splits, none twice
    assert all(len(rjieba.cut(text)) > 30 for text in texts[:500])
    assert {row["label"] for row in splits["test"]} == {"negative", "positive"}
    mean_characters = sum(map(len, texts)) / len(texts)
    assert 115 < mean_characters < 130  # the long half: about twice the embedded reviews' 73
