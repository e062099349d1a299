"""The plain PyTorch loop that `scripts/bench_speed.py` measures the toolkit against: what a user writes by hand.

rjieba, a vocabulary of the training words (seen twice, as word2vec's min_count 2 keeps), 200-d vectors,
BiLSTM 128 per direction, additive attention 128, dropout, linear; length-bucketed batches of 64, packed
sequences, AdamW, clipping at 1.0 (`SIZES`). Its own module, apart from the benchmark's measuring and its
table, so that the baseline the toolkit is compared with reads on one screen, as a user would write it.
"""

import time
from collections import Counter
from pathlib import Path

import numpy as np
import rjieba
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

SIZES = dict(vector_size=200, hidden=128, attention=128, dropout=0.3, batch_size=64, max_length=256, lr=2e-3)
PAD, UNK = 0, 1


def segment(text: str) -> list[str]:
    return [word for word in rjieba.cut(text.lower()) if not word.isspace()]


def encode(words: list[str], index: dict[str, int]) -> torch.Tensor:
    ids = [index.get(word, UNK) for word in words[: SIZES["max_length"]]]
    return torch.tensor(ids or [UNK])


class PlainClassifier(nn.Module):
    """Embedding -> dropout -> packed BiLSTM -> additive attention -> dropout -> linear."""

    def __init__(self, vectors: torch.Tensor, num_labels: int):
        super().__init__()
        hidden = SIZES["hidden"]
        self.embedding = nn.Embedding.from_pretrained(vectors, freeze=False, padding_idx=PAD)
        self.dropout = nn.Dropout(SIZES["dropout"])
        self.lstm = nn.LSTM(vectors.size(1), hidden, batch_first=True, bidirectional=True)
        self.projection = nn.Linear(2 * hidden, SIZES["attention"])
        self.context = nn.Linear(SIZES["attention"], 1, bias=False)
        self.classifier = nn.Linear(2 * hidden, num_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(
            self.dropout(self.embedding(ids)), lengths, batch_first=True, enforce_sorted=False
        )
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        mask = torch.arange(states.size(1))[None, :] < lengths[:, None]
        scores = self.context(torch.tanh(self.projection(states))).squeeze(-1).masked_fill(~mask, float("-inf"))
        pooled = torch.bmm(scores.softmax(-1).unsqueeze(1), states).squeeze(1)
        return self.classifier(self.dropout(pooled))


def collate(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_sequence(sequences, batch_first=True, padding_value=PAD), torch.tensor([len(s) for s in sequences])


def length_bucketed_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of 50 batches, cut into batches, shuffle the batches."""
    order, chunk = torch.randperm(len(lengths), generator=generator).tolist(), 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lengths.__getitem__, reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train_plain_epoch(model: nn.Module, ids: list[torch.Tensor], labels: torch.Tensor, seed: int, max_batches=None):
    """One epoch (or `max_batches`); returns the seconds it took."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=SIZES["lr"], weight_decay=0.01)
    batches = length_bucketed_batches([len(x) for x in ids], SIZES["batch_size"], torch.Generator().manual_seed(seed))
    model.train()
    start, total_loss = time.perf_counter(), 0.0
    for batch in batches[:max_batches]:
        loss = F.cross_entropy(model(*collate([ids[i] for i in batch])), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total_loss += loss.item()
    return time.perf_counter() - start


@torch.inference_mode()
def predict_plain(
    model: nn.Module, index: dict[str, int], texts: list[str], batch_size: int
) -> list[tuple[int, float]]:
    """(label id, probability) per text: segment, sort by length, batches of `batch_size`."""
    model.eval()
    ids = [encode(segment(text), index) for text in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    predictions = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        scores, labels = model(*collate([ids[i] for i in batch])).softmax(-1).max(-1)
        for i, label, score in zip(batch, labels.tolist(), scores.tolist(), strict=True):
            predictions[i] = (label, score)
    return predictions


def frequent_words(segmented: list[list[str]]) -> list[str]:
    """Words seen at least twice, most frequent first: the vocabulary word2vec (min_count 2) would keep."""
    counts = Counter(word for words in segmented for word in words)
    return [word for word, n in counts.most_common() if n >= 2]


def load_vectors(path: Path, words: list[str], seed: int) -> torch.Tensor:
    """Rows for [PAD], [UNK] and `words`: the file's vector where it has one, else random."""
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")
    rows = np.random.default_rng(seed).normal(0, 0.3, size=(len(words) + 2, vectors.vector_size))
    rows[PAD] = 0
    for row, word in enumerate(words, start=2):
        if word in vectors.key_to_index:
            rows[row] = vectors[word]
    return torch.tensor(rows, dtype=torch.float32)


def write_random_vectors(words: list[str], path: Path, seed: int) -> Path:
    """Random 200-d vectors for `words` as a word2vec .bin (speed does not depend on the values)."""
    from gensim.models import KeyedVectors

    keyed = KeyedVectors(vector_size=SIZES["vector_size"])
    keyed.add_vectors(words, np.random.default_rng(seed).normal(0, 0.3, size=(len(words), SIZES["vector_size"])))
    keyed.save_word2vec_format(str(path), binary=True)
    return path


def plain_predictor(model, index):
    """`predict(texts, batch_size)` -> label ids of the plain model, as the benchmark's prediction rows take it."""

    def predict(texts, batch_size):
        return [label for label, _ in predict_plain(model, index, texts, batch_size)]

    return predict


def save_plain(model: PlainClassifier, index: dict[str, int], path: Path) -> Path:
    """The weights and the vocabulary in one file (torch.save), as a user would keep them for serving."""
    torch.save({"state_dict": model.state_dict(), "index": index}, path)
    return path


def load_plain(path: Path) -> tuple[PlainClassifier, dict[str, int]]:
    """`save_plain`'s model (in eval mode) and vocabulary; the sizes are the weights' own."""
    saved = torch.load(path, weights_only=True)
    state = saved["state_dict"]
    model = PlainClassifier(torch.zeros(state["embedding.weight"].shape), len(state["classifier.weight"]))
    model.load_state_dict(state)
    return model.eval(), saved["index"]
