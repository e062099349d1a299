"""A finished recipe run scored on the benchmark's test texts, and the rows its label scores make.

`recipe_result` reads what a run of `scripts/benchmark.py` left (`metrics.json`, `test_predictions.csv`)
into its record: its predicted label for each test text, checked against its test accuracy.
`recipe_probabilities` gives its best model's label probabilities on those texts, computed once and kept
beside the run; from them `ensemble_runs` averages each run with TF-IDF + LR's, and `branchless_runs`
scores a model that has a TF-IDF branch without it. Apart from the script, which runs the methods and
keeps their runs, because this only reads and scores what a run wrote.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from finetune.data.multilabel import (
    config_thresholds,
    is_multi_label,
    multilabel_metrics,
    predicted_label_sets,
    tune_thresholds,
)
from finetune.errors import FinetuneError
from finetune.evaluation.baselines import macro_f1
from finetune.files import atomic_path
from finetune.model_files import resolve_model_directory


def test_scores(predicted, labels: np.ndarray, num_labels: int) -> dict:
    """Test metrics of predictions: accuracy and macro-F1; multi-label (`labels` (texts, labels) 0/1):
    micro-F1, macro-F1 and exact match (also as `test_accuracy`, scikit-learn's accuracy of such data)."""
    if labels.ndim == 2:
        names = dict(enumerate(map(str, range(num_labels))))
        metrics = multilabel_metrics(np.asarray(predicted), labels, names)
        return {f"test_{key}": metrics[key] for key in ("accuracy", "micro_f1", "macro_f1", "exact_match")}
    return {"test_accuracy": float(np.mean(np.asarray(predicted) == labels)),
            "test_macro_f1": macro_f1(labels, predicted, num_labels)}  # fmt: skip


def recipe_result(run_dir: Path, seed: int, wall_seconds, test_texts: list[str], labels, label2id: dict) -> dict:
    """The recipe run's test numbers, and its predicted label id for each test text in test order (multi-label:
    its 0/1 row of labels) (`wall_seconds`: of the subprocess that finished it; None if the benchmark was
    killed as it ended)."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    table = pd.read_csv(run_dir / "test_predictions.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    multi_label = labels.ndim == 2
    by_text = dict(zip(table["text"], table["predicted_labels" if multi_label else "predicted_label"], strict=True))
    if missing := [text for text in test_texts if text not in by_text]:
        raise FinetuneError(f"{run_dir}: test_predictions.csv lacks {len(missing)} test texts, e.g. {missing[0]!r}")
    if multi_label:
        predicted = np.zeros(labels.shape, dtype=int)
        for row, text in enumerate(test_texts):
            predicted[row, [label2id[name] for name in json.loads(by_text[text])]] = 1
        predicted = predicted.tolist()
    else:
        predicted = [label2id[by_text[text]] for text in test_texts]
    scores = test_scores(predicted, labels, len(label2id))
    if abs(scores["test_accuracy"] - metrics["test_accuracy"]) > 1e-9:
        raise FinetuneError(f"{run_dir}: test_predictions.csv disagrees with metrics.json's test_accuracy")
    # The training loop's time (+ the TF-IDF branch's fit): a resumed run's counts its time before the kill too
    fit_seconds = metrics["train_runtime_s"] + metrics.get("tfidf_branch", {}).get("fit_seconds", 0.0)
    return {"method": "recipe", "seed": seed, "fit_seconds": fit_seconds, "run_dir": str(run_dir),
            "wall_seconds": wall_seconds, **scores, "predicted": predicted}  # fmt: skip


def probabilities_path(run_dir: Path, alone: bool = False, split: str = "test") -> Path:
    """RUN_DIR[.alone][.validation].probabilities.npy"""
    tags = (".alone" if alone else "") + ("" if split == "test" else f".{split}")
    return run_dir.with_name(run_dir.name + tags + ".probabilities.npy")


def has_tfidf_branch(run_dir: Path) -> bool:
    """Whether the run's best model carries a TF-IDF branch (`--tfidf_branch`)."""
    model_dir = Path(resolve_model_directory(run_dir))  # an earlier version's run: its best/
    if not (model_dir / "config.json").is_file() and (model_dir / "adapter_config.json").is_file():  # a LoRA run
        adapter = json.loads((model_dir / "adapter_config.json").read_text(encoding="utf-8"))
        model_dir = Path(adapter["base_model_name_or_path"])
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return config.get("tfidf_num_ngrams", 0) > 0


def recipe_probabilities(
    run_dir: Path, test_texts: list[str], predicted: list | None, alone=False, split: str = "test"
) -> np.ndarray:
    """The run's best model's label scores on the test texts (cut as the recipe cuts them), computed
    once and kept beside the run (RUN_DIR.probabilities.npy; the recipe refuses files it did not write
    in its directory); their argmax is the run's own prediction. `alone`: a model with a TF-IDF branch
    without it (mix weight 0: the BiLSTM's own scores; RUN_DIR.alone.probabilities.npy). `split`: of which
    split the texts are (kept apart); `predicted`: the run's own test predictions to check against, or None."""
    path = probabilities_path(run_dir, alone, split)
    if path.exists() and (kept := np.load(path)).shape[0] == len(test_texts):
        return kept
    from finetune.inference.classifier import load_classifier, predict_probabilities

    classifier = load_classifier(run_dir)
    model, tokenizer = classifier.model, classifier.tokenizer
    if alone:
        model.config.tfidf_mix_weight = 0.0
    max_length = None if getattr(model.config, "long_text", None) == "windows" else tokenizer.model_max_length
    probabilities = predict_probabilities(model, tokenizer, test_texts, batch_size=256, max_length=max_length)
    if predicted is not None and not alone:  # the run's own predictions: a check that this is its model
        if is_multi_label(model.config):
            agree = float(np.mean((predicted_label_sets(probabilities, config_thresholds(model.config))
                                   == np.asarray(predicted)).all(-1)))  # fmt: skip
        else:
            agree = float(np.mean(probabilities.argmax(-1) == np.asarray(predicted)))
    else:
        agree = 1.0
    if agree < agreement_needed(run_dir):
        raise FinetuneError(f"{run_dir}: its best model agrees with test_predictions.csv on {agree:.1%} of texts only")
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.save(file, probabilities)
    return probabilities


def agreement_needed(run_dir: Path) -> float:
    """How many of the run's own test predictions its model, scored here in float32, must give again: all but
    1 in 1,000; a run that trained under `--bf16`/`--fp16` predicted its test texts under autocast, and float32
    flips texts at the boundary (e5 on the reviews: 2 of 1,736), so all but 1 in 200."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    return 0.995 if config.get("bf16") or config.get("fp16") else 0.999


def ensemble_runs(recipe_runs: list[dict], tfidf: dict, labels: np.ndarray, probabilities: list[np.ndarray]) -> list:
    """Each recipe run averaged with TF-IDF + LR (mean of the two models' label probabilities, equal
    weights: nothing chosen on test): a row that shows how far the two models complement each other."""
    runs, tfidf_probabilities = [], np.asarray(tfidf["probabilities"])
    for run, recipe in zip(recipe_runs, probabilities, strict=True):
        predicted = ((recipe + tfidf_probabilities) / 2).argmax(-1)
        runs.append({"method": "ensemble", "config": run["config"], "seed": run["seed"],
                     "title": f"{run['title']} + TF-IDF (mean of probabilities)",
                     "test_accuracy": float(np.mean(predicted == labels)),
                     "test_macro_f1": macro_f1(labels, predicted.tolist(), recipe.shape[1]),
                     "fit_seconds": run["fit_seconds"] + tfidf["fit_seconds"],
                     "wall_seconds": None if run["wall_seconds"] is None
                     else run["wall_seconds"] + tfidf["wall_seconds"],
                     "predicted": predicted.tolist()})  # fmt: skip
    return runs


def branchless_runs(recipe_runs: list[dict], test_texts: list[str], labels: np.ndarray, validation=None) -> list:
    """Each run of a recipe with a TF-IDF branch scored without it (mix weight 0): what the branch adds.
    Multi-label: at a global threshold tuned for micro-F1 on `validation` ((texts, 0/1 labels)) without the
    branch, as the recipe would have tuned it."""
    runs = []
    for run in recipe_runs:
        probabilities = recipe_probabilities(Path(run["run_dir"]), test_texts, run["predicted"], alone=True)
        if labels.ndim == 2:
            texts, references = validation
            scores = recipe_probabilities(Path(run["run_dir"]), texts, None, alone=True, split="validation")
            predicted = predicted_label_sets(probabilities, tune_thresholds(scores, references, "global", "micro_f1"))
        else:
            predicted = probabilities.argmax(-1)
        runs.append({"method": "branchless", "config": run["config"], "seed": run["seed"],
                     "title": f"{run['title']}, its BiLSTM alone (no TF-IDF branch)",
                     **test_scores(predicted.tolist(), labels, probabilities.shape[1]),
                     "fit_seconds": run["fit_seconds"], "wall_seconds": run["wall_seconds"],
                     "predicted": predicted.tolist()})  # fmt: skip
    return runs
