"""Tests for finetune.data.tables: reading every format and encoding (detected, logged, forced), and
the errors that name the file and the line."""

import json
import logging

import datasets
import pytest
from conftest import GENUINE_REVIEWS, load_splits, texts_of, write_table

from finetune.data.loading import DataError, read_table
from finetune.data.tables import read_text_lines
from finetune.errors import FinetuneError

pytestmark = pytest.mark.usefixtures("quiet_datasets")


# ---------------------------------------------------------------- read_table: formats, encodings


def write_every_format(directory):
    records = [{"text": text, "label": label} for text, label in GENUINE_REVIEWS]
    (directory / "r.tsv").write_text(
        "text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in GENUINE_REVIEWS), encoding="utf-8"
    )
    (directory / "r.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    (directory / "r.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    table = datasets.Dataset.from_list(records)
    table.to_parquet(str(directory / "r.parquet"))
    table.save_to_disk(str(directory / "saved_dataset"))
    datasets.DatasetDict(train=table, validation=table.select(range(5))).save_to_disk(str(directory / "saved_dict"))
    return ["r.tsv", "r.json", "r.jsonl", "r.parquet", "saved_dataset", "saved_dict"]


def test_every_format_round_trips(tmp_path, genuine_reviews_csv):
    expected = [text for text, _ in GENUINE_REVIEWS]
    assert texts_of(read_table(genuine_reviews_csv)) == expected
    for name in write_every_format(tmp_path):
        table = read_table(tmp_path / name)
        assert table.column_names == ["text", "label"], name
        assert texts_of(table) == expected, name
        assert table["label"][:] == [label for _, label in GENUINE_REVIEWS], name
    assert texts_of(read_table(tmp_path / "saved_dict", split_name="validation")) == expected[:5]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gbk", "gb18030"])
def test_bom_and_gbk_files_read_the_same_texts(tmp_path, encoding):
    table = read_table(write_table(tmp_path / "r.csv", GENUINE_REVIEWS, encoding=encoding))
    assert table.column_names == ["text", "label"]  # no "\ufefftext"
    assert texts_of(table) == [text for text, _ in GENUINE_REVIEWS]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t, _ in GENUINE_REVIEWS), encoding=encoding
    )
    assert texts_of(read_table(jsonl)) == [text for text, _ in GENUINE_REVIEWS]


def test_undecodable_bytes_name_file_and_line(tmp_path):
    lines = ["text,label\n", "很好,positive\n", "很差,negative\n"]
    path = tmp_path / "broken.csv"
    path.write_bytes("".join(lines).encode("utf-8") + "还".encode() + b"\xff\xfe\xfa" + "行,negative\n".encode())
    with pytest.raises(
        DataError, match=r"broken\.csv: cannot decode: not UTF-8 \(byte 0xff at line 4, byte offset 46\)"
    ):
        read_table(path)


@pytest.mark.parametrize("content", [b"", b"text,label\n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty.csv"):
        read_table(path)


def test_unparsable_or_unknown_files_are_data_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "好", "label": 1}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl: cannot read"):
        read_table(tmp_path / "bad.jsonl")
    (tmp_path / "r.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported format"):
        read_table(tmp_path / "r.xlsx")
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")


def test_tsv_keeps_quote_marks_inside_texts(tmp_path):
    path = tmp_path / "quotes.tsv"
    path.write_text('text\tlabel\n他说"不错"\tpositive\n"标题"党\tnegative\n', encoding="utf-8")
    assert texts_of(read_table(path)) == ['他说"不错"', '"标题"党']


def test_texts_like_na_are_not_missing(tmp_path):
    table = read_table(write_table(tmp_path / "r.csv", [("NA", "a"), ("null", "b"), ("", "c")]))
    assert texts_of(table) == ["NA", "null", None]


# Genuine reviews: simplified Chinese for GBK, traditional Chinese (Taiwan) for Big5.
SIMPLIFIED = [
    ("这家餐厅的服务很好，菜也好吃", "positive"),
    ("物流太慢了，等了一个星期才到货", "negative"),
    ("屏幕显示效果清晰，电池续航也不错", "positive"),
    ("质量一般，和描述的不太一样，有点失望", "negative"),
    ("孩子非常喜欢这本书，插图很漂亮", "positive"),
    ("客服态度恶劣，再也不会来买了", "negative"),
]
TRADITIONAL = [
    ("這家餐廳的服務很好，菜也好吃", "positive"),
    ("物流太慢了，等了一個星期才到貨", "negative"),
    ("螢幕顯示效果清晰，電池續航也不錯", "positive"),
    ("品質一般，和描述的不太一樣，有點失望", "negative"),
    ("孩子非常喜歡這本書，插圖很漂亮", "positive"),
    ("客服態度惡劣，再也不會來買了", "negative"),
]


@pytest.mark.parametrize(("rows", "encoding"), [(SIMPLIFIED, "gbk"), (TRADITIONAL, "big5")])
def test_gbk_and_big5_files_are_detected_and_logged(tmp_path, caplog, rows, encoding):
    path = write_table(tmp_path / "reviews.csv", rows, encoding=encoding)
    with caplog.at_level(logging.INFO, logger="finetune.data.tables"):
        table = read_table(path)
    assert texts_of(table) == [text for text, _ in rows] and table["label"][:] == [label for _, label in rows]
    detected = "gb18030" if encoding == "gbk" else "big5"  # GB18030 is GBK's superset
    assert f"reviews.csv: decoded as {detected} (UTF-8 failed at line 2)" in caplog.text
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t, _ in rows), encoding=encoding)
    assert texts_of(read_table(jsonl)) == [text for text, _ in rows]


def test_doubtful_encoding_is_refused_and_encoding_forces(tmp_path):
    path = tmp_path / "short.csv"
    path.write_bytes("text,label\n很好,positive\n很差,negative\n".encode("gbk"))
    with pytest.raises(DataError) as error:
        read_table(path)
    message = str(error.value)
    assert isinstance(error.value, FinetuneError) and isinstance(error.value, ValueError)
    assert message.startswith(f"{path}: cannot decode: not UTF-8 (byte 0xba at line 2, byte offset 11), and ")
    assert "the encoding is doubtful: " in message and "give the right one with --encoding" in message
    assert "gb18030 reads line 2 as '很好,positive'" in message and "big5 reads line 2 as '竭疑,positive'" in message
    assert texts_of(read_table(path, encoding="gbk")) == ["很好", "很差"]
    # Forced means not detected: these GBK bytes happen to be valid Big5 too.
    assert texts_of(read_table(path, encoding="big5")) == ["竭疑", "竭船"]
    big5 = write_table(tmp_path / "big5.csv", [("很好", "positive"), ("很差", "negative")], encoding="big5")
    assert texts_of(read_table(big5, encoding="big5")) == ["很好", "很差"]
    path.write_bytes("text,label\n很好,positive\n很差,negative\n真棒,positive\n真糟,negative\n".encode("gbk"))
    with pytest.raises(DataError, match="the encoding is doubtful"):
        load_splits(path)
    splits, _ = load_splits(path, validation_size=0, test_size=0.5, encoding="gbk")
    assert sorted(texts_of(splits["train"]) + texts_of(splits["test"])) == sorted(["很好", "很差", "真棒", "真糟"])


def test_bad_encoding_names_are_refused_naming_the_flag(tmp_path, genuine_reviews_csv):
    with pytest.raises(DataError, match=r"reviews\.csv: unknown encoding 'klingon' given by --encoding"):
        read_table(genuine_reviews_csv, encoding="klingon")
    with pytest.raises(DataError, match="unknown encoding 'rot13' given by --encoding"):
        read_table(genuine_reviews_csv, encoding="rot13")  # a codec, but not a text encoding
    big5 = tmp_path / "big5.csv"
    big5.write_bytes("text,label\n這家餐廳很好,positive\n".encode("big5"))
    with pytest.raises(
        DataError,
        match=r"big5\.csv: cannot decode as utf-8 \(given by --encoding\): byte 0xb3 at line 2, byte offset 11",
    ):
        read_table(big5, encoding="utf-8")
    lines = tmp_path / "corpus.txt"
    lines.write_bytes("這家餐廳的服務很好\n\n物流太慢了\n".encode("big5"))
    assert read_text_lines(lines, encoding="big5") == ["這家餐廳的服務很好", "物流太慢了"]


def test_utf8_file_with_a_damaged_line_is_not_guessed(tmp_path):
    path = tmp_path / "damaged.csv"
    path.write_bytes(
        ("text,label\n" + "".join(f"{text},{label}\n" for text, label in GENUINE_REVIEWS)).encode()
        + b"\xb0\xa1,positive\n"
    )
    with pytest.raises(DataError, match=r"damaged\.csv: cannot decode: not UTF-8 \(byte 0xb0 at line 32, .*"
                       r"the rest of the file is UTF-8, so that line is damaged"):  # fmt: skip
        read_table(path)


@pytest.mark.parametrize(
    ("name", "content", "hint"),
    [
        ("tabs.csv", "text\tlabel\n很好\tpositive\n很差\tnegative\n", "the file looks tab-separated: name it .tsv"),
        ("commas.tsv", "text,label\n很好,positive\n很差,negative\n", "the file looks comma-separated: name it .csv"),
    ],
)
def test_wrong_separator_gets_a_hint(tmp_path, name, content, hint):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{name}: no column 'text' \(columns: text.label\); {hint}$"):
        load_splits(path)
    # A text with a comma makes the tab-separated .csv unparsable: the hint comes with that error too.
    if name.endswith(".csv"):
        path.write_text(content + "好，不,过\tpositive\n", encoding="utf-8")
        with pytest.raises(DataError, match=rf"{name}: cannot read the file: .*; {hint}$"):
            read_table(path)
