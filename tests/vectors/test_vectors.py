"""Tests of finetune.vectors.reading (reading word2vec files) and finetune.vectors.embeddings (the embedding matrix)."""

import bz2
import gzip
import json
import logging

import numpy as np
import pytest
from gensim.models import KeyedVectors
from tqdm import tqdm

from finetune.errors import FinetuneError
from finetune.vectors.embeddings import build_embedding_matrix, coverage_warnings, format_coverage, load_word_vectors
from finetune.vectors.reading import (
    FASTTEXT_MAGIC,
    VectorFileError,
    WordVectors,
    read_word_vectors,
)

WORDS = ["电影", "好看", "好", "看", "差", "劲", "很", "。", "极", "了", "演员", "不"]
DIM = 8
WRITTEN = 1e-6  # write_text writes 6 decimals


@pytest.fixture(scope="module")
def keyed_vectors():
    kv = KeyedVectors(vector_size=DIM)
    vectors = np.random.default_rng(0).normal(0, 0.5, size=(len(WORDS), DIM)).astype(np.float32)
    kv.add_vectors(WORDS, vectors)
    return kv


def write_text(path, rows, *, header=True, line_end="\n", trailing_space=False, precision=6):
    """Writes word2vec text by hand, e.g. headerless (GloVe) or Tencent-style files."""
    dim = len(next(iter(rows.values())))
    lines = [f"{len(rows)} {dim}"] if header else []
    for word, vector in rows.items():
        values = " ".join(f"{value:.{precision}f}" for value in vector)
        lines.append(f"{word} {values}" + (" " if trailing_space else ""))
    path.write_bytes("".join(line + line_end for line in lines).encode("utf-8"))
    return path


# ##### read_word_vectors: formats #####


@pytest.mark.parametrize(
    "name, binary",
    [
        ("vectors.txt", False),
        ("vectors.vec", False),
        ("vectors.txt.gz", False),
        ("vectors.txt.bz2", False),
        ("vectors.bin", True),
        ("vectors.bin.gz", True),
        ("vectors.bin.bz2", True),
    ],
)
def test_reads_exactly_what_gensim_wrote(tmp_path, keyed_vectors, name, binary):
    path = tmp_path / name
    keyed_vectors.save_word2vec_format(str(path), binary=binary)

    read = read_word_vectors(path)

    assert read.words == WORDS
    assert read.dim == DIM and read.vectors.dtype == np.float32
    # gensim writes float32 text at round-trip precision, so even text reads back exactly.
    np.testing.assert_array_equal(read.vectors, keyed_vectors.vectors)


def test_reads_binary_with_newline_after_each_vector(tmp_path, keyed_vectors):
    # The original C tool (unlike gensim 4.4) writes "\n" after every vector.
    entries = b"".join(
        f"{word} ".encode() + vector.astype("<f4").tobytes() + b"\n"
        for word, vector in zip(WORDS, keyed_vectors.vectors)
    )
    path = tmp_path / "c_tool.bin"
    path.write_bytes(f"{len(WORDS)} {DIM}\n".encode() + entries)

    read = read_word_vectors(path)

    assert read.words == WORDS
    np.testing.assert_array_equal(read.vectors, keyed_vectors.vectors)


def test_reads_headerless_text_with_bom_and_crlf(tmp_path, keyed_vectors):
    rows = dict(zip(WORDS, keyed_vectors.vectors))
    path = write_text(tmp_path / "glove.txt", rows, header=False, line_end="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\r\n\r\n")

    read = read_word_vectors(path)

    assert read.words == WORDS
    np.testing.assert_allclose(read.vectors, keyed_vectors.vectors, rtol=0, atol=WRITTEN)


def test_reads_tencent_style_text(tmp_path, keyed_vectors):
    rows = dict(zip(WORDS, keyed_vectors.vectors))
    rows["New York"] = np.arange(DIM, dtype=np.float32) / 10
    path = write_text(tmp_path / "Tencent_AILab_ChineseEmbedding.txt.gz", rows, trailing_space=True)
    path.write_bytes(gzip.compress(path.read_bytes()))

    read = read_word_vectors(path)

    assert read.words == [*WORDS, "New York"]
    np.testing.assert_allclose(read.vectors[:-1], keyed_vectors.vectors, rtol=0, atol=WRITTEN)
    np.testing.assert_allclose(read.vectors[-1], np.arange(DIM) / 10, rtol=0, atol=WRITTEN)
    assert read_word_vectors(path, wanted={"New York", "New"}).words == ["New York"]


# ##### read_word_vectors: filtering and duplicates #####


@pytest.mark.parametrize("name", ["vectors.txt", "vectors.bin"])
def test_keeps_only_wanted_words_in_file_order(tmp_path, keyed_vectors, name):
    path = tmp_path / name
    keyed_vectors.save_word2vec_format(str(path), binary=name.endswith(".bin"))

    read = read_word_vectors(path, wanted=["看", "电影", "不在文件里"])

    assert read.words == ["电影", "看"]
    np.testing.assert_array_equal(read.vectors, keyed_vectors[["电影", "看"]])


@pytest.mark.parametrize("binary", [False, True])
def test_large_file_keeps_only_three_rows(tmp_path, binary):
    count, dim = 50_000, 8
    vectors = np.random.default_rng(1).normal(size=(count, dim)).astype(np.float32)
    path = tmp_path / ("big.bin" if binary else "big.txt")
    with open(path, "wb") as out:
        out.write(f"{count} {dim}\n".encode())
        for i, vector in enumerate(vectors):
            if binary:
                out.write(f"w{i} ".encode() + vector.tobytes())
            else:
                out.write(f"w{i} {' '.join(map(str, vector))}\n".encode())

    read = read_word_vectors(path, wanted={"w7", "w49999", "w123"})

    assert read.words == ["w7", "w123", "w49999"]
    assert read.vectors.shape == (3, dim)
    np.testing.assert_array_equal(read.vectors, vectors[[7, 123, 49999]])


@pytest.mark.parametrize("name", ["big.txt", "big.bin", "big.txt.gz"])
def test_a_read_logs_a_line_and_shows_its_progress_in_bytes(tmp_path, keyed_vectors, monkeypatch, caplog, capsys, name):
    from finetune.vectors import formats

    count, vector = 5000, np.ones(DIM, np.float32)
    path = tmp_path / name
    with (gzip.open if name.endswith(".gz") else open)(path, "wb") as out:
        out.write(f"{count} {DIM}\n".encode())
        for i in range(count):
            values = vector.tobytes() if name == "big.bin" else " ".join(map(str, vector)).encode() + b"\n"
            out.write(f"w{i} ".encode() + values)
    # Shown at once, at every look at the position (every 1,000 lines), as a long read would be
    monkeypatch.setattr(formats, "PROGRESS_DELAY_SECONDS", 0)
    monkeypatch.setattr(formats, "PROGRESS_LOG_INTERVAL_SECONDS", 0)
    monkeypatch.setattr(formats, "PROGRESS_INTERVAL_SECONDS", 0)
    monkeypatch.setattr(formats, "_PROGRESS_EVERY", 1000)
    monkeypatch.setattr(formats, "_READ_CHUNK_BYTES", 4096)  # the binary reader's reads, 1 MiB: all of big.bin

    with caplog.at_level(logging.INFO, logger="finetune.vectors.reading"):
        read = read_word_vectors(path, wanted={"w1", "w4999"}, cache=False)

    assert read.words == ["w1", "w4999"]
    size = tqdm.format_sizeof(path.stat().st_size, "B", 1024)
    assert caplog.messages[0] == f"reading {path} ({size}) for 2 wanted words"
    frames = [frame for frame in capsys.readouterr().err.split("\r") if frame.startswith(f"Reading {name}:")]
    shares = [int(frame.split(":")[1].split("%")[0]) for frame in frames]
    assert shares[-1] == 100 and shares == sorted(shares)
    if name != "big.txt.gz":  # the compressed file is read at once, a few kB
        assert len({share for share in shares if 0 < share < 100}) >= 3

    with caplog.at_level(logging.WARNING, logger="finetune.vectors.reading"):  # not the main process
        read_word_vectors(path, wanted={"w1"}, cache=False)
    assert capsys.readouterr().err == ""


def test_duplicate_words_keep_first_vector_and_warn(tmp_path, caplog):
    path = tmp_path / "dup.txt"
    path.write_text("好 1 2\n看 3 4\n好 5 6\n好 7 8\n", encoding="utf-8")

    with caplog.at_level(logging.INFO, logger="finetune.vectors.reading"):
        read = read_word_vectors(path)

    assert read.words == ["好", "看"]
    np.testing.assert_array_equal(read.vectors, [[1, 2], [3, 4]])
    assert "2 duplicated words" in caplog.text
    assert "word2vec text, dimension 2, 4 entries, kept 2 words" in caplog.text


# ##### read_word_vectors: errors #####


@pytest.mark.parametrize("wanted", [None, {"好"}])
def test_wrong_number_of_values_names_file_and_line(tmp_path, wanted):
    path = tmp_path / "short.txt"
    path.write_text("2 3\n好 1 2 3\n看 1 2\n", encoding="utf-8")

    with pytest.raises(VectorFileError, match=r"short\.txt: line 3 has 2 values, expected 3"):
        read_word_vectors(path, wanted=wanted)


def test_header_dimension_must_match_first_vector(tmp_path):
    path = tmp_path / "header.txt"
    path.write_text("2 2\n好 1 2 3\n看 1 2 3\n", encoding="utf-8")

    with pytest.raises(VectorFileError, match=r"header\.txt: header says 2 .* line 2 has 3"):
        read_word_vectors(path)


def test_value_that_is_not_a_number(tmp_path):
    path = tmp_path / "nan.txt"
    path.write_text("好 1 2 3\n看 1 x2 3\n", encoding="utf-8")

    with pytest.raises(VectorFileError, match=r"nan\.txt: line 2: .*float: 'x2'"):
        read_word_vectors(path)


def test_undecodable_word(tmp_path, keyed_vectors):
    text = tmp_path / "bad.txt"
    text.write_bytes("好 1 2\n".encode() + b"\xe5\xa5 3 4\n")
    binary = tmp_path / "bad.bin"
    binary.write_bytes(b"2 2\n" + b"ok " + bytes(8) + b"\xff\xfe " + bytes(8))

    with pytest.raises(VectorFileError, match=r"bad\.txt: line 2: bytes .* not valid UTF-8"):
        read_word_vectors(text)
    with pytest.raises(VectorFileError, match=r"bad\.bin: entry 2: bytes .* not valid UTF-8"):
        read_word_vectors(binary)


def test_truncated_binary(tmp_path, keyed_vectors):
    path = tmp_path / "cut.bin"
    keyed_vectors.save_word2vec_format(str(path), binary=True)
    whole = path.read_bytes()
    header_and_two_entries = len(f"{len(WORDS)} {DIM}\n") + len("电影 好看 ".encode()) + 2 * 4 * DIM
    path.write_bytes(whole[: header_and_two_entries + len("好 ".encode()) + 5])

    with pytest.raises(VectorFileError, match=r"cut\.bin: entry 3 of 12 is truncated"):
        read_word_vectors(path)


@pytest.mark.parametrize("name, content", [("e.txt", b""), ("e.txt", b"\n \r\n"), ("e.bin", b"")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(VectorFileError, match=r"e\.(txt|bin) is empty"):
        read_word_vectors(path)


def test_cut_off_compressed_file(tmp_path, keyed_vectors):
    path = tmp_path / "vectors.txt.gz"
    keyed_vectors.save_word2vec_format(str(path))
    path.write_bytes(path.read_bytes()[:-20])

    with pytest.raises(VectorFileError, match=r"vectors\.txt\.gz: the compressed data ends early"):
        read_word_vectors(path)


def test_fasttext_model_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "cc.zh.300.bin"
    path.write_bytes(FASTTEXT_MAGIC.to_bytes(4, "little") + bytes(64))

    with pytest.raises(VectorFileError, match=r"cc\.zh\.300\.bin is a fastText model.*\.vec"):
        read_word_vectors(path)


def test_vector_file_error_is_a_finetune_error(tmp_path):
    path = tmp_path / "e.txt"
    path.write_bytes(b"")

    with pytest.raises(FinetuneError) as caught:
        read_word_vectors(path)
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do


# ##### read_word_vectors: values that are not finite #####


@pytest.mark.parametrize(
    "value, shown",
    [("nan", "value nan is not a finite number"), ("inf", "value inf is not"), ("-inf", "value -inf is not")]
    + [("NaN", "value NaN is not"), ("1e39", r"value 1e39 is not a finite number \(too large for float32\)")],
)
def test_non_finite_text_value_names_file_line_and_word(tmp_path, value, shown):
    path = tmp_path / "vec.txt"
    path.write_text(f"3 2\n看 1 2\n好 3 {value}\n电影 5 6\n", encoding="utf-8")

    with pytest.raises(VectorFileError, match=rf"vec\.txt: line 3 \('好'\): {shown}"):
        read_word_vectors(path)


def test_non_finite_binary_value_names_file_entry_and_word(tmp_path, keyed_vectors):
    vectors = keyed_vectors.vectors.copy()
    vectors[2, 5] = np.nan
    broken = KeyedVectors(vector_size=DIM)
    broken.add_vectors(WORDS, vectors)
    path = tmp_path / "vec.bin"
    broken.save_word2vec_format(str(path), binary=True)

    with pytest.raises(VectorFileError, match=r"vec\.bin: entry 3 \('好'\): value nan is not a finite number"):
        read_word_vectors(path)
    # Unwanted entries are not converted, so their values are not checked either (the fast path).
    assert read_word_vectors(path, wanted={"电影"}).words == ["电影"]


def test_non_finite_value_of_an_unwanted_word_is_skipped_unparsed(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("3 2\n看 1 2\n好 3 nan\n电影 5 6\n", encoding="utf-8")

    read = read_word_vectors(path, wanted={"看", "电影"})

    assert read.words == ["看", "电影"] and np.isfinite(read.vectors).all()


# ##### read_word_vectors: names that do not match the content #####


@pytest.mark.parametrize(
    "name, compress, message",
    [
        (
            "vec.txt",
            gzip.compress,
            r"vec\.txt is gzip-compressed but its name does not end in \.gz: name it vec\.txt\.gz",
        ),
        (
            "vec.vec",
            bz2.compress,
            r"vec\.vec is bz2-compressed but its name does not end in \.bz2: name it vec\.vec\.bz2",
        ),
        ("vec.txt.gz", bz2.compress, r"vec\.txt\.gz is bz2-compressed .* name it vec\.txt\.bz2"),
        (
            "vec.txt.gz",
            bytes,
            r"vec\.txt\.gz is not gzip-compressed \(it starts with b'12 8\\n.*\): name it vec\.txt, without \.gz",
        ),
        ("vec.txt.bz2", bytes, r"vec\.txt\.bz2 is not bz2-compressed .*: name it vec\.txt, without \.bz2"),
    ],
)
def test_compression_that_does_not_match_the_name(tmp_path, keyed_vectors, name, compress, message):
    plain = tmp_path / "plain.txt"
    keyed_vectors.save_word2vec_format(str(plain), binary=False)
    path = tmp_path / name
    path.write_bytes(compress(plain.read_bytes()))

    with pytest.raises(VectorFileError, match=message):
        read_word_vectors(path)


@pytest.mark.parametrize("name, compress", [("vec.txt.gz", gzip.compress), ("vec.txt.bz2", bz2.compress)])
def test_damaged_compressed_data(tmp_path, keyed_vectors, name, compress):
    plain = tmp_path / "plain.txt"
    keyed_vectors.save_word2vec_format(str(plain), binary=False)
    data = bytearray(compress(plain.read_bytes()))
    for offset in (30, 40, 60):  # inside the compressed blocks, past the headers
        data[offset] ^= 0xFF
    path = tmp_path / name
    path.write_bytes(bytes(data))

    with pytest.raises(VectorFileError, match=rf"{name}: the compressed data is damaged \(.+\)"):
        read_word_vectors(path)


def test_text_file_starting_with_bzh_is_not_taken_for_bz2(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("BZh9 1 2\n好 3 4\n", encoding="utf-8")

    assert read_word_vectors(path).words == ["BZh9", "好"]


def assert_read_by_content(path, keyed_vectors, caplog, content, named, wanted=None):
    """The file reads whole as the format its content is in; one INFO line says which, and what the name said."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="finetune.vectors"):
        vectors = read_word_vectors(path, wanted=wanted, cache=False)
    expected = WORDS if wanted is None else [word for word in WORDS if word in wanted]
    assert vectors.words == expected
    rows = [WORDS.index(word) for word in expected]
    np.testing.assert_allclose(vectors.vectors, keyed_vectors.vectors[rows], atol=WRITTEN if content == "text" else 0)
    assert f"{path}: read as word2vec {content}, by its content (its name says {named})" in caplog.messages


@pytest.mark.parametrize("name", ["vec.txt", "vec.vec", "sgns.word", "words.vector"])
@pytest.mark.parametrize("wanted", [None, {"好"}])
def test_word2vec_binary_with_a_text_name_is_read_by_its_content(tmp_path, keyed_vectors, caplog, name, wanted):
    path = tmp_path / name  # synonyms' Wikipedia vectors ship as `words.vector`, word2vec binary
    keyed_vectors.save_word2vec_format(str(path), binary=True)
    assert_read_by_content(path, keyed_vectors, caplog, "binary", "text", wanted)


def test_compressed_word2vec_binary_with_a_text_name_is_read_by_its_content(tmp_path, keyed_vectors, caplog):
    binary = tmp_path / "vec.bin"
    keyed_vectors.save_word2vec_format(str(binary), binary=True)
    path = tmp_path / "vec.vec.gz"
    path.write_bytes(gzip.compress(binary.read_bytes()))
    assert_read_by_content(path, keyed_vectors, caplog, "binary", "text")


@pytest.mark.parametrize("header", [True, False])
def test_word2vec_text_named_bin_is_read_by_its_content(tmp_path, keyed_vectors, caplog, header):
    path = write_text(tmp_path / "vec.bin", dict(zip(WORDS, keyed_vectors.vectors)), header=header)
    assert_read_by_content(path, keyed_vectors, caplog, "text", "binary")


def test_gensim_text_named_bin_gz_is_read_by_its_content(tmp_path, keyed_vectors, caplog):
    text = tmp_path / "vec.txt"
    keyed_vectors.save_word2vec_format(str(text), binary=False)
    path = tmp_path / "vec.bin.gz"
    path.write_bytes(gzip.compress(text.read_bytes()))
    assert_read_by_content(path, keyed_vectors, caplog, "text", "binary")


def test_a_file_in_neither_format_is_one_line_naming_both(tmp_path, keyed_vectors):
    binary = tmp_path / "vec.bin"
    keyed_vectors.save_word2vec_format(str(binary), binary=True)
    path = tmp_path / "vec.txt"  # a binary file cut inside its first vector: neither binary nor text reads it
    path.write_bytes(binary.read_bytes()[:20])

    with pytest.raises(VectorFileError, match=r"vec\.txt: looks like word2vec binary, but it does not read as that"):
        read_word_vectors(path, cache=False)


# ##### build_embedding_matrix #####

SMALL_VOCAB = {"[PAD]": 0, "[UNK]": 1, "电影": 2, "好看": 3, "很": 4, "差劲": 5, "好": 6}
SMALL_COUNTS = {"电影": 5, "好看": 3, "很": 10, "差劲": 2, "好": 1, "[PAD]": 100, "外面": 4}


@pytest.fixture
def small_vectors():
    rng = np.random.default_rng(2)
    words = ["电影", "好", "看", "很"]
    return WordVectors(words, rng.normal(size=(len(words), DIM)).astype(np.float32))


def test_rows_are_found_vectors_char_means_or_zeros(small_vectors):
    matrix, _ = build_embedding_matrix(SMALL_VOCAB, small_vectors)
    vector = dict(zip(small_vectors.words, small_vectors.vectors))

    assert matrix.shape == (len(SMALL_VOCAB), DIM) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[2], vector["电影"])
    np.testing.assert_array_equal(matrix[6], vector["好"])
    np.testing.assert_allclose(matrix[3], (vector["好"] + vector["看"]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(matrix[0], np.zeros(DIM))
    assert np.all(matrix[[1, 5]] != 0)


def test_coverage_report_is_exact(small_vectors):
    _, report = build_embedding_matrix(SMALL_VOCAB, small_vectors, token_counts=SMALL_COUNTS)

    assert report == {
        "dim": DIM,
        "vocab_size": 7,
        "types_zero": 1,
        "types_found": 3,  # 电影 很 好
        "types_from_chars": 1,  # 好看
        "types_random": 2,  # [UNK] 差劲
        "type_coverage": 3 / 6,
        "tokens_total": 25,  # [PAD] left out; 外面 is outside the vocabulary, so uncovered
        "tokens_found": 16,
        "tokens_from_chars": 3,
        "token_coverage": 16 / 25,
        "token_coverage_with_chars": 19 / 25,
        "oov_examples": ["差劲", "[UNK]"],  # most frequent first
    }
    assert json.loads(json.dumps(report)) == report
    _, without_counts = build_embedding_matrix(SMALL_VOCAB, small_vectors)
    assert without_counts["oov_examples"] == ["[UNK]", "差劲"]  # vocab order
    assert "token_coverage" not in without_counts


def test_format_coverage(small_vectors):
    _, report = build_embedding_matrix(SMALL_VOCAB, small_vectors, token_counts=SMALL_COUNTS)
    _, without_counts = build_embedding_matrix(SMALL_VOCAB, small_vectors)

    assert format_coverage(report) == (
        "vectors cover 50.0% of 6 vocabulary types and 64.0% of tokens "
        "(76.0% with character means); 2 types random\nrandom vectors for: 差劲, [UNK]"
    )
    assert format_coverage(without_counts).startswith(
        "vectors cover 50.0% of 6 vocabulary types (1 more from character means); 2 types random"
    )


def test_random_rows_imitate_found_vectors_and_follow_the_seed():
    rng = np.random.default_rng(3)
    found = [f"w{i:04d}" for i in range(2000)]
    vectors = WordVectors(found, rng.normal(0.0, 0.3, size=(2000, 50)).astype(np.float32))
    vocab = {word: i for i, word in enumerate(found + [f"x{i}" for i in range(1000)])}

    matrix, report = build_embedding_matrix(vocab, vectors, seed=0)
    again, _ = build_embedding_matrix(vocab, vectors, seed=0)
    other, _ = build_embedding_matrix(vocab, vectors, seed=1)

    assert report["types_random"] == 1000
    random_rows = matrix[2000:]
    assert random_rows.std() == pytest.approx(vectors.vectors.std(), rel=0.1)
    assert abs(random_rows.mean()) < 0.01
    np.testing.assert_array_equal(matrix, again)
    np.testing.assert_array_equal(matrix[:2000], other[:2000])
    assert not np.allclose(matrix[2000:], other[2000:])


def test_vocab_ids_must_be_dense(small_vectors):
    with pytest.raises(ValueError, match="ids"):
        build_embedding_matrix({"好": 0, "看": 2}, small_vectors)


def test_load_word_vectors_reads_characters_for_unknown_words(tmp_path, keyed_vectors, caplog):
    path = tmp_path / "vectors.bin"
    keyed_vectors.save_word2vec_format(str(path), binary=True)
    vocab = {"[PAD]": 0, "电影": 1, "好看极了": 2, "烂片": 3}

    with caplog.at_level(logging.INFO, logger="finetune"):
        matrix, report = load_word_vectors(path, vocab, token_counts={"电影": 3, "好看极了": 1})

    chars = keyed_vectors[["好", "看", "极", "了"]]
    np.testing.assert_allclose(matrix[2], chars.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(matrix[1], keyed_vectors["电影"])
    assert (report["types_found"], report["types_from_chars"], report["types_random"]) == (1, 1, 1)
    assert report["token_coverage"] == 0.75 and report["token_coverage_with_chars"] == 1.0
    assert "kept 5 words" in caplog.text  # 电影 好 看 极 了: 好看 itself is not wanted
    assert "vectors cover 33.3% of 3 vocabulary types and 75.0% of tokens" in caplog.text


# ##### coverage warnings #####


def test_vectors_that_cover_almost_nothing_warn(tmp_path, keyed_vectors, caplog):
    path = tmp_path / "english.txt"
    english = KeyedVectors(vector_size=DIM)
    english.add_vectors(["movie", "good", "bad"], keyed_vectors.vectors[:3])
    english.save_word2vec_format(str(path), binary=False)
    vocab = {"[PAD]": 0, "[UNK]": 1, **{word: i + 2 for i, word in enumerate(WORDS)}}

    with caplog.at_level(logging.WARNING, logger="finetune"):
        _, report = load_word_vectors(path, vocab, token_counts=dict.fromkeys(WORDS, 3))

    assert report["warnings"] == [
        f"{path}: the vectors cover only 0.0% of the 13 vocabulary types and 0.0% of the training tokens, so the "
        "embeddings start almost all random; check the file fits the text (language, simplified vs traditional "
        "characters, words vs characters)"
    ]
    assert [record.levelname for record in caplog.records if "cover only" in record.message] == ["WARNING"]


def test_coverage_warning_thresholds(small_vectors):
    _, report = build_embedding_matrix(SMALL_VOCAB, small_vectors, token_counts=SMALL_COUNTS)
    assert coverage_warnings(report, "v.txt") == []  # 50% of types, 64% of tokens

    few_types = {**report, "type_coverage": 0.04}
    few_tokens = {**report, "token_coverage": 0.09}
    no_counts = {k: v for k, v in few_types.items() if not k.startswith("token")}
    assert (
        "cover only 4.0% of the 6 vocabulary types and 64.0% of the training tokens"
        in coverage_warnings(few_types, "v")[0]
    )
    assert "cover only 50.0% of the 6 vocabulary types and 9.0%" in coverage_warnings(few_tokens, "v")[0]
    assert coverage_warnings(no_counts, "v.txt")[0].startswith(
        "v.txt: the vectors cover only 4.0% of the 6 vocabulary types, so"
    )
