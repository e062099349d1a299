"""A pretrained vector file combined with word2vec trained here (gensim), cached by content.

Pretrained vectors of another domain leave holes: Chinese Wikipedia's word2vec has no punctuation
and no stopwords (不, 好, 很), so it covers ~40% of a review's tokens, where word2vec trained on the
training texts covers nearly all. Two ways to have both (`--combine_vectors`):

- `continue_word_vectors`: word2vec whose vocabulary is the corpus's, started from the file's
  vectors for the words both have (rescaled to word2vec's own scale, see `CONTINUE_MEAN_NORM`) and
  trained on the corpus: the file's words adapt to the domain, the corpus's other words are learnt
  in the file's space. Its dimension is the file's.
- `concat_word_vectors`: per word [file | word2vec trained here], each half scaled to the same mean
  norm; a half a word lacks is predicted from the other by a linear map fitted on the shared words.

Both write a word2vec `.bin` under `$FINETUNE_CACHE/vectors` (else `~/.cache/finetune/vectors`),
named by a hash of the file's identity (resolved path, size, mtime), the sentences and every
parameter; an existing one is returned without training. Only the words of the corpus (and their
characters) are kept from the file: a classifier's vocabulary comes from its training texts, which
are part of the corpus, so no other word of the file could ever be looked up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finetune.errors import ArgumentError
from finetune.files import atomic_path, cache_directory
from finetune.vectors.reading import WordVectors, read_word_vectors
from finetune.vectors.word2vec import epoch_log, train_word_vectors, training_key

logger = logging.getLogger(__name__)

COMBINATIONS = ("none", "continue", "concat")
# Part of every key: a change to what a combination writes must bump it.
FORMAT = 1
# The mean norm the file's vectors are rescaled to before word2vec continues from them: word2vec's own
# scale (a skip-gram run here on the embedded corpus: 1.98 at 200 dimensions). Pretrained files come in
# any scale (Chinese Wikipedia's: 27.6); at 10x word2vec's, gensim's learning rate barely moves them,
# and the corpus's own words, which start near zero, never grow to their size.
CONTINUE_MEAN_NORM = 2.0
# Dimension of the half trained here when concat's `vector_size` is not given (as the builders' default).
CONCAT_HERE_SIZE = 200
# Ridge strength of the linear map between the halves, relative to the mean variance of the inputs; the map
# is fitted only with this many shared words per dimension (fewer would fit them exactly and predict nothing).
MAP_RIDGE = 0.01
MAP_PAIRS_PER_DIMENSION = 2


def file_identity(path: str | os.PathLike) -> dict:
    """What the cache keys record of a vector file: {"path" (resolved), "size", "mtime_ns"}."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cached(name: str, sentences: Sequence[Sequence[str]], params: dict, cache_dir, what: str) -> tuple[Path, bool]:
    """(the cache file of these sentences and parameters, whether it exists already: then logged as reused)."""
    if iter(sentences) is sentences:
        raise TypeError("sentences must be a sequence (e.g. a list), not an iterator")
    directory = Path(cache_dir) if cache_dir is not None else cache_directory("vectors")
    path = directory / f"{name}-{training_key(sentences, {**params, 'format': FORMAT})}.bin"
    hit = path.exists()
    if hit:
        logger.info("reusing cached %s vectors %s", what, path)
    return path, hit


def _corpus_file_vectors(path, sentences: Sequence[Sequence[str]]) -> WordVectors:
    """The file's vectors of the corpus's words and of their characters (see the module's docstring)."""
    words = {word for sentence in sentences for word in sentence}
    wanted = words | {char for word in words for char in word}
    started = time.perf_counter()
    vectors = read_word_vectors(path, wanted=wanted)
    logger.info(
        "%s: %d of the corpus's %d words and characters have a vector of dimension %d (%.1fs)",
        path, len(vectors), len(wanted), vectors.dim, time.perf_counter() - started,
    )  # fmt: skip
    return vectors


def _mean_norm(vectors: np.ndarray) -> float:
    return float(np.linalg.norm(vectors, axis=1).mean(dtype=np.float64)) if len(vectors) else 0.0


def _save(words: list[str], vectors: np.ndarray, path: Path) -> None:
    from gensim.models import KeyedVectors

    keyed = KeyedVectors(vector_size=vectors.shape[1])
    keyed.add_vectors(words, vectors.astype(np.float32))
    keyed.allocate_vecattrs(["count"], [np.int64])  # falling "counts": gensim writes the words in the order given
    keyed.expandos["count"][:] = np.arange(len(words), 0, -1)
    with atomic_path(path) as temporary:  # never half a file under the final name
        keyed.save_word2vec_format(str(temporary), binary=True)


def continue_word_vectors(
    path: str | os.PathLike,
    sentences: Sequence[Sequence[str]],
    *,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 5,
    sg: int = 0,
    seed: int = 0,
    workers: int = 2,
    alpha: float = 0.025,
    mean_norm: float | None = CONTINUE_MEAN_NORM,
    keep_file_words: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """word2vec on `sentences` started from the vectors of the file at `path`, cached by content.

    The vocabulary is the corpus's (`min_count`); its words the file has start from their file
    vector, times one factor that brings the file's mean norm to `mean_norm`; the others start as
    gensim starts them (near zero) and are learnt in the file's space. With `keep_file_words`, the
    file's words the corpus has fewer than `min_count` times (rare words a training text may still
    hold) are added after training with their (rescaled) file vectors, which stay in the same space:
    the trained words started there. The dimension is the file's.

    Args:
        path: The pretrained vector file (any format `read_word_vectors` reads).
        sentences: Segmented sentences, read once per epoch, so not an iterator.
        window, min_count, epochs, sg, seed, workers: As `train_word_vectors`'s. `epochs` 0: no training.
        alpha: gensim's initial learning rate (its default 0.025).
        mean_norm: The file's mean vector norm after rescaling; None keeps the file's values.
        keep_file_words: Add the corpus's words below `min_count` that the file has (see above).
        cache_dir: Folder of the cached files; default `$FINETUNE_CACHE/vectors`.

    Returns:
        The path of the vector file (word2vec binary), readable by `read_word_vectors` and gensim.
    """
    params = {
        "method": "continue", "file": file_identity(path), "window": window, "min_count": min_count,
        "epochs": epochs, "sg": sg, "seed": seed, "workers": workers, "alpha": alpha, "mean_norm": mean_norm,
        "keep_file_words": keep_file_words,
    }  # fmt: skip
    output, hit = _cached("continued", sentences, params, cache_dir, "continued")
    if hit:
        return output
    from gensim.models import Word2Vec  # imported here: reading vectors should not pull in gensim

    started = time.perf_counter()
    pretrained = _corpus_file_vectors(path, sentences)
    if not len(pretrained):
        raise ArgumentError(f"--word_vectors {path}: none of the corpus's words has a vector to continue from")
    scale = 1.0 if mean_norm is None else mean_norm / (_mean_norm(pretrained.vectors) or 1.0)
    model = Word2Vec(
        vector_size=pretrained.dim, window=window, min_count=min_count, epochs=epochs, sg=sg, seed=seed,
        workers=workers, alpha=alpha,
    )  # fmt: skip
    logger.info("continue: building the vocabulary of %d sentences", len(sentences))
    model.build_vocab(sentences)
    if len(model.wv) == 0:
        raise ValueError(f"no word occurs min_count={min_count} times in {len(sentences)} sentences")
    file_rows = {word: row for row, word in enumerate(pretrained.words)}
    shared = [word for word in model.wv.index_to_key if word in file_rows]
    if shared:
        model.wv.vectors[[model.wv.key_to_index[w] for w in shared]] = (
            scale * pretrained.vectors[[file_rows[w] for w in shared]]
        )
    logger.info(
        "continue: %d of the corpus's %d words (min_count %d) start from the file's vectors (times %.4g), "
        "%d from gensim's random ones; training %d epochs",
        len(shared), len(model.wv), min_count, scale, len(model.wv) - len(shared), epochs,
    )  # fmt: skip
    if epochs > 0:
        model.train(sentences, total_examples=model.corpus_count, epochs=epochs, callbacks=[epoch_log(epochs)])
    words, vectors = list(model.wv.index_to_key), model.wv.vectors
    if keep_file_words:
        added = [word for word in pretrained.words if word not in model.wv.key_to_index]
        words += added
        vectors = np.concatenate([vectors, scale * pretrained.vectors[[file_rows[w] for w in added]]])
        logger.info(
            "continue: added the file's vectors of %d words word2vec left out (under min_count %d, or characters)",
            len(added), min_count,
        )  # fmt: skip
    _save(words, vectors, output)
    logger.info(
        "continued %s on %d sentences: %d words of dimension %d in %.1fs, saved to %s",
        path, len(sentences), len(words), pretrained.dim, time.perf_counter() - started, output,
    )  # fmt: skip
    return output


def _linear_map(inputs: np.ndarray, targets: np.ndarray):
    """The affine ridge map inputs -> targets fitted on paired rows, and its R² there."""
    x_mean, y_mean = inputs.mean(axis=0, dtype=np.float64), targets.mean(axis=0, dtype=np.float64)
    x, y = inputs - x_mean, targets - y_mean
    gram = x.T @ x
    ridge = MAP_RIDGE * np.trace(gram) / len(gram) + 1e-12
    weights = np.linalg.solve(gram + ridge * np.eye(len(gram)), x.T @ y)
    residual = ((x @ weights - y) ** 2).sum()
    r2 = 1.0 - residual / ((y**2).sum() or 1.0)
    return (lambda rows: ((rows - x_mean) @ weights + y_mean).astype(np.float32)), float(r2)


def concat_word_vectors(
    path: str | os.PathLike,
    sentences: Sequence[Sequence[str]],
    *,
    vector_size: int | None = None,
    fill: str = "mapped",
    scale_file: bool = True,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 5,
    sg: int = 0,
    seed: int = 0,
    workers: int = 2,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Per word, the file's vector beside word2vec's trained here on `sentences`: [file | here].

    The half trained here is `train_word_vectors(sentences, ...)` (cached on its own). The words are
    word2vec's vocabulary, then the file's words of the corpus word2vec left out (under `min_count`).
    The file's half is multiplied by one factor that gives it the mean norm of the half trained here:
    both sources weigh the same whatever their scale (Chinese Wikipedia's vectors are 14x word2vec's
    here) or dimension. A word one side lacks (a stopword or punctuation the file omits, a rare word
    word2vec left out) gets there, with `fill` "mapped", the affine ridge map from the other half
    fitted on the words both have (the least-squares guess, closer than zeros or the mean), or zeros.

    Args:
        path: The pretrained vector file (any format `read_word_vectors` reads).
        sentences: Segmented sentences, read once per epoch, so not an iterator.
        vector_size: Dimension of the result, the file's + the half trained here; None: the file's +
            `CONCAT_HERE_SIZE`.
        fill: "mapped" or "zeros", for a half a word lacks.
        scale_file: Scale the file's half to the mean norm of the half trained here; False: its values as they are.
        window, min_count, epochs, sg, seed, workers: word2vec trained here, as `train_word_vectors`'s.
        cache_dir: Folder of the cached files (and of the half trained here); default `$FINETUNE_CACHE/vectors`.

    Returns:
        The path of the vector file (word2vec binary), readable by `read_word_vectors` and gensim.
    """
    if fill not in ("mapped", "zeros"):
        raise ValueError(f"fill {fill!r}: mapped or zeros")
    word2vec = {"window": window, "min_count": min_count, "epochs": epochs, "sg": sg, "seed": seed, "workers": workers}
    params = {
        "method": "concat", "file": file_identity(path), "vector_size": vector_size, "fill": fill,
        "scale_file": scale_file, **word2vec,
    }  # fmt: skip
    output, hit = _cached("concat", sentences, params, cache_dir, "concatenated")
    if hit:
        return output
    started = time.perf_counter()
    pretrained = _corpus_file_vectors(path, sentences)
    here_size = CONCAT_HERE_SIZE if vector_size is None else vector_size - pretrained.dim
    if here_size < 1:
        raise ArgumentError(
            f"--vector_size {vector_size}: concatenated vectors are the file's {pretrained.dim} dimensions + those "
            f"of word2vec trained here, so more than {pretrained.dim}"
        )
    logger.info("concat: training the %d-dimensional half here", here_size)
    here = read_word_vectors(train_word_vectors(sentences, vector_size=here_size, cache_dir=cache_dir, **word2vec))
    here_rows = {word: row for row, word in enumerate(here.words)}
    file_rows = {word: row for row, word in enumerate(pretrained.words)}
    words = here.words + [word for word in pretrained.words if word not in here_rows]
    in_file = np.array([word in file_rows for word in words])
    in_here = np.array([word in here_rows for word in words])
    file_half = np.zeros((len(words), pretrained.dim), dtype=np.float32)
    here_half = np.zeros((len(words), here.dim), dtype=np.float32)
    file_half[in_file] = pretrained.vectors[[file_rows[w] for w, has in zip(words, in_file) if has]]
    here_half[in_here] = here.vectors[[here_rows[w] for w, has in zip(words, in_here) if has]]
    scale = _mean_norm(here.vectors) / (_mean_norm(pretrained.vectors) or 1.0) if scale_file else 1.0
    file_half *= scale
    both = in_file & in_here
    how = "zeros"
    if fill == "mapped" and both.sum() >= MAP_PAIRS_PER_DIMENSION * max(pretrained.dim, here.dim):
        to_file, r2_file = _linear_map(here_half[both], file_half[both])
        to_here, r2_here = _linear_map(file_half[both], here_half[both])
        file_half[~in_file] = to_file(here_half[~in_file])
        here_half[~in_here] = to_here(file_half[~in_here])
        how = f"the linear map from the other half (fitted on them: R² {r2_file:.2f} to the file's, {r2_here:.2f} here)"
    elif fill == "mapped":
        logger.warning(
            "concat: %d words in both halves, too few to map %d dimensions onto %d: zeros for the missing halves",
            both.sum(), max(pretrained.dim, here.dim), min(pretrained.dim, here.dim),
        )  # fmt: skip
    logger.info(
        "concat: %d words, %d in both halves, %d only here, %d only in the file; the file's half times %.4g, "
        "the missing halves from %s",
        len(words), both.sum(), (~in_file).sum(), (~in_here).sum(), scale, how,
    )  # fmt: skip
    _save(words, np.concatenate([file_half, here_half], axis=1), output)
    logger.info(
        "concatenated %s (%d dimensions) with word2vec trained here (%d): %d words in %.1fs, saved to %s",
        path, pretrained.dim, here.dim, len(words), time.perf_counter() - started, output,
    )  # fmt: skip
    return output
