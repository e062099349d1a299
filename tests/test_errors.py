"""Bad input, as users make it: each case exits non-zero with one line naming the file, line, column
or flag, prints no traceback, and leaves the input files and the run directory as they were."""

import gzip
import hashlib
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RECIPE, ROOT, make_reviews, run_launch, tiny_recipe_args, write_csv

from finetune.cli import main as cli
from finetune.errors import redact

TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUv"


def snapshot(directory: Path) -> dict:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def train(ctx, *extra, train_file=None, vectors=None):
    return ["train", *tiny_recipe_args(train_file or ctx["csv"], vectors or ctx["vectors"], ctx["out"], *extra)]


def write(ctx, name: str, content, encoding="utf-8") -> Path:
    path = ctx["dir"] / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding=encoding)
    return path


def vectors_with(ctx, line: str, name="bad.vec") -> Path:
    text = ctx["vectors"].read_text(encoding="utf-8").splitlines()
    return write(ctx, name, "\n".join([*text[:3], line, *text[3:]]) + "\n")


def damaged_model(ctx, damage) -> Path:
    model = ctx["dir"] / "model"
    shutil.copytree(ctx["run"], model)
    damage(model)
    return model


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# case name -> (argv from the context, what the one error line must say)
CASES = {
    "train file missing": (lambda c: train(c, train_file=c["dir"] / "absent.csv"), r"absent.csv: no such file"),
    "train file empty": (lambda c: train(c, train_file=write(c, "empty.csv", "")), r"empty.csv: the file is empty"),
    "text column missing": (
        lambda c: train(c, train_file=write(c, "r.csv", "review,label\n很好,pos\n很差,neg\n")),
        r"r.csv: no column 'text' \(columns: review, label\)",
    ),
    "tab-separated file named .csv": (
        lambda c: train(c, train_file=write(c, "t.csv", "text\tlabel\n很好\tpos\n很差\tneg\n")),
        r"t.csv: .*tab-separated",
    ),
    "header with full-width commas": (
        lambda c: train(c, train_file=write(c, "f.csv", "text，label\n很好，pos\n很差，neg\n")),
        r"f.csv: no column 'text' .*full-width commas \(，\): use ASCII commas",
    ),
    "text column of numbers": (
        lambda c: train(
            c, "--text_column", "id", train_file=write(c, "n.csv", "id,text,label\n1,很好,pos\n2,很差,neg\n")
        ),
        r"n.csv: column 'id' holds numbers, not texts \(e.g. 1, 2\)",
    ),
    "texts given as the labels": (
        lambda c: train(c, "--label_column", "text"),
        r"reviews.csv: \d+ distinct labels in \d+ rows .*is this the label column\? Give it with --label_column",
    ),
    "one label only": (
        lambda c: train(c, train_file=write(c, "one.csv", "text,label\n很好,pos\n不错,pos\n")),
        r"one.csv: only one label \('pos'\)",
    ),
    "test file with a label train never has": (
        lambda c: train(c, "--test_file", str(write(c, "test.csv", "text,label\n还行吧,neutral\n"))),
        r"test.csv: line 2: label 'neutral' never occurs in",
    ),
    "unknown encoding": (lambda c: train(c, "--encoding", "klingon"), r"--encoding"),
    "misspelled flag": (
        lambda c: train(c, "--learning_rat", "0.1"),
        r"--learning_rat \(did you mean --learning_rate\?\)",
    ),
    "secret in a rejected flag": (lambda c: train(c, "--hub_token", TOKEN), r"unknown flag --hub_token\b"),
    "flag value of the wrong type": (
        lambda c: train(c, "--learning_rate", "fast"),
        r"--learning_rate\b.*invalid float value: 'fast'",
    ),
    "flag value out of range": (
        lambda c: train(c, "--learning_rate", "-1"),
        r"--learning_rate -1.0: must be a number above 0",
    ),
    "config file missing": (
        lambda c: ["train", "--config", str(c["dir"] / "absent.yaml")],
        r"--config .*absent.yaml: no such file",
    ),
    "config file not YAML": (
        lambda c: ["train", "--config", str(write(c, "c.yaml", "learning_rate: 0.1\nseed: [1\n"))],
        r"c.yaml: line \d+, column \d+: not valid YAML",
    ),
    "config key misspelled": (
        lambda c: ["train", "--config", str(write(c, "c.yaml", "learning_rat: 0.1\n"))],
        r"c.yaml: unknown key learning_rat \(did you mean learning_rate\?\)",
    ),
    "vector file missing": (
        lambda c: train(c, vectors=c["dir"] / "absent.vec"),
        r"--word_vectors .*absent.vec: no such file",
    ),
    "vector file with nan": (
        lambda c: train(c, vectors=vectors_with(c, "衣服 " + " ".join(["nan"] * 8))),
        r"bad.vec: line 4 \('衣服'\): value nan is not a finite number",
    ),
    "vector file with too few values": (
        lambda c: train(c, vectors=vectors_with(c, "衣服 0.1 0.2")),
        r"bad.vec: line 4 has 2 values, expected 8",
    ),
    "gzip vector file named .vec": (
        lambda c: train(c, vectors=write(c, "v.vec", gzip.compress(c["vectors"].read_bytes()))),
        r"v.vec is gzip-compressed but its name does not end in .gz: name it v.vec.gz",
    ),
    "transformer without a checkpoint": (
        lambda c: train(c, "--encoder_type", "transformer"),
        r"--encoder_type transformer needs --model_name_or_path",
    ),
    "encoder type misspelled": (lambda c: train(c, "--encoder_type", "bert"), r"--encoder_type bert: must be one of"),
    "LoRA target the encoder lacks": (
        lambda c: train(c, "--lora_r", "2", "--lora_target_modules", "query"),
        r"--lora_target_modules: no encoder module named 'query'",
    ),
    "output directory holds a finished run": (
        lambda c: train(c, "--output_dir", str(c["finished"])),
        r"--output_dir .*: holds a finished run \(finished.json\); give --overwrite_output_dir",
    ),
    "output directory is a file": (
        lambda c: train(c, "--output_dir", str(write(c, "out.txt", "x"))),
        r"--output_dir .*out.txt: is a file",
    ),
    "checkpoint path that is not one": (
        lambda c: train(c, "--resume_from_checkpoint", str(c["dir"])),
        r"--resume_from_checkpoint .*: not a complete checkpoint",
    ),
    "predict: model directory missing": (
        lambda c: ["predict", str(c["dir"] / "runs" / "x"), "--text", "很好"],
        r"runs/x: no such model directory",
    ),
    "predict: model without vocab.txt": (
        lambda c: ["predict", str(damaged_model(c, lambda m: (m / "vocab.txt").unlink())), "--text", "很好"],
        r"vocab.txt",
    ),
    "predict: truncated weights": (
        lambda c: ["predict", str(damaged_model(c, lambda m: truncate(m / "model.safetensors"))), "--text", "很好"],
        r"model.safetensors is damaged or truncated",
    ),
    "predict: Hub id that cannot be fetched": (
        lambda c: ["predict", "someone/no-such-model", "--text", "很好"],
        r"someone/no-such-model: no such directory here, and it could not be loaded from the Hugging Face Hub",
    ),
    "encoder directory missing": (
        lambda c: train(c, "--encoder_type", "bilm", "--model_name_or_path", str(c["dir"] / "bilm")),
        r"--model_name_or_path .*bilm: no such directory \(nor a Hub id\)",
    ),
    "predict: input file missing": (
        lambda c: ["predict", str(c["run"]), str(c["dir"] / "absent.csv")],
        r"absent.csv: no such file",
    ),
    "predict: output would overwrite the input": (
        lambda c: ["predict", str(c["run"]), str(c["csv"]), "--output", str(c["csv"])],
        r"reviews.csv",
    ),
    "predict: misspelled flag": (
        lambda c: ["predict", str(c["run"]), "--txt", "很好"],
        r"--txt \(did you mean --text\?\)",
    ),
    "unknown subcommand": (
        lambda c: ["frobnicate"],
        r"^finetune: error: argument command: invalid choice: 'frobnicate'",
    ),
    "predict without a model": (
        lambda c: ["predict"],
        r"^finetune: error: predict: the following arguments are required",
    ),
    "push: not a model directory": (
        lambda c: ["push", str(c["dir"]), "--repo-id", "user/model"],
        r"push: .*: no config.json or adapter_config.json; give a run's OUTPUT_DIR",
    ),
    "explain: model directory missing": (
        lambda c: ["explain", str(c["dir"] / "nowhere"), "--text", "很好"],
        r"nowhere: no such model directory",
    ),
}


@pytest.fixture(scope="module")
def finished(reviews_csv, tiny_vectors, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("finished")
    cli(["train", *tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--max_steps", "2")])
    return output_dir


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, tiny_vectors, trained_run, finished, capsys):
    ctx = {"dir": tmp_path, "vectors": tiny_vectors, "run": trained_run, "finished": finished, "out": tmp_path / "out"}
    ctx["csv"] = write_csv(tmp_path / "reviews.csv", make_reviews(40, seed=1))
    argv, expected = CASES[case]
    argv = argv(ctx)
    watched = {path: snapshot(path) for path in (tmp_path, finished, trained_run)}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code not in (0, None)
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("finetune: error: ")]
    assert len(error_lines) == 1, err[-2000:]
    message = error_lines[0]
    assert re.search(expected, message), message
    assert TOKEN not in err
    assert not ctx["out"].exists(), "the run directory was created"
    for path, before in watched.items():
        assert snapshot(path) == before, f"{path} changed"


def test_the_scripts_print_one_line_and_debug_shows_the_traceback(tmp_path):
    """The real entry points, in a new process: no traceback unless --debug."""
    argv = [
        sys.executable,
        str(RECIPE),
        "--train_file",
        str(tmp_path / "absent.csv"),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    plain = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert plain.returncode == 1
    last = plain.stderr.strip().splitlines()[-1]
    assert last.startswith("train_bilstm_attention.py: error: ") and "absent.csv: no such file" in last
    assert "Traceback" not in plain.stderr
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["predict", "--help"], ["explain", "--help"], ["push", "--help"]],
    ids=" ".join,
)
def test_every_subcommand_help_works(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "recipes").glob("*.py") if p.name != "__init__.py"))
def test_every_recipe_help_works(recipe, monkeypatch, capsys):
    """Each script run as `python recipes/X.py --help` (as __main__, in this process: the entry point in a
    new process is the test above's)."""
    path = ROOT / "recipes" / recipe
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert "--output_dir" in captured.out and "Traceback" not in captured.err


def test_secrets_are_redacted():
    assert redact(f"unknown: --hub_token {TOKEN}") == "unknown: --hub_token ***"
    assert redact(f"--api_key=abc123 and {TOKEN}") == "--api_key=*** and hf_***"


def test_a_diverging_run_stops_and_saves_no_nan_model(reviews_csv, tiny_vectors, tmp_path, capsys):
    from safetensors.torch import load_file

    output_dir = tmp_path / "out"
    huge = ("--learning_rate", "1e30", "--max_grad_norm", "1e30", "--eval_strategy", "steps", "--eval_steps", "1")
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", *tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *huge)])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    diverged = r"the (training|validation) loss became (nan|inf) at step \d+ \(epoch 1\): training diverged; "
    assert re.search(diverged + r"lower --learning_rate \(now 1e\+30\)", message), message
    assert not (output_dir / "metrics.json").exists()
    if (output_dir / "model.safetensors").exists():  # a model saved before the loss went wrong is a finite one
        assert all(torch.isfinite(w).all() for w in load_file(output_dir / "model.safetensors").values())


def test_two_processes_meet_bad_input_with_one_line(tiny_vectors, tmp_path):
    """Under `accelerate launch` with 2 processes: the main process says it once; the other meets the
    same error itself (not a broken connection's traceback). The launcher's own report follows."""
    args = tiny_recipe_args(tmp_path / "absent.csv", tiny_vectors, tmp_path / "out")
    result = run_launch(args, 2, tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("train_bilstm_attention.py: error:")]
    assert len(lines) == 1 and "absent.csv: no such file" in lines[0], result.stderr[-3000:]
    assert "[rank1]" not in result.stderr and "Connection closed" not in result.stderr
    assert not (tmp_path / "out").exists()


STUCK = """
import sys, time
from finetune.errors import report_errors
from finetune.training.start import accelerator_options, start_run
from finetune.config.training_arguments import LoggingArguments, TrainArguments

@report_errors("stuck.py")
def main(argv=None):
    training = TrainArguments(output_dir=sys.argv[1], ddp_timeout=int(sys.argv[2]))
    accelerator = start_run(0, **accelerator_options(training, LoggingArguments()))
    print("started", flush=True)
    if accelerator.is_main_process:
        accelerator.wait_for_everyone()  # the other process never comes
    else:
        time.sleep(60)

main()
"""


def test_a_process_left_waiting_past_ddp_timeout_fails_in_one_line(tmp_path):
    """--ddp_timeout (transformers' flag) reaches the process group: a process left waiting at a synchronisation
    fails after it with one line that says so, not a hang of half an hour."""
    script = tmp_path / "stuck.py"
    script.write_text(STUCK, encoding="utf-8")
    result = run_launch([str(tmp_path / "out"), "4"], 2, tmp_path, script=script)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("stuck.py: error:")]
    assert lines == [
        "stuck.py: error: waited 4 s for the other processes at a synchronisation (--ddp_timeout): one of them is "
        "stuck or died; `kill -USR1 PID` prints where a process waits, --debug the traceback"
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr.split("stuck.py: error:")[0]


def test_sigusr1_prints_where_a_program_is_and_it_goes_on(tmp_path):
    import os
    import signal
    import time

    script = tmp_path / "slow.py"
    script.write_text(
        "import time\nfrom finetune.errors import report_errors\n"
        "@report_errors('slow.py')\ndef main(argv=None):\n    print('ready', flush=True)\n    time.sleep(3)\n"
        "    print('done', flush=True)\nmain()\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and stdout.strip() == "done"
    assert "Current thread" in stderr and re.search(r'slow.py", line \d+ in main', stderr), stderr
