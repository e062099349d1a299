"""Drop the rows a classifier must not learn from: within a split (empty, missing label, duplicate,
contradictory) and across splits (a training text that a validation or test file also holds).

Separate from `finetune.data.loading`, which reads the splits and runs the steps in order, because these
rules are the ones a user meets in the log and in `info["stats"]`, and they are tested one by one.
"""

from __future__ import annotations

import logging
from itertools import combinations

import datasets
import numpy as np
from pandas._libs.parsers import STR_NA_VALUES

from finetune.data.tables import DataError

logger = logging.getLogger(__name__)

# The strings pandas reads as missing ("NaN", "null", "None", "N/A", "NA", "<NA>", ...): as labels
# they are a spreadsheet's or a script's missing value, never a class. Lowercase "none" is not among
# them: NLPCC emotion corpora use it as a real class.
MISSING_LABELS = frozenset(STR_NA_VALUES) - {""}


def shorten(text: str, limit: int = 30) -> str:
    """`text` cut to `limit` characters with an ellipsis, for examples in messages."""
    return text if len(text) <= limit else text[:limit] + "…"


def whole_numbers(labels: list) -> list[int] | None:
    """The labels as ints if every one is a whole number written as a string ("1", "2.0"), else None."""
    numbers = []
    for label in labels:
        try:
            number = float(label)
        except (TypeError, ValueError):
            return None
        if not number.is_integer():
            return None
        numbers.append(int(number))
    return numbers


def _hashable(label):
    """A label, or a multi-label row's list of labels as a tuple (set members must be hashable)."""
    return tuple(label) if isinstance(label, list) else label


def clean_split(ds: datasets.Dataset, *, name: str) -> tuple[datasets.Dataset, dict]:
    """Strip texts and labels, and drop empty, duplicate and contradictory rows.

    Rows whose text or label is missing or blank are dropped, and so are rows whose label is a
    string that stands for a missing value (`MISSING_LABELS`: "NaN", "null", "None", "N/A", ...;
    not "none"); of rows with the same text and label the first is kept; a text found with two
    different labels loses all its rows (up to 5 are logged). Columns other than "text" and
    "label" pass through. Where such strings sat among whole numbers (which makes pandas read the
    whole column as strings), the numbers kept become ints again.

    Args:
        ds: Rows with a "text" column and a "label" column (strings or ints).
        name: What the rows are called in the log line and in errors, e.g. the file name.

    Returns:
        The cleaned rows, and counts: rows_read = empty_dropped + missing_label_dropped +
        duplicates_removed + conflicting_dropped + kept, and conflicting_texts.

    Raises:
        DataError: No row is left.
    """
    texts = [None if text is None else str(text).strip() for text in ds["text"][:]]
    raw_labels = ds["label"][:]
    labels = [label.strip() if isinstance(label, str) else label for label in raw_labels]
    warn_merged_labels(raw_labels, labels, name)
    counts = {"rows_read": len(texts), "empty_dropped": 0, "missing_label_dropped": 0, "duplicates_removed": 0}
    seen, labels_by_text, kept = set(), {}, []
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if not text or label is None or label == "":
            counts["empty_dropped"] += 1
        elif isinstance(label, str) and label in MISSING_LABELS:
            counts["missing_label_dropped"] += 1
        elif (text, _hashable(label)) in seen:
            counts["duplicates_removed"] += 1
        else:
            seen.add((text, _hashable(label)))
            labels_by_text.setdefault(text, []).append(label)
            kept.append(index)
    conflicting = {text: found for text, found in labels_by_text.items() if len(found) > 1}
    if conflicting:
        examples = "; ".join(
            f"'{shorten(text)}' ({', '.join(map(str, found))})" for text, found in list(conflicting.items())[:5]
        )
        logger.warning(
            "%s: %d texts have two labels, all their rows dropped, e.g. %s", name, len(conflicting), examples
        )
        kept = [index for index in kept if texts[index] not in conflicting]
    counts["conflicting_dropped"] = sum(map(len, conflicting.values()))
    counts.update(conflicting_texts=len(conflicting), kept=len(kept))
    logger.info("%s: %s", name, ", ".join(f"{number} {key.replace('_', ' ')}" for key, number in counts.items()))
    if not kept:
        raise DataError(f"{name}: no rows left after cleaning ({counts})")
    # Index arrays rather than lists: `datasets` fingerprints a list item by item, which is slow.
    columns = ds.select(np.asarray(kept, dtype=np.int64))[:]
    columns.update(text=[texts[index] for index in kept], label=[labels[index] for index in kept])
    features = datasets.Features({**ds.features, "text": datasets.Value("string")})
    if counts["missing_label_dropped"] and (numbers := whole_numbers(columns["label"])) is not None:
        columns["label"], features["label"] = numbers, datasets.Value("int64")
    # Casting after building is arrow-level; `from_dict(features=...)` would encode row by row.
    return datasets.Dataset.from_dict(columns).cast(features), counts


def warn_merged_labels(raw: list, stripped: list, name: str) -> None:
    """Labels that differ only by spaces around them ("pos" and "pos ") are one label: a WARNING names them,
    as they are written, so that a typo in the data does not pass unseen."""
    spellings: dict = {}
    for before, after in zip(raw, stripped, strict=True):
        if isinstance(before, str):
            spellings.setdefault(after, set()).add(before)
    merged = {label: found for label, found in spellings.items() if len(found) > 1}
    if merged:
        listed = "; ".join(
            f"{' + '.join(repr(spelling) for spelling in sorted(found))} -> {label!r}"
            for label, found in list(merged.items())[:5]
        )
        logger.warning("%s: labels that differ only by spaces around them are taken as one: %s", name, listed)


def drop_shared_texts(splits: dict, sources: dict, stats: dict) -> None:
    """Warn about texts found in two files, and remove from train those in evaluation files.

    A text in both train and validation (or test) would score the model on what it learned by heart.

    Args:
        splits: Cleaned rows by split ("train" and those read from files); "train" is replaced.
        sources: The file (or dataset split) of each split, for messages.
        stats: `clean_split`'s counts by split; train's gain "shared_removed" and a new "kept".

    Raises:
        DataError: No training row is left.
    """
    texts = {split: set(part["text"][:]) for split, part in splits.items()}
    for first, second in combinations(splits, 2):
        pair_sources = sources[first], sources[second]
        if shared := texts[first] & texts[second]:
            examples = "; ".join(f"'{shorten(text)}'" for text in sorted(shared)[:3])
            logger.warning("%d texts occur in both %s and %s, e.g. %s", len(shared), *pair_sources, examples)
    held_out = set().union(*(texts[split] for split in splits if split != "train"))
    keep = [index for index, text in enumerate(splits["train"]["text"][:]) if text not in held_out]
    removed = splits["train"].num_rows - len(keep)
    stats["train"].update(shared_removed=removed, kept=len(keep))
    if not keep:
        raise DataError(f"{sources['train']}: no rows left after removing the texts found in other files")
    if removed:
        logger.warning("%s: removed %d texts found in validation or test files", sources["train"], removed)
        splits["train"] = splits["train"].select(np.asarray(keep, dtype=np.int64))
