"""Pictures of a run: training curves, confusion matrix, attention over the text."""

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_training_curves(history: dict, path: str | os.PathLike) -> None:
    """Training loss by step, validation loss and macro-F1 by evaluation, side by side.

    Args:
        history: `{"train": [{"step", "loss"}...], "eval": [{"step", "loss", "macro_f1", "accuracy"}...]}`.
        path: PNG file to write.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train, evals = history.get("train", []), history.get("eval", [])
    left.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", alpha=0.8)
    left.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="validation loss")
    left.set_xlabel("optimizer step")
    left.set_ylabel("cross-entropy")
    left.legend()
    for key in ("accuracy", "macro_f1"):
        right.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=f"validation {key}")
    right.set_xlabel("optimizer step")
    right.legend()
    right.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion_matrix(matrix, labels: list[str], path: str | os.PathLike, title: str = "") -> None:
    """Counts with row-normalised shading (rows: true label, columns: predicted)."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.8 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
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


def attention_html(examples: list[dict], path: str | os.PathLike) -> None:
    """Each text with its words shaded by attention weight, as an HTML page.

    HTML rather than PNG: browsers render Chinese with the reader's fonts, matplotlib here has none.

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
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
