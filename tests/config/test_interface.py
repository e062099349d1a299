"""The flags users bring from transformers: trackers, strategies, the best-model metric, mixed
precision, evaluation without training; and no old names kept as aliases."""

import json
import shutil
import sys

import pytest
from conftest import ROOT, tiny_recipe_args
from transformers.trainer_utils import get_last_checkpoint

from finetune.config.parsing import parse_run_args
from finetune.errors import ArgumentError

sys.path.insert(0, str(ROOT))
from finetune.recipes.train_bilstm_attention import main  # noqa: E402


def scalars(logging_dir):
    """Every scalar the tensorboard event files under `logging_dir` hold, by tag: [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for events in sorted(logging_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


@pytest.fixture(scope="module")
def tracked_run(reviews_csv, tiny_vectors, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("tracked")
    logging_dir = output_dir.parent / f"{output_dir.name}-logs"
    args = ("--report_to", "tensorboard", "--run_name", "tiny-reviews", "--logging_dir", str(logging_dir))
    args += ("--num_train_epochs", "2", "--eval_strategy", "steps", "--eval_steps", "5")
    args += ("--metric_for_best_model", "eval_loss", "--save_strategy", "steps", "--save_steps", "6")
    results = main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *args))
    return output_dir, logging_dir, results


def test_tensorboard_gets_losses_learning_rate_metrics_and_hyperparameters(tracked_run):
    _, logging_dir, results = tracked_run
    run_dir = logging_dir / "tiny-reviews"
    assert run_dir.is_dir()
    found = scalars(run_dir)
    # 240 training texts in batches of 16: 15 steps per epoch, 30 in all; a loss logged from the first step
    # and every 5 steps (the evaluations' steps too)
    assert [step for step, _ in found["train/loss"]] == [1, 5, 10, 15, 20, 25, 30]
    assert [step for step, _ in found["train/learning_rate"]] == [1, 5, 10, 15, 20, 25, 30]
    losses = [value for _, value in found["train/loss"]]
    assert losses[-1] < losses[0]
    history = results["history"]
    assert [e["step"] for e in history["eval"]] == [5, 10, 15, 20, 25, 30]
    assert [round(v, 5) for _, v in found["eval/macro_f1"]] == [round(e["macro_f1"], 5) for e in history["eval"]]
    assert found["test/accuracy"] == [(30, pytest.approx(results["test_accuracy"], abs=1e-6))]
    # the hyper-parameters: accelerate's tracker stores them as tensorboard hparams and an hparams.yml
    hparams = next(run_dir.rglob("hparams.yml")).read_text(encoding="utf-8")
    assert "learning_rate: 0.01" in hparams and "report_to: tensorboard" in hparams


def test_strategies_and_best_model_metric(tracked_run):
    output_dir, _, results = tracked_run
    history = results["history"]["eval"]
    best = min(history, key=lambda e: e["loss"])
    assert results["best_step"] == best["step"]  # metric_for_best_model eval_loss: lower is better
    assert results["validation_loss"] == pytest.approx(best["loss"])
    checkpoints = sorted(p.name for p in output_dir.glob("*checkpoint-*"))
    assert checkpoints == ["checkpoint-24", "checkpoint-30"]  # save_strategy steps, every 6; the newest 2 kept
    assert get_last_checkpoint(str(output_dir)) == str(output_dir / "checkpoint-30")  # as the Trainer's users find it
    saved = (output_dir / "config.yaml").read_text(encoding="utf-8")
    assert "eval_strategy: steps" in saved and "metric_for_best_model: eval_loss" in saved


def test_do_train_false_evaluates_the_saved_model_as_the_run_did(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    saved = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    config = run / "config.yaml"
    results = main(["--config", str(config), "--do_train", "false", "--output_dir", str(run)])
    evaluated = json.loads((run / "evaluation" / "metrics.json").read_text(encoding="utf-8"))
    for key in ("test_accuracy", "test_macro_f1", "validation_accuracy", "validation_macro_f1"):
        assert evaluated[key] == saved[key] == results[key]
    assert evaluated["test_loss"] == pytest.approx(saved["test_loss"], abs=1e-5)
    assert (run / "evaluation" / "confusion_matrix.png").stat().st_size > 0
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8")) == saved  # the run's own file untouched


def test_mixed_precision_and_trackers_from_the_yaml(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("bf16: true\nreport_to: [tensorboard]\neval_strategy: steps\n", encoding="utf-8")
    args, _ = parse_run_args(["--config", str(config)])
    assert (args.training.bf16, args.logging.report_to, args.training.eval_strategy) == (True, ["tensorboard"], "steps")
    args, _ = parse_run_args(["--report_to", "tensorboard", "--bf16"])
    assert (args.training.bf16, args.logging.report_to) == (True, ["tensorboard"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_length", "64"], r"unknown flag --max_length \(did you mean --max_seq_length\?\)"),
        (["--num_workers", "2"], r"unknown flag --num_workers \(did you mean --dataloader_num_workers\?\)"),
        (["--encoder_name_or_path", "x"], r"unknown flag --encoder_name_or_path"),
        (["--report_to", "tensorbord"], r"--report_to tensorbord: not a tracker \(one of .*tensorboard"),
        (["--report_to", "wandb"], r"--report_to wandb: the wandb package is not installed \(pip install wandb\)"),
        (["--eval_strategy", "no"], r"--eval_strategy no: must be epoch or steps"),
        (["--metric_for_best_model", "f1"], r"--metric_for_best_model f1: must be one of macro_f1, micro_f1, accuracy"),
        (["--bf16", "--fp16"], r"--bf16 and --fp16: give one mixed precision"),
        (["--max_train_samples", "0"], r"--max_train_samples 0: must be at least 1"),
    ],
)
def test_transformers_flags_are_checked_and_old_names_are_gone(argv, message):
    with pytest.raises(ArgumentError, match=message):
        parse_run_args(argv)


def test_fp16_without_a_gpu_is_an_error():
    from finetune.devices import mixed_precision

    with pytest.raises(ArgumentError, match=r"--fp16 needs a CUDA GPU"):
        mixed_precision(bf16=False, fp16=True)
    assert mixed_precision(bf16=True, fp16=False) == "bf16"


def test_a_local_dataset_by_name_with_caps_and_label_names(reviews_csv, tiny_vectors, tmp_path):
    import csv

    rows = list(csv.DictReader(reviews_csv.open(encoding="utf-8")))
    data = tmp_path / "hotel-reviews"
    data.mkdir()
    for split, part in (("train", rows[:200]), ("validation", rows[200:250]), ("test", rows[250:300])):
        with open(data / f"{split}.csv", "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows((row["text"], int(row["label"] == "positive")) for row in part)
    args = tiny_recipe_args(reviews_csv, tiny_vectors, tmp_path / "run", "--num_train_epochs", "2")
    at = args.index("--train_file")
    del args[at : at + 2]
    args += ["--dataset_name", str(data), "--label_names", "negative,positive", "--max_train_samples", "100"]
    args += ["--max_predict_samples", "40"]
    results = main(args)

    assert results["data"]["dataset"]["splits"] == {"train": "train", "validation": "validation", "test": "test"}
    assert results["data"]["max_samples"]["train"] == {"max": 100, "rows_before": 200, "rows": 100}
    assert (results["validation_num_examples"], results["test_num_examples"]) == (50, 40)
    assert set(results["test_per_class"]) == {"negative", "positive"}
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    card = (tmp_path / "run" / "README.md").read_text(encoding="utf-8")
    assert "hotel-reviews" in card and "sentiment-analysis" in card
    predictions = (tmp_path / "run" / "test_predictions.csv").read_text(encoding="utf-8-sig").splitlines()
    assert predictions[0] == "text,label,predicted_label,score" and len(predictions) == 41
