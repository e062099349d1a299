"""finetune.evaluation.reports: PNG plots written whole, and the attention page."""

import re

import pytest

from finetune.evaluation import reports
from finetune.evaluation.reports import attention_html, plot_confusion_matrix, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

HISTORY = {
    "train": [{"step": s, "loss": 1.0 / s} for s in range(1, 21)],
    "eval": [{"step": s, "loss": 0.8 / s, "macro_f1": 0.5 + s / 50, "accuracy": 0.55 + s / 50} for s in (5, 10, 20)],
}


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_MAGIC)


def test_plot_training_curves_writes_a_png(tmp_path):
    path = tmp_path / "training_curves.png"
    plot_training_curves(HISTORY, path)
    assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["training_curves.png"]


@pytest.mark.parametrize(
    "multi_label, names",
    [
        (False, ["train loss", "validation cross-entropy", "validation accuracy", "validation macro-F1"]),
        (True, ["train loss", "validation binary cross-entropy", "validation exact match", "validation macro-F1"]),
    ],
)
def test_training_curves_name_what_they_show(multi_label, names, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(reports, "_save", lambda fig, path: figures.append(fig))
    plot_training_curves(HISTORY, tmp_path / "curves.png", multi_label=multi_label)
    left, right = figures[0].axes
    assert [text.get_text() for ax in (left, right) for text in ax.get_legend().get_texts()] == names
    assert left.get_ylabel() == "loss"


def drawn_curves(history, tmp_path, monkeypatch) -> dict:
    """{legend label: the points of its series} on each axis, as `plot_training_curves` draws them."""
    figures = []
    monkeypatch.setattr(reports, "_save", lambda fig, path: figures.append(fig))
    plot_training_curves(history, tmp_path / "curves.png")
    legends = [ax.get_legend() for ax in figures[0].axes]
    labels = [[text.get_text() for text in legend.get_texts()] if legend else [] for legend in legends]
    drawn = [{line.get_label(): line for line in ax.get_lines()} for ax in figures[0].axes]
    assert [list(lines) for lines in drawn] == labels  # the legend names what is drawn, nothing else
    return [{label: (list(line.get_xdata()), line.get_linestyle(), line.get_marker()) for label, line in lines.items()}
            for lines in drawn]  # fmt: skip


def test_training_curves_leave_out_empty_series_and_mark_single_points(tmp_path, monkeypatch):
    # A run of one evaluation, without a logged training loss (as before the loop logged from step 1)
    one_eval = {"train": [], "eval": [{"step": 4, "loss": 0.6, "macro_f1": 0.4, "accuracy": 0.5}]}
    left, right = drawn_curves(one_eval, tmp_path, monkeypatch)
    assert left == {"validation cross-entropy": ([4], "None", "o")}
    assert right == {"validation accuracy": ([4], "None", "o"), "validation macro-F1": ([4], "None", "o")}

    short = {"train": [{"step": 1, "loss": 0.7}, {"step": 4, "loss": 0.6}], "eval": one_eval["eval"]}
    left, right = drawn_curves(short, tmp_path, monkeypatch)
    assert left == {"train loss": ([1, 4], "-", "None"), "validation cross-entropy": ([4], "None", "o")}

    left, right = drawn_curves({"train": [{"step": 1, "loss": 0.7}], "eval": []}, tmp_path, monkeypatch)
    assert left == {"train loss": ([1], "None", "o")} and right == {}


def test_plot_training_curves_replaces_and_accepts_str_path(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    plot_training_curves({"train": HISTORY["train"][:3], "eval": []}, str(path))
    assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    path = tmp_path / "confusion_matrix.png"
    plot_confusion_matrix([[5, 1, 0], [2, 7, 1], [0, 0, 0]], ["negative", "neutral", "positive"], path, title="test")
    assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["confusion_matrix.png"]


EXAMPLES = [
    {"tokens": ["这部", "<b>", "电影", "很", "好"], "weights": [0.1, 0.05, 0.2, 0.15, 0.5], "label": "positive",
     "score": 0.9312, "true_label": "positive"},
    {"tokens": ["差", "&", "劲"], "weights": [0.6, 0.1, 0.3], "label": "<negative>", "score": 0.51},
    {"tokens": [], "weights": [], "label": "neutral", "score": 0.4},
]  # fmt: skip


def test_attention_html(tmp_path):
    path = tmp_path / "attention.html"
    attention_html(EXAMPLES, path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<meta charset='utf-8'>" in page
    assert page.count("<div class='row'>") == len(EXAMPLES)
    assert [p.name for p in tmp_path.iterdir()] == ["attention.html"]

    # tokens and labels are escaped, never markup
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert "&amp;" in page
    assert "&lt;negative&gt;" in page and "<negative>" not in page
    assert "(0.931)" in page and "true: positive" in page


def test_attention_html_shading_is_relative_to_the_max(tmp_path):
    path = tmp_path / "attention.html"
    attention_html(EXAMPLES, path)
    page = path.read_text(encoding="utf-8")
    spans = re.findall(
        r'<span title="([0-9.]+)" style="background: rgba\(220, 50, 47, ([0-9.]+)\)">([^<]*)</span>', page
    )
    assert len(spans) == 8  # one span per token
    shading = {token: float(opacity) for _, opacity, token in spans}
    assert shading["好"] == 1.00 and shading["差"] == 1.00  # each text's heaviest word
    assert shading["电影"] == 0.40 and shading["&lt;b&gt;"] == 0.10
    assert shading["劲"] == 0.50
    assert 'title="0.500"' in page
    assert sum(opacity == "1.00" for _, opacity, _ in spans) == 2


def test_attention_html_all_zero_weights(tmp_path):
    path = tmp_path / "attention.html"
    attention_html([{"tokens": ["很", "好"], "weights": [0.0, 0.0], "label": "positive", "score": 0.5}], path)
    assert path.read_text(encoding="utf-8").count("rgba(220, 50, 47, 0.00)") == 2


def draw_chinese_labels(path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion_matrix([[8, 1, 1], [0, 9, 1], [2, 0, 8]], ["书籍", "平板", "手机"], path, title="测试集")
        plot_training_curves(HISTORY, path.with_name("curves.png"))
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_chinese_labels_are_drawn_with_a_font_that_has_them(tmp_path):
    from finetune.evaluation.reports import chinese_font_family

    assert chinese_font_family() is not None
    assert draw_chinese_labels(tmp_path / "confusion_matrix.png") == []
    assert_png(tmp_path / "confusion_matrix.png")


def test_without_a_chinese_font_the_labels_would_be_boxes(tmp_path, monkeypatch):
    """What the test above guards against: matplotlib's own font warns of every missing glyph."""
    import finetune.evaluation.reports as reports

    monkeypatch.setattr(
        reports, "_figure_style", lambda: {"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}
    )
    missing = draw_chinese_labels(tmp_path / "confusion_matrix.png")
    assert any("20070" in message or "书" in message for message in missing), missing


@pytest.mark.parametrize("stored", [False, True])
def test_training_curves_mark_the_saved_models_score_with_its_tfidf_branch(stored, tmp_path, monkeypatch):
    # the curves are the BiLSTM's alone; the saved model mixes in the branch and scores otherwise on validation
    scores = {0.0: 0.70, 0.5: 0.74, 1.0: 0.66}
    results = {"best_step": 10, "history": HISTORY,
               "tfidf_branch": {"mix_weight": 0.5, "validation_macro_f1_by_mix_weight": scores}}  # fmt: skip
    if stored:  # read back from metrics.json: the shares are strings
        results["tfidf_branch"]["validation_macro_f1_by_mix_weight"] = {str(k): v for k, v in scores.items()}
    assert reports.branch_mark(results) == (10, "macro_f1", 0.74)
    assert reports.branch_mark({"best_step": 10, "history": HISTORY}) is None
    figures = []
    monkeypatch.setattr(reports, "_save", lambda fig, path: figures.append(fig))
    plot_training_curves(HISTORY, tmp_path / "curves.png", branch=reports.branch_mark(results))
    right = figures[0].axes[1]
    assert right.get_legend().get_texts()[-1].get_text() == "saved model (+ TF-IDF branch), macro-F1 0.7400"
    mark = right.get_lines()[-1]
    assert list(mark.get_xdata()) == [10] and list(mark.get_ydata()) == [0.74]
