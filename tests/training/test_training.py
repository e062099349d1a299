"""The training step's parts (finetune.training.optimization, .regularization) and prediction over a loader
(finetune.evaluation.metrics): early stopping, optimizer groups, atomic writes."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from finetune import BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification, JiebaTokenizer
from finetune.data.features import encode_splits, eval_dataloader, segment_splits
from finetune.evaluation.metrics import predict
from finetune.files import save_pretrained_atomic, write_json_atomic, write_text_atomic
from finetune.training.loop import EarlyStopping
from finetune.training.optimization import count_parameters, create_optimizer
from finetune.training.regularization import EmbeddingAdversary

VOCAB = ["[PAD]", "[UNK]", "这部", "电影", "很", "好", "差", "。", "！", "酒店", "服务"]
TEXTS = ["这部电影很好。", "酒店很差！", "服务", "这部电影很好，酒店很差。", "电影", "酒店服务很好！", "差", "很好"]
LABELS = [1, 0, 1, 0, 1, 1, 0, 2]
ID2LABEL = {0: "negative", 1: "positive", 2: "neutral"}


@pytest.fixture
def tokenizer():
    return JiebaTokenizer(vocab=VOCAB, model_max_length=32)


def tiny_model(freeze_embeddings=False, **config_kwargs):
    torch.manual_seed(0)
    config = BiLSTMAttentionConfig(
        **config_kwargs,
        vocab_size=len(VOCAB),
        embedding_dim=4,
        lstm_hidden_size=3,
        attention_dim=5,
        freeze_embeddings=freeze_embeddings,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    return BiLSTMAttentionForSequenceClassification(config)


# ##### EarlyStopping #####


def test_early_stopping_counts_evaluations_without_a_new_best():
    stopping = EarlyStopping(patience=2)
    assert stopping.update(0.5) is True and stopping.best == 0.5
    assert stopping.update(0.4) is False and not stopping.should_stop
    assert stopping.update(0.5) is False  # equal is not better
    assert stopping.should_stop and stopping.bad_evaluations == 2


def test_early_stopping_new_best_resets_patience():
    stopping = EarlyStopping(patience=2)
    stopping.update(0.5)
    stopping.update(0.4)
    assert stopping.update(0.6) is True
    assert stopping.bad_evaluations == 0 and stopping.best == 0.6
    stopping.update(0.1)
    assert not stopping.should_stop
    stopping.update(0.1)
    assert stopping.should_stop


def test_early_stopping_patience_zero_never_stops():
    stopping = EarlyStopping(patience=0)
    stopping.update(1.0)
    for _ in range(20):
        assert stopping.update(0.0) is False
    assert not stopping.should_stop and stopping.best == 1.0


def test_early_stopping_first_value_is_a_best_even_when_negative():
    stopping = EarlyStopping(patience=1)
    assert stopping.update(-5.0) is True
    assert stopping.update(-6.0) is False and stopping.should_stop


# ##### create_optimizer / count_parameters #####


def group_names(model, optimizer):
    names = {id(p): name for name, p in model.named_parameters()}
    return [{names[id(p)] for p in group["params"]} for group in optimizer.param_groups]


def test_optimizer_groups():
    model = tiny_model()
    optimizer = create_optimizer(model, learning_rate=1e-2, weight_decay=0.1, embedding_learning_rate=1e-3)
    groups = group_names(model, optimizer)
    assert len(groups) == 3
    by_lr_decay = {(g["lr"], g["weight_decay"]): names for g, names in zip(optimizer.param_groups, groups, strict=True)}

    assert by_lr_decay[(1e-3, 0.0)] == {"encoder.embeddings.weight"}
    no_decay = by_lr_decay[(1e-2, 0.0)]
    decay = by_lr_decay[(1e-2, 0.1)]
    assert no_decay and all("bias" in name for name in no_decay)
    assert {"classifier.bias", "head.attention.projection.bias", "head.lstm.bias_ih_l0"} <= no_decay
    assert decay and not any("bias" in name for name in decay)
    assert {"classifier.weight", "head.lstm.weight_ih_l0", "head.attention.context.weight"} <= decay
    # every trainable parameter in exactly one group
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in model.named_parameters())


def test_optimizer_embeddings_default_to_the_learning_rate():
    model = tiny_model()
    optimizer = create_optimizer(model, learning_rate=5e-3, weight_decay=0.01)
    lrs = {
        frozenset(names): g["lr"]
        for g, names in zip(optimizer.param_groups, group_names(model, optimizer), strict=True)
    }
    assert lrs[frozenset({"encoder.embeddings.weight"})] == 5e-3


def test_optimizer_embedding_learning_rate_zero_is_kept():
    """`embedding_learning_rate=0.0` is a rate (None means "use learning_rate"): the vectors must not move."""
    model = tiny_model()
    optimizer = create_optimizer(model, learning_rate=5e-3, weight_decay=0.01, embedding_learning_rate=0.0)
    lrs = {
        frozenset(names): g["lr"]
        for g, names in zip(optimizer.param_groups, group_names(model, optimizer), strict=True)
    }
    assert lrs[frozenset({"encoder.embeddings.weight"})] == 0.0


def test_optimizer_skips_frozen_parameters():
    model = tiny_model(freeze_embeddings=True)
    optimizer = create_optimizer(model, learning_rate=1e-2, weight_decay=0.1, embedding_learning_rate=1e-3)
    embedding = model.get_input_embeddings().weight
    assert all(p is not embedding for g in optimizer.param_groups for p in g["params"])
    assert len(optimizer.param_groups) == 2  # no empty embeddings group
    assert all(p.requires_grad for g in optimizer.param_groups for p in g["params"])


def test_optimizer_step_leaves_frozen_embeddings_unchanged():
    model = tiny_model(freeze_embeddings=True)
    before = model.get_input_embeddings().weight.clone()
    optimizer = create_optimizer(model, learning_rate=1e-1, weight_decay=0.1)
    ids = torch.tensor([[2, 3, 4, 5]])
    model(ids, labels=torch.tensor([1])).loss.backward()
    optimizer.step()
    assert torch.equal(model.get_input_embeddings().weight, before)


# ##### EmbeddingAdversary #####

NO_DROPOUT = {"embedding_dropout": 0.0, "word_dropout": 0.0, "classifier_dropout": 0.0}
BATCH = {
    "input_ids": torch.tensor([[2, 3, 4, 5, 7], [9, 4, 6, 8, 0], [10, 0, 0, 0, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]]),
    "labels": torch.tensor([1, 0, 2]),
}


def embedding_gradients(model, batch):
    """d(mean loss)/d(embedded tokens), found without the adversary: the test's own hook."""
    embedded = []

    def keep(module, inputs, output):
        output.retain_grad()
        embedded.append(output)

    handle = model.get_input_embeddings().register_forward_hook(keep)
    model(**batch).loss.backward()
    handle.remove()
    model.zero_grad()
    return embedded[0].grad


@pytest.mark.parametrize("freeze_embeddings", [False, True])
def test_adversarial_loss_rises_by_epsilon_times_each_texts_gradient_norm(freeze_embeddings):
    """First order: moving text i by eps along g_i/|g_i| raises the mean loss by eps * sum_i |g_i|."""
    model = tiny_model(freeze_embeddings, **NO_DROPOUT).train()
    model.get_input_embeddings().weight.requires_grad_(True)
    grads = embedding_gradients(model, BATCH)
    model.get_input_embeddings().weight.requires_grad_(not freeze_embeddings)
    epsilon = 1e-3
    adversary = EmbeddingAdversary(model, epsilon)

    loss = model(**BATCH).loss
    loss.backward()
    adversarial = adversary.loss(model, BATCH)

    expected_rise = epsilon * grads.flatten(1).norm(dim=1).sum()
    assert expected_rise > 0
    assert (adversarial - loss).item() == pytest.approx(expected_rise.item(), rel=2e-2)
    # a random move of the same size per text changes the loss far less
    torch.manual_seed(1)
    noise = torch.randn_like(grads)
    noise = epsilon * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1)
    handle = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out + noise)
    with torch.no_grad():
        random_move = model(**BATCH).loss
    handle.remove()
    assert abs((random_move - loss).item()) < 0.5 * expected_rise.item()
    if freeze_embeddings:
        adversarial.backward()
        assert model.get_input_embeddings().weight.grad is None


def test_adversarial_gradient_is_added_to_the_clean_one():
    model = tiny_model(**NO_DROPOUT).train()
    adversary = EmbeddingAdversary(model, epsilon=0.5)
    model(**BATCH).loss.backward()
    clean = {name: p.grad.clone() for name, p in model.named_parameters()}
    adversary.loss(model, BATCH).backward()
    total = {name: p.grad.clone() for name, p in model.named_parameters()}
    # the adversarial pass alone, from fresh gradients (no dropout: the clean pass is the same again)
    model.zero_grad()
    model(**BATCH).loss.backward()
    model.zero_grad()
    adversary.loss(model, BATCH).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(total[name], clean[name] + p.grad, rtol=1e-5, atol=1e-7)
    for weight in (model.classifier.weight, model.get_input_embeddings().weight):
        assert weight.grad.abs().sum() > 0  # the adversarial pass has gradients of its own


def test_adversary_leaves_evaluation_alone_and_can_be_removed():
    model = tiny_model().eval()
    with torch.no_grad():
        before = model(**BATCH).logits
    adversary = EmbeddingAdversary(model, epsilon=10.0)
    with torch.no_grad():
        assert torch.equal(model(**BATCH).logits, before)
    with pytest.raises(RuntimeError, match="needs a training forward and backward pass first"):
        adversary.loss(model.train(), BATCH)
    adversary.remove()
    model(**BATCH).loss.backward()
    with pytest.raises(RuntimeError, match="needs a training forward and backward pass first"):
        adversary.loss(model, BATCH)


@pytest.mark.parametrize("interval", [1, 3])
def test_training_step_runs_the_adversarial_pass_on_one_optimizer_step_in_interval(accelerator, interval):
    """Forwards counted per batch (2 batches make an optimizer step): two on the batches of a perturbed
    step (the clean and the adversarial pass), one elsewhere."""
    from types import SimpleNamespace

    from finetune.training.loop import TrainingStep

    accelerator.gradient_accumulation_steps = 2
    model = tiny_model(**NO_DROPOUT).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: every step sees the same model
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    training = SimpleNamespace(max_grad_norm=1.0, ema_decay=0.0, adversarial_epsilon=0.5, adversarial_interval=interval)
    step = TrainingStep(accelerator, model, optimizer, scheduler, training)
    forwards = []
    handle = model.get_input_embeddings().register_forward_hook(lambda *_: forwards.append(1))
    per_step = []
    for optimizer_step in range(6):
        for _ in range(2):  # accumulation
            before = len(forwards)
            step(model, BATCH, optimizer_step)
            per_step.append(len(forwards) - before)
    handle.remove()
    step.close()
    expected = [2 if (i // 2) % interval == 0 else 1 for i in range(12)]
    assert per_step == expected
    assert sum(per_step) == 12 + 12 // interval


def test_count_parameters():
    model = tiny_model()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total)
    frozen = tiny_model(freeze_embeddings=True)
    assert count_parameters(frozen) == (total - len(VOCAB) * 4, total)


# ##### atomic writes #####


def test_write_json_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_json_atomic({"accuracy": 0.5, "label": "正面"}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.5, "label": "正面"}
    assert "正面" in path.read_text(encoding="utf-8")  # not \u escapes
    write_json_atomic({"accuracy": 0.75}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.75}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_write_text_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "README.md"
    write_text_atomic("# 第一版\n" * 100, path)
    write_text_atomic("# 第二版\n", path)
    assert path.read_text(encoding="utf-8") == "# 第二版\n"
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


def assert_same_model(directory, model, tokenizer):
    reloaded = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(directory)
    assert isinstance(reloaded, BiLSTMAttentionForSequenceClassification)
    assert isinstance(reloaded_tokenizer, JiebaTokenizer)
    assert reloaded.config.id2label == ID2LABEL
    batch = reloaded_tokenizer(TEXTS, padding=True, return_tensors="pt")
    torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits)


def test_save_pretrained_atomic_writes_a_loadable_model(tmp_path, tokenizer):
    model = tiny_model()
    save_pretrained_atomic(model, tokenizer, tmp_path / "best")
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert (tmp_path / "best" / "vocab.txt").is_file()
    assert_same_model(tmp_path / "best", model, tokenizer)
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_save_pretrained_atomic_overwrites(tmp_path, tokenizer):
    save_pretrained_atomic(tiny_model(), tokenizer, tmp_path / "best")
    (tmp_path / "best" / "stale.txt").write_text("from the previous save")
    newer = tiny_model()
    with torch.no_grad():
        newer.classifier.bias.fill_(3.0)
    save_pretrained_atomic(newer, tokenizer, tmp_path / "best")
    assert not (tmp_path / "best" / "stale.txt").exists()
    assert_same_model(tmp_path / "best", newer, tokenizer)
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_save_pretrained_atomic_failure_keeps_previous_and_cleans_up(tmp_path, tokenizer, monkeypatch):
    previous = tiny_model()
    save_pretrained_atomic(previous, tokenizer, tmp_path / "best")
    before = {p.name: p.read_bytes() for p in (tmp_path / "best").iterdir() if p.is_file()}

    broken = tiny_model()

    def save_half_then_fail(directory, *args, **kwargs):
        (directory / "model.safetensors").write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(broken, "save_pretrained", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained_atomic(broken, tokenizer, tmp_path / "best")

    after = {p.name: p.read_bytes() for p in (tmp_path / "best").iterdir() if p.is_file()}
    assert after == before  # the previous model is untouched
    assert_same_model(tmp_path / "best", previous, tokenizer)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "best")
    assert leftovers == [], f"staging directories left behind: {leftovers}"


# ##### predict #####


def test_predict_probabilities_labels_and_loss(accelerator, tokenizer):
    splits = DatasetDict({"test": Dataset.from_dict({"text": TEXTS, "label": LABELS})})
    dataset = encode_splits(segment_splits(splits, tokenizer), tokenizer, 32)["test"]
    loader, order = eval_dataloader(dataset, tokenizer, batch_size=3)
    model = tiny_model().eval()
    model, loader = accelerator.prepare(model, loader)

    probabilities, labels, loss = predict(model, loader, accelerator)

    assert probabilities.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=0, atol=1e-6)
    assert labels.tolist() == [LABELS[i] for i in order]  # in loader order, each row once
    assert model.training  # predict hands the model back in training mode

    model.eval()
    with torch.no_grad():
        alone = [model(**tokenizer([TEXTS[i]], return_tensors="pt")).logits[0] for i in order]
    expected = torch.stack(alone).softmax(-1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    expected_loss = -np.log(expected[np.arange(len(TEXTS)), labels]).mean()
    assert loss == pytest.approx(expected_loss, rel=1e-5)
