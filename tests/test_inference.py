"""Using a trained model: pipeline() in a new process, `finetune predict` to CSV, `finetune explain`."""

import csv
import json
import os
import subprocess
import sys

from conftest import ROOT, write_csv

from finetune.cli import main as cli

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
    assert [row["label"] for row in written[:2]] == ["positive", "negative"]
    assert all(0.5 <= float(row["score"]) <= 1.0 for row in written)
    assert not list(output.parent.glob("*.tmp"))


def test_predict_texts_and_explain(trained_run, tmp_path, capsys):
    cli(["predict", str(trained_run / "best"), "--text", "耳机很好用！", "--text", "衣服很糟糕。"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["label"] for line in lines] == ["positive", "negative"]

    page = tmp_path / "attention.html"
    cli(["explain", str(trained_run / "best"), "--text", "这部电影很精彩！", "--output", str(page)])
    printed = capsys.readouterr().out
    assert printed.startswith("positive") and "电影:" in printed
    assert "电影" in page.read_text(encoding="utf-8")
