"""`finetune evaluate`: a saved model scored on a labelled file gives the numbers its run gave."""

import csv
import json
import shutil

import pytest
from conftest import BERT_CONFIG, encoder_recipe_args, make_reviews, tiny_recipe_args, write_csv

from finetune.cli import main as cli
from finetune.data.tables import DataError
from finetune.evaluation.saved_model import default_output_dir, label_ids
from finetune.recipes.train_bilstm_attention import main as train
from finetune.training.run_directory import check_output_dir

SAME = ("accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "num_examples")


@pytest.fixture(scope="module")
def review_files(tmp_path_factory):
    """Train and test files; the test file has an empty text and a repeated row, which cleaning drops."""
    tmp = tmp_path_factory.mktemp("evaluate-data")
    rows = make_reviews(150, seed=0)
    train_file = write_csv(tmp / "train.csv", rows[:240])
    test_file = write_csv(tmp / "test.csv", [*rows[240:], ("", "positive"), rows[240]])
    return train_file, test_file


@pytest.fixture(scope="module")
def run_with_test_file(review_files, tiny_vectors, tmp_path_factory, offline):
    train_file, test_file = review_files
    output_dir = tmp_path_factory.mktemp("evaluate-run") / "run"
    train(
        tiny_recipe_args(train_file, tiny_vectors, output_dir, "--num_train_epochs", "2", "--test_file", str(test_file))
    )
    return output_dir


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def assert_same_test_metrics(evaluated: dict, run: dict):
    for key in SAME:
        assert evaluated[f"test_{key}"] == run[f"test_{key}"], key
    assert evaluated["test_loss"] == pytest.approx(run["test_loss"], abs=1e-5)


def test_evaluate_gives_the_runs_own_test_metrics(run_with_test_file, review_files, tmp_path, capsys):
    _, test_file = review_files
    run = read_json(run_with_test_file / "metrics.json")
    cli(["evaluate", str(run_with_test_file), str(test_file)])

    output_dir = run_with_test_file / "evaluation" / "test"  # the default: in the run directory
    evaluated = read_json(output_dir / "metrics.json")
    assert_same_test_metrics(evaluated, run)
    assert evaluated["test_num_examples"] == 60
    assert evaluated["data"]["stats"]["test"] == run["data"]["stats"]["test"]
    assert (
        evaluated["data"]["stats"]["test"]["empty_dropped"]
        == evaluated["data"]["stats"]["test"]["duplicates_removed"]
        == 1
    )
    assert (evaluated["model"], evaluated["file"]) == (str(run_with_test_file), str(test_file))

    with open(output_dir / "per_class.csv", encoding="utf-8-sig", newline="") as file:
        table = list(csv.DictReader(file))
    assert [row["label"] for row in table] == ["negative", "positive"]
    for row in table:
        expected = run["test_per_class"][row["label"]]
        assert float(row["f1"]) == pytest.approx(expected["f1"], abs=1e-6)
        assert int(row["support"]) == expected["support"]
    assert (output_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(output_dir.glob(".*"))  # no temporary file left

    out = capsys.readouterr().out
    assert "| num_examples | accuracy | macro_f1 | weighted_f1 | loss |" in out
    assert f"| 60 | {run['test_accuracy']:.4f} | {run['test_macro_f1']:.4f} |" in out
    assert "| negative |" in out and "| positive |" in out
    assert "2 of 62 rows dropped (1 empty dropped, 1 duplicates removed)" in out

    # The run directory counts evaluation/ as its own: --overwrite_output_dir may still replace the run.
    check_output_dir(run_with_test_file, {}, overwrite=True, resume=False)

    # --output_dir elsewhere, a JSON Lines file with integer labels for a model whose labels are "0"/"1".
    model = shutil.copytree(run_with_test_file, tmp_path / "numbered")
    config = read_json(model / "config.json")
    config.update(id2label={"0": "0", "1": "1"}, label2id={"0": 0, "1": 1})  # negative, positive
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with open(test_file, encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    lines = [
        json.dumps({"review": row["text"], "y": int(row["label"] == "positive")}, ensure_ascii=False) for row in rows
    ]
    numbered = tmp_path / "numbered.jsonl"
    numbered.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--output_dir", str(tmp_path / "out"), "--text_column", "review", "--label_column", "y"]
    cli(["evaluate", str(model), str(numbered), *args])
    evaluated = read_json(tmp_path / "out" / "metrics.json")
    assert evaluated["test_per_class"] == {
        str(i): run["test_per_class"][label] for i, label in enumerate(("negative", "positive"))
    }
    assert evaluated["test_accuracy"] == run["test_accuracy"]


def test_evaluate_a_lora_adapter_on_a_transformer(review_files, tiny_bert, tmp_path, capsys):
    train_file, test_file = review_files
    args = encoder_recipe_args(BERT_CONFIG, train_file, tiny_bert, tmp_path / "run", "--test_file", str(test_file))
    run = train([*args, "--num_train_epochs", "1", "--lora_r", "4", "--lora_alpha", "8"])
    assert (tmp_path / "run" / "adapter_config.json").exists()
    cli(["evaluate", str(tmp_path / "run"), str(test_file), "--output_dir", str(tmp_path / "out")])
    assert_same_test_metrics(read_json(tmp_path / "out" / "metrics.json"), run)


def run_failing(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("finetune: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_bad_inputs_are_one_line_and_write_nothing(run_with_test_file, tmp_path, capsys):
    model, output_dir = str(run_with_test_file), tmp_path / "out"
    unknown = write_csv(
        tmp_path / "unknown.csv", [("这部电影很好。", "positive"), ("一般般吧", "neutral"), ("还行", "neutral")]
    )
    error = run_failing(["evaluate", model, str(unknown), "--output_dir", str(output_dir)], capsys)
    assert error == (
        f"finetune: error: {unknown}: label the model does not know: 'neutral' (line 3); "
        f"{model} knows 'negative', 'positive'"
    )
    no_label = write_csv(tmp_path / "no_label.csv", [("这部电影很好。", "positive")], header=("text", "sentiment"))
    error = run_failing(["evaluate", model, str(no_label), "--output_dir", str(output_dir)], capsys)
    assert error == f"finetune: error: {no_label}: no column 'label' (columns: text, sentiment)"
    error = run_failing(["evaluate", model, str(tmp_path / "missing.csv"), "--output_dir", str(output_dir)], capsys)
    assert error == f"finetune: error: {tmp_path / 'missing.csv'}: no such file or directory"
    error = run_failing(["evaluate", str(tmp_path / "nothing"), str(unknown), "--output_dir", str(output_dir)], capsys)
    assert error == f"finetune: error: {tmp_path / 'nothing'}: no such model directory"
    error = run_failing(["evaluate", model, str(unknown), "--per_device_eval_batch_size", "0"], capsys)
    assert "--per_device_eval_batch_size" in error
    assert not output_dir.exists() and not (run_with_test_file / "evaluation" / "unknown").exists()


def test_unknown_labels_are_listed_with_a_line_each():
    with pytest.raises(
        DataError, match=r"^t.csv: labels the model does not know: 'x' \(line 2\), '2' \(line 4\); m knows '0', '1'$"
    ):
        label_ids(
            ["0", "x", "1", 2, "x"], [0, 1, 2, 3, 4], {"0": 0, "1": 1}, "t.csv", lambda row: f"line {row + 1}", "m"
        )
    assert label_ids([1, 0, "1"], [0, 1, 2], {"0": 0, "1": 1}, "t.csv", str, "m") == [1, 0, 1]


def test_default_output_dir_is_in_the_run_directory(tmp_path, monkeypatch):
    (tmp_path / "run" / "best").mkdir(parents=True)
    assert default_output_dir(tmp_path / "run", "data/test.csv") == tmp_path / "run" / "evaluation" / "test"
    monkeypatch.chdir(tmp_path / "run")
    assert default_output_dir(".", "test.jsonl") == tmp_path / "run" / "evaluation" / "test"
    assert default_output_dir("user/reviews-sentiment", "t.csv") == tmp_path / "run" / "evaluation" / "t"
    # an earlier layout's run (its model in best/, its config.yaml above): beside best/, as then
    (tmp_path / "run" / "config.yaml").write_text("seed: 42\n", encoding="utf-8")
    assert default_output_dir(tmp_path / "run" / "best", "test.csv") == tmp_path / "run" / "evaluation" / "test"


def test_help_lists_evaluate(capsys):
    with pytest.raises(SystemExit):
        cli(["--help"])
    assert "evaluate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli(["evaluate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--output_dir", "--text_column", "--label_column", "--encoding", "--per_device_eval_batch_size"):
        assert flag in out
