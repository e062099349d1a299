"""--trim_vocabulary: a transformer's tokenizer and embedding cut down to the pieces the training texts use."""

import json

import pytest
import torch
from conftest import BERT_CONFIG, encoder_recipe_args, make_reviews, run_pipeline
from transformers import AutoModel, AutoTokenizer

from finetune.errors import ArgumentError
from finetune.training.vocabulary_trim import trim_vocabulary

TRAIN = [text for text, _ in make_reviews(40, seed=3)]
NEW = ["酒店的房间很舒服，推荐", "这款耳机太差劲了！", "快递很快"]


def load(path):
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def tokens(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def states(tokenizer, model, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state * batch["attention_mask"][..., None]


@pytest.mark.parametrize("encoder", ["tiny_e5", "tiny_bert"])  # Unigram (SentencePiece), WordPiece
def test_the_texts_read_exactly_as_before_with_far_fewer_rows(encoder, request, tmp_path):
    path = request.getfixturevalue(encoder)
    tokenizer, model = load(path)
    before = states(tokenizer, model, TRAIN)
    rows = model.get_input_embeddings().weight.shape[0]
    # the character tokenizer of tiny_bert is all single characters: trim those too
    trimmed, model, report = trim_vocabulary(*load(path), TRAIN, keep_characters=encoder == "tiny_e5")
    kept = model.get_input_embeddings().weight.shape[0]
    assert kept == len(trimmed) == model.config.vocab_size == report["pieces_after"] < rows
    assert report["embedding_parameters_after"] == kept * model.config.hidden_size
    assert all(tokens(trimmed, text) == tokens(tokenizer, text) for text in TRAIN)
    torch.testing.assert_close(states(trimmed, model, TRAIN), before)  # same rows, same padding id
    assert trimmed.pad_token == tokenizer.pad_token and model.config.pad_token_id == trimmed.pad_token_id
    # saved and loaded back as any checkpoint: AutoTokenizer, AutoModel
    trimmed.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(states(*load(tmp_path), TRAIN), before)


def test_pieces_never_seen_fall_back_to_kept_pieces_and_characters(tiny_e5):
    tokenizer, _ = load(tiny_e5)
    trimmed, _, report = trim_vocabulary(*load(tiny_e5), TRAIN[:5])
    assert report["pieces_used_by_texts"] < report["pieces_after"]  # + the single characters
    for text in NEW:
        assert "".join(tokens(trimmed, text)[1:-1]).replace("\u2581", "") == text  # no <unk>: characters
        assert tokens(trimmed, text).count("<unk>") == tokens(tokenizer, text).count("<unk>") == 0
    # without the characters a character of no training text is unknown
    bare, _, bare_report = trim_vocabulary(*load(tiny_e5), TRAIN[:5], keep_characters=False)
    assert bare_report["pieces_after"] < report["pieces_after"]
    unseen = next(ch for ch in "".join(NEW) if ch not in "".join(TRAIN[:5]) and ch in tokenizer.get_vocab())
    assert tokens(bare, unseen)[1:-1] == ["<unk>"] or "<unk>" in tokens(bare, unseen)


def test_a_bpe_tokenizer_is_refused_in_one_line(tiny_e5):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(unk_token="<unk>")), unk_token="<unk>")
    _, model = load(tiny_e5)
    with pytest.raises(ArgumentError, match="--trim_vocabulary: a BPE tokenizer cannot be trimmed"):
        trim_vocabulary(bpe, model, TRAIN)


def test_training_steps_are_the_same_trimmed_or_not(tiny_e5):
    """Rows no training text uses get no gradient (and AdamW's decay of them changes nothing the texts read):
    a few optimizer steps give the same losses trimmed or whole, so trimming only removes cost."""
    losses = {}
    for trim in (False, True):
        tokenizer, model = load(tiny_e5)
        if trim:
            tokenizer, model, _ = trim_vocabulary(tokenizer, model, TRAIN)
        torch.manual_seed(0)
        probe = torch.nn.Linear(model.config.hidden_size, 2)
        parameters = [*model.parameters(), *probe.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=0.01, weight_decay=0.01)
        model.train()
        labels = torch.tensor([i % 2 for i in range(len(TRAIN))])
        losses[trim] = []
        for start in range(0, len(TRAIN), 10):
            torch.manual_seed(start)  # the same dropout masks
            batch = tokenizer(TRAIN[start : start + 10], padding=True, return_tensors="pt")
            logits = probe(model(**batch).last_hidden_state[:, 0])
            loss = torch.nn.functional.cross_entropy(logits, labels[start : start + 10])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses[trim].append(loss.item())
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_the_recipe_trains_a_trimmed_encoder_that_pipeline_loads(reviews_csv, tiny_e5, tmp_path, offline):
    import csv

    from finetune.recipes.train_bilstm_attention import main

    output_dir = tmp_path / "run"
    main(encoder_recipe_args(BERT_CONFIG, reviews_csv, tiny_e5, output_dir, "--trim_vocabulary", "true",
                             "--learning_rate", "0.01"))  # fmt: skip
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    trim = metrics["encoder"]["vocabulary_trim"]
    assert trim["pieces_after"] < trim["pieces_before"] == len(AutoTokenizer.from_pretrained(tiny_e5))
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert config["encoder_config"]["vocab_size"] == config["vocab_size"] == trim["pieces_after"]
    # the saved (trimmed) tokenizer and model give the run's own test predictions
    rows = list(csv.DictReader((output_dir / "test_predictions.csv").open(encoding="utf-8-sig")))
    predicted = run_pipeline(output_dir, [row["text"] for row in rows])
    labels = [max(scores, key=lambda entry: entry["score"])["label"] for scores in predicted]
    assert labels == [row["predicted_label"] for row in rows]
    assert "Vocabulary trimmed" in (output_dir / "README.md").read_text(encoding="utf-8")


def test_trimming_other_encoders_or_a_corpus_without_it_is_one_line():
    from finetune.config.parsing import parse_run_args

    with pytest.raises(ArgumentError, match="--trim_vocabulary trims a transformer's pieces"):
        parse_run_args(["--train_file", "x.csv", "--trim_vocabulary", "true"])
    with pytest.raises(ArgumentError, match="--trim_vocabulary_corpus is read by --trim_vocabulary"):
        parse_run_args(["--config", "bert_bilstm_attn", "--model_name_or_path", "bert-base-chinese",
                        "--train_file", "x.csv", "--trim_vocabulary_corpus", "x.txt"])  # fmt: skip
