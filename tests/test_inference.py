"""Using a trained model: pipeline() in a new process, `finetune predict` to CSV, `finetune explain`."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, write_csv

from finetune.cli import main as cli
from finetune.inference import predict_file
from finetune.tables import DataError, read_table

PIPELINE_SCRIPT = """
import json, sys
import finetune
from transformers import pipeline
classifier = pipeline("text-classification", model=sys.argv[1])
one = classifier("这部电影很精彩！")
many = classifier(["这本书太差劲了。", "酒店很舒服，下次还会再来。", "", "很" * 5000])
print(json.dumps({"one": one, "many": many}, ensure_ascii=False))
"""


def test_pipeline_in_a_new_process(trained_run):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(trained_run / "best")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["one"][0]["label"] == "positive"
    assert [p["label"] for p in out["many"][:2]] == ["negative", "positive"]
    for prediction in out["one"] + out["many"]:  # empty and very long texts too
        assert prediction["label"] in {"positive", "negative"}
        assert 0.5 <= prediction["score"] <= 1.0


def test_predict_writes_a_row_per_input_row(trained_run, tmp_path):
    rows = [("1", "这部电影非常棒！"), ("2", "快递太坑人，就这样吧。"), ("3", "")]
    input_file = write_csv(tmp_path / "new.csv", rows, header=("id", "review"))
    output = tmp_path / "out" / "predictions.csv"
    cli(["predict", str(trained_run / "best"), str(input_file), "--output", str(output), "--text_column", "review"])
    with open(output, encoding="utf-8-sig") as f:
        written = list(csv.DictReader(f))
    assert [row["id"] for row in written] == ["1", "2", "3"]
    assert [row["predicted_label"] for row in written[:2]] == ["positive", "negative"]
    assert all(0.5 <= float(row["score"]) <= 1.0 for row in written)
    assert not list(output.parent.glob("*.tmp"))


def test_predict_csv_keeps_every_input_value(trained_run, tmp_path):
    # Ids with leading zeros, int labels with gaps, an input "label" column: all written back as read.
    content = 'id,text,label,note\n007,这部电影非常棒！,1,\n010,快递太坑人，就这样吧。,,NA\n011,,0,"a,b"\n'
    input_file = tmp_path / "new.csv"
    input_file.write_text(content, encoding="utf-8")
    before = input_file.read_bytes()
    output = tmp_path / "labelled.csv"
    cli(["predict", str(trained_run / "best"), str(input_file), "--output", str(output), "--top_k", "1"])
    with open(output, encoding="utf-8-sig", newline="") as f:
        header, *written = list(csv.reader(f))
    assert header == ["id", "text", "label", "note", "predicted_label", "score", "score_negative", "score_positive"]
    assert [row[:4] for row in written] == [
        ["007", "这部电影非常棒！", "1", ""],
        ["010", "快递太坑人，就这样吧。", "", "NA"],
        ["011", "", "0", "a,b"],
    ]
    assert [row[4] for row in written[:2]] == ["positive", "negative"]
    for row in written:  # top 1: only the predicted label's column is filled, with its score
        filled = {name: value for name, value in zip(header[6:], row[6:]) if value}
        assert filled == {f"score_{row[4]}": row[5]}
    assert input_file.read_bytes() == before


def test_predict_jsonl_keeps_types_and_writes_every_format(trained_run, tmp_path):
    records = [
        {"id": "007", "text": "这部电影非常棒！", "label": 1, "day": "2024-01-02"},
        {"id": "010", "text": "快递太坑人，就这样吧。", "label": None, "day": "2024-01-03 10:00"},
        {"id": "011", "text": "酒店很舒服。", "label": 3, "day": None},
    ]
    input_file = tmp_path / "new.jsonl"
    input_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    model = str(trained_run / "best")
    cli(["predict", model, str(input_file), "--top_k", "all"])  # default output: new.predictions.jsonl
    lines = (tmp_path / "new.predictions.jsonl").read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    assert "酒店" in lines[2]  # not \u escapes
    assert [{key: row[key] for key in records[0]} for row in written] == records
    assert [row["predicted_label"] for row in written] == ["positive", "negative", "positive"]
    for row in written:
        assert row["score"] == max(row["score_negative"], row["score_positive"])
        assert abs(row["score_negative"] + row["score_positive"] - 1) < 1e-5

    predict_file(model, input_file, tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["id", "text", "label", "day", "predicted_label", "score"]
    assert table.schema.field("label").type == pa.int64() and table["label"].to_pylist() == [1, None, 3]
    assert table["predicted_label"].to_pylist() == ["positive", "negative", "positive"]
    assert read_table(tmp_path / "p.parquet")["id"][:] == ["007", "010", "011"]

    predict_file(model, input_file, tmp_path / "p.tsv")
    tsv = (tmp_path / "p.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0] == "id\ttext\tlabel\tday\tpredicted_label\tscore"
    assert tsv[2].startswith("010\t快递太坑人，就这样吧。\t\t2024-01-03 10:00\tnegative\t0.")
    assert read_table(tmp_path / "p.tsv", as_written=True)["label"][:] == ["1", None, "3"]


def test_predict_refuses_to_overwrite_its_input(trained_run, tmp_path, monkeypatch):
    input_file = write_csv(tmp_path / "new.csv", [("这部电影非常棒！", "1")])
    before = input_file.read_bytes()
    monkeypatch.chdir(tmp_path)
    for output in (input_file, "new.csv", "./sub/../new.csv"):
        with pytest.raises(DataError, match=rf"--output {re.escape(str(Path(output)))} is the input file .*new\.csv: "
                           "the input is never overwritten; choose another --output"):  # fmt: skip
            predict_file(trained_run / "best", input_file, output)
    (tmp_path / "link.csv").symlink_to(input_file)
    with pytest.raises(DataError, match="is the input file"):
        predict_file(trained_run / "best", input_file, tmp_path / "link.csv")
    assert input_file.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "new.csv"]


def test_predict_errors_name_the_file_column_or_flag(trained_run, tmp_path):
    model = trained_run / "best"
    input_file = write_csv(tmp_path / "new.csv", [("好", "positive", "0.9")], header=("text", "label", "score"))
    with pytest.raises(DataError, match=r"--output .*out\.xlsx: unknown format \(name it \.csv, \.tsv, \.jsonl"):
        predict_file(model, input_file, tmp_path / "out.xlsx")
    with pytest.raises(DataError, match=r"new\.csv: already has a column 'score', where predictions would go"):
        predict_file(model, input_file, tmp_path / "out.csv")
    with pytest.raises(DataError, match=r"new\.csv: no column 'review' \(columns: text, label, score\); give the text "
                       "column with --text_column"):  # fmt: skip
        predict_file(model, input_file, tmp_path / "out.csv", text_column="review")
    with pytest.raises(DataError, match=r"missing\.csv: no such file or directory"):
        predict_file(model, tmp_path / "missing.csv", tmp_path / "out.csv")
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("text\tlabel\n好\tpositive\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'text' \(columns: text\tlabel\); the file looks tab-separated"):
        predict_file(model, tabs, tmp_path / "out.csv")
    with pytest.raises(DataError, match=r"new\.csv: unknown encoding 'klingon' given by --encoding"):
        predict_file(model, input_file, tmp_path / "out.csv", encoding="klingon")
    assert not (tmp_path / "out.csv").exists()


def test_predict_big5_input_with_encoding_flag(trained_run, tmp_path):
    input_file = tmp_path / "big5.csv"
    input_file.write_bytes("text,label\n這部電影很好,1\n".encode("big5"))
    output = tmp_path / "out.jsonl"
    cli(["predict", str(trained_run / "best"), str(input_file), "--output", str(output), "--encoding", "big5"])
    row = json.loads(output.read_text(encoding="utf-8"))
    assert (row["text"], row["label"]) == ("這部電影很好", "1")


def test_predict_texts_and_explain(trained_run, tmp_path, capsys):
    cli(["predict", str(trained_run / "best"), "--text", "耳机很好用！", "--text", "衣服很糟糕。"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["label"] for line in lines] == ["positive", "negative"]
    cli(["predict", str(trained_run / "best"), "--text", "耳机很好用！", "--top_k", "all"])
    (line,) = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [prediction["label"] for prediction in line["top_k"]] == ["positive", "negative"]
    assert abs(sum(prediction["score"] for prediction in line["top_k"]) - 1) < 1e-5

    page = tmp_path / "attention.html"
    cli(["explain", str(trained_run / "best"), "--text", "这部电影很精彩！", "--output", str(page)])
    printed = capsys.readouterr().out
    assert printed.startswith("positive") and "电影:" in printed
    assert "电影" in page.read_text(encoding="utf-8")
