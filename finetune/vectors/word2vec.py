"""word2vec trained here, for when the user brings no vectors (gensim), cached by content."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from finetune.files import atomic_path, cache_directory

logger = logging.getLogger(__name__)


def training_key(sentences: Sequence[Sequence[str]], params: dict) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for sentence in sentences:
        # JSON escapes newlines inside words, so the "\n" between sentences is unambiguous.
        digest.update(json.dumps(list(sentence), ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def _save_binary_atomically(keyed_vectors, path: Path) -> None:
    # A reader (or a crash) must never see half a file under the final name.
    with atomic_path(path) as temporary:
        keyed_vectors.save_word2vec_format(str(temporary), binary=True)


def epoch_log(epochs: int):
    """A gensim callback logging each finished epoch: `word2vec: epoch 2/5 done, 62.0s so far (about 93s left)`."""
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochLog(CallbackAny2Vec):
        def on_train_begin(self, model):
            self.started, self.done = time.perf_counter(), 0

        def on_epoch_end(self, model):
            self.done += 1
            elapsed = time.perf_counter() - self.started
            left = elapsed / self.done * (epochs - self.done)
            logger.info("word2vec: epoch %d/%d done, %.1fs so far (about %.0fs left)", self.done, epochs, elapsed, left)

    return EpochLog()


def train_word_vectors(
    sentences: Sequence[Sequence[str]],
    *,
    vector_size: int = 200,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 5,
    sg: int = 0,
    seed: int = 0,
    workers: int = 2,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Trains word2vec on segmented sentences and caches the vectors as a word2vec `.bin` file.

    The file is `cache_dir / "word2vec-<key>.bin"`, the key hashing the sentences and every
    parameter; when it exists it is returned without training. gensim seeds the run with `seed`,
    but with `workers > 1` thread scheduling makes the vectors differ slightly between runs.

    Args:
        sentences: Segmented sentences (lists of words); read once per epoch, so not an iterator.
        vector_size: Dimension of the vectors.
        window: Largest distance between a word and its context words.
        min_count: Words occurring fewer times are left out.
        epochs: Passes over the sentences.
        sg: 1 for skip-gram, 0 for CBOW.
        seed: Seed of gensim's initialisation and sampling.
        workers: Training threads.
        cache_dir: Folder of the cached files; default `$FINETUNE_CACHE/vectors`, else
            `~/.cache/finetune/vectors/reading`.

    Returns:
        The path of the vector file, readable by `read_word_vectors` and gensim.
    """
    if iter(sentences) is sentences:
        raise TypeError("sentences must be a sequence (e.g. a list), not an iterator")
    params = {
        "vector_size": vector_size,
        "window": window,
        "min_count": min_count,
        "epochs": epochs,
        "sg": sg,
        "seed": seed,
        "workers": workers,
    }
    directory = Path(cache_dir) if cache_dir is not None else cache_directory("vectors")
    path = directory / f"word2vec-{training_key(sentences, params)}.bin"
    if path.exists():
        logger.info("reusing cached vectors %s", path)
        return path
    directory.mkdir(parents=True, exist_ok=True)
    from gensim.models import Word2Vec  # imported here: reading vectors should not pull in gensim

    started = time.perf_counter()
    model = Word2Vec(**params)
    # Minutes on the embedded corpora with a cold cache, and gensim's own logger is quietened (`start_run`)
    logger.info("word2vec: building the vocabulary of %d sentences", len(sentences))
    model.build_vocab(sentences)
    if len(model.wv) == 0:
        raise ValueError(f"no word occurs min_count={min_count} times in {len(sentences)} sentences")
    logger.info(
        "word2vec: %d words (min_count %d) in %.1fs; training %d epochs",
        len(model.wv), min_count, time.perf_counter() - started, epochs,
    )  # fmt: skip
    model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs, callbacks=[epoch_log(epochs)])
    _save_binary_atomically(model.wv, path)
    logger.info(
        "trained word2vec on %d sentences: %d words of dimension %d in %.1fs, saved to %s",
        len(sentences),
        len(model.wv),
        vector_size,
        time.perf_counter() - started,
        path,
    )
    return path
