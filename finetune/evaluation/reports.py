"""Pictures of a run: training curves, confusion matrix (multi-label: each label's P/R/F1), attention over the text.

Labels are often Chinese (书籍, 平板, 手机): matplotlib's own font has no Chinese glyphs and would
draw each as an empty box, so the pictures use a font that has them (`chinese_font_family`).
"""

import functools
import html
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from finetune.files import atomic_path, write_text_atomic
from finetune.inference.classifier import explain

logger = logging.getLogger(__name__)

LABEL_SCORES = "label_scores.png"  # multi-label runs' picture, in place of confusion_matrix.png

# Sans-serif families with Chinese glyphs that operating systems ship, tried first (no file to load).
SYSTEM_CHINESE_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
    "Microsoft YaHei", "PingFang SC", "Heiti SC", "SimHei", "Droid Sans Fallback",
)  # fmt: skip
# Else the Noto Sans CJK SC that the `mplfonts` package (a dependency) installs from PyPI.
PACKAGED_FONT = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")


@functools.cache
def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use: a process that draws nothing
    (`finetune predict`, the benchmark's runs) does not pay its ~0.7 s import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


@functools.cache
def chinese_font_family() -> str | None:
    """The name of a font family with Chinese glyphs, registered with matplotlib; None if none is found."""
    pyplot()
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    for family in SYSTEM_CHINESE_FAMILIES:
        if family in installed:
            return family
    package, relative = PACKAGED_FONT
    spec = importlib.util.find_spec(package)  # its location only: importing it would pull in its CLI
    path = Path(spec.origin).parent / relative if spec and spec.origin else None
    if path is None or not path.is_file():
        logger.warning("no font with Chinese glyphs found: Chinese labels in the pictures show as boxes")
        return None
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def _figure_style() -> dict:
    family = chinese_font_family()
    return {"font.family": "sans-serif", "font.sans-serif": [family, "DejaVu Sans"] if family else ["DejaVu Sans"]}


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(fig)


def plot_training_curves(
    history: dict, path: str | os.PathLike, multi_label: bool = False, branch: tuple[int, str, float] | None = None
) -> None:
    """Training loss by step, validation loss and macro-F1 by evaluation, side by side.

    Args:
        history: `{"train": [{"step", "loss"}...], "eval": [{"step", "loss", "macro_f1", "accuracy"}...]}`.
        path: PNG file to write.
        multi_label: the validation loss is binary cross-entropy and the accuracy exact match.
        branch: (best step, metric, validation score) of the saved model with its TF-IDF branch mixed in
            (`branch_mark`): the curves are the BiLSTM's alone, so the saved model's score is a mark of its own.
    """
    with pyplot().rc_context(_figure_style()):
        _draw_training_curves(history, path, multi_label, branch)


def branch_mark(results: dict) -> tuple[int, str, float] | None:
    """(best step, metric, its validation score with the TF-IDF branch mixed in) of a run's `results`
    (in memory or read back from metrics.json), or None for a model without a branch."""
    branch = results.get("tfidf_branch")
    if not branch or "best_step" not in results:
        return None
    (key,) = [key for key in branch if key.endswith("_by_mix_weight")]
    scores = {float(weight): score for weight, score in branch[key].items()}
    metric = key.removeprefix("validation_").removesuffix("_by_mix_weight")
    return results["best_step"], metric, scores[float(branch["mix_weight"])]


def _draw_training_curves(
    history: dict, path: str | os.PathLike, multi_label: bool, branch: tuple[int, str, float] | None
) -> None:
    # One step axis for both: a run of a single evaluation would otherwise get 14.2..15.8 on the right
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4), sharex=True)
    train, evals = history.get("train", []), history.get("eval", [])
    # The training loss is the loop's (focal, class-weighted or a distillation mix where asked for);
    # the validation loss is always the model's own.
    validation_loss = "binary cross-entropy" if multi_label else "cross-entropy"
    _plot_series(left, train, "loss", "train loss", "C0", "-", alpha=0.8)
    _plot_series(left, evals, "loss", f"validation {validation_loss}", "C1")
    left.set_xlabel("optimizer step")
    left.set_ylabel("loss")
    _legend(left)
    names = {"accuracy": "exact match" if multi_label else "accuracy", "macro_f1": "macro-F1"}
    for (key, name), color in zip(names.items(), ("C0", "C1")):
        _plot_series(right, evals, key, f"validation {name}", color)
    if branch is not None:
        step, metric, score = branch
        label = f"saved model (+ TF-IDF branch), {names.get(metric, metric)} {score:.4f}"
        right.plot([step], [score], "*", markersize=14, color="C3", label=label)
    right.set_xlabel("optimizer step")
    # Below the axes: inside, "best" laid the legend (wide with the saved model's mark) over the first rise
    _legend(right, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9, frameon=False)
    right.grid(alpha=0.3)
    _save(fig, path)


def _plot_series(ax, rows: list[dict], key: str, label: str, color: str, line: str = "o-", **style) -> None:
    """`key` by step over the rows that hold it: a line, a marker alone for a single point (a line of one
    point is invisible), nothing (and no legend entry) without a point. Colours are fixed per series, so
    a series left out does not recolour the others."""
    points = [(row["step"], row[key]) for row in rows if row.get(key) is not None]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, line if len(points) > 1 else "o", color=color, label=label, **style)


def _legend(ax, **options) -> None:
    """The legend of what `ax` shows; a note instead when it shows nothing (no evaluation yet)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)
    else:
        ax.text(0.5, 0.5, "nothing recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")


def plot_confusion_matrix(matrix, labels: list[str], path: str | os.PathLike, title: str = "") -> None:
    """Counts with row-normalised shading (rows: true label, columns: predicted); Chinese labels drawn."""
    with pyplot().rc_context(_figure_style()):
        _draw_confusion_matrix(np.asarray(matrix), labels, path, title)


def _draw_confusion_matrix(matrix: np.ndarray, labels: list[str], path: str | os.PathLike, title: str) -> None:
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.8 * len(labels)
    fig, ax = pyplot().subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{matrix[i, j]}\n{shares[i, j]:.1%}", ha="center", va="center", color=color)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_label_scores(per_class: dict[str, dict], thresholds: dict | None, path: str | os.PathLike, title="") -> None:
    """Multi-label runs, where one confusion matrix does not apply: each label's precision, recall
    and F1 as bars, its support and decision threshold under its name."""
    with pyplot().rc_context(_figure_style()):
        labels = list(per_class)
        fig, ax = pyplot().subplots(figsize=(2 + 1.1 * len(labels), 4))
        positions = np.arange(len(labels))
        for offset, key, color in ((-0.27, "precision", "#9ecae1"), (0, "recall", "#4292c6"), (0.27, "f1", "#08306b")):
            values = [per_class[label][key] for label in labels]
            bars = ax.bar(positions + offset, values, width=0.26, label=key, color=color)
            if key == "f1":
                ax.bar_label(bars, labels=[f"{value:.2f}" for value in values], fontsize=8)
        names = [
            f"{label}\nn={per_class[label]['support']}"
            + (f", t={thresholds[label]:.2f}" if thresholds and label in thresholds else "")
            for label in labels
        ]
        ax.set_xticks(positions, names)
        ax.set_ylim(0, 1.22)
        ax.set_ylabel("score")
        ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
        ax.set_title(title)
        _save(fig, path)


def attention_html(examples: list[dict], path: str | os.PathLike) -> None:
    """Each text with its words shaded by attention weight, as an HTML page.

    HTML rather than PNG: browsers render the text with the reader's fonts, and hovering shows weights.

    Args:
        examples: Dicts with `tokens`, `weights` (same length), `label`, `score` and optional `true_label`.
        path: HTML file to write.
    """
    rows = []
    for example in examples:
        top = max(example["weights"], default=1.0) or 1.0
        spans = "".join(
            f'<span title="{w:.3f}" style="background: rgba(220, 50, 47, {w / top:.2f})">{html.escape(t)}</span>'
            for t, w in zip(example["tokens"], example["weights"])
        )
        truth = f" · true: {html.escape(str(example['true_label']))}" if "true_label" in example else ""
        rows.append(
            f"<div class='row'><div class='meta'>{html.escape(example['label'])} "
            f"({example['score']:.3f}){truth}</div><div class='text'>{spans}</div></div>"
        )
    page = (
        "<!doctype html><meta charset='utf-8'><title>Attention over the text</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}.row{margin:1em 0}"
        ".meta{color:#555;font-size:90%}.text{font-size:120%;line-height:1.8}span{padding:0 1px}</style>"
        "<h1>Attention over the text</h1><p>Darker: more weight in the attention pooling "
        "(hover a word for its weight).</p>" + "".join(rows)
    )
    write_text_atomic(page, path)


def draw_pictures(results: dict, model, tokenizer, splits, output_dir: Path) -> None:
    """A run's pictures: training curves, the confusion matrix (test split, else validation), and the
    attention over 20 texts of that split (`attention.html`)."""
    output_dir = Path(output_dir)
    multi_label = model.config.problem_type == "multi_label_classification"
    plot_training_curves(results["history"], output_dir / "training_curves.png", multi_label, branch_mark(results))
    split = "test" if "test_per_class" in results else "validation"
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if multi_label:
        thresholds = getattr(model.config, "label_thresholds", None)
        plot_label_scores(results[f"{split}_per_class"], thresholds, output_dir / LABEL_SCORES, f"{split} split")
    else:
        plot_confusion_matrix(
            results[f"{split}_confusion_matrix"], labels, output_dir / "confusion_matrix.png", title=f"{split} split"
        )
    sample = splits[split].shuffle(seed=0).select(range(min(20, len(splits[split]))))
    examples = explain(model, tokenizer, sample["text"])
    for example, label in zip(examples, sample["label"]):
        if multi_label:  # a multi-hot vector
            example["true_label"] = ", ".join(labels[i] for i, on in enumerate(label) if on) or "(none)"
        else:
            example["true_label"] = model.config.id2label[label]
    attention_html(examples, output_dir / "attention.html")
