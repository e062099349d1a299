"""finetune.files: atomic outputs readable as normal files (the umask honoured), strict JSON."""

import json
import os
import stat

import pytest

from finetune.files import atomic_write, save_pretrained_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_modes_open_would_give(tmp_path, umask_022):
    write_text_atomic("a: 1\n", tmp_path / "config.yaml")
    write_json_atomic({"accuracy": 0.5}, tmp_path / "metrics.json")
    with atomic_write(tmp_path / "predictions.csv", encoding="utf-8") as f:
        f.write("text,predicted_label\n")
    for name in ("config.yaml", "metrics.json", "predictions.csv"):
        assert mode(tmp_path / name) == 0o644, name
    os.umask(0o077)  # a private umask is honoured too
    write_text_atomic("b: 2\n", tmp_path / "private.yaml")
    assert mode(tmp_path / "private.yaml") == 0o600


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text_atomic("old\n", tmp_path / "notes.txt")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "notes.txt") as f:
        f.write("half of the new")
        raise RuntimeError("killed")
    assert (tmp_path / "notes.txt").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_saved_model_directory_is_readable_by_others(trained_run, tmp_path, umask_022):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import finetune  # noqa: F401  (registers the model)

    source = trained_run
    model = AutoModelForSequenceClassification.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    save_pretrained_atomic(model, tokenizer, tmp_path / "best")
    assert mode(tmp_path / "best") == 0o755
    for path in (tmp_path / "best").iterdir():
        assert mode(path) == (0o755 if path.is_dir() else 0o644), path.name


def test_run_outputs_are_readable_by_others(trained_run):
    # The trained run was made under the test process's umask; every output follows it.
    umask = os.umask(0)
    os.umask(umask)
    for path in trained_run.glob("*.*"):  # the model's files among them
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode(path) == want, path


def test_json_outputs_are_strict(tmp_path):
    write_json_atomic({"loss": 0.25, "label": "正面"}, tmp_path / "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text(encoding="utf-8")) == {"loss": 0.25, "label": "正面"}
    with pytest.raises(ValueError, match=r"NaN/infinity as JSON \(at history.train\[1\].loss\)"):
        write_json_atomic({"history": {"train": [{"loss": 1.0}, {"loss": float("nan")}]}}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
