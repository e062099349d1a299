"""Tests for `load_data` of a `dataset_name` (finetune.data.named_datasets, finetune.data.sources): local
directories of data files, configurations, `save_to_disk` directories, ClassLabel names, split and
column errors, and Hub ids, against a local imitation of the Hub and with the Hub out of reach (HF_HUB_OFFLINE=1).

The Hub tests run `load_data` in a new process: the client reads HF_ENDPOINT and HF_HUB_OFFLINE
when it is imported.
"""

import json
import logging
import subprocess
import sys
from collections import Counter

import datasets
import pytest
from conftest import GENUINE_NEGATIVE, GENUINE_POSITIVE, GENUINE_REVIEWS, ROOT, load_splits, texts_of, write_table
from hub_server import LocalHub, hub_env

from finetune.data.loading import DataError
from finetune.errors import ArgumentError

pytestmark = pytest.mark.usefixtures("quiet_datasets")

# 11 + 11 to train on, 2 + 2 to validate, 2 + 2 to test.
TRAIN = [(text, "positive") for text in GENUINE_POSITIVE[:11]] + [(text, "negative") for text in GENUINE_NEGATIVE[:11]]
VALIDATION = [(text, "positive") for text in GENUINE_POSITIVE[11:13]] + [
    (text, "negative") for text in GENUINE_NEGATIVE[11:13]
]
TEST = [(text, "positive") for text in GENUINE_POSITIVE[13:]] + [(text, "negative") for text in GENUINE_NEGATIVE[13:]]


def write_jsonl(path, rows, keys=("text", "label")):
    path.write_text("".join(json.dumps(dict(zip(keys, row)), ensure_ascii=False) + "\n" for row in rows), "utf-8")
    return path


@pytest.fixture
def reviews_dir(tmp_path):
    """A directory of train.csv, validation.csv and test.csv, as `load_dataset` maps files onto splits."""
    directory = tmp_path / "reviews"
    directory.mkdir()
    write_table(directory / "train.csv", TRAIN + [TRAIN[0], ("NA", "positive"), ("", "negative")])
    write_table(directory / "validation.csv", VALIDATION)
    write_table(directory / "test.csv", TEST)
    return directory


def sizes(splits):
    return {name: split.num_rows for name, split in splits.items()}


# ---------------------------------------------------------------- local directories of data files


def test_local_directory_splits_cleaned_as_files_are(reviews_dir):
    splits, info = load_splits(dataset_name=str(reviews_dir))
    assert sizes(splits) == {"train": 23, "validation": 4, "test": 4}
    stats = info["stats"]["train"]
    assert (stats["rows_read"], stats["duplicates_removed"], stats["empty_dropped"]) == (25, 1, 1)
    assert "NA" in texts_of(splits["train"])  # a text, as `read_table` reads CSV: only empty fields are missing
    assert info["sources"] == {split: f"{reviews_dir} [{split}]" for split in ("train", "validation", "test")}
    assert info["dataset"] == {
        "name": str(reviews_dir),
        "config_name": None,
        "splits": {"train": "train", "validation": "validation", "test": "test"},
    }
    assert info["id2label"] == {0: "negative", 1: "positive"} and info["max_samples"] == {}
    assert set(texts_of(splits["test"])) == {text for text, _ in TEST}


def test_missing_validation_split_is_cut_from_train(tmp_path, caplog):
    directory = tmp_path / "jsonl"
    directory.mkdir()
    write_jsonl(directory / "train.jsonl", TRAIN + VALIDATION)
    write_jsonl(directory / "test.jsonl", TEST)
    splits, info = load_splits(dataset_name=str(directory), validation_size=0.2)
    assert sizes(splits) == {"train": 20, "validation": 6, "test": 4}
    assert Counter(splits["validation"]["label"][:]) == {0: 3, 1: 3}  # stratified: 20% of 13 per label, rounded
    assert info["sources"]["validation"] == f"{directory} [train]"
    assert info["dataset"]["splits"] == {"train": "train", "test": "test"}
    # A split named by its flag must exist: a misspelt one is an error, not a smaller train.
    with pytest.raises(DataError, match=r"--dataset_name \S+jsonl: no split 'dev' \(splits: train, test\); "):
        load_splits(dataset_name=str(directory), validation_split_name="dev")


def test_split_names_choose_the_dataset_splits(reviews_dir):
    splits, info = load_splits(
        dataset_name=str(reviews_dir), validation_split_name="test", test_split_name="validation"
    )
    assert set(texts_of(splits["validation"])) == {text for text, _ in TEST}
    assert info["dataset"]["splits"] == {"train": "train", "validation": "test", "test": "validation"}


def test_dev_file_is_the_validation_split_and_unused_splits_are_named(tmp_path, caplog):
    directory = tmp_path / "dev"
    directory.mkdir()
    write_jsonl(directory / "train.jsonl", TRAIN)
    write_jsonl(directory / "dev.jsonl", VALIDATION)
    splits, info = load_splits(dataset_name=str(directory), test_size=0.2)
    assert set(texts_of(splits["validation"])) == {text for text, _ in VALIDATION}
    assert info["dataset"]["splits"] == {"train": "train", "validation": "validation"}
    # A saved DatasetDict keeps its own split names: a "dev" split is not taken for validation unasked.
    table = {"text": [text for text, _ in TRAIN], "label": [label for _, label in TRAIN]}
    dev = {"text": [text for text, _ in VALIDATION], "label": [label for _, label in VALIDATION]}
    saved = datasets.DatasetDict(train=datasets.Dataset.from_dict(table), dev=datasets.Dataset.from_dict(dev))
    saved.save_to_disk(str(tmp_path / "saved"))
    with caplog.at_level(logging.WARNING, logger="finetune.data.named_datasets"):
        load_splits(dataset_name=str(tmp_path / "saved"), test_size=0.2)
    assert "no split 'validation' or 'test': cut from train; unused splits: dev (take one" in caplog.text
    splits, _ = load_splits(dataset_name=str(tmp_path / "saved"), validation_split_name="dev", test_size=0.2)
    assert set(texts_of(splits["validation"])) == {text for text, _ in VALIDATION}


def test_dataset_config_name_picks_a_configuration(tmp_path):
    directory = tmp_path / "two"
    (directory / "books").mkdir(parents=True)
    (directory / "hotels").mkdir()
    write_table(directory / "books" / "train.csv", TRAIN)
    write_table(directory / "hotels" / "train.csv", TRAIN[:6] + TRAIN[-6:])
    write_table(directory / "hotels" / "test.csv", TEST)
    (directory / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: books\n  data_files:\n  - split: train\n    path: books/train.csv\n"
        "- config_name: hotels\n  data_files:\n  - split: train\n    path: hotels/train.csv\n"
        "  - split: test\n    path: hotels/test.csv\n---\n# 评论\n",
        encoding="utf-8",
    )
    splits, info = load_splits(dataset_name=str(directory), dataset_config_name="hotels", validation_size=0.2)
    assert sizes(splits) == {"train": 10, "validation": 2, "test": 4}
    assert info["sources"]["test"] == f"{directory} (hotels) [test]"
    with pytest.raises(DataError, match=r"^--dataset_name \S+two: give a configuration with --dataset_config_name "):
        load_splits(dataset_name=str(directory))
    with pytest.raises(DataError, match=r"--dataset_config_name films: no such configuration \(.*books, hotels"):
        load_splits(dataset_name=str(directory), dataset_config_name="films")


# ---------------------------------------------------------------- save_to_disk and ClassLabel


def test_save_to_disk_directory_with_class_label_names(tmp_path):
    names = ["负面", "正面", "中性"]  # not sorted: ids follow the ClassLabel, and 中性 never occurs
    features = datasets.Features(text=datasets.Value("string"), label=datasets.ClassLabel(names=names))
    rows = {
        "text": [text for text, _ in GENUINE_REVIEWS],
        "label": [int(label == "positive") for _, label in GENUINE_REVIEWS],
    }
    test = {"text": ["新的评论一", "新的评论二"], "label": [-1, 1]}  # -1: a ClassLabel's "no label"
    saved = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(rows, features=features),
        test=datasets.Dataset.from_dict(test, features=features),
    )
    saved.save_to_disk(str(tmp_path / "saved"))
    splits, info = load_splits(dataset_name=str(tmp_path / "saved"), validation_size=0.2)
    assert info["id2label"] == {0: "负面", 1: "正面"} and info["label2id"] == {"负面": 0, "正面": 1}
    assert splits["train"].features["label"].names == ["负面", "正面"]
    assert info["stats"]["test"]["empty_dropped"] == 1 and texts_of(splits["test"]) == ["新的评论二"]
    assert splits["test"]["label"][:] == [1]
    first = splits["train"][0]
    assert (first["label"] == 1) == (first["text"] in GENUINE_POSITIVE)
    # A lone Dataset is the train split; a save_to_disk directory has no configurations.
    saved["train"].save_to_disk(str(tmp_path / "lone"))
    splits, info = load_splits(dataset_name=str(tmp_path / "lone"))
    assert sum(sizes(splits).values()) == 30 and info["dataset"]["splits"] == {"train": "train"}
    with pytest.raises(DataError, match="a directory written by save_to_disk has no configurations"):
        load_splits(dataset_name=str(tmp_path / "lone"), dataset_config_name="x")


def test_label_names_replace_class_label_names(tmp_path):
    features = datasets.Features(text=datasets.Value("string"), label=datasets.ClassLabel(names=["neg", "pos"]))
    rows = {
        "text": [text for text, _ in GENUINE_REVIEWS],
        "label": [int(label == "positive") for _, label in GENUINE_REVIEWS],
    }
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    _, info = load_splits(dataset_name=str(tmp_path / "saved"), label_names=["差评", "好评"])
    assert info["id2label"] == {0: "差评", 1: "好评"}


# ---------------------------------------------------------------- errors


def test_missing_split_and_column_errors(reviews_dir):
    with pytest.raises(
        DataError,
        match=r"^--dataset_name \S+reviews: no split 'training' \(splits: train, validation, test\); "
        "name it with --train_split_name$",
    ):
        load_splits(dataset_name=str(reviews_dir), train_split_name="training")
    with pytest.raises(DataError, match=r"reviews \[train\]: no column 'review' \(columns: text, label\)$"):
        load_splits(dataset_name=str(reviews_dir), text_column="review")


def test_label_only_in_validation_names_the_split_and_row(reviews_dir):
    write_table(reviews_dir / "validation.csv", VALIDATION + [("一般般吧", "neutral")])
    with pytest.raises(
        DataError, match=r"reviews \[validation\]: row 5: label 'neutral' never occurs in \S+reviews \[train\]"
    ):
        load_splits(dataset_name=str(reviews_dir))


def test_list_column_is_an_error(tmp_path):
    rows = {"tokens": [list(text) for text, _ in GENUINE_REVIEWS], "label": [label for _, label in GENUINE_REVIEWS]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "tokens"))
    with pytest.raises(DataError, match=r"tokens \[train\]: column 'tokens' holds List values, not texts"):
        load_splits(dataset_name=str(tmp_path / "tokens"), text_column="tokens")


def test_names_that_are_no_dataset(tmp_path, reviews_dir):
    with pytest.raises(ArgumentError, match="--dataset_name or with --train_file .* not both"):
        load_splits(reviews_dir / "train.csv", dataset_name=str(reviews_dir))
    with pytest.raises(DataError, match="^--dataset_name csv: 'csv' is one of datasets' file loaders, not a dataset"):
        load_splits(dataset_name="csv")
    with pytest.raises(DataError, match=r"^--dataset_name ./nowhere: no such directory, nor a Hub dataset id"):
        load_splits(dataset_name="./nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"^--dataset_name \S+empty: no data files found"):
        load_splits(dataset_name=str(empty))


def test_loading_script_is_refused(tmp_path):
    directory = tmp_path / "scripted"
    directory.mkdir()
    (directory / "scripted.py").write_text("import datasets\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"the dataset is a loading script \(scripted\.py\), which datasets 5\.\S+ no"):
        load_splits(dataset_name=str(directory))


# ---------------------------------------------------------------- Hub ids (in new processes)

# Loads each dataset named on the command line and prints what it got (or the error) as JSON; then
# re-raises the last error, which `report_errors` prints as the recipes do: one line, exit status 1.
LOAD = """
import json, sys
import datasets
from finetune.config.arguments import DataArguments
from finetune.data.loading import load_data
from finetune.errors import FinetuneError, report_errors

datasets.disable_progress_bars()

@report_errors("train")
def main(argv):
    results, error = [], None
    for name in sys.argv[1:]:
        try:
            splits, info = load_data(DataArguments(dataset_name=name, validation_size=0.2))
            results.append({"sizes": {k: v.num_rows for k, v in splits.items()}, "id2label": info["id2label"],
                            "sources": info["sources"]})
        except FinetuneError as caught:
            results.append({"error": str(caught)})
            error = caught
    print(json.dumps(results, ensure_ascii=False), flush=True)
    if error is not None:
        raise error

main()
"""
OFFLINE_ERROR = (
    "--dataset_name someone/chinese-reviews: cannot reach the Hugging Face Hub at {endpoint} (HF_HUB_OFFLINE is "
    "set) and the dataset is not in the cache; load it once online, or give a local directory or --train_file"
)


def load_in_new_process(env: dict, *names: str) -> tuple[list[dict], subprocess.CompletedProcess]:
    env = {**env, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", LOAD, *names], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result


def test_hub_dataset_loads_then_loads_offline_from_the_cache(tmp_path):
    files = {"train.csv": TRAIN + VALIDATION, "test.csv": TEST}
    with LocalHub() as hub:
        hub.create_repo("user/reviews", repo_type="dataset")
        hub.commit(
            "user/reviews",
            {name: write_table(tmp_path / name, rows).read_bytes() for name, rows in files.items()},
            repo_type="dataset",
        )
        env = hub_env(hub, tmp_path / "home", "hf_test")
        (loaded, missing), online = load_in_new_process(env, "user/reviews", "user/nope")
    assert loaded["sizes"] == {"train": 20, "validation": 6, "test": 4}
    assert loaded["id2label"] == {"0": "negative", "1": "positive"}
    assert loaded["sources"]["test"] == "user/reviews [test]"
    expected = (
        "--dataset_name user/nope: Dataset 'user/nope' doesn't exist on the Hub or cannot be accessed. "
        "(no such local directory either)"
    )
    assert missing == {"error": expected}
    assert online.returncode == 1 and online.stderr.strip().splitlines()[-1] == f"train: error: {expected}"
    # The hub is gone: with HF_HUB_OFFLINE=1 the cache the first load filled serves it, and a dataset
    # never loaded is one line saying so.
    (cached, unreachable), offline = load_in_new_process(
        {**env, "HF_HUB_OFFLINE": "1"}, "user/reviews", "someone/chinese-reviews"
    )
    assert cached == loaded
    assert unreachable == {"error": OFFLINE_ERROR.format(endpoint=hub.url)}
    assert (
        offline.returncode == 1 and offline.stderr.strip().splitlines()[-1] == f"train: error: {unreachable['error']}"
    )
