"""The model family: JiebaTokenizer, BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from finetune import BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification, JiebaTokenizer

VOCAB = ["[PAD]", "[UNK]", "这部", "电影", "真的", "很", "棒", "！", "差劲", "。", "物流", "快"]
TEXTS = ["这部电影真的很棒！", "差劲。", "物流很快，这部电影真的很棒！差劲。", "电影"]


@pytest.fixture
def tokenizer():
    return JiebaTokenizer(vocab=VOCAB, model_max_length=64)


@pytest.fixture(params=["attention", "attention+max", "attention+mean"])
def model(tokenizer, request):
    torch.manual_seed(0)
    config = BiLSTMAttentionConfig(
        pooling=request.param,
        vocab_size=len(VOCAB),
        embedding_dim=8,
        lstm_hidden_size=6,
        attention_dim=5,
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    return BiLSTMAttentionForSequenceClassification(config).eval()


def test_tokenizer_segments_and_maps_words(tokenizer):
    assert tokenizer.segment("这部电影真的很棒！") == ["这部", "电影", "真的", "很棒", "！"]
    # 很棒 is one jieba word, not in the vocabulary: read as its characters 很, 棒
    assert tokenizer("这部电影真的很棒！")["input_ids"] == [2, 3, 4, 5, 6, 7]
    assert tokenizer.tokenize("物流真快递") == ["物流", "真", "快", "递"]  # 递 is unknown
    whole_words = JiebaTokenizer(vocab=VOCAB, split_unknown_words=False)
    assert whole_words("这部电影真的很棒！")["input_ids"] == [2, 3, 4, tokenizer.unk_token_id, 7]
    assert tokenizer.segment("Good  电影") == ["good", "电影"]  # lowercased, whitespace dropped
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1


def test_user_dictionary_changes_segmentation(tmp_path):
    user_dict = tmp_path / "user_dict.txt"
    user_dict.write_text("真的很棒 100 a\n", encoding="utf-8")
    for segmenter in ("rjieba", "jieba"):
        tok = JiebaTokenizer(vocab=VOCAB, user_dict_file=str(user_dict), segmenter=segmenter)
        assert "真的很棒" in tok.segment("这部电影真的很棒！"), segmenter


def test_tokenizer_truncates_long_texts_by_default(tokenizer):
    assert len(tokenizer("电影" * 500)["input_ids"]) == 64
    assert len(tokenizer("电影" * 500, truncation=False)["input_ids"]) == 500
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"].sum(1).tolist() == [len(tokenizer.tokenize(t)) for t in TEXTS]


def test_tokenizer_save_and_auto_load(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:3] == ["[PAD]", "[UNK]", "这部"]
    # AutoTokenizer needs the model config to know the tokenizer class
    BiLSTMAttentionConfig(vocab_size=len(VOCAB)).save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(reloaded, JiebaTokenizer)
    assert reloaded(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert reloaded.model_max_length == 64


def test_vocabulary_without_special_tokens_is_an_error():
    with pytest.raises(ValueError, match=r"special tokens \['\[UNK\]'\]"):
        JiebaTokenizer(vocab=["[PAD]", "电影"])


def test_attention_never_looks_at_padding(model, tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert model(**batch).attentions is None  # only on request: pipeline() would slice them for every text
    outputs = model(**batch, output_attentions=True)
    weights = outputs.attentions[0]
    assert weights.shape == batch["input_ids"].shape
    assert torch.all(weights[batch["attention_mask"] == 0] == 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(TEXTS)))


def test_padded_batch_equals_one_by_one(model, tokenizer):
    batch = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    for i, text in enumerate(TEXTS):
        alone = model(**tokenizer([text], return_tensors="pt")).logits
        torch.testing.assert_close(alone[0], batch[i], atol=1e-6, rtol=1e-5)


def test_padding_content_does_not_change_logits(model, tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    garbage = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 5)
    torch.testing.assert_close(model(**batch).logits, model(garbage, batch["attention_mask"]).logits)


def test_empty_text_gives_a_prediction(model, tokenizer):
    outputs = model(**tokenizer([""], return_tensors="pt"))
    assert torch.isfinite(outputs.logits).all()
    outputs = model(**tokenizer(["", "电影"], padding=True, return_tensors="pt"))
    assert torch.isfinite(outputs.logits).all()


def test_loss_is_cross_entropy(model, tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1, 1])
    outputs = model(**batch, labels=labels)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(outputs.logits, labels))
    assert model.config.problem_type == "single_label_classification"


def test_freeze_embeddings():
    config = BiLSTMAttentionConfig(vocab_size=10, embedding_dim=4, freeze_embeddings=True)
    model = BiLSTMAttentionForSequenceClassification(config)
    assert not model.get_input_embeddings().weight.requires_grad
    assert model.classifier.weight.requires_grad and model.head.lstm.weight_ih_l0.requires_grad


def test_save_and_auto_load_same_logits(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    assert type(AutoConfig.from_pretrained(tmp_path)) is BiLSTMAttentionConfig
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, BiLSTMAttentionForSequenceClassification)
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


def test_character_vectors_are_added_and_saved(tokenizer, tmp_path):
    from finetune.training.builders import token_characters

    chars, token_chars = token_characters(VOCAB, max_word_chars=4)
    assert chars[0] == "" and token_chars[0].tolist() == [0, 0, 0, 0]  # [PAD] has no characters
    assert [chars[i] for i in token_chars[VOCAB.index("差劲")].tolist() if i] == ["差", "劲"]
    config = BiLSTMAttentionConfig(
        vocab_size=len(VOCAB), embedding_dim=8, lstm_hidden_size=6, attention_dim=5, char_vocab_size=len(chars)
    )
    model = BiLSTMAttentionForSequenceClassification(config).eval()
    model.encoder.token_chars.copy_(token_chars)
    ids = torch.tensor([[VOCAB.index("差劲"), VOCAB.index("很")]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        expected = model.encoder.embeddings.weight[ids[0, 0]] + model.encoder.char_embeddings.weight[
            [chars.index("差"), chars.index("劲")]
        ].mean(0)
        torch.testing.assert_close(model.encoder(ids, mask)[0, 0], expected)
        # zeroing a character's vector changes only the words that contain it
        before = model.encoder(ids, mask)
        model.encoder.char_embeddings.weight[chars.index("劲")] = 0
        after = model.encoder(ids, mask)
    assert not torch.allclose(before[0, 0], after[0, 0]) and torch.equal(before[0, 1], after[0, 1])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.encoder.token_chars, token_chars)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("layers", [1, 2])
def test_padded_bilstm_equals_packed_sequences_at_real_tokens(layers):
    """The head runs each direction over padded batches (the backward one reversed within each
    length): at real tokens, the states of nn.LSTM over packed sequences, empty texts included."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from finetune.models.bilstm_attention.modeling_bilstm_attention import BiLSTMAttentionHead

    torch.manual_seed(0)
    config = BiLSTMAttentionConfig(
        vocab_size=10, embedding_dim=16, lstm_hidden_size=8, attention_dim=8, lstm_num_layers=layers
    )
    head = BiLSTMAttentionHead(config, input_dim=16).eval()
    inputs, lengths = torch.randn(5, 9, 16), torch.tensor([9, 3, 1, 6, 0])
    real = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    with torch.no_grad():
        padded = head.bilstm(inputs, lengths)
        packed = pack_padded_sequence(inputs, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
        reference, _ = pad_packed_sequence(head.lstm(packed)[0], batch_first=True, total_length=9)
    torch.testing.assert_close(padded[real], reference[real], atol=1e-6, rtol=1e-6)
    # One text without padding (pipeline()'s single texts) runs nn.LSTM's fused bidirectional kernel: the same
    for i in range(4):
        alone, length = inputs[i : i + 1, : lengths[i]], lengths[i : i + 1]
        assert head._one_unpadded_text(alone, length)
        with torch.no_grad():
            torch.testing.assert_close(head.bilstm(alone, length)[0], reference[i, : lengths[i]], atol=1e-6, rtol=1e-6)
    # padded, or training: the general path
    assert not head._one_unpadded_text(inputs[1:2], lengths[1:2]) and not head.train()._one_unpadded_text(alone, length)


def test_length_chunks_is_the_partition_of_least_padded_work():
    """The chunks cover every row once, each of similar length, shortest first, and no partition of the
    length-sorted rows into runs costs less (every one enumerated for small batches)."""
    import itertools

    from finetune.models.bilstm_attention.modeling_bilstm_attention import length_chunks

    def cost(runs, overhead):
        return sum(max(run) * (len(run) + overhead) for run in runs)

    generator = torch.Generator().manual_seed(0)
    for rows in range(1, 9):
        for overhead in (0, 2, 6):
            lengths = torch.randint(1, 120, (rows,), generator=generator)
            chunks = length_chunks(lengths, overhead)
            assert sorted(torch.cat(chunks).tolist()) == list(range(rows))
            runs = [lengths[chunk].tolist() for chunk in chunks]
            assert all(max(a) <= min(b) for a, b in itertools.pairwise(runs))
            ordered = sorted(lengths.tolist())
            least = min(
                cost([ordered[a:b] for a, b in itertools.pairwise([0, *cuts, rows])], overhead)
                for count in range(rows)
                for cuts in itertools.combinations(range(1, rows), count)
            )
            assert cost(runs, overhead) == least
    same = length_chunks(torch.full((50,), 7))
    assert len(same) == 1  # texts of one length: one chunk, whatever the overhead


@pytest.mark.parametrize("kind", ["word_vectors", "transformer", "bilm"])
def test_a_large_unsorted_batch_runs_in_length_sorted_chunks_with_the_same_scores(kind, request, monkeypatch):
    """Inference on a batch of texts of mixed lengths (pipeline()'s batches) runs in chunks of
    similar length, each cut to its longest text: logits and attention weights as the whole padded
    batch gives them (run with gradients on, which never sorts), in the batch's order."""
    from conftest import pretrained_encoder_model, review_texts, word_vector_model

    from finetune.inference.batching import padded_batch
    from finetune.models.bilstm_attention import modeling_bilstm_attention

    if kind == "word_vectors":
        model, tokenizer = word_vector_model(None)
    else:
        model, tokenizer = pretrained_encoder_model(
            kind, request.getfixturevalue(f"tiny_{'bert' if kind == 'transformer' else kind}")
        )
    model.eval()
    texts = [text[: 1 + i % 9] for i, text in enumerate(review_texts()[:150])]  # lengths 1..9 characters, mixed
    rows = [tokenizer(text, truncation=True)["input_ids"] for text in texts]
    input_ids, attention_mask = (torch.from_numpy(a) for a in padded_batch(rows, tokenizer.pad_token_id, "right"))
    with torch.enable_grad():
        whole = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    calls = []
    scores = model._scores
    monkeypatch.setattr(model, "_scores", lambda ids, mask: calls.append(ids.shape) or scores(ids, mask))
    with torch.no_grad():
        chunked = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    chunks = modeling_bilstm_attention.length_chunks(attention_mask.sum(dim=1))
    assert [shape[0] for shape in calls] == [len(rows) for rows in chunks] and len(calls) > 1
    assert any(width < input_ids.size(1) for _, width in calls)  # short chunks were cut
    torch.testing.assert_close(chunked.logits, whole.logits.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.attentions[0], whole.attentions[0].detach(), atol=1e-5, rtol=1e-5)
