"""Using a trained model: pipeline() in a new process, `finetune predict` to CSV, `finetune explain`."""

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, free_port, run_processes, write_csv
from transformers import pipeline

from finetune.cli import main as cli
from finetune.data.tables import DataError, read_table
from finetune.inference.batching import length_sorted_batches
from finetune.inference.classifier import load_classifier
from finetune.inference.file_labelling import predict_file

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
        [sys.executable, "-c", PIPELINE_SCRIPT, str(trained_run)],
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
    cli(["predict", str(trained_run), str(input_file), "--output", str(output), "--text_column", "review"])
    with open(output, encoding="utf-8-sig") as f:
        written = list(csv.DictReader(f))
    assert [row["id"] for row in written] == ["1", "2", "3"]
    assert [row["predicted_label"] for row in written[:2]] == ["positive", "negative"]
    assert all(0.5 <= float(row["score"]) <= 1.0 for row in written[:2])
    assert (written[2]["predicted_label"], written[2]["score"]) == ("", "")  # no text: no label, no score
    assert not list(output.parent.glob("*.tmp"))


def test_predict_csv_keeps_every_input_value(trained_run, tmp_path):
    # Ids with leading zeros, int labels with gaps, an input "label" column: all written back as read.
    content = 'id,text,label,note\n007,这部电影非常棒！,1,\n010,快递太坑人，就这样吧。,,NA\n011,,0,"a,b"\n'
    input_file = tmp_path / "new.csv"
    input_file.write_text(content, encoding="utf-8")
    before = input_file.read_bytes()
    output = tmp_path / "labelled.csv"
    cli(["predict", str(trained_run), str(input_file), "--output", str(output), "--top_k", "1"])
    with open(output, encoding="utf-8-sig", newline="") as f:
        header, *written = list(csv.reader(f))
    assert header == ["id", "text", "label", "note", "predicted_label", "score", "score_negative", "score_positive"]
    assert [row[:4] for row in written] == [
        ["007", "这部电影非常棒！", "1", ""],
        ["010", "快递太坑人，就这样吧。", "", "NA"],
        ["011", "", "0", "a,b"],
    ]
    assert [row[4] for row in written[:2]] == ["positive", "negative"]
    for row in written[:2]:  # top 1: only the predicted label's column is filled, with its score
        filled = {name: value for name, value in zip(header[6:], row[6:]) if value}
        assert filled == {f"score_{row[4]}": row[5]}
    assert written[2][4:] == ["", "", "", ""]  # no text: every prediction left empty
    assert input_file.read_bytes() == before


def test_predict_jsonl_keeps_types_and_writes_every_format(trained_run, tmp_path):
    records = [
        {"id": "007", "text": "这部电影非常棒！", "label": 1, "day": "2024-01-02"},
        {"id": "010", "text": "快递太坑人，就这样吧。", "label": None, "day": "2024-01-03 10:00"},
        {"id": "011", "text": "酒店很舒服。", "label": 3, "day": None},
    ]
    input_file = tmp_path / "new.jsonl"
    input_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    model = str(trained_run)
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
            predict_file(trained_run, input_file, output)
    (tmp_path / "link.csv").symlink_to(input_file)
    with pytest.raises(DataError, match="is the input file"):
        predict_file(trained_run, input_file, tmp_path / "link.csv")
    assert input_file.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "new.csv"]


def test_predict_errors_name_the_file_column_or_flag(trained_run, tmp_path):
    model = trained_run
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
    cli(["predict", str(trained_run), str(input_file), "--output", str(output), "--encoding", "big5"])
    row = json.loads(output.read_text(encoding="utf-8"))
    assert (row["text"], row["label"]) == ("這部電影很好", "1")


def test_predict_texts_and_explain(trained_run, tmp_path, capsys):
    cli(["predict", str(trained_run), "--text", "耳机很好用！", "--text", "衣服很糟糕。"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["label"] for line in lines] == ["positive", "negative"]
    cli(["predict", str(trained_run), "--text", "耳机很好用！", "--top_k", "all"])
    (line,) = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [prediction["label"] for prediction in line["top_k"]] == ["positive", "negative"]
    assert abs(sum(prediction["score"] for prediction in line["top_k"]) - 1) < 1e-5

    page = tmp_path / "attention.html"
    cli(["explain", str(trained_run), "--text", "这部电影很精彩！", "--output", str(page)])
    printed = capsys.readouterr().out
    assert printed.startswith("positive") and "电影:" in printed
    assert "电影" in page.read_text(encoding="utf-8")


def test_predict_file_gives_the_pipelines_scores_in_input_order(trained_run, mixed_texts, tmp_path):
    model = trained_run
    input_file = write_csv(tmp_path / "in.csv", [(str(i), text) for i, text in enumerate(mixed_texts)], ("id", "text"))
    # Batches of 8 sorted by length, 50 rows a chunk: the last chunk is short and the order is undone.
    assert predict_file(model, input_file, tmp_path / "out.jsonl", batch_size=8, chunk_size=50, top_k="all") == 103
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in written] == [str(i) for i in range(103)]
    classifier = pipeline("text-classification", model=str(model))  # transformers' own, text by text
    expected = classifier(mixed_texts, top_k=None)
    for row, predictions in zip(written, expected, strict=True):
        if not row["text"]:  # the empty text: not labelled (the pipeline gives its bias's label)
            assert row["predicted_label"] is None and row["score"] is None and row["score_positive"] is None
            continue
        assert row["predicted_label"] == predictions[0]["label"]
        for prediction in predictions:
            assert abs(row[f"score_{prediction['label']}"] - prediction["score"]) < 1e-6
    # The tokenizer's direct path changes nothing the pipeline reports, batched or not.
    for batch_size in (1, 16):
        fast = classifier(mixed_texts, top_k=None, batch_size=batch_size)
        classifier.tokenizer._fast_path_sequences = lambda *_: None  # PreTrainedTokenizer's own path
        slow = classifier(mixed_texts, top_k=None, batch_size=batch_size)
        del classifier.tokenizer._fast_path_sequences
        for before, after in zip(slow, fast, strict=True):
            assert [p["label"] for p in before] == [p["label"] for p in after]
            assert max(abs(b["score"] - a["score"]) for b, a in zip(before, after, strict=True)) < 1e-6


def assert_same_predictions(path: Path, expected: Path) -> None:
    """The same rows, labels and columns; scores equal to float32 rounding: a text's logits differ in
    the last bits with the texts batched beside it (0.1234565 may be written 0.123456 or 0.123457)."""
    table, other = read_table(path, as_written=True).to_pandas(), read_table(expected, as_written=True).to_pandas()
    assert list(table.columns) == list(other.columns) and len(table) == len(other)
    for name in table.columns:
        if name.startswith("score"):
            assert np.allclose(table[name].astype(float), other[name].astype(float), rtol=0, atol=2e-6, equal_nan=True)
        else:
            assert table[name].tolist() == other[name].tolist(), name


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_predict_file_in_chunks_writes_what_one_chunk_writes(trained_run, mixed_texts, tmp_path, suffix):
    rows = [(f"{i:03d}", text, "" if i % 3 else "1") for i, text in enumerate(mixed_texts)]
    input_file = write_csv(tmp_path / "in.csv", rows, ("id", "text", "label"))
    model = trained_run
    predict_file(model, input_file, tmp_path / f"whole{suffix}", top_k=1)
    predict_file(model, input_file, tmp_path / f"chunked{suffix}", top_k=1, batch_size=3, chunk_size=7)
    assert_same_predictions(tmp_path / f"chunked{suffix}", tmp_path / f"whole{suffix}")
    assert read_table(tmp_path / f"whole{suffix}", as_written=True)["id"][:] == [row[0] for row in rows]


def test_bf16_predicts_what_float32_does(trained_run, mixed_texts, tmp_path, monkeypatch):
    import torch

    from finetune.devices import cpu_has_native_bf16
    from finetune.errors import ArgumentError
    from finetune.inference import classifier as classifier_module

    model = trained_run
    input_file = write_csv(tmp_path / "in.csv", [(str(i), text) for i, text in enumerate(mixed_texts)], ("id", "text"))
    if not (cpu_has_native_bf16() or torch.cuda.is_available()):  # e.g. an AVX2-only CPU: refused
        with pytest.raises(ArgumentError, match=r"^--bf16: this CPU has no native bfloat16 \(AVX512-BF16 or AMX\)"):
            predict_file(model, input_file, tmp_path / "refused.csv", bf16=True)
        assert not (tmp_path / "refused.csv").exists()
        return
    predict_file(model, input_file, tmp_path / "fp32.csv", top_k="all")
    predict_file(model, input_file, tmp_path / "bf16.csv", top_k="all", bf16=True)
    fp32, bf16 = (read_table(tmp_path / f"{name}.csv").to_pandas() for name in ("fp32", "bf16"))
    scores = [name for name in fp32.columns if name.startswith("score_")]
    difference = np.abs(fp32[scores].to_numpy(float) - bf16[scores].to_numpy(float))
    assert 0 < np.nanmax(difference) < 0.02  # bfloat16 ran (the scores moved), to about 2-3 digits (NaN: no text)
    clear = fp32["score"].astype(float) > 0.52  # labels of texts not on the fence are the same
    assert clear.sum() > 80 and (fp32["predicted_label"] == bf16["predicted_label"])[clear].all()
    classifier = load_classifier(model, bf16=True)
    dtypes = {name: parameter.dtype for name, parameter in classifier.model.named_parameters()}
    assert dtypes["head.lstm.weight_ih_l0"] == torch.bfloat16
    assert dtypes["tfidf_branch.weight"] == torch.float32  # _keep_in_fp32_modules_strict
    monkeypatch.setattr(classifier_module, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ArgumentError, match=r"^--bf16: this CPU has no native bfloat16 \(AVX512-BF16 or AMX\)"):
        predict_file(model, input_file, tmp_path / "refused.csv", bf16=True)
    assert not (tmp_path / "refused.csv").exists()


def test_bf16_is_refused_with_an_onnx_backend(trained_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", str(trained_run), "--text", "很好", "--backend", "onnx", "--bf16"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["finetune: error: --bf16 runs the PyTorch model, not --backend onnx (int8: --backend onnx_int8)"]


def test_predict_tsv_refuses_a_tab_inside_a_value(trained_run, tmp_path):
    input_file = tmp_path / "in.jsonl"
    records = [{"text": "很好", "note": "a"}, {"text": "差", "note": "b\tc"}]
    input_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl: row 2, column 'note' holds a tab or line break, which a \.tsv"):
        predict_file(trained_run, input_file, tmp_path / "out.tsv")
    assert not (tmp_path / "out.tsv").exists()


def test_two_processes_write_what_one_writes(trained_run, mixed_texts, tmp_path):
    rows = [(f"{i:04d}", mixed_texts[i % len(mixed_texts)] + "！" * (i % 5)) for i in range(2001)]
    input_file = write_csv(tmp_path / "in.csv", rows, ("id", "text"))
    predict_file(trained_run, input_file, tmp_path / "one.csv", top_k="all")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--num_processes", "2", "--multi_gpu",
               "--main_process_port", str(free_port()), "-m", "finetune.cli", "predict",
               str(trained_run), str(input_file), "--output", str(tmp_path / "two.csv"),
               "--top_k", "all"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = run_processes(command, tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Process 1 of 2 labels rows 1 to 1000" in result.stderr
    assert "Process 2 of 2 labels rows 1001 to 2001" in result.stderr
    assert result.stdout.count("wrote 2001 predictions") == 1  # by the main process only
    assert_same_predictions(tmp_path / "two.csv", tmp_path / "one.csv")


def test_forked_processes_write_what_one_writes(trained_run, mixed_texts, tmp_path, caplog):
    rows = [(f"{i:04d}", mixed_texts[i % len(mixed_texts)] + "！" * (i % 5)) for i in range(2001)]
    input_file = write_csv(tmp_path / "in.csv", rows, ("id", "text"))
    with caplog.at_level(logging.INFO, logger="finetune"):
        predict_file(trained_run, input_file, tmp_path / "one.csv", top_k="all")  # < 2 pieces: 1 process
        assert "Labelling" not in caplog.text
        predict_file(trained_run, input_file, tmp_path / "two.csv", top_k="all", num_proc=2, chunk_size=300)
    assert "Labelling in 2 processes of 1 thread(s): chunks of 300 rows in pieces of up to 150" in caplog.text
    assert_same_predictions(tmp_path / "two.csv", tmp_path / "one.csv")


def test_long_texts_go_in_smaller_batches():
    lengths = [10] * 300 + [100] * 300 + [256] * 100 + [0, 5000]
    batches = list(length_sorted_batches(lengths, 256))  # at most 256 x 64 tokens a batch
    assert [len(rows) for rows in batches] == [256, 163, 163, 64, 55, 1]
    assert sorted(row for rows in batches for row in rows.tolist()) == list(range(len(lengths)))
    assert batches[0][0] == 700 and batches[-1].tolist() == [701]  # the empty text first, the longest alone


def test_explain_shows_the_tokens_a_long_text_is_cut_to(trained_run, tmp_path):
    import shutil

    from finetune.inference.classifier import explain, load_for_explain

    model_dir = tmp_path / "head_tail"
    shutil.copytree(trained_run, model_dir, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config.update(max_length=8, truncation="head+tail", truncation_head_ratio=0.25)
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    model, tokenizer = load_for_explain(model_dir)
    text = "电影很好。" + "快递很差，" * 6 + "衣服很糟糕。"
    words = tokenizer.words_to_tokens(tokenizer.segment(text))
    assert len(words) > 8
    (result,) = explain(model, tokenizer, [text])
    assert result["tokens"] == words[:2] + words[-6:]  # 2 of 8 from the head, 6 from the tail, as the model reads
    assert len(result["weights"]) == 8 and abs(sum(result["weights"]) - 1) < 1e-4
    short = "电影很好。"
    (result,) = explain(model, tokenizer, [short])
    assert result["tokens"] == tokenizer.words_to_tokens(tokenizer.segment(short))


@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_e5"])
def test_a_transformer_encoder_loads_in_bf16_whole(encoder, request, tmp_path):
    import torch
    from conftest import pretrained_encoder_model

    from finetune.devices import cpu_has_native_bf16
    from finetune.errors import ArgumentError

    model, tokenizer = pretrained_encoder_model("transformer", request.getfixturevalue(encoder))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    if not (cpu_has_native_bf16() or torch.cuda.is_available()):  # e.g. an AVX2-only CPU: refused in one line
        with pytest.raises(ArgumentError, match=r"^--bf16: this CPU has no native bfloat16"):
            load_classifier(tmp_path, bf16=True)
        return
    classifier = load_classifier(tmp_path, bf16=True)  # as finetune predict --bf16 loads it
    assert {parameter.dtype for parameter in classifier.model.parameters()} == {torch.bfloat16}  # the encoder too
    texts = ["这部电影很好。", "快递太差劲了，衣服也很糟糕。"]
    full_classifier = load_classifier(tmp_path)
    assert {parameter.dtype for parameter in full_classifier.model.parameters()} == {torch.float32}
    half = [row["score"] for rows in classifier(texts, top_k=None) for row in rows]
    full = [row["score"] for rows in full_classifier(texts, top_k=None) for row in rows]
    assert np.allclose(half, full, atol=0.02)


def test_a_text_longer_than_the_tokenizer_limit_is_cut_by_the_model_without_a_false_warning(
    tiny_e5, tmp_path, capfd, caplog
):
    from conftest import pretrained_encoder_model

    model, tokenizer = pretrained_encoder_model("transformer", tiny_e5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classifier = load_classifier(tmp_path)
    long = "这部电影很好，快递太差劲了。" * 20
    assert len(classifier.tokenizer(long, verbose=False)["input_ids"]) > classifier.tokenizer.model_max_length
    with caplog.at_level("WARNING"):
        scores = classifier([long, "很好"])
    assert len(scores) == 2
    said = capfd.readouterr().err + caplog.text
    assert "indexing errors" not in said  # transformers' warning: the model cuts the text (long_text), nothing fails
