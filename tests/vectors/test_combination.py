"""Tests of finetune.vectors.combination: a pretrained vector file combined with word2vec trained here
(`--combine_vectors continue` / `concat`), cached by content."""

import json
import logging
import os
import sys
from collections import Counter

import numpy as np
import pytest
import yaml
from conftest import CONFIG, ROOT, VECTOR_WORDS, make_reviews, tiny_recipe_args

from finetune.errors import ArgumentError
from finetune.vectors.combination import CONTINUE_MEAN_NORM, concat_word_vectors, continue_word_vectors
from finetune.vectors.reading import read_word_vectors
from finetune.vectors.word2vec import train_word_vectors

QUICK = dict(min_count=1, workers=1, seed=0)  # one thread: gensim's runs repeat exactly


@pytest.fixture(scope="module")
def corpus():
    """The templated reviews segmented as the recipe segments them: 300 sentences, 59 words."""
    from finetune.models.bilstm_attention import JiebaTokenizer

    segmenter = JiebaTokenizer(vocab=["[PAD]", "[UNK]"])
    return [segmenter.segment(text) for text, _ in make_reviews(150, seed=0)]


def vectors_of(path) -> dict[str, np.ndarray]:
    read = read_word_vectors(path, cache=False)
    return dict(zip(read.words, read.vectors))


def write_vectors(path, vectors: dict[str, np.ndarray], mtime_ns: int | None = None):
    dim = len(next(iter(vectors.values())))
    lines = [f"{len(vectors)} {dim}"] + [w + " " + " ".join(f"{v:.6f}" for v in x) for w, x in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def cosines(a: dict, b: dict, words) -> np.ndarray:
    return np.array([a[w] @ b[w] / np.linalg.norm(a[w]) / np.linalg.norm(b[w]) for w in words])


def test_continue_starts_from_the_file_and_keeps_its_dimension(tiny_vectors, corpus, tmp_path):
    file = vectors_of(tiny_vectors)
    corpus_words = {word for sentence in corpus for word in sentence}
    shared = [word for word in VECTOR_WORDS if word in corpus_words]
    assert len(shared) >= 8  # the test means something: most of the file's words occur in the reviews

    untouched = vectors_of(
        continue_word_vectors(tiny_vectors, corpus, epochs=0, mean_norm=None, cache_dir=tmp_path, **QUICK)
    )
    assert all(len(vector) == 8 for vector in untouched.values())
    # every word of the corpus, and of the file only those and the characters of those (差 of 差劲)
    assert set(untouched) == corpus_words | {w for w in VECTOR_WORDS if any(w in word for word in corpus_words)}
    for word in shared:
        np.testing.assert_array_equal(untouched[word], file[word])

    # By default the file is rescaled (one factor) to word2vec's scale before training continues
    rescaled = vectors_of(continue_word_vectors(tiny_vectors, corpus, epochs=0, cache_dir=tmp_path, **QUICK))
    factors = np.array([rescaled[w] / file[w] for w in shared])
    np.testing.assert_allclose(factors, factors[0, 0], rtol=1e-5)
    kept = [w for w in VECTOR_WORDS if w in rescaled]
    assert np.mean([np.linalg.norm(rescaled[w]) for w in kept]) == pytest.approx(CONTINUE_MEAN_NORM, rel=1e-5)


def test_continue_training_moves_the_file_vectors_but_keeps_them_near(tiny_vectors, corpus, tmp_path):
    file = vectors_of(tiny_vectors)
    continued = vectors_of(continue_word_vectors(tiny_vectors, corpus, epochs=10, cache_dir=tmp_path, **QUICK))
    fresh = vectors_of(train_word_vectors(corpus, vector_size=8, epochs=10, cache_dir=tmp_path, **QUICK))
    shared = [word for word in VECTOR_WORDS if word in fresh]

    near, unrelated = cosines(continued, file, shared), cosines(fresh, file, shared)
    assert near.max() < 0.9999  # trained: moved away from the file's vectors...
    assert near.mean() > 0.8 and near.min() > 0.5  # ...but still near them (0.94, 0.84 here),
    assert near.mean() > unrelated.mean() + 0.5  # where a fresh run lands anywhere (0.07)
    # the corpus's own words got trained vectors in the same space: 。 / 这部 are not gensim's tiny random start
    for word in ("。", "这部"):
        assert word not in file and np.linalg.norm(continued[word]) > 0.4 * CONTINUE_MEAN_NORM


def test_continue_keeps_the_file_words_under_min_count(tiny_vectors, corpus, tmp_path):
    counts = Counter(word for sentence in corpus for word in sentence)
    file = vectors_of(tiny_vectors)
    min_count = sorted(counts[w] for w in VECTOR_WORDS if w in counts)[2] + 1  # three file words or more fall below
    rare = [w for w in VECTOR_WORDS if 0 < counts[w] < min_count]
    settings = dict(epochs=1, min_count=min_count, workers=1, mean_norm=None, cache_dir=tmp_path)

    kept = vectors_of(continue_word_vectors(tiny_vectors, corpus, **settings))
    left = vectors_of(continue_word_vectors(tiny_vectors, corpus, keep_file_words=False, **settings))

    characters = {w for w in VECTOR_WORDS if w not in counts and any(w in word for word in counts)}  # 差 of 差劲
    assert len(rare) >= 3 and characters and not (set(rare) | characters) & set(left)
    assert set(kept) == set(left) | set(rare) | characters
    for word in rare:  # not trained here: the file's vector as it was
        np.testing.assert_array_equal(kept[word], file[word])


def test_concat_puts_the_file_beside_word2vec_trained_here(tiny_vectors, corpus, tmp_path):
    file = vectors_of(tiny_vectors)
    settings = dict(epochs=3, cache_dir=tmp_path, **QUICK)
    here = vectors_of(train_word_vectors(corpus, vector_size=16, **settings))  # what concat trains (cached)

    concat = vectors_of(concat_word_vectors(tiny_vectors, corpus, vector_size=24, fill="zeros", **settings))

    shared = [word for word in VECTOR_WORDS if word in here]
    file_only = [word for word in VECTOR_WORDS if word in concat and word not in here]  # 差, a character of 差劲
    kept = shared + file_only
    scale = np.mean([np.linalg.norm(v) for v in here.values()]) / np.mean([np.linalg.norm(file[w]) for w in kept])
    assert file_only == ["差"] and set(concat) == set(here) | {"差"}
    assert all(len(vector) == 24 for vector in concat.values())
    np.testing.assert_allclose(concat["差"], np.concatenate([scale * file["差"], np.zeros(16)]), rtol=1e-5)
    for word in shared:  # [file | here], the file's half scaled to the same mean norm as here's
        np.testing.assert_allclose(concat[word], np.concatenate([scale * file[word], here[word]]), rtol=1e-5)
    for word in ("。", "这部"):  # punctuation and words the file lacks: zeros in its half
        np.testing.assert_array_equal(concat[word], np.concatenate([np.zeros(8), here[word]]))
    file_half = np.array([concat[w][:8] for w in kept])
    here_half = np.array([concat[w][8:] for w in here])
    assert np.linalg.norm(file_half, axis=1).mean() == pytest.approx(np.linalg.norm(here_half, axis=1).mean(), rel=1e-4)

    raw = vectors_of(
        concat_word_vectors(tiny_vectors, corpus, vector_size=24, fill="zeros", scale_file=False, **settings)
    )
    for word in shared:  # exactly [file | here]
        np.testing.assert_array_equal(raw[word], np.concatenate([file[word], here[word]]))

    with pytest.raises(ArgumentError, match=r"--vector_size 8: .* more than 8"):
        concat_word_vectors(tiny_vectors, corpus, vector_size=8, **settings)


def test_concat_fills_a_missing_half_with_the_linear_map(corpus, tmp_path):
    """A file that is a linear function of the vectors here, less some words: `mapped` recovers those words'."""
    settings = dict(epochs=3, cache_dir=tmp_path, **QUICK)
    here = vectors_of(train_word_vectors(corpus, vector_size=4, **settings))
    words = sorted(here)
    withheld, given = words[:10], words[10:]
    rng = np.random.default_rng(1)
    matrix, offset = rng.normal(size=(4, 6)), rng.normal(size=6)
    path = write_vectors(tmp_path / "linear.vec", {w: 10 * (here[w] @ matrix + offset) for w in given})

    concat = vectors_of(concat_word_vectors(path, corpus, vector_size=10, **settings))

    file_half = {w: concat[w][:6] for w in words}
    truth = {w: here[w] @ matrix + offset for w in words}  # up to the scale concat gives the file's half
    assert cosines(file_half, truth, withheld).min() > 0.99
    ratios = [np.linalg.norm(file_half[w]) / np.linalg.norm(truth[w]) for w in words]
    np.testing.assert_allclose(ratios, ratios[-1], rtol=0.05)  # the withheld words at the given words' scale


def test_combinations_are_cached_by_file_and_parameters(tiny_vectors, corpus, tmp_path, monkeypatch):
    copy = write_vectors(tmp_path / "copy.vec", vectors_of(tiny_vectors), mtime_ns=10**18)
    cache = tmp_path / "cache"
    settings = dict(epochs=1, cache_dir=cache, **QUICK)
    first = {
        "continue": continue_word_vectors(copy, corpus, **settings),
        "concat": concat_word_vectors(copy, corpus, vector_size=12, **settings),
    }
    files = set(cache.iterdir())

    def no_training(*args, **kwargs):
        raise AssertionError("cached vectors should have been reused")

    monkeypatch.setattr("gensim.models.Word2Vec", no_training)
    assert continue_word_vectors(copy, corpus, **settings) == first["continue"]
    assert concat_word_vectors(copy, corpus, vector_size=12, **settings) == first["concat"]
    monkeypatch.undo()

    changed = {
        "window": continue_word_vectors(copy, corpus, window=2, **settings),
        "alpha": continue_word_vectors(copy, corpus, alpha=0.01, **settings),
        "sentences": continue_word_vectors(copy, corpus[:-1], **settings),
        "fill": concat_word_vectors(copy, corpus, vector_size=12, fill="zeros", **settings),
        "vector_size": concat_word_vectors(copy, corpus, vector_size=14, **settings),
    }
    os.utime(copy, ns=(2 * 10**18, 2 * 10**18))  # touched: the identity is (path, size, mtime)
    changed["touched"] = continue_word_vectors(copy, corpus, **settings)
    write_vectors(copy, {w: -v for w, v in vectors_of(tiny_vectors).items()})  # rewritten
    changed["rewritten"] = concat_word_vectors(copy, corpus, vector_size=12, **settings)
    assert len({*first.values(), *changed.values()}) == 2 + 7
    assert not [path for path in cache.iterdir() if path.name.startswith(".")]  # no temporary files left
    assert files < set(cache.iterdir())


def test_continue_logs_each_step(tiny_vectors, corpus, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="finetune.vectors"):
        continue_word_vectors(tiny_vectors, corpus, epochs=2, cache_dir=tmp_path, **QUICK)

    lines = [record.getMessage() for record in caplog.records if record.name.startswith("finetune.vectors.")]
    assert f"{tiny_vectors}: 12 of the corpus's 120 words and characters have a vector of dimension 8" in lines[1]
    assert "continue: building the vocabulary of 300 sentences" in lines
    assert [line.split(" done")[0] for line in lines if line.startswith("word2vec: epoch")] == [
        "word2vec: epoch 1/2",
        "word2vec: epoch 2/2",
    ]
    assert lines[-1].startswith(f"continued {tiny_vectors} on 300 sentences: 60 words of dimension 8")  # + 差


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--combine_vectors", "concat"], "--combine_vectors concat: needs --word_vectors"),
        (["--combine_vectors", "sum"], "--combine_vectors sum: must be none, continue or concat"),
    ],
)
def test_combine_vectors_flag_checks(flags, message):
    from finetune.config.parsing import parse_run_args

    with pytest.raises(ArgumentError, match=f"^{message}"):
        parse_run_args(["--config", str(CONFIG), *flags])


def test_recipe_trains_on_concatenated_vectors(reviews_csv, tiny_vectors, tmp_path):
    sys.path.insert(0, str(ROOT))
    from finetune.recipes.train_bilstm_attention import main

    output_dir = tmp_path / "run"
    extra = ["--combine_vectors", "concat", "--vector_size", "24", "--pretrain_corpus", "false"]
    main(
        tiny_recipe_args(
            reviews_csv, tiny_vectors, output_dir, *extra, "--vector_epochs", "2", "--num_train_epochs", "2"
        )
    )

    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    vectors = metrics["vectors"]
    assert vectors["dim"] == 24 and os.path.basename(vectors["vectors"]).startswith("concat-")
    assert vectors["token_coverage"] == 1.0  # the file alone covers a share; with word2vec here every token
    assert not [warning for warning in metrics.get("warnings", []) if "vector_size" in warning]
    saved = yaml.safe_load((output_dir / "config.yaml").read_text(encoding="utf-8"))
    assert (saved["combine_vectors"], saved["vector_size"]) == ("concat", 24)


def test_builder_combines_the_file_with_word2vec_trained_here(review_splits, tiny_vectors):
    from finetune.config.arguments import RunArguments
    from finetune.training.builders import build_word_vector_model

    dims, coverage = {}, {}
    for combine in ("none", "continue", "concat"):
        args = RunArguments.of(
            word_vectors=str(tiny_vectors), combine_vectors=combine, pretrain_corpus=False, vector_epochs=1,
            vector_min_count=1, min_freq=1, lstm_hidden_size=8, attention_dim=8, max_seq_length=32, seed=0,
        )  # fmt: skip
        report = build_word_vector_model(review_splits, {0: "negative", 1: "positive"}, args).report["vectors"]
        dims[combine], coverage[combine] = (report["dim"], args.vectors.vector_size), report["token_coverage"]
        assert os.path.basename(report["vectors"]).startswith(
            {"none": "tiny", "continue": "continued-"}.get(combine, combine)
        )
    assert dims == {"none": (8, 8), "continue": (8, 8), "concat": (208, 208)}  # concat: the file's 8 + 200 here
    assert coverage["none"] < 0.6 and coverage["continue"] == coverage["concat"] == 1.0
