"""`--trim_vocabulary`: a multilingual encoder cut down to the pieces a Chinese task uses.

multilingual-e5-small spends 96M of its 118M parameters on the embedding rows of 250,002 SentencePiece
pieces, of which Chinese reviews use a few percent. Those rows cost on every training step (Adam's state,
a dense gradient) and in every saved or exported model. Trimming keeps the rows of the pieces the training
texts (and `--trim_vocabulary_corpus`, unlabelled) use, the special tokens and, so that a new text falls
back to characters rather than to the unknown token, every single-character piece; the tokenizer's own
`tokenizer.json` is rewritten with the kept pieces, renumbered in their old order, scores and rules kept.

What the texts used tokenizes exactly as before (checked on every one of them: a Unigram tokenizer's
best segmentation and WordPiece's longest match only ever use kept pieces there). A new text with a piece
that was dropped is segmented into kept, shorter pieces (a Unigram model picks the best path among them;
WordPiece matches the longest kept one), and only a character never kept becomes the unknown token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from finetune.errors import ArgumentError

logger = logging.getLogger(__name__)

TRIMMABLE = ("Unigram", "WordPiece")
PREFIXES = ("\u2581", "##")  # SentencePiece's word start, WordPiece's continuation


def _pieces(model: dict) -> list[str]:
    """The model's pieces by id."""
    if model["type"] == "Unigram":
        return [piece for piece, _ in model["vocab"]]
    pieces = [""] * len(model["vocab"])
    for piece, index in model["vocab"].items():
        pieces[index] = piece
    return pieces


def single_characters(pieces: list[str]) -> set[int]:
    """Ids of the pieces that are one character (with or without a word-start / continuation mark)."""
    kept = set()
    for index, piece in enumerate(pieces):
        for prefix in PREFIXES:
            if piece.startswith(prefix) and len(piece) > len(prefix):
                piece = piece[len(prefix) :]
        if len(piece) == 1:
            kept.add(index)
    return kept


def _remap_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    """Special-token ids in a post-processor (TemplateProcessing, BERT/RoBERTa processing, a sequence of them)."""
    if not processor:
        return
    for step in processor.get("processors") or []:
        _remap_processor(step, new_id)
    for token in (processor.get("special_tokens") or {}).values():
        token["ids"] = [new_id[i] for i in token["ids"]]
    for key in ("sep", "cls"):
        if isinstance(processor.get(key), list):
            processor[key][1] = new_id[processor[key][1]]


def _encode(backend, texts: list[str]) -> list[list[int]]:
    return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=True)]


def trim_vocabulary(tokenizer, encoder, texts: Iterable[str], keep_characters: bool = True):
    """`tokenizer` and `encoder` (an `AutoModel`) with only the pieces `texts` use, the special tokens and
    (`keep_characters`) every single-character piece; returns (tokenizer, encoder, report). The encoder's
    input embedding is replaced in place and its config's `vocab_size` and `pad_token_id` follow.

    Raises:
        ArgumentError: The tokenizer has no `tokenizer.json` model of a kind that can be trimmed (BPE's merges
            would need trimming too), or the encoder's embedding has fewer rows than the tokenizer has pieces.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    kind = (spec.get("model") or {}).get("type")
    if kind not in TRIMMABLE:
        raise ArgumentError(
            f"--trim_vocabulary: a {kind or type(tokenizer).__name__} tokenizer cannot be trimmed (Unigram, as "
            "SentencePiece models have, and WordPiece, as BERT has, can)"
        )
    embedding = encoder.get_input_embeddings()
    rows = embedding.weight.shape[0]
    texts = list(texts)
    used_ids = _encode(backend, texts)
    pieces = _pieces(spec["model"])
    added = {token["id"] for token in spec.get("added_tokens", [])}
    used = {i for ids in used_ids for i in ids}
    characters = single_characters(pieces) if keep_characters else set()
    kept = sorted(used | added | set(tokenizer.all_special_ids) | characters)
    if kept[-1] >= rows:
        raise ArgumentError(f"--trim_vocabulary: the tokenizer has id {kept[-1]}, the encoder only {rows} rows")
    new_id = {old: new for new, old in enumerate(kept)}

    model = spec["model"]
    if kind == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in kept if i < len(model["vocab"])]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        model["vocab"] = {piece: new_id[i] for piece, i in model["vocab"].items() if i in new_id}
    for token in spec.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    _remap_processor(spec.get("post_processor"), new_id)
    trimmed_backend = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    trimmed = PreTrainedTokenizerFast(
        tokenizer_object=trimmed_backend, **tokenizer.special_tokens_map, model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side, truncation_side=tokenizer.truncation_side,
    )  # fmt: skip

    # What the texts used must read exactly as before, renumbered: checked on every text
    lookup = np.full(rows, -1, dtype=np.int64)
    lookup[kept] = np.arange(len(kept))
    for text, before, after in zip(texts, used_ids, _encode(trimmed_backend, texts), strict=True):
        if lookup[before].tolist() != after:
            raise RuntimeError(f"--trim_vocabulary: {text[:40]!r} tokenizes differently after trimming")

    pad = encoder.config.pad_token_id
    new_pad = new_id.get(pad) if pad is not None else None
    replacement = nn.Embedding(len(kept), embedding.weight.shape[1], padding_idx=new_pad)
    with torch.no_grad():
        replacement.weight.copy_(embedding.weight[torch.tensor(kept)])
    encoder.set_input_embeddings(replacement)
    encoder.config.vocab_size = len(kept)
    encoder.config.pad_token_id = new_pad
    width = embedding.weight.shape[1]
    report = {
        "pieces_before": len(tokenizer),
        "pieces_after": len(trimmed),
        "embedding_parameters_before": rows * width,
        "embedding_parameters_after": len(kept) * width,
        "pieces_used_by_texts": len(used),
        "single_character_pieces": len(characters),
        "texts": len(texts),
    }
    logger.info(
        "vocabulary trimmed: %s of %s pieces kept (%s used by %s texts, %s single characters, the special tokens); "
        "embedding %.1fM -> %.1fM parameters", f"{len(kept):,}", f"{len(tokenizer):,}", f"{len(used):,}",
        f"{len(texts):,}", f"{len(characters):,}", rows * width / 1e6, len(kept) * width / 1e6,
    )  # fmt: skip
    return trimmed, encoder, report
