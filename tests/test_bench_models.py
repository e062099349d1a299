"""scripts/bench_models.py on a tiny trained run: a model's row with its weights, accuracy, finetune predict
and ONNX int8 rates (the first model the unit of the ratios); a bad --model is one line."""

import json
import sys

import pytest
from conftest import ROOT, make_reviews, write_csv

sys.path.insert(0, str(ROOT))
from scripts import bench_models  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    data = tmp_path_factory.mktemp("reviews")
    for stem, seed in (("train", 0), ("dev", 1), ("test", 2)):
        write_csv(data / f"{stem}.csv", make_reviews(20, seed=seed))
    return data


def test_each_model_gets_its_sizes_accuracy_and_rates(trained_run, folder, tmp_path, capsys):
    output = tmp_path / "models.json"
    rows = bench_models.main(["--model", f"teacher={trained_run}",
                              "--data", str(folder), "--max_texts", "24", "--repeats", "1", "--latency_calls", "5",
                              "--threads", "1", "--output", str(output)])  # fmt: skip
    assert [row["name"] for row in rows] == ["teacher"]
    row = rows[0]
    assert row["parameters"] > 1000 and row["weights_mb"] > 0
    assert row["test_accuracy"] >= 0.9  # the trained run reads the sentiment word
    assert row["onnx_int8"]["test_accuracy"] >= row["test_accuracy"] - 0.1 and row["onnx_int8"]["size_mb"] > 0
    assert row["predict"]["texts_per_second"] > 0 and row["onnx_int8"]["texts_per_second"] > 0
    assert row["fp32_max_abs_logit_difference"] < 1e-4
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| model | parameters | weights MB | test accuracy (PyTorch / int8)")
    assert lines[1].startswith("| teacher |") and lines[1].endswith("| 1.0x / 1.0x |")
    assert "24 test texts" in table
    assert json.loads(output.read_text(encoding="utf-8"))["rows"][0]["parameters"] == row["parameters"]


@pytest.mark.parametrize(
    "spec, message",
    [("nameless", "--model nameless: give NAME=DIR with a new name"), ("a=/no/such/dir", "is not a directory")],
)
def test_a_bad_model_is_one_line(spec, message):
    from finetune.errors import ArgumentError

    with pytest.raises(ArgumentError, match=message):
        bench_models.parse_args(["--model", spec])
