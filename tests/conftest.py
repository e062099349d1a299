"""Shared fixtures: a small review data set, a dozen 8-dimensional word vectors, a BERT of 2
layers and hidden size 32 and a biLM of hidden size 16 (built from configs, saved to tmp), one trained run.

Nothing is downloaded: the Hub is switched off and every cache points into pytest's tmp dirs.
"""

import contextlib
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

# Before anything imports huggingface_hub, which reads HF_HUB_OFFLINE once, at import: with the Hub
# switched off only in a fixture, a test that asks for a Hub id waits ~45 s on retries to reach it.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "train_bilstm_attention.py"
CONFIG = ROOT / "recipes" / "configs" / "word2vec_bilstm_attn.yaml"
BERT_CONFIG = ROOT / "recipes" / "configs" / "bert_bilstm_attn.yaml"
BILM_CONFIG = ROOT / "recipes" / "configs" / "bilm_bilstm_attn.yaml"

SUBJECTS = ["这部电影", "这本书", "酒店", "这款手机", "快递", "衣服", "服务", "房间", "屏幕", "耳机"]
POSITIVE = ["很好", "非常棒", "不错", "很满意", "很喜欢", "值得推荐", "很精彩", "很舒服", "很划算", "很好用"]
NEGATIVE = ["很差", "太差劲了", "让人失望", "很糟糕", "很后悔", "很难用", "是垃圾", "不值这个价", "太坑人", "要退货"]
TAILS = ["。", "！", "，下次还会再来。", "，朋友也这么说。", "，真的。", "，就这样吧。"]
VECTOR_WORDS = ["电影", "酒店", "手机", "很", "好", "差", "不错", "满意", "失望", "糟糕", "推荐", "喜欢"]


def run_processes(command: list[str], cwd, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` for a multi-process launch. Past `timeout` the
    test fails with where each process waited: every process of the launch is sent SIGUSR1 (finetune's programs
    print their threads' stacks on it), then killed; the failure shows the end of stderr."""
    import signal

    import psutil

    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        family = psutil.Process(process.pid).children(recursive=True)
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.send_signal(signal.SIGUSR1)
        time.sleep(3)
        for member in [*family, psutil.Process(process.pid)]:
            with contextlib.suppress(psutil.Error):
                member.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"still running after {timeout} s; the stacks and the end of stderr:\n{stderr[-12000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_launch(
    args: list[str], num_processes: int, tmp_path: Path, script: Path = RECIPE, mixed_precision: str = "no"
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--dynamo_backend", "no",
               "--mixed_precision", mixed_precision, "--num_processes", str(num_processes)]  # fmt: skip
    # On a machine without GPUs, --multi_gpu starts CPU processes that talk over gloo.
    command += ["--multi_gpu", "--main_process_port", str(free_port())] if num_processes > 1 else ["--cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return run_processes([*command, str(script), *args], tmp_path, env)


def free_port() -> int:
    """A TCP port free now, for `accelerate launch --main_process_port`: the suite runs in parallel
    (pytest -n 2), and two multi-process runs on accelerate's default port would collide."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_reviews(n_per_label: int, seed: int) -> list[tuple[str, str]]:
    """Short templated reviews whose label follows from the sentiment word."""
    rng = random.Random(seed)
    rows = []
    for label, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
        combos = [(s, w, t) for s in SUBJECTS for w in words for t in TAILS]
        rows += [(s + w + t, label) for s, w, t in rng.sample(combos, n_per_label)]
    rng.shuffle(rows)
    return rows


# Review aspects: a clause per aspect the review talks about, so a model can learn each label.
ASPECTS = {
    "物流": ["快递很快", "物流太慢", "送货及时", "包装破损"],
    "质量": ["质量很好", "做工粗糙", "材料结实", "用了就坏"],
    "价格": ["价格便宜", "太贵了", "性价比高", "价格实惠"],
}
FILLER = ["这次购物", "总的来说", "朋友推荐的", "第二次买了", "客服态度一般", "颜色好看"]


def make_aspect_reviews(n: int, seed: int) -> list[dict]:
    """`n` reviews, each with each aspect at random (none at all included), labelled by the aspects."""
    rng, rows = random.Random(seed), []
    for i in range(n):
        labels = [aspect for aspect in ASPECTS if rng.random() < 0.45]
        parts = [rng.choice(ASPECTS[aspect]) for aspect in labels] + [rng.choice(FILLER)]
        rng.shuffle(parts)
        rows.append({"text": "，".join(parts) + f"。编号{seed}-{i}", "label": labels})
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# Genuine (not templated) reviews, for the data-reading tests.
GENUINE_POSITIVE = [
    "这本书写得很好，值得一读",
    "酒店服务周到，房间干净",
    "物流很快，包装完好",
    "质量不错，性价比高",
    "屏幕清晰，运行流畅",
    "早餐丰富，位置方便",
    "作者文笔细腻，故事感人",
    "客服态度好，问题很快解决",
    "电池耐用，充电也快",
    "环境安静，睡得很好",
    "价格实惠，下次还来",
    "翻译地道，读来顺畅",
    "做工精致，手感很好",
    "孩子很喜欢这本绘本",
    "前台热情，入住顺利",
]
GENUINE_NEGATIVE = [
    "纸张太差，错字很多",
    "房间有异味，隔音差",
    "发货太慢，等了两周",
    "用了三天就坏了",
    "系统卡顿，经常死机",
    "服务员态度恶劣",
    "内容空洞，浪费时间",
    "退货流程太麻烦",
    "噪音很大，没法休息",
    "价格虚高，不值这个钱",
    "说明书看不懂",
    "卫生间很脏，毛巾发黄",
    "键盘手感很差",
    "快递员把包裹摔坏了",
    "空调不制冷，热得睡不着",
]
GENUINE_REVIEWS = [(text, "positive") for text in GENUINE_POSITIVE] + [(text, "negative") for text in GENUINE_NEGATIVE]


def load_splits(train_file=None, validation_file=None, test_file=None, *, seed=42, **fields):
    """`load_data` on the `DataArguments` of these fields (the recipe's flags): the tests' short form."""
    from finetune.config.arguments import DataArguments
    from finetune.data.loading import load_data

    files = {"train_file": train_file, "validation_file": validation_file, "test_file": test_file}
    return load_data(DataArguments(**files, **fields), seed)


def write_table(path, rows, header=("text", "label"), encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def texts_of(table):
    return table["text"][:]


@pytest.fixture(scope="module")
def quiet_datasets():
    """No `datasets` progress bars in a module's tests."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if was_enabled:
        datasets.enable_progress_bars()


@pytest.fixture(scope="module")
def genuine_reviews_csv(tmp_path_factory):
    return write_table(tmp_path_factory.mktemp("reviews") / "reviews.csv", GENUINE_REVIEWS)


@pytest.fixture(scope="session", autouse=True)
def offline(tmp_path_factory):
    """No Hub, and caches (word2vec, evaluate modules) in a throwaway directory."""
    cache = tmp_path_factory.mktemp("cache")
    saved = dict(os.environ)
    os.environ.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        FINETUNE_CACHE=str(cache / "finetune"),
        HF_MODULES_CACHE=str(cache / "modules"),
        TOKENIZERS_PARALLELISM="false",
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", make_reviews(150, seed=0))


@pytest.fixture(scope="module")
def review_splits(quiet_datasets):
    """30 training, 5 validation and 5 test templated reviews as a DatasetDict, labels 0 (negative) / 1."""
    from datasets import Dataset, DatasetDict

    labels = ["negative", "positive"]

    def split(n, seed):
        rows = make_reviews(n, seed)
        return Dataset.from_dict({"text": [t for t, _ in rows], "label": [labels.index(y) for _, y in rows]})

    return DatasetDict({"train": split(30, 0), "validation": split(5, 1), "test": split(5, 2)})


@pytest.fixture(scope="session")
def tiny_vectors(tmp_path_factory) -> Path:
    """A dozen 8-dimensional vectors in word2vec text format, with the header line."""
    path = tmp_path_factory.mktemp("vectors") / "tiny.vec"
    vectors = np.random.default_rng(0).normal(0, 0.5, size=(len(VECTOR_WORDS), 8))
    lines = [f"{len(VECTOR_WORDS)} 8"] + [
        word + " " + " ".join(f"{v:.5f}" for v in vector) for word, vector in zip(VECTOR_WORDS, vectors)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_recipe_args(train_file: Path, vectors: Path, output_dir: Path, *extra: str) -> list[str]:
    """Recipe flags for a run of a few seconds on the tiny data."""
    return [
        "--config", str(CONFIG),
        "--train_file", str(train_file),
        "--word_vectors", str(vectors),
        "--output_dir", str(output_dir),
        "--lstm_hidden_size", "16",
        "--attention_dim", "16",
        "--num_train_epochs", "6",
        "--per_device_train_batch_size", "16",
        "--learning_rate", "0.01",
        "--logging_steps", "5",
        "--min_freq", "1",
        "--word_dropout", "0",
        "--early_stopping_patience", "0",
        # the demo's epsilon 1 is ~10% of a review's vectors; these texts are a few words of norm ~1.4
        "--adversarial_epsilon", "0.1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def trained_run(reviews_csv, tiny_vectors, tmp_path_factory, offline) -> Path:
    """One real run of the recipe (one process), shared by the tests that need a trained model."""
    sys.path.insert(0, str(ROOT))
    from finetune.recipes.train_bilstm_attention import main

    output_dir = tmp_path_factory.mktemp("run")
    main(tiny_recipe_args(reviews_csv, tiny_vectors, output_dir))
    return output_dir


def review_texts() -> list[str]:
    return [text for text, _ in make_reviews(150, seed=0)]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A BertForMaskedLM of 2 layers and hidden size 32 over the reviews' characters, untrained."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from finetune.pretrain.corpus import build_char_tokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = build_char_tokenizer(review_texts(), min_freq=1)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_unigram_tokenizer(texts: list[str], vocab_size: int = 400):
    """A SentencePiece-style Unigram tokenizer laid out as multilingual-e5 / XLM-R's: <s>=0 <pad>=1 </s>=2
    <unk>=3, Metaspace word starts, `<s> A </s>`; trained here on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=64,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_e5(tmp_path_factory) -> Path:
    """A BertModel of 2 layers and hidden size 32 with a SentencePiece (Unigram) tokenizer of 400 pieces, laid out
    as multilingual-e5-small is (no pooler, XLM-R's special tokens, PreTrainedTokenizerFast), untrained."""
    import torch
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-e5")
    tokenizer = build_unigram_tokenizer(review_texts() + [text for text, _ in make_reviews(150, seed=1)])
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bilm(tmp_path_factory) -> Path:
    """A BiLMForLanguageModeling of hidden size 16 (projection 8, 2 layers) over the reviews' characters."""
    import torch

    from finetune.models.bilstm_attention import BiLMConfig, BiLMForLanguageModeling
    from finetune.pretrain.corpus import build_char_tokenizer

    path = tmp_path_factory.mktemp("tiny-bilm")
    tokenizer = build_char_tokenizer(review_texts(), min_freq=1)
    config = BiLMConfig(
        vocab_size=len(tokenizer), projection_size=8, hidden_size=16, num_layers=2, pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(0)
    BiLMForLanguageModeling(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ##### Untrained models of each encoder kind (tests of the model, ONNX export) #####

MAX_LENGTH = 12
HEAD = {"lstm_hidden_size": 8, "attention_dim": 8, "max_length": MAX_LENGTH, "classifier_dropout": 0.0}
HEAD_LABELS = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


def word_vector_model(path):
    """A word-vector model (char vectors too, attention+mean pooling) over the reviews' words, untrained."""
    import torch

    from finetune import BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification, JiebaTokenizer

    segmenter = JiebaTokenizer(vocab=["[PAD]", "[UNK]"])
    words = sorted({word for text in review_texts()[:40] for word in segmenter.segment(text)})
    tokenizer = JiebaTokenizer(vocab=["[PAD]", "[UNK]", *words], model_max_length=MAX_LENGTH)
    config = BiLSTMAttentionConfig(
        vocab_size=len(tokenizer), embedding_dim=8, char_vocab_size=20, pooling="attention+mean", **HEAD, **HEAD_LABELS
    )
    torch.manual_seed(0)
    model = BiLSTMAttentionForSequenceClassification(config)
    model.encoder.token_chars.random_(0, 20)
    return model, tokenizer


def pretrained_encoder_model(encoder_type, encoder_dir):
    """A model over a saved encoder (`tiny_bert`, `tiny_bilm`), attention+max pooling, untrained."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from finetune import BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    encoder_config = AutoConfig.from_pretrained(encoder_dir).to_dict()
    config = BiLSTMAttentionConfig(
        encoder_type=encoder_type, encoder_config=encoder_config, encoder_layers=1 + (encoder_type == "transformer"),
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, pooling="attention+max", **HEAD, **HEAD_LABELS,
    )  # fmt: skip
    torch.manual_seed(0)
    return BiLSTMAttentionForSequenceClassification(config), tokenizer


def encoder_recipe_args(config: Path, train_file: Path, encoder: Path, output_dir: Path, *extra: str) -> list[str]:
    """Recipe flags for a few-second run of a pretrained-encoder config on the tiny data."""
    return [
        "--config", str(config),
        "--train_file", str(train_file),
        "--model_name_or_path", str(encoder),
        "--output_dir", str(output_dir),
        "--lstm_hidden_size", "16",
        "--attention_dim", "16",
        "--num_train_epochs", "2",
        "--per_device_train_batch_size", "16",
        "--logging_steps", "5",
        "--early_stopping_patience", "0",
        *extra,
    ]  # fmt: skip


PIPELINE_SCRIPT = """
import json, sys
import finetune  # registers the model with the Auto classes
from transformers import pipeline
classifier = pipeline("text-classification", model=sys.argv[1])
print(json.dumps(classifier(json.loads(sys.argv[2]), top_k=None)))
"""


def run_pipeline(model, texts, script: str = PIPELINE_SCRIPT, env: dict | None = None, cwd=None):
    """`script` (default: `pipeline()` with finetune imported) in a new Python process for `model` (a
    directory or a Hub id): what it prints last, as JSON (labels and scores of every class, per text)."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(model), json.dumps(texts, ensure_ascii=False)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def in_process_scores(model_dir, texts):
    """The same scores computed here, one text at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    scores = []
    for text in texts:
        inputs = tokenizer(text, return_tensors="pt")  # as pipeline() calls it: the model cuts long texts
        inputs.pop("token_type_ids", None)
        with torch.no_grad():
            probs = model(**inputs).logits.softmax(-1)[0]
        scores.append({model.config.id2label[i]: p.item() for i, p in enumerate(probs)})
    return scores


# `finetune` (and the recipes) cannot be imported here: only torch, transformers and the segmenter.
WITHOUT_FINETUNE = """
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("finetune", "recipes"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Blocked())
try:
    import finetune
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("finetune is importable")
from transformers import pipeline

classifier = pipeline("text-classification", model=sys.argv[1], trust_remote_code=True)
modules = {type(classifier.model).__module__, type(classifier.tokenizer).__module__}
scores = classifier(json.loads(sys.argv[2]), top_k=None)
print(json.dumps({"modules": sorted(modules), "scores": scores}))
"""


@pytest.fixture(scope="module")
def mixed_texts():
    """Templated and genuine reviews, empty and very long texts, a text holding [UNK]: 103 in all."""
    genuine = [text for text, _ in GENUINE_REVIEWS]
    templated = [text for text, _ in make_reviews(35, seed=3)]
    return [*templated[:30], *genuine, "", "很" * 400, "[UNK]这部电影很好", *templated[30:]]


@pytest.fixture
def accelerator():
    """A one-process CPU `Accelerator`, its shared state reset before and after (a test's own)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def assert_same_run(output_dir: Path, results: dict, reference_dir: Path, reference: dict, steps: int, files) -> None:
    """A resumed run ended as the uninterrupted one: the same metrics and history, `steps` steps, and `files` (paths
    in the run directory, safetensors) equal tensor for tensor."""
    import torch
    from safetensors.torch import load_file

    for key in ("test_accuracy", "test_macro_f1", "validation_macro_f1", "best_step", "test_loss"):
        assert results[key] == reference[key], key
    assert results["history"]["eval"] == reference["history"]["eval"]
    assert results["train_steps"] == reference["train_steps"] == steps
    for name in files:
        got, want = load_file(output_dir / name), load_file(reference_dir / name)
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), (name, key)


def as_earlier_layout(run_dir: Path) -> Path:
    """Lays a run directory out as finetune did before the Trainer's layout: the model (and its card) in best/,
    checkpoints in checkpoints/step-K; returns it."""
    from finetune.files import MODEL_RECORD, saved_model_files

    (run_dir / "best").mkdir()
    for name in [*saved_model_files(run_dir), "README.md"]:
        os.replace(run_dir / name, run_dir / "best" / name)
    (run_dir / MODEL_RECORD).unlink()
    (run_dir / "checkpoints").mkdir()
    for checkpoint in run_dir.glob("checkpoint-*"):
        os.replace(checkpoint, run_dir / "checkpoints" / checkpoint.name.replace("checkpoint-", "step-"))
    return run_dir
