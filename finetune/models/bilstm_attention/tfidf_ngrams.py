"""Character n-gram TF-IDF features: what the model's TF-IDF branch reads beside the words.

A text's features are its character 1..3-grams (as scikit-learn's `analyzer="char"` cuts them: runs
of whitespace read as one space), each known n-gram weighted by `(1 + log count) * idf` and the
row scaled to unit length (`TfidfVectorizer(sublinear_tf=True)`); the tokenizer gives them to the
model as `ngram_ids` (1-based; 0 pads) and `ngram_weights`. The n-grams and their idf are fitted on
the training texts (`finetune.training.tfidf_branch`) and saved as `tfidf_ngrams.json` beside `vocab.txt`.

An n-gram is looked up as one integer, its characters' code points (+1) in 21 bits each (three fit in
64): a batch's n-grams are found, counted and weighted in numpy, about twice as fast as strings in a
dict (0.5 vs 1.0 ms a review on the same busy CPU; idle, 0.17 ms a 144-character review, about twice
what segmenting it costs). This file travels to the Hub as custom code and serves the onnxruntime
classifier: numpy and the standard library only.
"""

import json
import re
from typing import NamedTuple

import numpy as np

__all__ = ["NGRAM_FILE", "NgramRows", "TfidfNgrams", "char_ngrams"]

NGRAM_FILE = "tfidf_ngrams.json"
_WHITESPACE = re.compile(r"\s\s+")


def char_ngrams(text: str, ngram_range: tuple[int, int] = (1, 3)) -> list[str]:
    """Every character n-gram of `text`, shortest first, as scikit-learn's char analyzer cuts them."""
    text = _WHITESPACE.sub(" ", text)
    low, high = ngram_range
    return [text[start : start + n] for n in range(low, high + 1) for start in range(len(text) - n + 1)]


def ngram_keys(ngrams: list[str]) -> np.ndarray:
    """The integer each n-gram of up to 3 characters is looked up by: its code points + 1, 21 bits each
    ("ab": (98 << 21) | 99), in numpy (the demo model's 183k n-grams: 0.08 s one by one in Python)."""
    lengths = np.fromiter(map(len, ngrams), dtype=np.int64, count=len(ngrams))
    if lengths.max(initial=0) > 3:
        raise ValueError("n-grams of up to 3 characters only (three 21-bit code points fill a 64-bit key)")
    codes = np.frombuffer("".join(ngrams).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64) + 1
    starts = np.cumsum(lengths) - lengths
    keys = np.zeros(len(ngrams), dtype=np.uint64)
    for offset in range(int(lengths.max(initial=0))):
        longer = lengths > offset
        keys[longer] = (keys[longer] << np.uint64(21)) | codes[starts[longer] + offset]
    return keys


class KeyTable:
    """Nonzero 64-bit keys -> their positions, looked up a whole array at once: a hash table with linear
    probing in numpy, at most a quarter full. The 4.4 million n-grams of 20,000 reviews, against the demo
    model's 183k: 0.19-0.26 s, where `np.searchsorted` over the sorted keys (17 dependent steps a key) took
    0.43-0.45 s; built in 0.07 s when the model loads."""

    _MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key x this

    def __init__(self, keys: np.ndarray):
        self.bits = max(4, int(np.ceil(np.log2(4 * max(len(keys), 1)))))
        self.keys = np.zeros(1 << self.bits, dtype=np.uint64)  # 0: an empty slot
        self.positions = np.full(1 << self.bits, -1, dtype=np.int64)
        pending = np.arange(len(keys))
        slots = self._slots(keys)
        while len(pending):  # each round: every key whose slot is free takes it (one per slot), the rest move on
            taken = self.keys[slots] != 0
            slots[taken] = (slots[taken] + 1) & ((1 << self.bits) - 1)
            free_slots, first = np.unique(slots[~taken], return_index=True)
            winners = pending[~taken][first]
            self.keys[free_slots], self.positions[free_slots] = keys[winners], winners
            placed = np.zeros(len(pending), dtype=bool)
            placed[np.flatnonzero(~taken)[first]] = True
            pending, slots = pending[~placed], slots[~placed]

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * self._MULTIPLIER) >> np.uint64(64 - self.bits)).astype(np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The position of each key in the table's keys, -1 where it is not one of them."""
        found = np.full(len(keys), -1, dtype=np.int64)
        pending, slots = np.arange(len(keys)), self._slots(keys)
        while len(pending):
            stored = self.keys[slots]
            hit = stored == keys[pending]
            found[pending[hit]] = self.positions[slots[hit]]
            going = ~hit & (stored != 0)  # neither found nor at an empty slot: probe the next one
            pending, slots = pending[going], (slots[going] + 1) & ((1 << self.bits) - 1)
        return found


class NgramRows(NamedTuple):
    """The known n-grams of a batch of texts, stored as a sparse matrix's rows are (CSR): text i's ids
    and weights are `ids[bounds[i]:bounds[i + 1]]` and `weights[...]`. Batches are cut from it in numpy
    (`padded`), without a Python list per text: in `finetune predict`, lists and their padding took more
    time than the n-grams' lookup itself."""

    ids: np.ndarray  # int64, 1-based n-gram ids, ascending within a text
    weights: np.ndarray  # float64 TF-IDF weights, each text's of unit length
    bounds: np.ndarray  # int64, one more than there are texts

    def padded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`ngram_ids` (int64) and `ngram_weights` (float32) of texts `rows`, padded with id 0 and weight 0."""
        starts = self.bounds[rows]
        lengths = self.bounds[rows + 1] - starts
        positions = np.arange(lengths.max(initial=0))
        mask = positions < lengths[:, None]
        source = np.where(mask, starts[:, None] + positions, 0)
        if not len(self.ids):  # no text has a known n-gram
            return np.zeros(mask.shape, dtype=np.int64), np.zeros(mask.shape, dtype=np.float32)
        return np.where(mask, self.ids[source], 0), np.where(mask, self.weights[source], 0.0).astype(np.float32)

    def lists(self) -> list[tuple[list[int], list[float]]]:
        """(ids, weights) of each text, as lists."""
        ids, weights, bounds = self.ids.tolist(), self.weights.tolist(), self.bounds.tolist()
        return [(ids[a:b], weights[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


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
        self._table = KeyTable(ngram_keys(self.ngrams))  # n-grams of over 3 characters: ValueError
        self._idf = np.asarray(self.idf, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ngrams)

    def features(self, text: str) -> tuple[list[int], list[float]]:
        """The ids of the known n-grams of `text` (each once, ascending) and their TF-IDF weights."""
        return self.batch_features([text])[0]

    def batch_features(self, texts: list[str]) -> list[tuple[list[int], list[float]]]:
        """`features` of each text, computed for the whole batch at once (numpy)."""
        return self.batch_rows(texts).lists()

    def batch_rows(self, texts: list[str]) -> NgramRows:
        """`features` of every text of a batch, as `NgramRows` (numpy arrays, no list per text)."""
        texts = [_WHITESPACE.sub(" ", text) for text in texts]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4").astype(np.uint64) + 1
        owner = np.repeat(np.arange(len(texts)), lengths)  # the text of each character
        left = np.cumsum(lengths)[owner] - np.arange(len(codes))  # characters from here to its text's end
        keys, owners = [], []
        low, high = self.ngram_range
        for n in range(low, high + 1):
            starts = np.flatnonzero(left >= n)  # n-grams within one text
            key = codes[starts]
            for offset in range(1, n):
                key = (key << np.uint64(21)) | codes[starts + offset]
            keys.append(key)
            owners.append(owner[starts])
        keys, owners = np.concatenate(keys), np.concatenate(owners)
        found = self._table.find(keys)  # n-gram index (id - 1), -1: not an n-gram of the model
        hit = found >= 0
        size = len(self.ngrams)
        pairs = owners[hit] * (size + 1) + found[hit]
        if len(texts) * (size + 1) < 2**32:  # sorted as 32-bit integers: faster
            pairs = pairs.astype(np.uint32)
        pairs, counts = np.unique(pairs, return_counts=True)
        text_of, index = np.divmod(pairs.astype(np.int64), size + 1)
        weights = (1.0 + np.log(counts)) * self._idf[index]
        norms = np.sqrt(np.bincount(text_of, weights * weights, minlength=len(texts)))
        weights = weights / np.where(norms > 0, norms, 1.0)[text_of]
        bounds = np.searchsorted(text_of, np.arange(len(texts) + 1))
        return NgramRows((index + 1).astype(np.int64), weights, bounds.astype(np.int64))

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
