"""The README's Quickstart, run as a user runs it: each command line of the block between
`<!-- quickstart -->` and `<!-- /quickstart -->`, in order, in a directory holding only the user's
CSVs, through the installed `finetune` command. So the first thing a user types cannot rot.

Two things differ from a user's run, and only these: the data is a few dozen rows, and the train
line gets flags that make it seconds long (any key of the recipe is a flag, as the README says);
`push` goes to a local imitation of the Hub on 127.0.0.1."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_reviews, write_csv
from hub_server import LocalHub, hub_env

README = ROOT / "README.md"
FINETUNE = shutil.which("finetune", path=str(Path(sys.executable).parent)) or "finetune"
# A short run: small head, one pass of word2vec on the texts alone, two epochs
SHORT_RUN = ["--pretrain_corpus", "false", "--vector_epochs", "1", "--vector_size", "16", "--min_freq", "1",
             "--lstm_hidden_size", "16", "--attention_dim", "16", "--num_train_epochs", "2",
             "--adversarial_epsilon", "0"]  # fmt: skip


def quickstart_commands(readme: str) -> list[str]:
    """The command lines of the Quickstart block, comments and code fences dropped."""
    block = re.search(r"<!-- quickstart -->(.*?)<!-- /quickstart -->", readme, re.S)
    assert block, "README.md has no <!-- quickstart --> block"
    lines = [line.split(" #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith(("```", "#"))]


def test_the_quickstart_is_short_and_complete():
    commands = quickstart_commands(README.read_text(encoding="utf-8"))
    verbs = [shlex.split(command)[:2] for command in commands]
    assert verbs[0] == ["pip", "install"] and "finetune-zh" in commands[0]
    assert [verb[1] for verb in verbs[1:]] == ["train", "evaluate", "predict", "export", "push"]
    assert all(verb[0] == "finetune" for verb in verbs[1:])


@pytest.fixture
def user_dir(tmp_path):
    """What a user has: their labelled reviews, a labelled test file, and new texts to label."""
    write_csv(tmp_path / "reviews.csv", make_reviews(30, seed=0))
    write_csv(tmp_path / "test.csv", make_reviews(6, seed=1))
    write_csv(tmp_path / "new.csv", [(text,) for text, _ in make_reviews(4, seed=2)], header=("text",))
    return tmp_path


def test_the_quickstart_runs(user_dir, tmp_path_factory):
    commands = quickstart_commands(README.read_text(encoding="utf-8"))[1:]  # pip install: this test's venv has it
    cache = tmp_path_factory.mktemp("cache")
    with LocalHub() as hub:
        env = hub_env(hub, tmp_path_factory.mktemp("home"), "hf_quickstart_token_0123")
        env.update(FINETUNE_CACHE=str(cache / "finetune"), HF_MODULES_CACHE=str(cache / "modules"))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for command in commands:
            argv = shlex.split(command)
            argv[0] = FINETUNE
            if argv[1] == "train":
                argv += SHORT_RUN
            result = subprocess.run(argv, cwd=user_dir, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        repo_files = set(hub.files("you/reviews-sentiment"))

    run = user_dir / "runs" / "reviews"
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()  # the model in OUTPUT_DIR
    assert (run / "evaluation" / "test" / "metrics.json").is_file()
    predictions = (user_dir / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert len(predictions) == 1 + 8 and "predicted_label" in predictions[0]
    assert any(path.name.endswith(".onnx") for path in (run / "onnx").iterdir())
    assert {"config.json", "model.safetensors", "README.md", "metrics.json"} <= repo_files
    assert not any(name.startswith("checkpoint-") for name in repo_files)
