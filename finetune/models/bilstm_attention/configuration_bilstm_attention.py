"""Configuration of the BiLSTM + attention classifier.

`encoder_type` must name a kind in the encoder registry (`encoders.py`); `ENCODER_TYPES`, the
registered names, is re-exported here. This file travels to the Hub as custom code: it imports
only transformers and its sibling files.
"""

from transformers import PreTrainedConfig

from .encoders import ENCODER_TYPES, encoder_kind
from .long_text import LongText

__all__ = ["ENCODER_TYPES", "POOLINGS", "BiLSTMAttentionConfig"]

POOLINGS = ("attention", "attention+max", "attention+mean")


class BiLSTMAttentionConfig(PreTrainedConfig):
    r"""Configuration for [`BiLSTMAttentionForSequenceClassification`].

    The model is `encoder -> BiLSTM -> additive attention pooling -> dropout -> classifier`.
    `encoder_type` picks what turns token ids into token states; the head is the same for all.

    Args:
        encoder_type (`str`, defaults to `"word_vectors"`):
            A kind registered in `encoders.py` (`ENCODER_TYPES`). Built in:
            `"word_vectors"`: an embedding table, usually initialised from pretrained word vectors;
            `"transformer"`: any `AutoModel` (BERT, RoBERTa-wwm-ext, MacBERT, ELECTRA...);
            `"bilm"`: an ELMo-style bidirectional LSTM language model ([`BiLMModel`]).
        encoder_config (`dict`, *optional*):
            For kinds pretrained from a checkpoint (`"transformer"`, `"bilm"`): the encoder's own config
            (`to_dict()`), from which the encoder is rebuilt; its weights are saved with the model, so
            loading needs no network.
        encoder_name_or_path (`str`, *optional*):
            Where the pretrained encoder came from (Hub id or directory), for the record.
        encoder_layers (`int`, defaults to 1):
            `"transformer"`: 1 takes the last layer's states; K > 1 a learned scalar mix of the
            last K layers. (`"bilm"` always mixes all its layers, as ELMo.)
        vocab_size (`int`, defaults to 2):
            Rows of the embedding table (the tokenizer's vocabulary size).
        embedding_dim (`int`, defaults to 200):
            Width of the word vectors (Tencent AI Lab and most Chinese vectors use 200 or 300).
        freeze_embeddings (`bool`, defaults to `False`):
            Keep the embedding table fixed during fine-tuning.
        embedding_dropout (`float`, defaults to 0.2):
            Dropout on token vectors; on small data sets it is the cheapest regulariser there is.
        word_dropout (`float`, defaults to 0.0):
            Share of words replaced by `[UNK]` while training, so that no single rare word decides.
        char_vocab_size (`int`, defaults to 0):
            Characters with a learned vector added (as a mean) to the vectors of the words they
            are part of; 0 turns this off.
        max_word_chars (`int`, defaults to 4):
            Characters of a word that count (Chinese words rarely have more than four).
        lstm_hidden_size (`int`, defaults to 128):
            Hidden size of each direction of the BiLSTM.
        lstm_num_layers (`int`, defaults to 1):
            Stacked BiLSTM layers.
        lstm_dropout (`float`, defaults to 0.0):
            Dropout between stacked LSTM layers (unused with one layer).
        attention_dim (`int`, defaults to 128):
            Width of the additive (Bahdanau-style) attention scorer.
        pooling (`str`, defaults to `"attention"`):
            `"attention"`: the attention-weighted sum of BiLSTM states; `"attention+max"`: that,
            concatenated with the element-wise max over the states (a strong cue detector);
            `"attention+mean"`: concatenated with the mean of the encoder's token vectors.
        classifier_dropout (`float`, defaults to 0.3):
            Dropout on the pooled sentence vector before `classifier`.
        max_length (`int`, defaults to 256):
            Tokens the encoder sees at once (special tokens included): the cut of a long text, or its window.
        long_text (`str`, defaults to `"truncate"`):
            A text longer than `max_length`: `"truncate"` keeps `max_length` of its tokens (`truncation`
            says which); `"windows"` scores overlapping windows of `max_length` tokens and aggregates
            them (`window_aggregation`). `forward` applies it, so `pipeline()` does too (`long_text.py`).
        truncation (`str`, defaults to `"head"`):
            Which tokens a cut keeps: the `"head"`, the `"tail"` or `"head+tail"` (Sun et al. 2019).
        truncation_head_ratio (`float`, defaults to 0.25):
            `"head+tail"`: the share of the kept tokens taken from the head (128 of 510, as Sun et al.).
        doc_stride (`int`, defaults to 0):
            `"windows"`: tokens two consecutive windows share (the `stride` of transformers' tokenizers).
        max_windows (`int`, defaults to 1):
            `"windows"`: most windows per text; memory stays bounded, and a longer text is cut.
        window_aggregation (`str`, defaults to `"mean"`):
            `"windows"`: a text's scores are the `"mean"` of its windows' probabilities, or their `"max"`
            per label (renormalised to sum to 1).
        prefix_special_tokens (`int`, defaults to 0), suffix_special_tokens (`int`, defaults to 0):
            Special tokens the tokenizer puts before and after a text (BERT: [CLS] and [SEP], 1 and 1),
            kept in every cut and window.
        tfidf_num_ngrams (`int`, defaults to 0):
            A TF-IDF branch beside the BiLSTM: a linear model over this many character n-grams (the
            tokenizer's `tfidf_ngrams.json` gives their `ngram_ids` and `ngram_weights`), fitted by logistic
            regression on the training texts; 0: none. Single-label classification only.
        tfidf_mix_weight (`float`, defaults to 0.5):
            The branch's share: the model's probabilities are `(1 - w) * BiLSTM's + w * the branch's`
            (its logits are their log), `w` chosen on the validation split.
    """

    model_type = "bilstm_attention"

    encoder_type: str = "word_vectors"
    encoder_config: dict | None = None
    encoder_name_or_path: str | None = None
    encoder_layers: int = 1
    vocab_size: int = 2
    embedding_dim: int = 200
    freeze_embeddings: bool = False
    embedding_dropout: float = 0.2
    word_dropout: float = 0.0
    unk_token_id: int = 1
    char_vocab_size: int = 0
    max_word_chars: int = 4
    lstm_hidden_size: int = 128
    lstm_num_layers: int = 1
    lstm_dropout: float = 0.0
    attention_dim: int = 128
    pooling: str = "attention"
    classifier_dropout: float = 0.3
    max_length: int = 256
    long_text: str = "truncate"
    truncation: str = "head"
    truncation_head_ratio: float = 0.25
    doc_stride: int = 0
    max_windows: int = 1
    window_aggregation: str = "mean"
    prefix_special_tokens: int = 0
    suffix_special_tokens: int = 0
    tfidf_num_ngrams: int = 0
    tfidf_mix_weight: float = 0.5
    pad_token_id: int | None = 0
    initializer_range: float = 0.1

    def __post_init__(self, **kwargs):
        kind = encoder_kind(self.encoder_type)  # a ValueError naming the registered kinds
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if kind.pretrained_from == "checkpoint" and not self.encoder_config:
            raise ValueError(f"encoder_type {self.encoder_type!r} needs encoder_config (the encoder's own config)")
        for key, wanted in LongText.of(self).problems().items():
            raise ValueError(f"{key} must be {wanted}, got {getattr(self, key)!r}")
        if self.tfidf_num_ngrams < 0 or not 0.0 <= self.tfidf_mix_weight <= 1.0:
            raise ValueError(
                "tfidf_num_ngrams must be >= 0 and tfidf_mix_weight in [0, 1], got "
                f"{self.tfidf_num_ngrams} and {self.tfidf_mix_weight}"
            )
        if self.encoder_layers < 1:
            raise ValueError(f"encoder_layers must be at least 1, got {self.encoder_layers}")
        super().__post_init__(**kwargs)
