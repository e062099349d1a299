"""scripts/bench_speed.py --quick on tiny data: the table has its rows (bf16 asked for where the CPU has it), every
figure positive; on a CPU without native bf16, --bf16 is one line.

Speed claims live in the benchmark's own output, not in timed assertions here.
"""

import json
import os
import re
import subprocess
import sys

from conftest import ROOT, make_reviews, write_csv

from finetune.devices import cpu_has_native_bf16

ROW_NAMES = [
    "plain loop train",
    "recipe, adversarial off",
    "recipe default (adversarial_epsilon 1.0)",
    "recipe default, bf16 autocast (--bf16)",
    "plain loop predict",
    "pipeline()",
    "finetune predict (predict_file)",
    "load_classifier() (BatchedTextClassificationPipeline)",
    "load_classifier(), num_proc=1",  # one per core, and --threads 1
    "pipeline(), bf16 (dtype=torch.bfloat16)",
    "finetune predict --bf16",
    "load_classifier(bf16=True)",
    "load_classifier(bf16=True), num_proc=1",
    "onnxruntime fp32 (model.onnx, {} MB)",
    "onnxruntime int8 (model_int8.onnx, {} MB)",
    "finetune predict --backend onnx_int8",
]


def table_rows(output: str) -> list[list[str]]:
    """The cells of the markdown table's body rows."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_quick_run_prints_the_table_and_writes_json(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "train.csv", make_reviews(80, seed=0))
    write_csv(data / "dev.csv", make_reviews(15, seed=1))
    write_csv(data / "test.csv", make_reviews(15, seed=2))
    output = tmp_path / "speed.json"
    # One thread: two-thread torch on a busy 2-core machine spends minutes spinning
    command = [sys.executable, str(ROOT / "scripts" / "bench_speed.py"), "--quick", "--threads", "1", "--bf16",
               "--data", str(data), "--output", str(output), "--predict_copies", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bf16 = cpu_has_native_bf16()
    if not bf16:  # an AVX2-only CPU: oneDNN has no bf16 LSTM; the flag is refused before any work
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 1 and done.stderr.strip() == (
            "--bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so its LSTM kernels refuse it"
        )
        command.remove("--bf16")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = table_rows(done.stdout)
    names = [name for name in ROW_NAMES if bf16 or "bf16" not in name]
    assert [re.sub(r"[\d.]+ MB", "{} MB", row[0]) for row in rows] == names  # sizes vary
    assert all(len(row) == 6 for row in rows)
    for name, *cells in rows:
        numbers = [float(n) for cell in cells for n in re.findall(r"\d+(?:\.\d+)?", cell)]
        # throughput, p50 and p95 (prediction, but not with several processes), peak RSS and its rise, ratio
        latencies = name.startswith(("plain loop predict", "pipeline()", "onnxruntime", "load_classifier(")) and (
            "num_proc" not in name
        )
        assert len(numbers) == (6 if latencies else 4), (name, cells)
        rise = numbers[-2]  # a phase may reuse memory already taken: its rise can be 0
        assert all(n > 0 for n in numbers[:-2] + numbers[-1:]) and rise >= 0, (name, cells)
    assert rows[0][-1] == rows[names.index("plain loop predict")][-1] == "1.00x"

    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["splits"]["test"] == 30 and results["machine"]["torch_threads"] == 1
    assert "predict rows on 60 texts" in done.stdout  # --predict_copies 2
    for kind, unit in (("train", "samples_per_second"), ("predict", "texts_per_second")):
        assert len(results[kind]) == (3 + bf16 if kind == "train" else 5 + 4 * bf16)
        for row in results[kind].values():
            assert row[unit] > 0 and row["peak_rss_mb"] > 0
    for name in ("plain", "pipeline", *(["pipeline_bf16"] if bf16 else [])):
        row = results["predict"][name]
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["calls"] == 10 and row["first_pass_p50_ms"] > 0
    for name in ("onnx_fp32", "onnx_int8"):
        row = results["predict_onnx"][name]
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["size_mb"] > 0 and row["test_accuracy"] >= 0
    assert results["predict_onnx"]["predict_file_onnx_int8"]["texts_per_second"] > 0
    assert results["predict_onnx"]["fp32_max_abs_logit_difference"] <= 1e-4
    train = results["train"]
    assert train["plain"]["runs"][0]["samples"] == train["recipe_default"]["runs"][0]["samples"] == 128
    assert not bf16 or train["recipe_bf16"]["runs"][0]["samples"] == 128
