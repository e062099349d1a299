"""Cold-start wall time of the `finetune` command, as a markdown table: each command started N times
in a new process, its whole life timed from outside (interpreter start-up and imports included).

    python scripts/bench_cli_start.py [--runs 7]

The goal: under a second for `--help`, `--version`, a mistyped command and a subcommand's argument
errors, which load no torch (`train --bogus_flag` loads transformers for HfArgumentParser, ~0.8 s here);
`env` loads torch to report its build and devices.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "finetune --help": ["--help"],
    "finetune --version": ["--version"],
    "finetune bogus (a bad command)": ["bogus"],
    "finetune predict (a missing argument)": ["predict"],
    "finetune train --bogus_flag 1": ["train", "--bogus_flag", "1"],
    "finetune env": ["env"],
}


def command_line() -> list[str]:
    """The installed `finetune` script beside this interpreter, else `python -m finetune.cli`."""
    script = Path(sys.executable).with_name("finetune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "finetune.cli"]


def wall_times(argv: list[str], runs: int) -> list[float]:
    """Seconds from start to exit of `runs` new processes (after one unmeasured run that warms the disk cache)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    times = []
    for run in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([*command_line(), *argv], capture_output=True, env=env, check=False)
        if run:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs per command")
    args = parser.parse_args(argv)
    rows = ["| command | min s | median s |", "|---|---:|---:|"]
    for name, command in COMMANDS.items():
        times = wall_times(command, args.runs)
        rows.append(f"| `{name}` | {min(times):.2f} | {statistics.median(times):.2f} |")
    table = "\n".join(rows)
    print(f"{args.runs} runs each, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n\n{table}")
    return table


if __name__ == "__main__":
    main()
