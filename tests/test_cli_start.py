"""The `finetune` command starts fast: `--help`, `--version`, a mistyped command and every subcommand's
argument errors load neither torch nor datasets nor transformers' models (each case in a new process, its
modules listed after it ran); a missing optional extra is one line with its install command. And
`import finetune` stays light yet registers the model once transformers' Auto classes load.
Speed itself is measured by scripts/bench_cli_start.py, not asserted here."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

import finetune
from finetune.cli import main as cli

# Runs `finetune.cli.main(argv)` as the `finetune` script does; then, last line on stderr, its exit code and the
# heavy modules it loaded. HIDE: modules made missing first (`sys.modules[name] = None`).
PROBE = """
import json, sys
argv, hide = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in hide:
    sys.modules[name] = None
from finetune.cli import main
try:
    main(argv)
    code = 0
except SystemExit as error:
    code = error.code
heavy = sorted(name for name in sys.modules if sys.modules[name] is not None and (
    name.split(".")[0] in ("torch", "datasets") or name.startswith(("transformers.model", "transformers.pipelines"))))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def run_cli(argv: list[str], hide: tuple[str, ...] = (), cwd=None) -> tuple[int, list[str], str, list[str]]:
    """(exit code, heavy modules loaded, stdout, stderr lines) of `finetune ARGV` in a new process."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(hide)],
        capture_output=True, text=True, timeout=120, cwd=cwd or ROOT,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    *lines, last = result.stderr.strip().splitlines()
    probe = json.loads(last)
    return probe["code"], probe["heavy"], result.stdout, lines


CHOICES = "'train', 'evaluate', 'predict', 'export', 'explain', 'push', 'inspect', 'env'"


@pytest.mark.parametrize(
    "argv, line",
    [
        (["bogus"], f"argument command: invalid choice: 'bogus' (choose from {CHOICES}) (see --help)"),
        ([], "the following arguments are required: command (see --help)"),
        (["--verbose", "env"], "env: unknown flag --verbose; see --help"),
        (["predict"], "predict: the following arguments are required: model (see --help)"),
        (["predict", "m", "--backend", "tflite"], "predict: argument --backend: invalid choice: 'tflite' (choose "
         "from 'pytorch', 'onnx', 'onnx_int8') (see --help)"),
        (["predict", "m", "--top_k", "0"], "predict: argument --top_k: expected a positive integer or 'all', got '0' "
         "(see --help)"),
        (["predict", "m", "--bogus"], "predict: unknown flag --bogus; see --help"),
        (["predict", "m"], "predict: give an input file or --text"),
        (["evaluate", "m"], "evaluate: the following arguments are required: file (see --help)"),
        (["export", "m", "--quantize", "int4"], "export: argument --quantize: invalid choice: 'int4' (choose from "
         "'int8') (see --help)"),
        (["explain", "m"], "explain: the following arguments are required: --text (see --help)"),
        (["push", "m"], "push: the following arguments are required: --repo-id/--repo_id (see --help)"),
        (["train", "--bogus_flag", "1"], "unknown flag --bogus_flag; see --help"),
        (["train", "--num_train_epochs", "many"], "argument --num_train_epochs/--num-train-epochs: invalid int "
         "value: 'many' (see --help)"),
        (["train", "--config", "word2vec"], "--config word2vec: no such file, nor a shipped config (did you mean "
         "word2vec_bilstm_attn? shipped: "),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)  # fmt: skip
def test_argument_errors_are_one_line_and_load_no_torch(argv, line):
    code, heavy, stdout, err = run_cli(argv)
    assert (code, heavy, stdout) == (1, [], "")
    assert len(err) == 1 and err[0].startswith(f"finetune: error: {line}"), err


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["export", "--help"], ["env", "--help"]])
def test_help_loads_no_torch(argv):
    code, heavy, stdout, err = run_cli(argv)
    assert (code, heavy, err) == (0, [], [])
    assert stdout.startswith("usage: finetune")


def test_version_is_one_line_from_one_source():
    code, heavy, stdout, err = run_cli(["--version"])
    assert (code, heavy, err, stdout) == (0, [], [], f"finetune-zh {finetune.__version__}\n")


def test_train_help_finds_a_shipped_config_by_name_from_any_directory(tmp_path):
    """`finetune train --help` parses the config through HfArgumentParser: transformers, but not its models."""
    code, heavy, stdout, err = run_cli(["train", "--config", "word2vec_bilstm_attn", "--help"], cwd=tmp_path)
    assert (code, heavy, err) == (0, [], [])
    assert "--tfidf_branch" in stdout and "word2vec_bilstm_attn" in stdout


@pytest.mark.parametrize(
    "argv, hide, line",
    [
        (["export", "m"], ("onnx",), 'export needs onnx and onnxruntime: pip install "finetune-zh[onnx]"'),
        (["export", "m"], ("onnxruntime",), 'export needs onnx and onnxruntime: pip install "finetune-zh[onnx]"'),
        (["predict", "m", "--text", "很好", "--backend", "onnx"], ("onnxruntime",),
         'predict --backend onnx needs onnxruntime: pip install "finetune-zh[onnx]"'),
        (["train", "--report_to", "tensorboard"], ("tensorboard",),
         '--report_to tensorboard: the tensorboard package is not installed (pip install "finetune-zh[tensorboard]")'),
    ],
    ids=["export-onnx", "export-onnxruntime", "predict-onnx", "train-tensorboard"],
)  # fmt: skip
def test_a_missing_extra_is_one_line_with_its_install_command(argv, hide, line):
    code, _, stdout, err = run_cli(argv, hide)
    assert (code, stdout, err) == (1, "", [f"finetune: error: {line}"])


def test_env_lists_versions_and_devices(capsys):
    cli(["env"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("- ") for line in lines)
    rows = dict(line[2:].split(": ", 1) for line in lines)
    assert rows["finetune-zh"] == finetune.__version__
    expected = {"Python", "Platform", "torch", "transformers", "accelerate", "peft", "datasets", "gensim"}
    assert expected | {"onnxruntime", "onnx", "CUDA devices"} <= set(rows)
    assert rows["CPU bf16 native (AVX512-BF16 or AMX)"] in ("yes", "no")
    assert "CUDA build: " in rows["torch"]


# `import finetune` in a new process, then the transformers imports of its users
REGISTRATION = """
import json, sys
first = sys.argv[1]
if first == "auto":
    from transformers import AutoConfig  # the Auto classes already in: finetune registers at once
import finetune
loaded = {"after import finetune": sorted(m for m in ("torch", "transformers") if m in sys.modules)}
from transformers import HfArgumentParser
loaded["after HfArgumentParser"] = sorted(m for m in ("torch",) if m in sys.modules)
from transformers import AutoConfig, AutoModelForSequenceClassification
config = AutoConfig.for_model("bilstm_attention", vocab_size=10, num_labels=2)
model = AutoModelForSequenceClassification.from_config(config)
print(json.dumps({**loaded, "model": type(model).__name__, "lazy": finetune.JiebaTokenizer.__name__}))
"""


@pytest.mark.parametrize("first", ["finetune", "auto"])
def test_import_finetune_is_light_and_registers_when_the_auto_classes_load(first):
    result = subprocess.run(
        [sys.executable, "-c", REGISTRATION, first], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"] == "BiLSTMAttentionForSequenceClassification" and report["lazy"] == "JiebaTokenizer"
    if first == "finetune":
        assert report["after import finetune"] == [] and report["after HfArgumentParser"] == []


def test_the_start_up_benchmark_prints_its_table():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_cli_start.py"), "--runs", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `finetune")]
    assert len(rows) == 6 and all(float(row.split("|")[3]) > 0 for row in rows)
