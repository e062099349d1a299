"""Sharing through the real huggingface_hub client against a local Hub on 127.0.0.1: `finetune push`
and the recipe's push_to_hub upload model, card, metrics and pictures; `pipeline()` loads the model
back by repo id, without `finetune`; the token never lands in a file; a failed upload is retried."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    BERT_CONFIG,
    ROOT,
    WITHOUT_FINETUNE,
    as_earlier_layout,
    encoder_recipe_args,
    in_process_scores,
    run_pipeline,
    tiny_recipe_args,
)
from hub_server import LocalHub, hub_env

from finetune.recipes.train_bilstm_attention import main

TOKEN = "hf_never_write_this_token_0123"
TEXTS = ["这部电影很好。", "酒店太差劲了！", "还行吧"]
RUN_FILES = {"metrics.json", "training_curves.png", "confusion_matrix.png", "attention.html", "README.md"}
MODEL_FILES = {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "modeling_bilstm_attention.py"}
MODEL_FILES |= {"configuration_bilstm_attention.py", "tokenization_jieba.py"}
# Files of a run directory that stay on this machine: they never go to the Hub with the model
NEVER_UPLOADED = (".lock", ".metrics.json.a1b2c3d4.tmp", "runs/events.out.tfevents.1", "evaluation/test/metrics.json")


@pytest.fixture
def hub():
    with LocalHub() as hub:
        yield hub


def finetune_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from finetune.cli import main; main()", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def hub_pipeline(env: dict, repo_id: str, texts: list[str]) -> dict:
    """`pipeline(repo_id, trust_remote_code=True)` in a new process that cannot import finetune, with an empty cache."""
    Path(env["HF_HOME"]).mkdir(parents=True)
    return run_pipeline(repo_id, texts, WITHOUT_FINETUNE, env=env, cwd=env["HF_HOME"])


def assert_same_scores(got, want):
    for row, expected in zip(got, want, strict=True):
        assert {item["label"]: pytest.approx(item["score"], abs=1e-5) for item in row} == expected


def digests(directory) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_push_uploads_everything_and_pipeline_loads_it_by_repo_id_without_finetune(hub, trained_run, tmp_path):
    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    assert list(run_dir.glob("checkpoint-*"))  # the model among the run's checkpoints, ...
    for name in NEVER_UPLOADED:  # ... its lock, a killed write's temporary file, a tracker's log, an evaluation
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}", encoding="utf-8")
    env = hub_env(hub, tmp_path / "home", TOKEN)
    result = finetune_cli(env, "push", str(run_dir), "--repo-id", "user/tiny", "--dataset_title", "酒店评论")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(f"{hub.url}/user/tiny/commit/")

    files = hub.files("user/tiny")
    assert MODEL_FILES | RUN_FILES <= set(files), sorted(files)
    run_only = ("checkpoint-", ".lock", ".metrics", ".model", "runs/", "evaluation/", "test_predictions", "finished")
    assert not [name for name in files if name.startswith(run_only)], sorted(files)
    card = files["README.md"].decode("utf-8")
    assert card.startswith("---\n") and "language: zh" in card and "pipeline_tag: text-classification" in card
    assert "library_name: transformers" in card and "model-index:" in card and "license: apache-2.0" in card
    metrics = json.loads(files["metrics.json"])
    assert f"value: {round(metrics['test_accuracy'], 4)}" in card
    assert 'pipeline("text-classification", model="user/tiny", trust_remote_code=True)' in card
    assert "| negative |" in card and "| positive |" in card
    assert "trained on 酒店评论:" in card and "- sentiment-analysis\n" in card

    # The token was sent, and is nowhere on disk, on the Hub or in the output.
    assert f"Bearer {TOKEN}" in hub.tokens_seen
    assert TOKEN not in result.stdout + result.stderr
    assert not any(TOKEN.encode() in p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
    assert not any(TOKEN.encode() in data for data in files.values())
    # The uploaded files name the data, the vectors and the run by name, never by this machine's paths
    for local in {str(tmp_path.parent), str(trained_run), str(Path.home())}:
        leaked = [name for name, data in files.items() if local.encode() in data]
        assert not leaked, (local, leaked)
    assert json.loads(files["metrics.json"])["data"]["sources"]["train"] == "reviews.csv"

    remote = hub_pipeline(hub_env(hub, tmp_path / "fresh", TOKEN), "user/tiny", TEXTS)
    assert all(module.startswith("transformers_modules") for module in remote["modules"]), remote["modules"]
    assert_same_scores(remote["scores"], in_process_scores(run_dir, TEXTS))


def test_push_of_a_run_directory_of_the_earlier_layout_uploads_its_best(hub, trained_run, tmp_path):
    run_dir = as_earlier_layout(shutil.copytree(trained_run, tmp_path / "run"))
    result = finetune_cli(hub_env(hub, tmp_path / "home", TOKEN), "push", str(run_dir), "--repo-id", "user/earlier")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a run directory of the earlier layout; loading the model in" in result.stderr
    files = set(hub.files("user/earlier"))
    assert MODEL_FILES | RUN_FILES <= files, sorted(files)
    assert not [name for name in files if name.startswith(("best/", "checkpoint", "runs/", "finished"))], sorted(files)


def test_failed_upload_leaves_the_run_intact_and_a_retry_works(hub, trained_run, tmp_path):
    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    before = digests(run_dir)
    env = hub_env(hub, tmp_path / "home", TOKEN, HF_HUB_DISABLE_XET="1")  # one commit request, no client retry
    hub.fail_next_commits = 1
    failed = finetune_cli(env, "push", str(run_dir), "--repo-id", "user/retry")
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr
    line = [line for line in failed.stderr.splitlines() if line.startswith("finetune: error: ")]
    assert len(line) == 1 and "upload to user/retry (main) failed" in line[0], failed.stderr[-3000:]
    assert line[0].endswith(f"then run `finetune push {run_dir} --repo-id user/retry` again")
    assert set(hub.files("user/retry")) == {".gitattributes"}
    after = digests(run_dir)
    assert {k: v for k, v in after.items() if k != "README.md"} == {k: v for k, v in before.items() if k != "README.md"}

    retried = finetune_cli(env, "push", str(run_dir), "--repo-id", "user/retry")
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert MODEL_FILES | RUN_FILES <= set(hub.files("user/retry"))


def test_recipe_pushes_to_a_private_branch(hub, reviews_csv, tiny_vectors, tmp_path):
    output_dir = tmp_path / "run"
    args = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, "--num_train_epochs", "1")
    args += ["--push_to_hub", "true", "--hub_model_id", "user/from-recipe", "--hub_private_repo", "true"]
    args += ["--hub_revision", "v1"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "train_bilstm_attention.py"), *args],
        env={**hub_env(hub, tmp_path / "home", TOKEN), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.repo("user/from-recipe").private
    assert MODEL_FILES | RUN_FILES <= set(hub.files("user/from-recipe", revision="v1"))
    assert set(hub.files("user/from-recipe")) == {".gitattributes"}  # main untouched
    assert TOKEN not in result.stdout + result.stderr


def test_lora_push_uploads_the_base_and_the_adapter_that_points_at_it(hub, reviews_csv, tiny_bert, tmp_path):
    output_dir = tmp_path / "run"
    main(encoder_recipe_args(BERT_CONFIG, reviews_csv, tiny_bert, output_dir, "--max_steps", "6", "--lora_r", "2"))
    result = finetune_cli(hub_env(hub, tmp_path / "home", TOKEN), "push", str(output_dir), "--repo-id", "user/lora")
    assert result.returncode == 0, result.stderr[-3000:]

    base, adapter = hub.files("user/lora-base"), hub.files("user/lora")
    assert {"config.json", "model.safetensors", "modeling_bilstm_attention.py"} <= set(base)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json"} <= set(adapter)
    assert json.loads(adapter["adapter_config.json"])["base_model_name_or_path"] == "user/lora-base"
    card = adapter["README.md"].decode("utf-8")
    assert "library_name: peft" in card and "base_model: user/lora-base" in card
    local_config = json.loads((output_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert local_config["base_model_name_or_path"] == str((output_dir / "base").resolve())  # local copy unchanged

    remote = hub_pipeline(hub_env(hub, tmp_path / "fresh", TOKEN), "user/lora", TEXTS)
    assert_same_scores(remote["scores"], in_process_scores(output_dir, TEXTS))
