"""`finetune inspect`: the label issues, near-duplicates and profile of a data set, written as a report
(report.html with its pictures) and CSVs for a spreadsheet or a script."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from finetune.inspection.data_profile import (
    class_counts,
    length_summary,
    script_shares,
    token_lengths,
    unknown_characters,
    word_lengths,
)
from finetune.inspection.duplicates import leak_counts, near_duplicate_pairs
from finetune.inspection.label_issues import (
    out_of_fold_probabilities,
    per_label_issues,
    rank_label_issues,
    self_confidence,
)

logger = logging.getLogger(__name__)

# The word-vector recipe's max_seq_length (word2vec_bilstm_attn.yaml): the share of texts it cuts
WORD_MAX_LENGTH = 256


def model_probabilities(model_dir: str, texts: list[str], names: list[str]) -> tuple[np.ndarray, object]:
    """A saved model's label scores on `texts`, columns in the data's label order; and its tokenizer."""
    from finetune.data.tables import DataError
    from finetune.inference.classifier import load_classifier, predict_probabilities

    classifier = load_classifier(model_dir)
    model, tokenizer = classifier.model.eval(), classifier.tokenizer
    labels = [model.config.id2label[i] for i in sorted(model.config.id2label)]
    missing = [name for name in names if name not in labels]
    if missing:
        raise DataError(f"--model {model_dir}: it has no label {missing[0]!r} of the data (its labels: {labels})")
    scores = predict_probabilities(model, tokenizer, texts, batch_size=256)
    return scores[:, [labels.index(name) for name in names]], tokenizer


def _label_text(label, names: list[str]) -> str:
    if np.ndim(label) == 1:
        return "|".join(names[i] for i in np.flatnonzero(np.asarray(label) > 0.5))
    return names[int(label)]


def _suggested(probabilities: np.ndarray, multi_label: bool, names: list[str]) -> str:
    if multi_label:
        return "|".join(names[i] for i in np.flatnonzero(probabilities > 0.5))
    return names[int(probabilities.argmax())]


def inspect_data(
    data,
    output_dir: Path,
    model: str | None = None,
    folds: int = 5,
    fold_model: str = "tfidf_lr",
    threshold: float = 0.8,
    max_seq_length: int | None = None,
    seed: int = 42,
) -> dict:
    """Reads, cleans and splits `data` (the recipe's `DataArguments`) as training would, then writes the
    report into `output_dir` and returns its summary."""
    from finetune.data.loading import load_data

    splits, info = load_data(data, seed)
    names = [info["id2label"][i] for i in sorted(info["id2label"])]
    multi_label = info["problem_type"] == "multi_label_classification"
    keys = [(split, row) for split, part in splits.items() for row in range(part.num_rows)]
    texts = [text for part in splits.values() for text in part["text"][:]]
    labels = [label for part in splits.values() for label in part["label"][:]]
    tokenizer = None
    if model:
        probabilities, tokenizer = model_probabilities(model, texts, names)
        source = f"the model {model} (in-sample on the rows it trained on: errors it learned by heart are missed)"
    else:
        probabilities = out_of_fold_probabilities(texts, labels, folds, seed, fold_model)
        source = f"{fold_model}, {folds}-fold cross-validation over all {len(texts):,} rows (out-of-fold)"
    ranked = rank_label_issues(labels, probabilities)
    confidence = self_confidence(labels, probabilities)
    issues = [
        {"rank": rank, "split": keys[i][0], "row": keys[i][1], "text": texts[i],
         "given_label": _label_text(labels[i], names),
         "suggested_label": _suggested(probabilities[i], multi_label, names),
         "self_confidence": round(float(confidence[i]), 4)}
        for rank, i in enumerate(ranked, start=1)
    ]  # fmt: skip
    pairs = near_duplicate_pairs({split: part["text"][:] for split, part in splits.items()}, threshold)
    offsets = dict(zip(splits, np.cumsum([0] + [part.num_rows for part in splits.values()])[:-1], strict=True))
    duplicates = []
    for pair in pairs:
        a, b = (offsets[s] + r for s, r in (pair.first, pair.second))
        duplicates.append(
            {
                "split_a": pair.first[0],
                "row_a": pair.first[1],
                "text_a": texts[a],
                "label_a": _label_text(labels[a], names),
                "split_b": pair.second[0],
                "row_b": pair.second[1],
                "text_b": texts[b],
                "label_b": _label_text(labels[b], names),
                "similarity": round(pair.similarity, 4),
            }
        )
        duplicates[-1]["same_label"] = duplicates[-1]["label_a"] == duplicates[-1]["label_b"]
    sizes = {split: part.num_rows for split, part in splits.items()}
    leaks = leak_counts(pairs, sizes) if "train" in sizes else {}
    words = word_lengths(texts)
    summary = {
        "rows": sizes,
        "labels": names,
        "problem_type": info["problem_type"],
        "cleaning": info["stats"],
        "label_issues": {
            "source": source,
            "flagged": len(issues),
            "share": len(issues) / max(len(texts), 1),
            "by_split": {s: sum(1 for r in issues if r["split"] == s) for s in sizes},
        },
        "near_duplicates": {
            "threshold": threshold,
            "pairs": len(pairs),
            "conflicting_labels": sum(not r["same_label"] for r in duplicates),
            "leaks_into_train": {s: {k: v for k, v in c.items() if k != "indices"} for s, c in leaks.items()},
        },
        "words": length_summary(words, max_seq_length or WORD_MAX_LENGTH),
        "scripts": script_shares(texts),
    }
    if multi_label:
        summary["label_issues"]["per_label"] = {
            names[k]: len(rows) for k, rows in enumerate(per_label_issues(labels, probabilities))
        }
    if tokenizer is not None:
        tokens = token_lengths(texts, tokenizer)
        limit = max_seq_length or getattr(tokenizer, "model_max_length", None)
        summary["tokens"] = length_summary(tokens, limit if limit and limit < 1e6 else None)
        unknown, share = unknown_characters(texts, tokenizer)
        summary["unknown_characters"] = {"share": share, "top": unknown}
    if "test" in leaks and not multi_label:  # the model's, or the folds' (each trained with train's rows)
        summary["test_accuracy_by_near_duplicate"] = _accuracy_by_leak(
            probabilities[offsets["test"] : offsets["test"] + sizes["test"]],
            splits["test"]["label"][:],
            leaks["test"]["indices"],
        )
    counts = class_counts({split: part["label"][:] for split, part in splits.items()}, names)
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(
        output_dir / "label_issues.csv",
        issues,
        ["rank", "split", "row", "text", "given_label", "suggested_label", "self_confidence"],
    )
    _write_csv(
        output_dir / "near_duplicates.csv",
        duplicates,
        ["split_a", "row_a", "text_a", "label_a", "split_b", "row_b", "text_b", "label_b", "similarity", "same_label"],
    )
    _write_csv(output_dir / "class_counts.csv", counts, list(counts[0]) if counts else ["label"])
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    from finetune.inspection.report_page import write_report_page

    write_report_page(output_dir, summary, issues, duplicates, counts, (words, confidence, keys, ranked))
    return summary


def _accuracy_by_leak(probabilities: np.ndarray, labels: list[int], leaked: list[int]) -> dict:
    correct = probabilities.argmax(-1) == np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    mask[leaked] = True

    def part(rows: np.ndarray) -> dict:
        return {"rows": int(rows.sum()), "accuracy": float(correct[rows].mean()) if rows.any() else None}

    return {"with_near_duplicate_in_train": part(mask), "rest": part(~mask)}


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
