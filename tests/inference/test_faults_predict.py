"""`finetune predict` when things go wrong, and on files larger than memory should hold: it reads, labels and
writes a chunk at a time; its forked workers die with it; an output it cannot write fails before any labelling,
in one line; a killed run's temporary file is removed by the next; rows without text are left unlabelled."""

import errno
import functools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, write_csv
from test_inference import assert_same_predictions
from torch.utils.data import DataLoader

from finetune import files
from finetune import processes as worker_processes
from finetune.cli import main as cli
from finetune.data import table_chunks
from finetune.data.features import worker_init_fn
from finetune.data.table_chunks import read_table_chunks
from finetune.data.tables import DataError, read_table
from finetune.files import atomic_path, atomic_write, current_umask, remove_leftover_temporaries, saved_model_files
from finetune.inference import classifier as inference
from finetune.inference import prediction_files
from finetune.inference.file_labelling import predict_file

PR_GET_PDEATHSIG = 2
WORDS = ["这部电影", "很好", "非常棒", "快递", "太坑人", "酒店", "很舒服", "下次还会再来", "屏幕", "很差", "耳机"]


def error_lines(stderr: str) -> list[str]:
    """The command's own lines on stderr (not its progress bars); no traceback."""
    assert "Traceback" not in stderr
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("finetune:")]


def death_signal(*_) -> int:
    """The signal this process gets when its parent ends (prctl PR_GET_PDEATHSIG); 0: none."""
    import ctypes

    value = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0)
    return value.value


@pytest.fixture
def never_labels(monkeypatch):
    """Fails the test if a text is labelled."""

    def refuse(*args, **kwargs):
        raise AssertionError("a text was labelled")

    monkeypatch.setattr(inference, "predict_probabilities", refuse)


# ##### Reading a chunk at a time #####


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory, quiet_datasets) -> Path:
    """One table in each format, with what chunking could get wrong: a quoted line break, "NA" and empty fields,
    JSON types that differ from chunk to chunk (null, then int, then float; a key seen only late), U+2028."""
    folder = tmp_path_factory.mktemp("tables")
    csv_text = 'id,text,label,note\n007,好,1,\n010,"快递,太坑人\n就这样吧。",,NA\n011,,0,"a,b"\n\n012,差,2,null\n'
    (folder / "in.csv").write_text(csv_text, encoding="utf-8-sig")
    (folder / "in.tsv").write_text('id\ttext\n1\t"引号\n2\t\n3\tNA\n', encoding="utf-8")
    (folder / "big5.csv").write_bytes("text,label\n這部電影很好,1\n很差,0\n".encode("big5"))
    records = [
        {"id": "007", "text": "好", "label": None},
        {"id": "010", "text": "差\u2028啊", "label": 1, "extra": {"a": 1}},
        {"id": "011", "text": None, "label": 3},
        {"label": 2.5, "extra": {"b": "s"}, "late": True},
    ]
    lines = "\n".join(json.dumps(record, ensure_ascii=False) for record in records)
    (folder / "in.jsonl").write_text(lines + "\n\n", encoding="utf-8")
    (folder / "array.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    pq.write_table(pa.table({"id": [1, None, 3], "text": ["a", "b", None]}), folder / "in.parquet", row_group_size=2)
    datasets.Dataset.from_dict({"text": ["x", "y", "z"], "n": [1, 2, 3]}).save_to_disk(str(folder / "saved"))
    return folder


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "big5.csv", "in.jsonl", "array.json", "in.parquet", "saved"])
def test_chunks_hold_what_read_table_reads(tables_dir, name):
    encoding = "big5" if name == "big5.csv" else None
    whole = read_table(tables_dir / name, encoding=encoding, as_written=True).with_format("arrow")[:]
    for chunk_rows in (1, 2, 100):
        chunks = read_table_chunks(tables_dir / name, chunk_rows, encoding=encoding)
        pieces = list(chunks)
        assert max(piece.num_rows for piece in pieces) <= chunk_rows
        joined = pa.concat_tables(pieces)  # one schema for every chunk (the parquet writer needs it)
        assert joined.schema.remove_metadata() == whole.schema.remove_metadata()
        assert joined.to_pylist() == whole.to_pylist()
        assert chunks.column_names == whole.column_names
    assert list(chunks) and chunks.row_count >= whole.num_rows  # a CSV's lines: more where a text spans two


def test_chunks_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好"}\n{"text": "差"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2, column \d+: invalid JSON"):
        read_table_chunks(bad, 1)  # before any chunk is used: the columns come from every line
    header = tmp_path / "header.csv"
    header.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"header\.csv: no rows"):
        read_table_chunks(header, 10)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\n" + "好,1\n" * 30 + "差,0,extra\n", encoding="utf-8")
    chunks = read_table_chunks(ragged, 10)
    with pytest.raises(DataError, match=r"ragged\.csv: cannot read the file: .*line 32"):
        list(chunks)  # found when the chunks reach it


def test_predict_labels_and_writes_each_chunk_before_reading_far_ahead(trained_run, tmp_path, monkeypatch):
    rows = [(str(i), "很好" if i % 2 else "很差") for i in range(50)]
    input_file = write_csv(tmp_path / "in.csv", rows, ("id", "text"))
    read, events = [], []
    chunks_of = table_chunks.TableChunks.__iter__

    def counted(self):
        for chunk in chunks_of(self):
            read.append(chunk.num_rows)
            yield chunk

    def recorded(self, table, predictions):
        events.append((len(read), table.num_rows))
        return write_of(self, table, predictions)

    write_of = prediction_files._DelimitedWriter.write
    monkeypatch.setattr(table_chunks.TableChunks, "__iter__", counted)
    monkeypatch.setattr(prediction_files._DelimitedWriter, "write", recorded)
    predict_file(trained_run, input_file, tmp_path / "one.csv", chunk_size=7, num_proc=1)
    # (chunks read, rows written): each chunk written before the next is read, the first read twice (the
    # columns and the rows)
    assert events == [(2 + i, 7) for i in range(7)] + [(9, 1)]
    read.clear(), events.clear()
    predict_file(trained_run, input_file, tmp_path / "two.csv", chunk_size=7, num_proc=2)
    # in processes: one chunk queued while the one before is written
    assert events == [(3 + i, 7) for i in range(7)] + [(9, 1)]
    assert_same_predictions(tmp_path / "two.csv", tmp_path / "one.csv")


def test_a_tab_deep_in_the_file_is_refused_before_labelling(trained_run, tmp_path, never_labels):
    input_file = tmp_path / "in.jsonl"
    records = [{"text": "很好", "note": "a"}] * 4 + [{"text": "差", "note": "b\tc"}]
    input_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl: row 5, column 'note' holds a tab or line break"):
        predict_file(trained_run, input_file, tmp_path / "out.tsv", chunk_size=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]


# ##### Workers die with their parent #####


def big_input(path: Path, rows: int) -> Path:
    generator = random.Random(0)
    texts = ("".join(generator.choice(WORDS) for _ in range(generator.randint(3, 30))) for _ in range(rows))
    return write_csv(path, ((f"{i:06d}", text) for i, text in enumerate(texts)), ("id", "text"))


def start_predict(model: Path, input_file: Path, output: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """`finetune predict --num_proc 2` in a new process, once its two workers are labelling."""
    command = [sys.executable, "-m", "finetune.cli", "predict", str(model), str(input_file), "--output", str(output),
               "--num_proc", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(workers := psutil.Process(process.pid).children()) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    return process, workers


def wait_gone(workers: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """The workers still running after `seconds` (zombies count as gone)."""
    _, alive = psutil.wait_procs(workers, timeout=seconds)
    return [worker for worker in alive if worker.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.skipif(not worker_processes.can_fork(), reason="forked workers are Linux's")
def test_killed_predict_takes_its_workers_and_the_next_run_removes_its_temporary_file(trained_run, tmp_path, caplog):
    input_file, output = big_input(tmp_path / "big.csv", 60_000), tmp_path / "out.csv"
    process, workers = start_predict(trained_run, input_file, output)
    process.kill()
    process.wait(30)
    assert wait_gone(workers, 5) == []
    (leftover,) = tmp_path.glob(".out.csv.*.tmp")  # SIGKILL: nothing could remove it
    small = write_csv(tmp_path / "small.csv", [("很好",), ("很差",)], ("text",))
    with caplog.at_level(logging.WARNING, logger="finetune"):
        assert predict_file(trained_run, small, output) == 2
    assert f"Removed {leftover}, left by an earlier run that was stopped" in caplog.text
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.csv", "out.csv", "small.csv"]


@pytest.mark.skipif(not worker_processes.can_fork(), reason="forked workers are Linux's")
def test_sigterm_stops_predict_in_one_line_leaving_nothing(trained_run, tmp_path):
    input_file, output = big_input(tmp_path / "big.csv", 60_000), tmp_path / "out.csv"
    process, workers = start_predict(trained_run, input_file, output)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode not in (0, -signal.SIGTERM)  # handled: not killed by the signal, not a success
    assert error_lines(stderr) == ["finetune: stopped by SIGTERM"]
    assert wait_gone(workers, 5) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.csv"]


@pytest.mark.skipif(not worker_processes.can_fork(), reason="forked workers are Linux's")
def test_labelling_and_dataloader_workers_ask_to_die_with_their_parent():
    pieces = worker_processes.scores_in_processes(
        lambda texts, progress: np.array([[death_signal()] for _ in texts]), lambda a, b: [""] * (b - a), 4, 2, 2
    )
    assert np.concatenate([scores for _, scores in pieces]).ravel().tolist() == [signal.SIGKILL] * 4
    assert death_signal() == 0  # this process asked nothing
    init = functools.partial(worker_init_fn, parent=os.getpid())
    loader = DataLoader(list(range(4)), batch_size=2, num_workers=2, collate_fn=death_signal, worker_init_fn=init)
    assert list(loader) == [signal.SIGKILL, signal.SIGKILL]

    def ignored(batch):  # the signals a terminal or a launcher sends to the whole run: the trainer handles them
        return [signal.getsignal(number) == signal.SIG_IGN for number in (signal.SIGINT, signal.SIGTERM)]

    loader = DataLoader(list(range(4)), batch_size=2, num_workers=2, collate_fn=ignored, worker_init_fn=init)
    assert list(loader) == [[True, True], [True, True]]


def test_dataloaders_pass_their_worker_init_fn(review_splits):
    from finetune.data.features import eval_dataloader, train_dataloader

    split = review_splits["train"].map(lambda row: {"input_ids": [1, 2], "attention_mask": [1, 1], "length": 2})
    loaders = [train_dataloader(split, None, 4, seed=0, num_workers=1), eval_dataloader(split, None, 4, 1)[0]]
    for loader in loaders:
        assert loader.worker_init_fn.func is worker_init_fn and loader.worker_init_fn.keywords == {
            "parent": os.getpid()
        }


# ##### Writing: checked first, one line on failure, modes kept, leftovers removed #####


@pytest.mark.parametrize(
    "number, advice",
    [(errno.EROFS, "the file system is read-only; write elsewhere"), (errno.EACCES, "permission denied; write")],
)
def test_an_output_that_cannot_be_made_fails_before_labelling(
    trained_run, tmp_path, monkeypatch, capsys, never_labels, number, advice
):
    input_file = write_csv(tmp_path / "in.csv", [("很好",), ("很差",)], ("text",))

    def refused(*args, **kwargs):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    output = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", str(trained_run), str(input_file), "--output", str(output)])
    assert exit_info.value.code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"finetune: error: {output}: writing the predictions: {advice}")


def test_an_output_under_a_file_fails_before_labelling(trained_run, tmp_path, capsys, never_labels):
    input_file = write_csv(tmp_path / "in.csv", [("很好",)], ("text",))
    output = tmp_path / "in.csv" / "sub" / "out.csv"  # a real failure: no directory can be made under a file
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", str(trained_run), str(input_file), "--output", str(output)])
    assert exit_info.value.code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line == f"finetune: error: {output}: writing the predictions: a part of the path is a file, not a directory"


@pytest.mark.parametrize("writer, suffix", [("_DelimitedWriter", ".csv"), ("_ParquetWriter", ".parquet")])
def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(trained_run, tmp_path, monkeypatch, capsys,
                                                                  writer, suffix):  # fmt: skip
    input_file = write_csv(tmp_path / "in.csv", [(str(i), "很好") for i in range(20)], ("id", "text"))
    write_of, calls = getattr(prediction_files, writer).write, []

    def filling(self, table, predictions):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_of(self, table, predictions)

    close_of = getattr(prediction_files, writer).close

    def closing(self):  # a full disk fails the close's flush too (buffered bytes): the first error is the one said
        close_of(self)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(getattr(prediction_files, writer), "write", filling)
    monkeypatch.setattr(getattr(prediction_files, writer), "close", closing)
    monkeypatch.setitem(predict_file.__kwdefaults__, "chunk_size", 8)  # what the command passes: the default
    output = tmp_path / f"out{suffix}"
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", str(trained_run), str(input_file), "--output", str(output)])
    assert exit_info.value.code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"finetune: error: {output}: writing the predictions: no space left on the disk (")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.csv"]


def test_replacing_a_file_keeps_its_mode(trained_run, tmp_path):
    input_file = write_csv(tmp_path / "in.csv", [("很好",)], ("text",))
    output = tmp_path / "out.csv"
    predict_file(trained_run, input_file, output)
    assert output.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # new: as open() makes it
    output.chmod(0o600)
    predict_file(trained_run, input_file, output)
    assert output.stat().st_mode & 0o777 == 0o600  # a private output stays private
    with atomic_write(tmp_path / "notes.txt") as file:
        file.write("a")
    (tmp_path / "notes.txt").chmod(0o640)
    with atomic_write(tmp_path / "notes.txt") as file:
        file.write("b")
    assert (tmp_path / "notes.txt").stat().st_mode & 0o777 == 0o640


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    output = tmp_path / "out.csv"
    dead = tmp_path / ".out.csv.ab_c1234.tmp"
    others = [".out.csv.abc.tmp", ".other.csv.ab_c1234.tmp", "out.csv.ab_c1234.tmp", ".out.csv.ab_c1234.tmp.bak"]
    for name in [dead.name, *others]:
        (tmp_path / name).write_text("x")
    with atomic_path(output) as live:  # a run writing the same output now: its file is locked
        assert remove_leftover_temporaries(output) == [dead]
        assert live.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*others, "out.csv"])


# ##### Rows without text #####


def test_rows_without_text_are_counted_and_left_unlabelled(trained_run, tmp_path, monkeypatch, caplog):
    records = [{"text": "很好"}, {"text": ""}, {"text": "  \u3000\n"}, {"text": None}, {"id": 5}, {"text": "很差"}]
    input_file = tmp_path / "in.jsonl"
    input_file.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    seen = []
    labelled = inference.predict_probabilities
    monkeypatch.setattr(inference, "predict_probabilities", lambda m, t, texts, *a: seen.extend(texts) or labelled(
        m, t, texts, *a))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="finetune"):
        predict_file(trained_run, input_file, tmp_path / "out.jsonl", top_k="all")
    assert seen == ["很好", "很差"]  # the others never reach the model
    assert "4 rows have no text (rows 2, 3, 4, 5): left without a label" in caplog.text
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["predicted_label"] for row in written] == ["positive", None, None, None, None, "negative"]
    for row in written[1:5]:
        assert row["score"] is row["score_positive"] is row["score_negative"] is None


def test_rows_without_text_under_a_multi_label_model(trained_run, tmp_path, caplog):
    model = tmp_path / "multi"
    model.mkdir()
    for name in saved_model_files(trained_run):  # the model's files alone, not the run's
        (model / name).write_bytes((trained_run / name).read_bytes())
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    rows = [(str(i), "" if i % 4 == 1 else "很好") for i in range(30)]
    input_file = write_csv(tmp_path / "in.csv", rows, ("id", "text"))
    with caplog.at_level(logging.WARNING, logger="finetune"):
        predict_file(model, input_file, tmp_path / "out.parquet", chunk_size=4)
    assert "8 rows have no text (rows 2, 6, 10, 14, 18, 22, 26, 30): left without a label" in caplog.text
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    for row in table:
        if row["text"] is None:
            assert row["predicted_labels"] is row["score_positive"] is row["score_negative"] is None
        else:
            assert isinstance(row["predicted_labels"], list) and 0 < row["score_positive"] < 1


def test_the_warning_lists_ten_rows(trained_run, tmp_path, caplog):
    input_file = write_csv(tmp_path / "in.csv", [(str(i), "") for i in range(12)] + [("12", "好")], ("id", "text"))
    with caplog.at_level(logging.WARNING, logger="finetune"):
        predict_file(trained_run, input_file, tmp_path / "out.csv", chunk_size=5)
    assert "12 rows have no text (rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...): left without a label" in caplog.text
