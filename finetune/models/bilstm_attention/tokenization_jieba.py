"""Word-level Chinese tokenizer: jieba segmentation + a vocabulary file.

The text-to-ids work (segmentation, vocabulary lookup, truncation) lives in `segmentation_jieba.py`,
which the onnxruntime classifier shares; this file adds transformers' tokenizer interface. It
travels to the Hub as custom code: it imports only transformers (and numpy, which transformers
needs), its sibling and the segmenter (`rjieba`, the Rust port of jieba, by default; `jieba` itself
on request).
"""

import os

import numpy as np
from transformers import PreTrainedTokenizer
from transformers.tokenization_utils_base import BatchEncoding, PaddingStrategy, TruncationStrategy

from .normalization_chinese import CHAR_MAP_FILE, CharNormalizer
from .segmentation_jieba import JiebaVocabulary, check_texts, load_segmenter, read_vocab, truncate
from .tfidf_ngrams import NGRAM_FILE, NgramRows, TfidfNgrams

__all__ = ["JiebaTokenizer", "check_texts", "load_segmenter"]

VOCAB_FILES_NAMES = {
    "vocab_file": "vocab.txt",
    "user_dict_file": "user_dict.txt",
    "char_map_file": CHAR_MAP_FILE,
    "tfidf_file": NGRAM_FILE,
}
NGRAM_INPUTS = ("ngram_ids", "ngram_weights")  # the TF-IDF branch's inputs, when the tokenizer has n-grams
# What the fast path of `_encode_plus` leaves to PreTrainedTokenizer: pairs' and overflow's outputs.
SLOW_PATH_OPTIONS = (
    "return_overflowing_tokens",
    "return_special_tokens_mask",
    "return_offsets_mapping",
    "return_length",
    "return_token_type_ids",
    "sanitize_control_tokens",
)
FAST_TRUNCATION = (TruncationStrategy.DO_NOT_TRUNCATE, TruncationStrategy.LONGEST_FIRST, TruncationStrategy.ONLY_FIRST)


class JiebaTokenizer(PreTrainedTokenizer):
    """Segments Chinese text into words with jieba and maps them to ids from `vocab.txt`.

    Args:
        vocab_file (`str`): One token per line; a token's id is its line number (from 0).
        vocab (`list[str]`, *optional*): The tokens themselves, instead of `vocab_file`.
        user_dict_file (`str`, *optional*): Extra words for the segmenter, in jieba's format.
        segmenter (`str`, defaults to `"rjieba"`): `"rjieba"` (same dictionary, ~12x faster) or `"jieba"`.
        do_lower_case (`bool`, defaults to `True`): Lowercase Latin letters before segmenting.
        split_unknown_words (`bool`, defaults to `True`): A word missing from the vocabulary is
            read as its characters (很棒 -> 很, 棒) instead of one `[UNK]`: Chinese words are
            built from characters that carry most of their meaning.
        user_dict_required (`bool`, defaults to `False`): Saved as `True` when there is a user
            dictionary, so that loading without `user_dict.txt` fails instead of segmenting
            differently from training.
        char_map_file (`str`, *optional*): `char_map.json`, characters replaced before segmenting.
        char_map (`dict[str, str]`, *optional*): The same table itself (`finetune.data.normalization`).
        traditional_to_simplified (`bool`, defaults to `False`), fullwidth_to_halfwidth (`bool`,
            defaults to `False`): What the table does, saved in tokenizer_config.json; either makes
            loading without `char_map.json` fail instead of reading other text than in training.
        tfidf_file (`str`, *optional*): `tfidf_ngrams.json`, the character n-grams and idf weights of
            the model's TF-IDF branch; with it every encoding also holds `ngram_ids` and `ngram_weights`
            (`tfidf_ngrams.py`). Saved as `tfidf_required`, so that loading without it fails.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        vocab: list[str] | None = None,
        user_dict_file: str | None = None,
        segmenter: str = "rjieba",
        do_lower_case: bool = True,
        split_unknown_words: bool = True,
        user_dict_required: bool = False,
        char_map_file: str | None = None,
        char_map: dict[str, str] | None = None,
        traditional_to_simplified: bool = False,
        fullwidth_to_halfwidth: bool = False,
        tfidf_file: str | None = None,
        tfidf_required: bool = False,
        unk_token: str = "[UNK]",
        pad_token: str = "[PAD]",
        **kwargs,
    ):
        where = kwargs.get("name_or_path") or "JiebaTokenizer"
        if vocab is None and vocab_file is None:
            raise ValueError(
                f"{where}: no vocab.txt (the vocabulary of a saved JiebaTokenizer); pass vocab_file or vocab"
            )
        if user_dict_required and not user_dict_file:
            raise ValueError(
                f"{where}: no user_dict.txt: the tokenizer was saved with a user dictionary and would segment "
                "differently without it"
            )
        if char_map is None and char_map_file:
            char_map = CharNormalizer.from_file(char_map_file).char_map
        if (traditional_to_simplified or fullwidth_to_halfwidth) and not char_map:
            raise ValueError(
                f"{where}: no char_map.json: the tokenizer was saved normalising characters "
                "(traditional_to_simplified/fullwidth_to_halfwidth) and would read other text without it"
            )
        if tfidf_required and not tfidf_file:
            raise ValueError(f"{where}: no {NGRAM_FILE}: the model has a TF-IDF branch that reads the n-grams it lists")
        if vocab is not None:
            tokens = list(vocab)
        else:
            tokens = read_vocab(vocab_file)
        self.vocab = {token: index for index, token in enumerate(tokens)}
        source = vocab_file or "vocab"
        if len(self.vocab) != len(tokens):
            raise ValueError(f"{source}: the vocabulary lists a token twice")
        missing = [str(token) for token in (unk_token, pad_token) if str(token) not in self.vocab]
        if missing:
            raise ValueError(f"{source}: the vocabulary lacks the special tokens {missing}")
        self.ids_to_tokens = dict(enumerate(tokens))
        self.user_dict_file = user_dict_file
        self.segmenter = segmenter
        self.do_lower_case = do_lower_case
        self.split_unknown_words = split_unknown_words
        self.char_map = char_map
        self.words = JiebaVocabulary(
            tokens,
            load_segmenter(segmenter, user_dict_file),
            do_lower_case=do_lower_case,
            split_unknown_words=split_unknown_words,
            unk_token=str(unk_token),
            char_map=char_map,
        )
        self.vocab = self.words.ids  # one dictionary, read by both
        self.tfidf = TfidfNgrams.from_file(tfidf_file) if tfidf_file else None
        kwargs.pop("model_input_names", None)  # what it is follows from the files
        super().__init__(
            segmenter=segmenter,
            do_lower_case=do_lower_case,
            split_unknown_words=split_unknown_words,
            user_dict_required=bool(user_dict_file),
            traditional_to_simplified=traditional_to_simplified,
            fullwidth_to_halfwidth=fullwidth_to_halfwidth,
            unk_token=unk_token,
            pad_token=pad_token,
            **kwargs,
        )
        self.set_tfidf(self.tfidf)

    def set_tfidf(self, tfidf: TfidfNgrams | None) -> None:
        """Gives every encoding the TF-IDF n-gram features of `tfidf` too (None: no more)."""
        self.tfidf = tfidf
        self.init_kwargs["tfidf_required"] = tfidf is not None
        self.model_input_names = ["input_ids", "attention_mask", *(NGRAM_INPUTS if tfidf is not None else ())]

    def ngram_features(self, texts: list[str]) -> list[tuple[list[int], list[float]]]:
        """`ngram_ids` and `ngram_weights` of each text: its n-grams after the segmenter's normalisation."""
        return self.ngram_rows(texts).lists()

    def ngram_rows(self, texts: list[str]) -> NgramRows:
        """`ngram_features` of a batch as arrays (`NgramRows`): call the tokenizer with `return_ngrams=False`
        and cut padded batches from these, as `finetune predict` does."""
        return self.tfidf.batch_rows([self.words.normalized(text) for text in texts])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab, **self.added_tokens_encoder)

    def __call__(self, text=None, *args, **kwargs):
        # Checked here, where the index of a bad item in a batch is known: jieba and transformers
        # would fail on a None (a missing cell of a table) without saying which text it was.
        text_target = args[1] if len(args) > 1 else kwargs.get("text_target")
        if text is not None or text_target is None:
            check_texts(text)
        return super().__call__(text, *args, **kwargs)

    def segment(self, text: str) -> list[str]:
        """Words of `text` as the model sees them: lowercased, segmented, whitespace dropped."""
        return self.words.segment(text)

    def words_to_tokens(self, words: list[str]) -> list[str]:
        """Words to vocabulary tokens: unknown words become their characters when so configured."""
        return self.words.words_to_tokens(words)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.words_to_tokens(self.segment(text))

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab[self.unk_token])

    def _convert_id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(index, self.unk_token)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        # No [CLS]/[SEP]: the attention pooling is the sentence summary.
        return token_ids_0 if token_ids_1 is None else token_ids_0 + token_ids_1

    def _encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        # PreTrainedTokenizer encodes a batch text by text through tokenize() (which first splits
        # out added tokens such as [UNK]), prepare_for_model() and pad(), and makes tensors from
        # nested lists: several times the cost of segmenting. Texts without added tokens in them
        # take a direct path instead; the ids and masks are the same (tests compare them).
        ngrams = kwargs.get("return_ngrams", True) and self.tfidf is not None  # return_ngrams=False: ids only
        sequences = self._fast_path_sequences(text, text_pair, kwargs)
        if sequences is None:
            encoded = super()._encode_plus(text, text_pair, **kwargs)
            return self._add_ngrams(encoded, text, text_pair, kwargs) if ngrams else encoded
        batched = not isinstance(text, str) and not (kwargs.get("is_split_into_words") and isinstance(text[0], str))
        max_length = kwargs.get("max_length")
        cut = kwargs.get("truncation_strategy") != TruncationStrategy.DO_NOT_TRUNCATE and max_length
        if self.words.added_tokens != self._added_tokens_encoder:
            self.words.set_added_tokens(self._added_tokens_encoder)  # tokens added since the last call
        split_special_tokens = kwargs.get("split_special_tokens", self.split_special_tokens)
        encoded = []
        for sequence in sequences:
            ids = self._sequence_ids(sequence, split_special_tokens)
            ids = truncate(ids, max_length if cut else None, self.truncation_side)
            self._eventual_warn_about_too_long_sequence(ids, max_length, kwargs.get("verbose", True))
            encoded.append(ids)
        outputs = self._pad_ids(encoded, batched, kwargs)
        if ngrams:
            outputs |= self._ngram_inputs(sequences, batched, kwargs)
        return_tensors = kwargs.get("return_tensors")
        if return_tensors in ("pt", "np") and all(len({len(row) for row in rows}) == 1 for rows in outputs.values()):
            # torch.tensor() reads nested lists at ~1 us an id; from an int64 array it copies memory.
            outputs = {key: np.array(rows, dtype=INPUT_DTYPES.get(key, np.int64)) for key, rows in outputs.items()}
        if batched:
            return BatchEncoding(outputs, tensor_type=return_tensors)
        return BatchEncoding({k: v[0] for k, v in outputs.items()}, tensor_type=return_tensors, prepend_batch_axis=True)

    def _add_ngrams(self, encoded: BatchEncoding, text, text_pair, kwargs) -> BatchEncoding:
        """PreTrainedTokenizer's encoding of single texts with their n-gram features (a TF-IDF branch's)."""
        if text_pair is not None or kwargs.get("return_overflowing_tokens"):
            raise ValueError(
                "a tokenizer with TF-IDF n-grams (tfidf_ngrams.json) encodes single texts, not pairs or overflow"
            )
        words = kwargs.get("is_split_into_words")
        single = isinstance(text, str) or (words and all(isinstance(item, str) for item in text))
        features = self._ngram_inputs([text] if single else list(text), not single, kwargs)
        if single:
            features = {key: rows[0] for key, rows in features.items()}
        return_tensors = kwargs.get("return_tensors")
        encoded.update(BatchEncoding(features, tensor_type=return_tensors, prepend_batch_axis=single))
        return encoded

    def _ngram_inputs(self, sequences: list, batched: bool, kwargs) -> dict[str, list]:
        """`ngram_ids` and `ngram_weights` of texts (or word lists, read joined), padded as the ids are."""
        texts = [item if isinstance(item, str) else "".join(item) for item in sequences if _is_text(item)]
        if len(texts) < len(sequences):
            raise ValueError("a tokenizer with TF-IDF n-grams (tfidf_ngrams.json) needs texts, not token ids")
        padded = kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD) != PaddingStrategy.DO_NOT_PAD
        return pad_ngrams(self.ngram_features(texts), padded and batched)

    def _fast_path_sequences(self, text, text_pair, kwargs) -> list | None:
        """The texts (or pretokenized word lists) `_encode_plus` can encode directly; None: the slow path."""
        if text_pair is not None or any(kwargs.get(option) for option in SLOW_PATH_OPTIONS):
            return None
        if kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE) not in FAST_TRUNCATION:
            return None
        if isinstance(text, str):
            return [text]
        if not isinstance(text, (list, tuple)) or not text:
            return None
        if not kwargs.get("is_split_into_words"):
            return text if all(isinstance(item, str) for item in text) else None
        if all(isinstance(item, str) for item in text):
            return [text]  # one pretokenized text
        # A batch of word lists; transformers reads a tuple of two as a pair, an empty list as an error.
        words_lists = all(isinstance(item, list) and item and all(isinstance(w, str) for w in item) for item in text)
        return text if words_lists else None

    def _sequence_ids(self, sequence, split_special_tokens: bool) -> list[int]:
        """Ids of a text, or of pretokenized words (each word tokenized as a text), as `tokenize` gives them."""
        if not isinstance(sequence, str):
            return [token_id for word in sequence for token_id in self._sequence_ids(word, split_special_tokens)]
        return self.words.text_ids(sequence, split_added_tokens=split_special_tokens)

    def _pad_ids(self, encoded: list[list[int]], batched: bool, kwargs) -> dict[str, list]:
        """`input_ids` and `attention_mask` padded as `pad()` pads them (an empty single text never is)."""
        strategy = kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD)
        return_attention_mask = kwargs.get("return_attention_mask")
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        target = kwargs.get("max_length")
        if strategy == PaddingStrategy.LONGEST:
            target = max(len(ids) for ids in encoded)
        multiple = kwargs.get("pad_to_multiple_of")
        if target is not None and multiple and target % multiple:
            target = (target // multiple + 1) * multiple
        if strategy == PaddingStrategy.DO_NOT_PAD or (not batched and not encoded[0]):
            target = None
        right, pad_id = (kwargs.get("padding_side") or self.padding_side) == "right", self.pad_token_id
        input_ids, attention_mask = [], []
        for ids in encoded:
            missing = max(0, target - len(ids)) if target is not None else 0
            input_ids.append(ids + [pad_id] * missing if right else [pad_id] * missing + ids)
            attention_mask.append([1] * len(ids) + [0] * missing if right else [0] * missing + [1] * len(ids))
        return (
            {"input_ids": input_ids, "attention_mask": attention_mask}
            if return_attention_mask
            else {"input_ids": input_ids}
        )

    def pad(self, encoded_inputs, *args, **kwargs) -> BatchEncoding:
        # PreTrainedTokenizer pads `input_ids` and its masks only: the n-gram lists are padded here.
        if self.tfidf is None:
            return super().pad(encoded_inputs, *args, **kwargs)
        rows = encoded_inputs if isinstance(encoded_inputs, (list, tuple)) else None
        if rows and all(key in rows[0] for key in NGRAM_INPUTS):
            ngrams = [([int(i) for i in row["ngram_ids"]], [float(w) for w in row["ngram_weights"]]) for row in rows]
            rows = [{key: value for key, value in row.items() if key not in NGRAM_INPUTS} for row in rows]
            padded = super().pad(rows, *args, **kwargs)
            arrays = {key: np.array(value, dtype=INPUT_DTYPES.get(key, np.int64))
                      for key, value in pad_ngrams(ngrams, True).items()}  # fmt: skip
            return BatchEncoding({**padded, **arrays}, tensor_type=kwargs.get("return_tensors"))
        return super().pad(encoded_inputs, *args, **kwargs)

    def _get_padding_truncation_strategies(self, padding=False, truncation=None, max_length=None, *args, **kwargs):
        # An LSTM has no hard length limit, but a 100k-character post should not cost minutes of
        # CPU in pipeline(): truncate to model_max_length unless the caller says otherwise.
        if truncation is None and max_length is None and padding in (False, "do_not_pad"):
            truncation = True
        return super()._get_padding_truncation_strategies(padding, truncation, max_length, *args, **kwargs)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        vocab_path = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
        with open(vocab_path, "w", encoding="utf-8") as f:
            for index in range(len(self.ids_to_tokens)):
                f.write(self.ids_to_tokens[index] + "\n")
        saved = (vocab_path,)
        if self.tfidf is not None:
            saved += (os.path.join(save_directory, prefix + NGRAM_FILE),)
            self.tfidf.save(saved[-1])
        if self.char_map:
            saved += (os.path.join(save_directory, prefix + CHAR_MAP_FILE),)
            CharNormalizer(self.char_map).save(saved[-1])
        if not self.user_dict_file:
            return saved
        dict_path = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["user_dict_file"])
        if os.path.abspath(self.user_dict_file) != os.path.abspath(dict_path):
            with open(self.user_dict_file, encoding="utf-8-sig") as src, open(dict_path, "w", encoding="utf-8") as dst:
                dst.write(src.read())
        return (*saved, dict_path)


INPUT_DTYPES = {"ngram_weights": np.float32}


def _is_text(item) -> bool:
    """A text, or a pretokenized one (a list of word strings)."""
    return isinstance(item, str) or (isinstance(item, (list, tuple)) and all(isinstance(word, str) for word in item))


def pad_ngrams(features: list[tuple[list[int], list[float]]], pad: bool) -> dict[str, list]:
    """`ngram_ids` and `ngram_weights` of a batch; `pad`: to the longest (id 0, weight 0: adds nothing)."""
    width = max((len(ids) for ids, _ in features), default=0) if pad else 0
    return {
        "ngram_ids": [ids + [0] * (width - len(ids)) for ids, _ in features],
        "ngram_weights": [weights + [0.0] * (width - len(weights)) for _, weights in features],
    }
