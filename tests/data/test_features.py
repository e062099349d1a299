"""finetune.data.features: segment once, encode as the tokenizer does, batch by length."""

from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from finetune import JiebaTokenizer
from finetune.data.features import (
    EpochLengthGroupedSampler,
    count_words,
    encode_splits,
    eval_dataloader,
    segment_splits,
    train_dataloader,
)

# [PAD] is not id 0 on purpose: padding must come from the tokenizer, not from a default of 0.
VOCAB = ["这部", "电影", "[UNK]", "[PAD]", "很", "好", "差", "。", "！", "酒店", "服务"]
TEXTS = [
    "这部电影很好。",
    "酒店很差！",
    "服务",
    "这部电影很好，酒店很差，服务很好，电影很差。",
    "电影",
    "酒店服务很好！这部电影很差。",
    "差",
]
LABELS = [1, 0, 1, 0, 1, 1, 0]


@pytest.fixture
def tokenizer():
    return JiebaTokenizer(vocab=VOCAB, model_max_length=64)


@pytest.fixture
def splits():
    return DatasetDict(
        {
            "train": Dataset.from_dict({"text": TEXTS, "label": LABELS}),
            "test": Dataset.from_dict({"text": TEXTS[:3][::-1], "label": LABELS[:3][::-1]}),
        }
    )


def encoded_split(tokenizer, texts, labels, max_length=64):
    dataset = DatasetDict({"train": Dataset.from_dict({"text": texts, "label": labels})})
    return encode_splits(segment_splits(dataset, tokenizer), tokenizer, max_length)["train"]


def test_segment_splits_adds_words_segmenting_each_text_once(tokenizer, splits):
    calls = []
    segment = tokenizer.segment

    def counting_segment(text):
        calls.append(text)
        return segment(text)

    tokenizer.segment = counting_segment
    segmented = segment_splits(splits, tokenizer)

    assert set(segmented) == {"train", "test"}
    for name, split in splits.items():
        assert segmented[name]["text"] == split["text"]
        assert segmented[name]["label"] == split["label"]
        assert segmented[name]["words"] == [segment(text) for text in split["text"]]
    assert Counter(calls) == Counter(TEXTS + TEXTS[:3])  # every row once, no row twice


def test_segment_splits_words_are_the_tokenizers(tokenizer, splits):
    segmented = segment_splits(splits, tokenizer)
    assert segmented["train"]["words"][0] == ["这部", "电影", "很", "好", "。"]
    assert segmented["train"]["words"][2] == ["服务"]


def test_count_words(tokenizer, splits):
    counts = count_words(segment_splits(splits, tokenizer)["train"])
    expected = Counter(word for text in TEXTS for word in tokenizer.segment(text))
    assert counts == expected
    assert counts["电影"] == 5 and counts["服务"] == 3 and counts["，"] == 3


@pytest.mark.parametrize("split_unknown_words", [True, False])
def test_encode_splits_matches_the_tokenizer(splits, split_unknown_words):
    tokenizer = JiebaTokenizer(vocab=VOCAB, model_max_length=64, split_unknown_words=split_unknown_words)
    splits["test"] = Dataset.from_dict({"text": ["很棒的电影", "酒店服务很好！"], "label": [1, 1]})
    encoded = encode_splits(segment_splits(splits, tokenizer), tokenizer, max_length=64)
    for name, split in splits.items():
        rows = encoded[name]
        assert "words" not in rows.column_names
        assert rows["label"] == split["label"]
        for text, ids, mask, length in zip(
            split["text"], rows["input_ids"], rows["attention_mask"], rows["length"], strict=True
        ):
            assert ids == tokenizer(text)["input_ids"]
            assert mask == [1] * len(ids)
            assert length == len(ids)
    # 很棒 is one jieba word outside the vocabulary: its characters, or one [UNK]
    unk = tokenizer.unk_token_id
    assert tokenizer.segment("很棒的电影") == ["很棒", "的", "电影"]
    if split_unknown_words:
        assert encoded["test"]["input_ids"][0] == [VOCAB.index("很"), unk, unk, VOCAB.index("电影")]
    else:
        assert encoded["test"]["input_ids"][0] == [unk, unk, VOCAB.index("电影")]


@pytest.mark.parametrize("split_unknown_words", [True, False])
def test_encode_splits_truncates_at_max_length(split_unknown_words):
    tokenizer = JiebaTokenizer(vocab=VOCAB, model_max_length=64, split_unknown_words=split_unknown_words)
    long_text = "这部电影很棒。" * 20  # 80 words, 100 tokens when 很棒 is split
    encoded = encoded_split(tokenizer, [long_text, "电影"], [1, 0], max_length=7)
    assert encoded["input_ids"][0] == tokenizer(long_text, max_length=7, truncation=True)["input_ids"]
    assert len(tokenizer(long_text, truncation=False)["input_ids"]) == (100 if split_unknown_words else 80)
    assert encoded["length"] == [7, 1]
    assert encoded["attention_mask"][0] == [1] * 7
    assert encoded["input_ids"][1] == tokenizer("电影")["input_ids"]


LENGTHS = np.random.default_rng(0).integers(1, 100, size=200).tolist()


def batches_of(indices, size):
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def mean_spread(indices, size):
    return np.mean([np.ptp([LENGTHS[i] for i in batch]) for batch in batches_of(indices, size)])


def test_sampler_yields_a_permutation():
    sampler = EpochLengthGroupedSampler(4, LENGTHS, seed=1)
    order = list(sampler)
    assert len(sampler) == len(LENGTHS)
    assert sorted(order) == list(range(len(LENGTHS)))


def test_sampler_same_order_for_same_seed_and_epoch_new_order_next_epoch():
    one, other = EpochLengthGroupedSampler(4, LENGTHS, seed=7), EpochLengthGroupedSampler(4, LENGTHS, seed=7)
    first = list(one)
    assert list(other) == first  # two processes draw the same batches
    assert list(one) == first  # and drawing again repeats the epoch (resume)
    one.set_epoch(1)
    other.set_epoch(1)
    second = list(one)
    assert second != first
    assert list(other) == second
    assert sorted(second) == list(range(len(LENGTHS)))
    one.set_epoch(0)
    assert list(one) == first
    assert list(EpochLengthGroupedSampler(4, LENGTHS, seed=8)) != first


def test_sampler_groups_similar_lengths():
    grouped = list(EpochLengthGroupedSampler(4, LENGTHS, seed=0))
    shuffled = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()
    assert mean_spread(grouped, 4) < 0.25 * mean_spread(shuffled, 4)


def test_train_dataloader_pads_each_batch_with_the_pad_id(tokenizer):
    texts = TEXTS * 3
    labels = LABELS * 3
    dataset = encoded_split(tokenizer, texts, labels)
    loader = train_dataloader(dataset, tokenizer, batch_size=4, seed=0)
    seen = 0
    widths = set()
    for batch in loader:
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.shape == mask.shape and ids.dtype == torch.long
        assert ids.shape[1] == int(mask.sum(1).max())  # padded to the longest in this batch only
        assert torch.all(ids[mask == 0] == tokenizer.pad_token_id)
        assert tokenizer.pad_token_id == 3
        assert not torch.any(ids[mask == 1] == tokenizer.pad_token_id)
        assert batch["labels"].shape == (len(ids),)
        seen += len(ids)
        widths.add(ids.shape[1])
    assert seen == len(texts)
    assert len(widths) > 1  # not one global padding width


def test_train_dataloader_same_batches_per_epoch(tokenizer):
    dataset = encoded_split(tokenizer, TEXTS * 3, LABELS * 3)
    loader = train_dataloader(dataset, tokenizer, batch_size=4, seed=3)

    def epoch(n):
        loader.sampler.set_epoch(n)
        return [batch["input_ids"].tolist() for batch in loader]

    assert epoch(0) == epoch(0)
    assert epoch(0) != epoch(1)


def test_eval_dataloader_every_row_once_in_length_order(tokenizer):
    texts = TEXTS * 2
    labels = list(range(len(texts)))  # a label per row identifies it
    dataset = encoded_split(tokenizer, texts, labels)
    loader, order = eval_dataloader(dataset, tokenizer, batch_size=3)

    assert sorted(order.tolist()) == list(range(len(texts)))
    rows, row_labels = [], []
    for batch in loader:
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id)
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            rows.append(ids[mask.bool()].tolist())
        row_labels += batch["labels"].tolist()

    assert len(rows) == len(texts)
    lengths = [len(row) for row in rows]
    assert lengths == sorted(lengths)
    assert row_labels == order.tolist()  # position i holds original row order[i]
    for position, original in enumerate(order):
        assert rows[position] == dataset["input_ids"][original]
    # mapping predictions back: scatter by `order` restores the original row order
    restored = [None] * len(texts)
    for position, original in enumerate(order):
        restored[original] = row_labels[position]
    assert restored == labels


def test_the_cache_fingerprint_is_the_same_in_every_process():
    """datasets' cache is named by a fingerprint that includes the vocabulary: Python's salted str hash
    would give each process (each `accelerate launch` rank, each new run) its own, and the cache never hits."""
    import os
    import subprocess
    import sys

    code = (
        "from datasets import Dataset, DatasetDict\n"
        "from finetune import JiebaTokenizer\n"
        "from finetune.data.features import encode_splits, segment_splits\n"
        f"tokenizer = JiebaTokenizer(vocab={VOCAB!r}, model_max_length=64)\n"
        f"splits = DatasetDict({{'train': Dataset.from_dict({{'text': {TEXTS!r}, 'label': {LABELS!r}}})}})\n"
        "print(encode_splits(segment_splits(splits, tokenizer), tokenizer, 64)['train']._fingerprint)\n"
    )
    prints = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        for seed in ("1", "2")
    ]
    assert prints[0] and prints[0] == prints[1]
