"""The summary table of `scripts/benchmark.py`: one row per method (per config for the recipe) over its seeds.

`summary_rows` gives each row's numbers: mean and sample std of test accuracy, macro-F1 and times over
the seeds, and the paired bootstrap interval (`finetune.comparison`) of the accuracy difference to
TF-IDF + LR, and to the first recipe config when there are several; `markdown_table` prints them with
the notes that say how each number was measured. Apart from the script, which runs the methods.
"""

import numpy as np

from finetune.comparison import mean_and_std, paired_bootstrap_interval


def row_key(run: dict) -> str:
    """What makes a table row: the method, and for the recipe its config."""
    return run["method"] + (f":{run['config']}" if run.get("config") else "")


def summary_rows(runs: list[dict], labels: np.ndarray, resamples: int) -> list[dict]:
    """One row per method (per config for the recipe): mean ± std of accuracy and macro-F1, the paired
    interval against TF-IDF (and against the first recipe config, when there are several), fit time."""
    keys = list(dict.fromkeys(map(row_key, runs)))
    correct = {key: np.array([np.asarray(r["predicted"]) == labels for r in runs if row_key(r) == key]) for key in keys}
    recipes = [key for key in keys if key.startswith("recipe")]
    rows = []
    for row_id in keys:
        own = [run for run in runs if row_key(run) == row_id]
        method = own[0]["method"]
        row = {"method": method, "title": own[0].get("title", method), "runs": len(own)}
        if own[0].get("config"):
            row["config"] = own[0]["config"]
        for key in ("test_accuracy", "test_macro_f1", "fit_seconds", "wall_seconds"):
            values = [run[key] for run in own if run.get(key) is not None]
            row[key] = dict(zip(("mean", "std"), mean_and_std(values), strict=True)) if values else None
        if "tfidf_lr" in correct and method != "tfidf_lr":
            row["difference_to_tfidf"] = paired_bootstrap_interval(correct[row_id], correct["tfidf_lr"],
                                                                   resamples=resamples)  # fmt: skip
        if len(recipes) > 1 and row_id in recipes[1:]:
            row["difference_to_first_recipe"] = paired_bootstrap_interval(correct[row_id], correct[recipes[0]],
                                                                          resamples=resamples)  # fmt: skip
        if method == "tfidf_lr":
            row["title"] += f" (C={own[0]['selection']['C']})"
        rows.append(row)
    return rows


def markdown_table(name: str, info: dict, rows: list[dict], resamples: int, split_seed: int) -> str:
    """A dataset's rows as markdown under a `### name: sizes` heading, with the notes on how they were measured
    (`split_seed`: the seed the split and the caps were drawn with)."""

    def spread(numbers, digits=4):
        if numbers is None:
            return "—"
        std = "" if numbers["std"] is None else f" ± {numbers['std']:.{digits}f}"
        return f"{numbers['mean']:.{digits}f}{std}"

    def points(interval):
        if not interval:
            return "—"
        return f"{100 * interval['difference']:+.2f} [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]"

    first = next((row for row in rows if row.get("config")), None)
    several = any("difference_to_first_recipe" in row for row in rows)
    header = "| method | runs | test accuracy | test macro-F1 | accuracy − TF-IDF, points [95% CI] | "
    header += f"accuracy − {first['title']}, points [95% CI] | " if several else ""
    header += "train time (s) | wall time (s) |"
    lines = [f"### {name}: {info['sizes']}", "", header, "|---|" + "---:|" * (header.count("|") - 2)]
    for row in rows:
        cells = [row["title"], str(row["runs"]), spread(row["test_accuracy"]), spread(row["test_macro_f1"]),
                 points(row.get("difference_to_tfidf"))]  # fmt: skip
        cells += [points(row.get("difference_to_first_recipe"))] if several else []
        cells += [spread(row["fit_seconds"], 1), spread(row["wall_seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample std over seeds {info['seeds']}; split and caps drawn with seed {split_seed}. The "
              f"interval: paired bootstrap ({resamples} resamples of the test texts, the same for both methods, and "
              "of each method's seeds). Train time: a baseline's fit with its choice on dev; the recipe's "
              "training loop (train_runtime_s) and its TF-IDF branch's fit. Wall time: a baseline's fit and test "
              "predictions; the recipe's whole run (start-up, reading, segmenting, word vectors, training, test; a run "
              "resumed after a kill is left out). A recipe with a TF-IDF branch is also scored without it (its "
              "BiLSTM alone: the same runs, the branch's share set to 0)."]  # fmt: skip
    if info.get("notes"):
        lines += ["", f"Note: {info['notes']}."]
    return "\n".join(lines)
