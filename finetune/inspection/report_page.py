"""report.html of `finetune inspect`: the summary, the likely label errors, the near-duplicates across
splits, the classes and the texts' lengths, with two pictures (lengths by class, the given label's
out-of-fold probability)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from finetune.evaluation.reports import chinese_font_family, pyplot

STYLE = """body{font-family:"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right}.text{max-width:40em}.bad{color:#b00}img{max-width:48em}"""
SHOWN = 100  # rows of each table on the page; the CSVs hold all


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            kind = "num" if isinstance(value, (int, float)) and not isinstance(value, bool) else "text"
            cells.append(
                f'<td class="{kind}">{html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))}</td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pictures(output_dir: Path, words: list[int], confidence: np.ndarray, keys: list, flagged: np.ndarray) -> None:
    plt = pyplot()
    family = chinese_font_family()
    with plt.rc_context({"font.sans-serif": [family, "DejaVu Sans"] if family else ["DejaVu Sans"]}):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(np.minimum(words, np.percentile(words, 99.5)), bins=60, color="#4c72b0")
        ax.set_xlabel("words per text (jieba)")
        ax.set_ylabel("texts")
        ax.set_title("Text lengths, all splits")
        fig.savefig(output_dir / "lengths.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        mask = np.zeros(len(keys), dtype=bool)
        mask[flagged] = True
        bins = np.linspace(0, 1, 41)
        ax.hist(confidence[~mask], bins=bins, color="#4c72b0", label="not flagged")
        ax.hist(confidence[mask], bins=bins, color="#c44e52", label="flagged as likely mislabelled")
        ax.set_yscale("log")
        ax.set_xlabel("probability of the given label (self-confidence)")
        ax.set_ylabel("texts")
        ax.legend()
        fig.savefig(output_dir / "confidence.png", dpi=110, bbox_inches="tight")
        plt.close(fig)


def write_report_page(output_dir: Path, summary: dict, issues: list, duplicates: list, counts: list, arrays) -> Path:
    words, confidence, keys, flagged = arrays
    _pictures(output_dir, words, confidence, keys, flagged)
    issues_info, near = summary["label_issues"], summary["near_duplicates"]
    leaks = [
        {"split": s, "rows with a near-duplicate in train": c["rows"], "of": c["of"], "share": c["share"]}
        for s, c in near["leaks_into_train"].items()
    ]
    cross = [r for r in duplicates if r["split_a"] != r["split_b"]]
    conflicting = [r for r in duplicates if not r["same_label"]]
    scripts = summary["scripts"]
    rows = ", ".join(f"{s} {n:,}" for s, n in summary["rows"].items())
    source = html.escape(issues_info["source"])
    pair_columns = ["split_a", "label_a", "text_a", "split_b", "label_b", "text_b", "similarity"]
    parts = [
        f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>finetune inspect</title>"
        f"<style>{STYLE}</style></head><body><h1>What may be wrong in this data</h1>",
        f"<p>Rows: {rows}; labels: {html.escape(', '.join(summary['labels']))}.</p>",
        f"<h2>Likely label errors: {issues_info['flagged']:,} rows ({issues_info['share']:.1%})</h2>",
        f"<p>Ranked by cleanlab (confident learning) on the label probabilities of {source}; "
        "lowest probability of the given label first. Read them: some are real errors, some are texts the model "
        "cannot read. All in label_issues.csv.</p><img src='confidence.png' alt='self-confidence histogram'>",
        _table(issues[:SHOWN], ["rank", "split", "row", "given_label", "suggested_label", "self_confidence", "text"]),
        f"<h2>Near-duplicates: {near['pairs']:,} pairs (3-gram Jaccard &ge; {near['threshold']}), "
        f"{len(cross):,} across splits, {near['conflicting_labels']:,} with different labels</h2>",
        _table(leaks, ["split", "rows with a near-duplicate in train", "of", "share"]) if leaks else "",
        "<h3>Across splits (leaks)</h3>" + _table(cross[:SHOWN], pair_columns),
        "<h3>With different labels</h3>" + _table(conflicting[:SHOWN], pair_columns),
        "<h2>Classes</h2>" + _table(counts, list(counts[0]) if counts else []),
        "<h2>Lengths</h2><img src='lengths.png' alt='lengths'>",
        _table(
            [{"unit": unit, **summary[unit]} for unit in ("words", "tokens") if unit in summary],
            ["unit", "texts", "mean", "p50", "p90", "p99", "max", "max_length", "truncated_share"],
        ),
        "<h2>Characters</h2>" + _table([{"kind": k, "share": v} for k, v in scripts.items()], ["kind", "share"]),
    ]
    if "unknown_characters" in summary:
        unknown = summary["unknown_characters"]
        parts.append(f"<p>Characters the model's tokenizer reads as unknown: {unknown['share']:.2%} of all.</p>")
        parts.append(_table([{"character": c, "count": n} for c, n in unknown["top"]], ["character", "count"]))
    if "test_accuracy_by_near_duplicate" in summary:
        by = summary["test_accuracy_by_near_duplicate"]
        parts.append("<h2>Test accuracy, with and without a near-duplicate in train</h2>")
        parts.append(_table([{"test rows": k, **v} for k, v in by.items()], ["test rows", "rows", "accuracy"]))
    parts.append("</body></html>")
    path = output_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
