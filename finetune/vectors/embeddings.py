"""An embedding matrix for a vocabulary from pretrained word vectors, and its coverage report.

Words the vectors lack get the mean of their characters' vectors (typical for Chinese: 好看极了
-> 好, 看, 极, 了) or a random vector scaled like the found ones.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from finetune.vectors.reading import WordVectors, read_word_vectors

logger = logging.getLogger(__name__)

_OOV_EXAMPLES = 20
# Vectors made for the text cover most of it: Tencent's or Chinese-Word-Vectors' files cover well
# over half of a review vocabulary's words and 90% of its tokens, and a file from another domain
# still a good share. Below these shares the file does not fit the text at all (another language,
# traditional characters for simplified text, character vectors under a word segmenter, a file cut
# short) and the "pretrained" embeddings are in fact random. Either share alone tells: rare words
# lower the type share of a good file, but never to 5%; its frequent words keep tokens far above 10%.
MIN_TYPE_COVERAGE = 0.05
MIN_TOKEN_COVERAGE = 0.10


def _assign_rows(
    vocab: Mapping[str, int], vectors: WordVectors, matrix: np.ndarray, zero: set[str], random: set[str]
) -> dict[str, str]:
    """Fills pretrained and character-mean rows; returns word -> "found" | "chars" | "random"."""
    index = {word: i for i, word in enumerate(vectors.words)}
    sources = {}
    for word, row in vocab.items():
        if word in zero:
            continue
        if word in random:
            sources[word] = "random"
            continue
        if word in index:
            matrix[row] = vectors.vectors[index[word]]
            sources[word] = "found"
            continue
        # An unknown Chinese word (好看极了) is near the mean of its characters; a repeated
        # character counts each time it occurs.
        char_rows = [index[char] for char in word if char in index] if len(word) > 1 else []
        if char_rows:
            matrix[row] = vectors.vectors[char_rows].mean(axis=0, dtype=np.float64)
            sources[word] = "chars"
        else:
            sources[word] = "random"
    return sources


def _coverage_report(
    vocab: Mapping[str, int],
    sources: dict[str, str],
    zero: set[str],
    token_counts: Mapping[str, int] | None,
    dim: int,
) -> dict:
    kinds = Counter(sources.values())
    scored_types = len(vocab) - len(zero)
    report = {
        "dim": dim,
        "vocab_size": len(vocab),
        "types_zero": len(zero),
        "types_found": kinds["found"],
        "types_from_chars": kinds["chars"],
        "types_random": kinds["random"],
        "type_coverage": kinds["found"] / scored_types if scored_types else 0.0,
    }
    random_words = sorted((w for w, s in sources.items() if s == "random"), key=vocab.__getitem__)
    if token_counts is not None:
        tokens = Counter()
        for word, count in token_counts.items():
            if word not in zero:
                # Words outside the vocabulary have no row of their own: they count as uncovered.
                tokens["total"] += int(count)
                tokens[sources.get(word, "outside")] += int(count)
        total = tokens["total"] or 1  # the shares of no tokens at all are 0
        report |= {
            "tokens_total": tokens["total"],
            "tokens_found": tokens["found"],
            "tokens_from_chars": tokens["chars"],
            "token_coverage": tokens["found"] / total,
            "token_coverage_with_chars": (tokens["found"] + tokens["chars"]) / total,
        }
        random_words.sort(key=lambda word: -token_counts.get(word, 0))  # stable: ties keep id order
    report["oov_examples"] = random_words[:_OOV_EXAMPLES]
    return report


def build_embedding_matrix(
    vocab: Mapping[str, int],
    vectors: WordVectors,
    *,
    token_counts: Mapping[str, int] | None = None,
    zero_tokens: Iterable[str] = ("[PAD]",),
    random_tokens: Iterable[str] = ("[UNK]",),
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Builds the embedding matrix of a vocabulary from pretrained vectors.

    Row `vocab[word]` holds the word's pretrained vector; else, for a word of several characters
    of which some have vectors, the mean of those character vectors; else a random vector drawn
    from N(0, std) per dimension, where std is that of the found vectors' values. Zero tokens
    (padding) get zeros.

    Args:
        vocab: Word -> row id, ids 0..len(vocab)-1 (e.g. `tokenizer.get_vocab()`).
        vectors: Pretrained vectors, e.g. from `read_word_vectors`.
        token_counts: Word -> occurrences in the training text, for token coverage and to rank
            `oov_examples`. Occurrences of words outside `vocab` count as not covered.
        zero_tokens: Tokens whose rows stay zero.
        random_tokens: Tokens that always get a random row (`[UNK]` is no word: neither its
            vector nor the mean of `[`, `U`, `N`, `K`, `]` means anything).
        seed: Seed of the random rows; the same seed gives the same matrix.

    Returns:
        The float32 matrix of shape (len(vocab), dim) and a JSON-serialisable report: `dim`,
        `vocab_size`, `types_zero`, `types_found`, `types_from_chars`, `types_random`,
        `type_coverage` (found / non-zero types), with `token_counts` also `tokens_total`,
        `tokens_found`, `tokens_from_chars`, `token_coverage`, `token_coverage_with_chars`, and
        `oov_examples` (up to 20 random-vector words, most frequent first, else in id order).
    """
    ids = sorted(vocab.values())
    if ids != list(range(len(vocab))):
        raise ValueError("vocab ids must be 0..len(vocab)-1, each used once")
    zero = {token for token in zero_tokens if token in vocab}
    matrix = np.zeros((len(vocab), vectors.dim), dtype=np.float32)
    sources = _assign_rows(vocab, vectors, matrix, zero, set(random_tokens))

    found_rows = [vocab[word] for word, source in sources.items() if source == "found"]
    if found_rows:
        std = float(matrix[found_rows].std(dtype=np.float64))
    elif len(vectors):
        std = float(vectors.vectors.std(dtype=np.float64))
    else:
        std = 1.0  # nothing to imitate: nn.Embedding's own N(0, 1)
    # Draw in row-id order so the matrix depends only on vocab and seed, not on dict order.
    random_rows = sorted(vocab[word] for word, source in sources.items() if source == "random")
    rng = np.random.default_rng(seed)
    matrix[random_rows] = rng.normal(0.0, std, size=(len(random_rows), vectors.dim))
    return matrix, _coverage_report(vocab, sources, zero, token_counts, vectors.dim)


def load_word_vectors(
    path: str | os.PathLike,
    vocab: Mapping[str, int],
    *,
    token_counts: Mapping[str, int] | None = None,
    zero_tokens: Iterable[str] = ("[PAD]",),
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Reads the vectors a vocabulary needs (its words and their characters) and builds its matrix.

    Args:
        path: The vector file (any format `read_word_vectors` reads).
        vocab: Word -> row id, ids 0..len(vocab)-1.
        token_counts: Word -> occurrences in the training text, for token coverage.
        zero_tokens: Tokens whose rows stay zero.
        seed: Seed of the random rows.

    Returns:
        The matrix and report of `build_embedding_matrix`, plus `warnings` (a list of strings, see
        `coverage_warnings`); the coverage and the warnings are also logged.
    """
    wanted = set(vocab)
    for word in vocab:
        wanted.update(word)
    matrix, report = build_embedding_matrix(
        vocab,
        read_word_vectors(path, wanted),
        token_counts=token_counts,
        zero_tokens=zero_tokens,
        seed=seed,
    )
    logger.info("%s: %s", path, format_coverage(report))
    report["warnings"] = coverage_warnings(report, path)
    for warning in report["warnings"]:
        logger.warning("%s", warning)
    return matrix, report


def coverage_warnings(report: dict, path: str | os.PathLike) -> list[str]:
    """Says so when the vectors cover none or almost none of the vocabulary (see `MIN_TYPE_COVERAGE`).

    Args:
        report: The report returned by `build_embedding_matrix`.
        path: The vector file, named in the warning.

    Returns:
        One warning, or none when the coverage is plausible.
    """
    types = report["vocab_size"] - report.get("types_zero", 0)
    type_share, token_share = report["type_coverage"], report.get("token_coverage")
    low_tokens = token_share is not None and token_share < MIN_TOKEN_COVERAGE
    if not types or (type_share >= MIN_TYPE_COVERAGE and not low_tokens):
        return []
    covered = f"{type_share:.1%} of the {types:,} vocabulary types"
    if token_share is not None:
        covered += f" and {token_share:.1%} of the training tokens"
    return [
        f"{path}: the vectors cover only {covered}, so the embeddings start almost all random; "
        "check the file fits the text (language, simplified vs traditional characters, words vs characters)"
    ]


def format_coverage(report: dict) -> str:
    """Says in one or two lines how well the vectors of a report cover the vocabulary.

    Args:
        report: The report returned by `build_embedding_matrix`.
    """
    types = report["vocab_size"] - report.get("types_zero", 0)
    text = f"vectors cover {report['type_coverage']:.1%} of {types:,} vocabulary types"
    if "token_coverage" in report:
        text += (
            f" and {report['token_coverage']:.1%} of tokens"
            f" ({report['token_coverage_with_chars']:.1%} with character means)"
        )
    else:
        text += f" ({report['types_from_chars']:,} more from character means)"
    text += f"; {report['types_random']:,} types random"
    if report.get("oov_examples"):
        text += "\nrandom vectors for: " + ", ".join(report["oov_examples"][:10])
    return text
