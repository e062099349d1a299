"""How far a run's predictions change when its test texts are written in traditional characters.

    python scripts/traditional_agreement.py outputs/run

Reads OUTPUT_DIR/test_predictions.csv (the test texts and labels), converts each text with OpenCC
`s2t`, predicts both forms with `pipeline()` on OUTPUT_DIR and prints one markdown row: texts,
texts s2t changed, predictions that agree, accuracy on each form, texts tokenized identically
(README "Traditional characters and normalisation").
"""

import csv
import sys

import opencc
from transformers import pipeline

import finetune  # noqa: F401  (registers the model with the Auto classes)


def main(run: str) -> None:
    with open(f"{run}/test_predictions.csv", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
    texts, gold = [row["text"] for row in rows], [row["label"] for row in rows]
    converter = opencc.OpenCC("s2t.json")
    traditional = [converter.convert(text) for text in texts]
    classifier = pipeline("text-classification", model=run)
    given = [prediction["label"] for prediction in classifier(texts, batch_size=64)]
    converted = [prediction["label"] for prediction in classifier(traditional, batch_size=64)]
    agree = sum(a == b for a, b in zip(given, converted, strict=True))
    tokenize = classifier.tokenizer.tokenize
    same_tokens = sum(tokenize(a) == tokenize(b) for a, b in zip(texts, traditional, strict=True))
    changed = sum(a != b for a, b in zip(texts, traditional, strict=True))

    def accuracy(predicted):
        return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)

    print(f"| {run} | {len(texts)} | {changed} | {agree} ({agree / len(texts):.2%}) | {accuracy(given):.4f} "
          f"| {accuracy(converted):.4f} | {same_tokens} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
