"""One run per output directory: a finished or different run is refused unless
--overwrite_output_dir, checkpoints name their run, nothing is written before the input is checked."""

import hashlib
import json
from pathlib import Path

import pytest
from conftest import tiny_recipe_args

from finetune.errors import RunDirectoryError
from finetune.recipes.train_bilstm_attention import main
from finetune.training.checkpointing import list_checkpoints, resolve_checkpoint
from finetune.training.run_directory import (
    check_output_dir,
    describe_differences,
    empty_output_dir,
    fingerprint,
    run_identity,
)

ONE_EPOCH = ("--num_train_epochs", "1", "--save_strategy", "steps", "--save_steps", "5")


def snapshot(directory: Path) -> dict:
    """Every file under `directory` by relative path, with a hash of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(reviews_csv, tiny_vectors, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("finished")
    main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *ONE_EPOCH))
    return output_dir


def fake_checkpoint(directory: Path, step: int, run: str, identity: dict | None = None) -> Path:
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"step": step, "run": run, "run_identity": identity or {}}))
    return path


def test_latest_only_picks_this_runs_checkpoints(tmp_path):
    ours, theirs = {"learning_rate": 0.01}, {"learning_rate": 0.5}
    fake_checkpoint(tmp_path, 5, fingerprint(ours))
    fake_checkpoint(tmp_path, 90, fingerprint(theirs), theirs)  # an older, longer run: a higher step
    assert resolve_checkpoint("latest", tmp_path, ours).name == "checkpoint-5"
    assert [p.name for p in list_checkpoints(tmp_path, fingerprint(ours))] == ["checkpoint-5"]
    assert resolve_checkpoint("latest", tmp_path, {"learning_rate": 0.1}) is None
    with pytest.raises(RunDirectoryError, match=r"checkpoint-90: the checkpoint belongs to a run with other settings "
                       r"\(learning_rate 0.5 there, 0.01 here\)"):  # fmt: skip
        resolve_checkpoint(str(tmp_path / "checkpoint-90"), tmp_path, ours)


def test_differences_are_listed_key_by_key():
    text = describe_differences({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}, limit=2)
    assert text == "b 2 there, 5 here; c 3 there, None here; and 1 more"


def test_a_flag_added_later_at_its_as_before_value_keeps_an_older_runs_identity():
    """A run saved before --adversarial_interval and --split_seed existed has neither in its
    config.yaml; at their defaults this run's identity (and checkpoint fingerprint) is the same."""
    saved_before = {"learning_rate": 0.002, "seed": 42, "output_dir": "run"}
    now = {**saved_before, "adversarial_interval": 1, "split_seed": None}
    assert run_identity(now) == run_identity(saved_before) == {"learning_rate": 0.002, "seed": 42}
    assert fingerprint(run_identity(now)) == fingerprint(run_identity(saved_before))
    changed = run_identity({**now, "adversarial_interval": 2, "split_seed": 42})
    assert changed == {"adversarial_interval": 2, "learning_rate": 0.002, "seed": 42, "split_seed": 42}


def test_directory_checks(tmp_path):
    identity = {"learning_rate": 0.01}
    check_output_dir(tmp_path / "new", identity, overwrite=False, resume=False)  # absent: fine
    check_output_dir(tmp_path, identity, overwrite=False, resume=False)  # empty: fine
    (tmp_path / "thesis.docx").write_text("the user's")
    (tmp_path / "metrics.json").write_text("{}")
    for overwrite in (False, True):  # the user's files are never emptied away
        with pytest.raises(RunDirectoryError, match=r"holds files that no run wrote \(thesis.docx\)"):
            check_output_dir(tmp_path, identity, overwrite=overwrite, resume=False)
    (tmp_path / "thesis.docx").unlink()
    with pytest.raises(RunDirectoryError, match=r"holds a finished run \(metrics.json\); give --overwrite_output_dir"):
        check_output_dir(tmp_path, identity, overwrite=False, resume=True)
    check_output_dir(tmp_path, identity, overwrite=True, resume=False)
    (tmp_path / "stray.txt").write_text("appeared after the check")
    empty_output_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["stray.txt"]


def test_a_finished_run_is_refused_and_left_as_it_was(finished_run, reviews_csv, tiny_vectors):
    before = snapshot(finished_run)
    args = tiny_recipe_args(reviews_csv, tiny_vectors, finished_run, *ONE_EPOCH, "--learning_rate", "0.02")
    with pytest.raises(RunDirectoryError, match="holds a finished run"):
        main(args)
    with pytest.raises(RunDirectoryError, match="holds a finished run"):
        main([*args, "--resume_from_checkpoint", "latest"])
    assert snapshot(finished_run) == before


def test_a_failing_run_overwrites_nothing(finished_run, tiny_vectors, tmp_path):
    from finetune.data.loading import DataError

    bad = tmp_path / "one_label.csv"
    bad.write_text("text,label\n很好,pos\n不错,pos\n", encoding="utf-8")
    before = snapshot(finished_run)
    with pytest.raises(DataError, match="only one label"):
        main(tiny_recipe_args(bad, tiny_vectors, finished_run, "--overwrite_output_dir"))
    assert snapshot(finished_run) == before  # config.yaml included


def test_overwrite_empties_the_directory_first(finished_run, reviews_csv, tiny_vectors, tmp_path):
    import shutil

    output_dir = tmp_path / "run"
    shutil.copytree(finished_run, output_dir)
    old_checkpoints = {p.name for p in output_dir.glob("checkpoint-*")}
    assert "checkpoint-15" in old_checkpoints  # one epoch of 15 steps
    args = (
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--overwrite_output_dir",
        "--learning_rate",
        "0.02",
    )
    results = main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *args))
    assert results["train_steps"] == 4
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4"]
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train_steps"] == 4 and "learning_rate: 0.02" in (output_dir / "config.yaml").read_text()


def test_resume_never_continues_another_run(finished_run, reviews_csv, tiny_vectors, tmp_path):
    import shutil

    output_dir = tmp_path / "run"
    shutil.copytree(finished_run, output_dir)
    for name in ("metrics.json", "finished.json"):  # as a run killed while writing its outputs leaves it
        (output_dir / name).unlink()
    before = snapshot(output_dir)
    same = tiny_recipe_args(reviews_csv, tiny_vectors, output_dir, *ONE_EPOCH)
    stopped = r"holds a run stopped while writing its outputs; give --resume_from_checkpoint latest"
    with pytest.raises(RunDirectoryError, match=stopped):
        main(same)
    other = [*same, "--learning_rate", "0.02", "--resume_from_checkpoint", "latest"]
    with pytest.raises(RunDirectoryError, match=r"holds a run with other settings \(learning_rate 0.01 there, 0.02 "):
        main(other)
    assert snapshot(output_dir) == before
    # The same run resumes from its last checkpoint (the end of training): nothing left to train.
    results = main([*same, "--resume_from_checkpoint", "latest"])
    reference = json.loads((finished_run / "metrics.json").read_text(encoding="utf-8"))
    assert results["test_accuracy"] == reference["test_accuracy"]
    assert results["train_steps"] == reference["train_steps"] == 15


def test_a_checkpoint_saved_before_data_fingerprints_still_resumes(tmp_path):
    settings = {"learning_rate": 0.01}
    ours = {**settings, "data_fingerprint": {"train_file": {"path": "a.csv", "size": 10, "hash": "ab"}}}
    fake_checkpoint(tmp_path, 5, fingerprint(settings), settings)  # (its manifest-less layout: an earlier version)
    assert resolve_checkpoint("latest", tmp_path, ours).name == "checkpoint-5"
    assert resolve_checkpoint(str(tmp_path / "checkpoint-5"), tmp_path, ours).name == "checkpoint-5"
    other = {"learning_rate": 0.02, "data_fingerprint": ours["data_fingerprint"]}
    assert resolve_checkpoint("latest", tmp_path, other) is None
