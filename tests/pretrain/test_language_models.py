"""The biLM itself, the pretraining corpus, and both pretraining recipes run for real on a tiny corpus."""

import json

import pytest
import torch
from conftest import review_texts
from transformers import AutoModel, AutoTokenizer, BertModel

from finetune.data.tables import DataError
from finetune.models.bilstm_attention import BiLMConfig, BiLMForLanguageModeling, BiLMModel
from finetune.models.bilstm_attention.modeling_bilm import reverse_padded
from finetune.pretrain.corpus import build_char_tokenizer, read_text_corpus
from finetune.recipes import pretrain_bilm, pretrain_mlm


def tiny_bilm_model(seed=0):
    torch.manual_seed(seed)
    return BiLMModel(BiLMConfig(vocab_size=20, projection_size=6, hidden_size=10, num_layers=2, dropout=0.0)).eval()


# ##### the biLM #####


def test_reverse_padded_keeps_padding_in_place():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]).unsqueeze(-1)
    assert reverse_padded(x, torch.tensor([3, 2])).squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    assert reverse_padded(x.squeeze(-1), torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]  # ids
    states = torch.randn(3, 5, 4, requires_grad=True)
    lengths = torch.tensor([5, 1, 3])
    reversed_states = reverse_padded(states, lengths)
    for row, length in enumerate(lengths.tolist()):
        assert torch.equal(reversed_states[row, :length], states[row, :length].flip(0))
        assert torch.equal(reversed_states[row, length:], states[row, length:])
    (reversed_states * torch.arange(5.0).view(1, 5, 1)).sum().backward()  # the gradient goes back reversed
    assert states.grad[2, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0, 4.0]


def test_directions_see_only_their_side():
    """Forward states at t depend on tokens <= t only; backward states on tokens >= t only."""
    model = tiny_bilm_model()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    changed = ids.clone()
    changed[0, 4] = 11
    a, b = model(ids).hidden_states[-1], model(changed).hidden_states[-1]
    size = model.config.projection_size
    assert torch.allclose(a[0, :4, :size], b[0, :4, :size])  # forward: before the change, unchanged
    assert not torch.allclose(a[0, 4:, :size], b[0, 4:, :size])
    assert torch.allclose(a[0, 5:, size:], b[0, 5:, size:])  # backward: after the change, unchanged
    assert not torch.allclose(a[0, :5, size:], b[0, :5, size:])


def test_padded_batch_equals_one_by_one():
    model = tiny_bilm_model()
    texts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    batch = torch.zeros(3, 5, dtype=torch.long)
    for row, ids in enumerate(texts):
        batch[row, : len(ids)] = torch.tensor(ids)
    together = model(batch).hidden_states
    for row, ids in enumerate(texts):
        alone = model(torch.tensor([ids])).hidden_states
        for layer_batch, layer_alone in zip(together, alone, strict=True):
            assert torch.allclose(layer_batch[row, : len(ids)], layer_alone[0], atol=1e-6)
    assert len(together) == 3 and together[0].shape == (3, 5, 12)


def test_language_model_loss_falls_when_it_learns_a_sequence():
    torch.manual_seed(0)
    model = BiLMForLanguageModeling(BiLMConfig(vocab_size=12, projection_size=8, hidden_size=16, dropout=0.0))
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 3]] * 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = model(ids).loss.item()
    for _ in range(60):
        loss = model(ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    outputs = model(ids)
    assert first > 2.0 and outputs.loss.item() < 0.1
    assert outputs.loss.item() == pytest.approx((outputs.forward_loss + outputs.backward_loss).item() / 2)


# ##### the corpus and the character vocabulary #####


def test_read_text_corpus_from_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("第一行\n\n  第二行  \n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    # GB18030 text long enough to tell from Big5 or Korean (a three-character line would be doubtful)
    gbk_lines = ["这家餐厅的服务很好，菜也好吃", "物流太慢了，等了一个星期才到货", "屏幕显示效果清晰，电池续航也不错"]
    (tmp_path / "sub" / "b.txt").write_bytes(("\n".join(gbk_lines) + "\n").encode("gb18030"))
    (tmp_path / "notes.bin").write_bytes(b"\xff\xfe")
    assert read_text_corpus(str(tmp_path / "a.txt")) == ["第一行", "第二行"]
    assert read_text_corpus(str(tmp_path)) == ["第一行", "第二行", *gbk_lines]


def test_read_text_corpus_errors_name_the_file(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: the file has no text"):
        read_text_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_bytes("好\n".encode() + b"\x80\x80\xff\n")
    with pytest.raises(DataError, match=r"bad.txt: cannot decode.*line 2"):
        read_text_corpus(str(tmp_path / "bad.txt"))
    with pytest.raises(DataError, match="no such file"):
        read_text_corpus(str(tmp_path / "missing.txt"))


def test_char_tokenizer_reads_characters():
    tokenizer = build_char_tokenizer(["很好的手机 iPhone 15", "很差"], min_freq=1)
    assert tokenizer.tokenize("很好 iphone15") == ["很", "好", "i", "##p", "##h", "##o", "##n", "##e", "##1", "##5"]
    assert tokenizer.tokenize("糟") == ["[UNK]"]
    rare = build_char_tokenizer(["很好", "很差"], min_freq=2)
    assert rare.tokenize("很好") == ["很", "[UNK]"]


# ##### the recipes #####


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    path.write_text("\n".join(review_texts()) + "\n", encoding="utf-8")
    return path


COMMON = ["--validation_size", "0.1", "--num_train_epochs", "3", "--per_device_train_batch_size", "16",
          "--logging_steps", "5", "--min_char_freq", "1"]  # fmt: skip


def test_pretrain_bilm_reports_perplexity_and_saves_a_reusable_checkpoint(corpus_file, tmp_path):
    output_dir = tmp_path / "bilm"
    results = pretrain_bilm.main(
        [
            "--corpus",
            str(corpus_file),
            "--output_dir",
            str(output_dir),
            "--projection_size",
            "16",
            "--hidden_size",
            "32",
            "--learning_rate",
            "0.01",
            *COMMON,
            "--num_train_epochs",
            "8",
        ]  # fmt: skip
    )
    perplexities = [row["perplexity"] for row in results["history"]["eval"]]
    assert len(perplexities) == 8
    # templated reviews are very predictable: far below the uniform perplexity over their ~90 characters
    assert perplexities[-1] < perplexities[0] and perplexities[-1] < 10
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["best_validation_perplexity"] == pytest.approx(min(perplexities))
    assert isinstance(AutoModel.from_pretrained(output_dir), BiLMModel)
    assert AutoTokenizer.from_pretrained(output_dir).tokenize("很好") == ["很", "好"]


def test_pretrain_mlm_from_scratch_then_continue(corpus_file, tmp_path):
    scratch = tmp_path / "scratch"
    small = ["--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2",
             "--intermediate_size", "64"]  # fmt: skip
    results = pretrain_mlm.main(
        ["--corpus", str(corpus_file), "--output_dir", str(scratch), "--learning_rate", "0.005", *small, *COMMON]
    )
    perplexities = [row["perplexity"] for row in results["history"]["eval"]]
    assert perplexities[-1] < perplexities[0]
    encoder = AutoModel.from_pretrained(scratch)
    assert isinstance(encoder, BertModel) and encoder.config.num_hidden_layers == 2
    vocab = AutoTokenizer.from_pretrained(scratch).get_vocab()
    assert "很" in vocab and "[MASK]" in vocab

    continued = tmp_path / "continued"
    results = pretrain_mlm.main(
        [
            "--corpus",
            str(corpus_file),
            "--output_dir",
            str(continued),
            "--model_name_or_path",
            str(scratch),
            "--learning_rate",
            "0.001",
            *COMMON,
        ]  # fmt: skip
    )
    # continuing starts where scratch ended, not from a fresh model
    assert results["history"]["eval"][0]["perplexity"] < perplexities[0]
    assert AutoTokenizer.from_pretrained(continued).get_vocab() == vocab
