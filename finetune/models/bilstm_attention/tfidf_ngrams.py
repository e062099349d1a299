"""Character n-gram TF-IDF features: what the model's TF-IDF branch reads beside the words.

A text's features are its character 1..3-grams (as scikit-learn's `analyzer="char"` cuts them: runs
of whitespace read as one space), each known n-gram weighted by `(1 + log count) * idf` and the
row scaled to unit length (`TfidfVectorizer(sublinear_tf=True)`); the tokenizer gives them to the
model as `ngram_ids` (1-based; 0 pads) and `ngram_weights`. The n-grams and their idf are fitted on
the training texts (`finetune.tfidf_branch`) and saved as `tfidf_ngrams.json` beside `vocab.txt`.
This file travels to the Hub as custom code and serves the onnxruntime classifier: standard
library only.
"""

import json
import math
import re
from collections import Counter

__all__ = ["NGRAM_FILE", "TfidfNgrams", "char_ngrams"]

NGRAM_FILE = "tfidf_ngrams.json"
_WHITESPACE = re.compile(r"\s\s+")


def char_ngrams(text: str, ngram_range: tuple[int, int] = (1, 3)) -> list[str]:
    """Every character n-gram of `text`, shortest first, as scikit-learn's char analyzer cuts them."""
    text = _WHITESPACE.sub(" ", text)
    low, high = ngram_range
    return [text[start : start + n] for n in range(low, high + 1) for start in range(len(text) - n + 1)]


class TfidfNgrams:
    """The n-gram vocabulary and idf weights of a fitted TF-IDF model; `features(text)` -> (ids, weights).

    Args:
        ngrams: The n-grams; the i-th has id i + 1.
        idf: Their inverse document frequencies.
        ngram_range: Shortest and longest n-gram.
    """

    def __init__(self, ngrams: list[str], idf: list[float], ngram_range=(1, 3)):
        if len(ngrams) != len(idf):
            raise ValueError(f"{len(ngrams)} n-grams but {len(idf)} idf weights")
        self.ngrams, self.idf, self.ngram_range = list(ngrams), [float(x) for x in idf], tuple(ngram_range)
        self.ids = {ngram: index + 1 for index, ngram in enumerate(self.ngrams)}

    def __len__(self) -> int:
        return len(self.ngrams)

    def features(self, text: str) -> tuple[list[int], list[float]]:
        """The ids of the known n-grams of `text` (each once, in order of first sight) and their TF-IDF weights."""
        ids = self.ids
        counts = Counter(index for ngram in char_ngrams(text, self.ngram_range) if (index := ids.get(ngram)))
        weights = [(1.0 + math.log(count)) * self.idf[index - 1] for index, count in counts.items()]
        norm = math.sqrt(sum(weight * weight for weight in weights)) or 1.0
        return list(counts), [weight / norm for weight in weights]

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"ngram_range": list(self.ngram_range), "ngrams": self.ngrams, "idf": self.idf}, file,
                      ensure_ascii=False)  # fmt: skip

    @classmethod
    def from_file(cls, path: str) -> "TfidfNgrams":
        try:
            with open(path, encoding="utf-8") as file:
                saved = json.load(file)
            return cls(saved["ngrams"], saved["idf"], saved["ngram_range"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a TF-IDF n-gram file ({error})") from None
