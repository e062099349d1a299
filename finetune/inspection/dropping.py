"""`--drop_label_issues PATH|auto`: train without the rows flagged as likely mislabelled.

PATH: a `label_issues.csv` of `finetune inspect` (or any table with a `text` column; with a `split`
column, its train rows): training rows whose text it names are dropped. `auto`: the training split is
ranked here as `finetune inspect` ranks it (cleanlab on 5-fold out-of-fold TF-IDF + LR probabilities),
on the training rows alone: validation and test are never looked at.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

AUTO_FOLDS = 5


def flagged_texts(path: str) -> set[str]:
    """The texts of a label-issues table's training rows."""
    from finetune.data.tables import DataError, read_table
    from finetune.errors import ArgumentError

    if not Path(path).is_file():
        raise ArgumentError(
            f"--drop_label_issues {path}: no such file (give a label_issues.csv of finetune inspect, or auto)"
        )
    table = read_table(path)
    if "text" not in table.column_names:
        raise DataError(f"{path}: no 'text' column (columns: {', '.join(table.column_names)})")
    texts = table["text"][:]
    if "split" in table.column_names:
        texts = [text for text, split in zip(texts, table["split"][:], strict=True) if split == "train"]
    return {str(text) for text in texts}


def drop_label_issues(splits, source: str, seed: int) -> tuple[object, dict]:
    """`splits` with the flagged training rows removed, and what was done (for metrics.json and the card)."""
    from finetune.data.tables import DataError

    train = splits["train"]
    texts, labels = train["text"][:], train["label"][:]
    if source == "auto":
        import importlib.util

        from finetune.errors import FinetuneError

        if importlib.util.find_spec("cleanlab") is None:
            raise FinetuneError('--drop_label_issues auto needs cleanlab: pip install "finetune-zh[inspect]"')
        from finetune.inspection.label_issues import out_of_fold_probabilities, rank_label_issues

        probabilities = out_of_fold_probabilities(texts, labels, AUTO_FOLDS, seed)
        flagged = np.zeros(len(texts), dtype=bool)
        flagged[rank_label_issues(labels, probabilities)] = True
        how = f"cleanlab on {AUTO_FOLDS}-fold out-of-fold TF-IDF + LR probabilities of the training rows"
    else:
        named = flagged_texts(source)
        flagged = np.array([text in named for text in texts], dtype=bool)
        how = f"the training rows named in {source}"
    keep = np.flatnonzero(~flagged)
    if keep.size == 0:
        raise DataError(f"--drop_label_issues {source}: it flags every training row")
    splits["train"] = train.select(keep)
    report = {"source": source, "how": how, "dropped": int(flagged.sum()), "kept": int(keep.size)}
    logger.info("--drop_label_issues: %d of %d training rows dropped (%s)", report["dropped"], len(texts), how)
    return splits, report
