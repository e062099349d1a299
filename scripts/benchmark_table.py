"""The summary table of `scripts/benchmark.py`: one row per method (per config for the recipe) over its seeds.

`summary_rows` gives each row's numbers: mean and sample std of test accuracy, macro-F1 and times over
the seeds, and the paired bootstrap interval (`finetune.evaluation.comparison`) of the accuracy difference to
TF-IDF + LR, and to the first recipe config when there are several; `markdown_table` prints them with
the notes that say how each number was measured. Apart from the script, which runs the methods.
"""

import numpy as np

from finetune.evaluation.comparison import (
    f1_counts,
    mean_and_std,
    paired_bootstrap_f1_interval,
    paired_bootstrap_interval,
)


def row_key(run: dict) -> str:
    """What makes a table row: the method, and for the recipe its config."""
    return run["method"] + (f":{run['config']}" if run.get("config") else "")


# Each row's numbers: single labels, and multi-label data (then the intervals are of micro- and macro-F1)
METRICS = ("test_accuracy", "test_macro_f1")
MULTI_LABEL_METRICS = ("test_micro_f1", "test_macro_f1", "test_exact_match")


def summary_rows(
    runs: list[dict], labels: np.ndarray, resamples: int, reference: str = "tfidf_lr", metric: str = "accuracy"
) -> list[dict]:
    """One row per method (per config for the recipe): mean ± std of accuracy and macro-F1 (multi-label:
    micro-F1, macro-F1, exact match), the paired interval against the `reference` baseline (and against the
    first recipe config, when there are several) of `metric` (accuracy or macro_f1; multi-label: micro- and
    macro-F1), fit time."""
    keys = list(dict.fromkeys(map(row_key, runs)))
    multi_label = labels.ndim == 2
    if metric == "macro_f1" and not multi_label:  # macro-F1 of single labels: that of their one-hot rows
        hot = np.eye(int(labels.max()) + 1)
        counts = {key: np.array([f1_counts(hot[r["predicted"]], hot[labels]) for r in runs if row_key(r) == key])
                  for key in keys}  # fmt: skip

        def compare(a, b):
            return paired_bootstrap_f1_interval(counts[a], counts[b], "macro", resamples=resamples)
    elif multi_label:
        counts = {key: np.array([f1_counts(r["predicted"], labels) for r in runs if row_key(r) == key]) for key in keys}

        def compare(a, b):
            return {f"{average}_f1": paired_bootstrap_f1_interval(counts[a], counts[b], average, resamples=resamples)
                    for average in ("micro", "macro")}  # fmt: skip
    else:
        correct = {key: np.array([np.asarray(r["predicted"]) == labels for r in runs if row_key(r) == key])
                   for key in keys}  # fmt: skip

        def compare(a, b):
            return paired_bootstrap_interval(correct[a], correct[b], resamples=resamples)

    recipes = [key for key in keys if key.startswith("recipe")]
    rows = []
    for row_id in keys:
        own = [run for run in runs if row_key(run) == row_id]
        method = own[0]["method"]
        row = {"method": method, "title": own[0].get("title", method), "runs": len(own)}
        if own[0].get("config"):
            row["config"] = own[0]["config"]
        for key in (*(MULTI_LABEL_METRICS if multi_label else METRICS), "fit_seconds", "wall_seconds"):
            values = [run[key] for run in own if run.get(key) is not None]
            row[key] = dict(zip(("mean", "std"), mean_and_std(values), strict=True)) if values else None
        if reference in keys and method != reference:
            row["difference_to_tfidf"] = compare(row_id, reference)
        if len(recipes) > 1 and row_id in recipes[1:]:
            row["difference_to_first_recipe"] = compare(row_id, recipes[0])
        if method == "tfidf_lr":
            threshold = own[0]["selection"].get("threshold")  # multi-label: one-vs-rest at a threshold chosen on dev
            one_vs_rest = f", one-vs-rest, threshold {threshold}" if threshold is not None else ""
            row["title"] += f" (C={own[0]['selection']['C']}{one_vs_rest})"
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
    multi_label = "test_micro_f1" in rows[0]
    if multi_label:
        header = "| method | runs | test micro-F1 | test macro-F1 | exact match | micro-F1 − TF-IDF, points [95% CI] | "
        header += "macro-F1 − TF-IDF, points [95% CI] | "
        header += f"micro-F1 − {first['title']} | macro-F1 − {first['title']} | " if several else ""
    else:
        measure = info.get("interval_metric", "accuracy").replace("_f1", "-F1")
        against = info.get("reference_title") or "TF-IDF"
        header = f"| method | runs | test accuracy | test macro-F1 | {measure} − {against}, points [95% CI] | "
        header += f"{measure} − {first['title']}, points [95% CI] | " if several else ""
    header += "train time (s) | wall time (s) |"
    lines = [f"### {name}: {info['sizes']}", "", header, "|---|" + "---:|" * (header.count("|") - 2)]

    def differences(interval):
        if not multi_label:
            return [points(interval)]
        return [points((interval or {}).get("micro_f1")), points((interval or {}).get("macro_f1"))]

    for row in rows:
        metrics = MULTI_LABEL_METRICS if multi_label else METRICS
        cells = [row["title"], str(row["runs"]), *(spread(row[key]) for key in metrics),
                 *differences(row.get("difference_to_tfidf"))]  # fmt: skip
        cells += differences(row.get("difference_to_first_recipe")) if several else []
        cells += [spread(row["fit_seconds"], 1), spread(row["wall_seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sample std over seeds {info['seeds']}; split and caps drawn with seed {split_seed}. The "
              f"interval: paired bootstrap ({resamples} resamples of the test texts, the same for both methods, and "
              "of each method's seeds). Train time: a baseline's fit with its choice on dev; the recipe's "
              "training loop (train_runtime_s) and its TF-IDF branch's fit. Wall time: a baseline's fit and test "
              "predictions; the recipe's whole run (start-up, reading, segmenting, word vectors, training, test; a run "
              "resumed after a kill is left out). A recipe with a TF-IDF branch is also scored without it (its "
              "BiLSTM alone: the same runs, the branch's share set to 0)."]  # fmt: skip
    if multi_label:
        lines += ["", "Multi-label: each text's label set; the F1 intervals recompute micro- and macro-F1 from the "
                  "resampled texts' counts. TF-IDF: one binary regression per label, C and one global threshold chosen "
                  "by dev micro-F1; the recipe's thresholds are tuned on dev as it tunes them."]  # fmt: skip
    if info.get("notes"):
        lines += ["", f"Note: {info['notes']}."]
    return "\n".join(lines)
