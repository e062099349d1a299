"""Texts -> model inputs with `datasets.map`: segment once, count words, encode, batch by length."""

import hashlib
from collections import Counter

import numpy as np
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler


def _map_with_tokenizer(splits: DatasetDict, function, tokenizer, step: str, **kwargs) -> DatasetDict:
    """`splits.map(function)`, fingerprinted by the tokenizer's settings and vocabulary.

    The segmenter (a Rust object) can't be pickled for datasets' fingerprint, so name the result.
    """
    settings = f"{step}-{tokenizer.segmenter}-{tokenizer.do_lower_case}-{tokenizer.user_dict_file}"
    settings += f"-{tokenizer.split_unknown_words}-{tokenizer.model_max_length}-{hash(tuple(tokenizer.vocab))}"
    return DatasetDict(
        {
            name: split.map(
                function,
                batched=True,
                new_fingerprint=hashlib.sha256(f"{split._fingerprint}-{settings}".encode()).hexdigest()[:16],
                desc=f"{step} {name}",
                **kwargs,
            )
            for name, split in splits.items()
        }
    )


def segment_splits(splits: DatasetDict, tokenizer) -> DatasetDict:
    """Adds a `words` column: each text segmented once per run, by the tokenizer's own segmenter."""
    return _map_with_tokenizer(
        splits, lambda batch: {"words": [tokenizer.segment(text) for text in batch["text"]]}, tokenizer, "Segmenting"
    )


def count_words(dataset) -> Counter:
    """Word frequencies over a segmented split."""
    counts = Counter()
    for words in dataset["words"]:
        counts.update(words)
    return counts


def encode_splits(splits: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """`words` -> `input_ids` (truncated to `max_length`) and `attention_mask`, as `tokenizer(text)` gives.

    Reuses the segmentation of `segment_splits` instead of segmenting again.
    """

    def encode(batch):
        ids = [
            tokenizer.convert_tokens_to_ids(tokenizer.words_to_tokens(words)[:max_length]) for words in batch["words"]
        ]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "length": [len(x) for x in ids]}

    return _map_with_tokenizer(splits, encode, tokenizer, f"Encoding-{max_length}", remove_columns=["words"])


def encode_texts(splits: DatasetDict, tokenizer, max_length: int, remove_columns=None) -> DatasetDict:
    """`text` -> `input_ids`, `attention_mask`, `length` with a pretrained encoder's own tokenizer.

    For Hugging Face tokenizers (BERT's WordPiece, the biLM's characters), which `datasets` can
    fingerprint, so the result is cached like any `map`.
    """

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length, return_token_type_ids=False)
        return {**encoded, "length": [len(ids) for ids in encoded["input_ids"]]}

    return splits.map(encode, batched=True, remove_columns=remove_columns, desc="Tokenizing")


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped sampler, reshuffled from `seed + epoch` at each epoch.

    Every process draws the same order (accelerate then shards the batches), and an epoch's order
    can be drawn again on resume.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


MODEL_COLUMNS = ["input_ids", "attention_mask", "labels"]


def _model_inputs(dataset, extra_columns=()):
    return dataset.rename_column("label", "labels").select_columns([*MODEL_COLUMNS, *extra_columns])


def train_dataloader(
    dataset, tokenizer, batch_size: int, seed: int, num_workers: int = 0, extra_columns: tuple[str, ...] = ()
) -> DataLoader:
    """Shuffled batches of texts of similar length (little padding), padded per batch; `extra_columns`
    (of equal length in every row, e.g. a teacher's logits) go into the batches too."""
    sampler = EpochLengthGroupedSampler(batch_size, dataset["length"], seed)
    return DataLoader(
        _model_inputs(dataset, extra_columns),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=DataCollatorWithPadding(tokenizer),
        num_workers=num_workers,
        # Its own generator: starting an iterator then draws no number from the global RNG, so a
        # run resumed mid-epoch sees the same dropout masks as one that never stopped.
        generator=torch.Generator().manual_seed(seed),
    )


def eval_dataloader(dataset, tokenizer, batch_size: int, num_workers: int = 0) -> tuple[DataLoader, np.ndarray]:
    """Batches in length order (fast), plus the order, to map predictions back to the rows.

    A plain sequential sampler keeps `accelerator.gather_for_metrics` exact: every example is
    counted once whatever the number of processes.
    """
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    loader = DataLoader(
        _model_inputs(dataset.select(order)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=DataCollatorWithPadding(tokenizer),
        num_workers=num_workers,
    )
    return loader, order
