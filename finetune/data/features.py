"""Texts -> model inputs with `datasets.map`: segment once, count words, encode, batch by length."""

import functools
import hashlib
import json
import os
import signal
from collections import Counter
from dataclasses import replace

import numpy as np
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER
from transformers.trainer_pt_utils import LengthGroupedSampler

from finetune.errors import ArgumentError
from finetune.models.bilstm_attention.long_text import LongText
from finetune.processes import die_with_parent

# `--train_windows`: train on each long text's first window, or on all of them (each with its label).
TRAIN_WINDOWS = ("first", "all")


def _map_with_tokenizer(
    splits: DatasetDict, function, tokenizer, step: str, options: str = "", **kwargs
) -> DatasetDict:
    """`splits.map(function)` shown as `step`, fingerprinted by it, `options` and the tokenizer's settings and
    vocabulary.

    The segmenter (a Rust object) can't be pickled for datasets' fingerprint, so name the result.
    """
    settings = f"{step}-{options}-{tokenizer.segmenter}-{tokenizer.do_lower_case}-{tokenizer.user_dict_file}"
    # sha256, not hash(): Python salts str hashes per process, so the cache would never hit (and under
    # `accelerate launch` each process would write its own copy)
    vocabulary = hashlib.sha256("\n".join(tokenizer.vocab).encode()).hexdigest()[:16]
    settings += f"-{tokenizer.split_unknown_words}-{tokenizer.model_max_length}-{vocabulary}"
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


def special_token_counts(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text (BERT: [CLS] and [SEP], 1 and 1)."""
    bare = tokenizer("好", add_special_tokens=False)["input_ids"]
    full = tokenizer("好")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return start, len(full) - len(bare) - start
    raise ValueError(f"{type(tokenizer).__name__}: cannot find a text's tokens among its special tokens")


LONG_TEXT_FLAGS = {"max_length": "max_seq_length", "long_text": "long_text", "max_windows": "max_windows"}


def long_text_settings(data, tokenizer, max_length: int) -> LongText:
    """The long-text settings of the run (`DataArguments`) for this tokenizer's special tokens.

    Raises:
        ArgumentError: A flag's value does not fit (e.g. `--doc_stride` not below a window's text tokens).
    """
    prefix, suffix = special_token_counts(tokenizer)
    doc_stride = data.doc_stride if data.doc_stride is not None else max_length // 4
    settings = LongText(
        max_length, data.long_text, data.truncation, data.truncation_head_ratio, doc_stride,
        data.max_windows, data.window_aggregation, prefix, suffix,
    )  # fmt: skip
    for key, wanted in settings.problems().items():
        flag = LONG_TEXT_FLAGS.get(key, key)
        value = max_length if key == "max_length" else doc_stride if key == "doc_stride" else getattr(data, flag)
        raise ArgumentError(f"--{flag} {value}: must be {wanted}")
    if data.train_windows not in TRAIN_WINDOWS:
        raise ArgumentError(f"--train_windows {data.train_windows}: must be one of {', '.join(TRAIN_WINDOWS)}")
    return settings


def long_text_config(settings: LongText) -> dict:
    """The model config's keys for `settings` (`BiLSTMAttentionConfig`: what forward and pipeline() apply)."""
    return {
        "max_length": settings.max_length,
        "long_text": settings.mode,
        "truncation": settings.truncation,
        "truncation_head_ratio": settings.head_ratio,
        "doc_stride": settings.doc_stride,
        "max_windows": settings.max_windows,
        "window_aggregation": settings.aggregation,
        "prefix_special_tokens": settings.prefix,
        "suffix_special_tokens": settings.suffix,
    }


def prepare_tokenizer(tokenizer, settings: LongText) -> None:
    """Where the tokenizer itself cuts (`truncation=True`; JiebaTokenizer in pipeline() by default):
    head and tail through transformers' `truncation_side`; head+tail uncut (the model keeps both
    ends); windows at the tokens they cover. The model cuts the rest the same way."""
    tokenizer.truncation_side = "left" if settings.truncation == "tail" and settings.mode == "truncate" else "right"
    if settings.mode == "windows":
        tokenizer.model_max_length = settings.input_limit
    elif settings.truncation == "head+tail":
        tokenizer.model_max_length = VERY_LARGE_INTEGER
    else:
        tokenizer.model_max_length = settings.max_length


def text_rows(ids: list[int], settings: LongText, train_windows: str | None) -> list[list[int]]:
    """A text's model inputs: its cut; with windows, in training its first or all windows (each a row
    with the text's label), in evaluation the tokens its windows cover (the model scores them)."""
    if settings.mode == "truncate":
        return [settings.truncate(ids)]
    if train_windows is None:
        return [replace(settings, max_length=settings.input_limit, truncation="head").truncate(ids)]
    windows = settings.windows(ids)
    return windows if train_windows == "all" else windows[:1]


def _rows_of_texts(batch: dict, token_ids: list[list[int]], settings, train_windows, dropped=()) -> dict:
    """The batch's columns (less `dropped`), a row per model input of each text, with the inputs."""
    kept = [key for key in batch if key not in dropped]
    out = {key: [] for key in [*kept, "input_ids", "attention_mask", "length"]}
    for index, ids in enumerate(token_ids):
        for row in text_rows(ids, settings, train_windows):
            for key in kept:
                out[key].append(batch[key][index])
            out["input_ids"].append(row)
            out["attention_mask"].append([1] * len(row))
            out["length"].append(len(row))
    return out


def encode_splits(
    splits: DatasetDict, tokenizer, max_length: int, long_text: LongText | None = None, train_windows: str = "first"
) -> DatasetDict:
    """`words` -> `input_ids` and `attention_mask`, as `tokenizer(text)` gives them, cut as `long_text` says
    (None: the first `max_length`); `train_windows` ("first"/"all") for the train split's windows.

    Reuses the segmentation of `segment_splits` instead of segmenting again.
    """
    settings = long_text or LongText(max_length)
    encoded = {}
    for name, split in splits.items():
        windows = train_windows if name == "train" else None

        def encode(batch, windows=windows):
            ids = [tokenizer.convert_tokens_to_ids(tokenizer.words_to_tokens(words)) for words in batch["words"]]
            return _rows_of_texts(batch, ids, settings, windows, dropped=("words",))

        encoded |= _map_with_tokenizer(
            DatasetDict({name: split}), encode, tokenizer, "Encoding", f"{settings}-{windows}",
            remove_columns=split.column_names,
        )  # fmt: skip
    return DatasetDict(encoded)


def encode_texts(
    splits: DatasetDict,
    tokenizer,
    max_length: int,
    remove_columns=None,
    long_text: LongText | None = None,
    train_windows: str = "first",
) -> DatasetDict:
    """`text` -> `input_ids`, `attention_mask`, `length` with a pretrained encoder's own tokenizer.

    For Hugging Face tokenizers (BERT's WordPiece, the biLM's characters), which `datasets` can
    fingerprint, so the result is cached like any `map`. With `long_text`, texts are cut (or split
    into windows: `train_windows` for the train split) as `encode_splits` does.
    """
    if long_text is None:

        def encode(batch):
            encoded = tokenizer(batch["text"], truncation=True, max_length=max_length, return_token_type_ids=False)
            return {**encoded, "length": [len(ids) for ids in encoded["input_ids"]]}

        return splits.map(encode, batched=True, remove_columns=remove_columns, desc="Tokenizing")

    def encode_rows(batch, windows):
        ids = tokenizer(batch["text"], verbose=False, return_token_type_ids=False)["input_ids"]
        return _rows_of_texts(batch, ids, long_text, windows, dropped=tuple(remove_columns or ()))

    return DatasetDict(
        {
            name: split.map(
                encode_rows,
                batched=True,
                fn_kwargs={"windows": train_windows if name == "train" else None},
                remove_columns=split.column_names,
                desc="Tokenizing",
            )
            for name, split in splits.items()
        }
    )


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


NGRAM_COLUMNS = ["ngram_ids", "ngram_weights"]  # with a TF-IDF branch (`add_ngram_columns`)


def _model_inputs(dataset, extra_columns=()):
    ngrams = [column for column in NGRAM_COLUMNS if column in dataset.column_names]
    return dataset.rename_column("label", "labels").select_columns([*MODEL_COLUMNS, *ngrams, *extra_columns])


def worker_init_fn(worker_id: int, parent: int) -> None:
    """A DataLoader worker (`num_workers` > 0) dies with the process that forked it (`die_with_parent`): killed,
    even by SIGKILL, a training run would otherwise leave its workers holding their memory. It ignores SIGINT
    and SIGTERM, which a terminal's Ctrl-C and `accelerate launch` send to every process of the run: the
    training process saves a checkpoint at the next step, for which it still needs its batches.

    Args:
        worker_id: The worker's number (DataLoader's argument).
        parent: The pid of the process that made the DataLoader.
    """
    forked_by = os.getppid()
    if forked_by != parent:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)  # the process it works for is gone already
        except PermissionError:
            pass
        parent = forked_by  # a forkserver's child: the kernel signals when the forkserver ends
    die_with_parent(parent)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


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
        worker_init_fn=functools.partial(worker_init_fn, parent=os.getpid()),
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
        worker_init_fn=functools.partial(worker_init_fn, parent=os.getpid()),
    )
    return loader, order


def add_ngram_columns(dataset, tokenizer):
    """`ngram_ids` and `ngram_weights` of each row's `text`, for a tokenizer with a TF-IDF branch."""

    def features(batch):
        features = tokenizer.ngram_features(batch["text"])
        return {"ngram_ids": [ids for ids, _ in features], "ngram_weights": [weights for _, weights in features]}

    # The function holds the tokenizer, which `datasets` cannot hash: the n-grams name the result instead.
    digest = hashlib.sha256(json.dumps(tokenizer.tfidf.ngrams, ensure_ascii=False).encode()).hexdigest()[:16]
    fingerprint = hashlib.sha256(f"{dataset._fingerprint}-{digest}-{tokenizer.init_kwargs}".encode()).hexdigest()[:16]
    return dataset.map(features, batched=True, desc="TF-IDF n-grams", new_fingerprint=fingerprint)
