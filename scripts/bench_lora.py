"""LoRA adapter vs full model: trainable parameters and bytes on disk, as a markdown table.

    python scripts/bench_lora.py [--rank 8]

The encoders are built from configs with random weights (sizes do not depend on the values):
BERT-base shape (as bert-base-chinese / chinese-roberta-wwm-ext: 12 layers, hidden 768, 21,128
WordPiece/character vocabulary) and the small BERT this project pretrains offline (2 layers, 128).
"""

import argparse
import tempfile
from pathlib import Path

from transformers import BertConfig

from finetune.models.bilstm_attention import BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification
from finetune.training.lora import LoraOptions, apply_lora
from finetune.training.optimization import count_parameters

ENCODERS = {
    "BERT-base (12 x 768)": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small BERT (2 x 128)": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
}


def measure(name: str, encoder: dict, rank: int, directory: Path) -> dict:
    bert = BertConfig(vocab_size=21128, max_position_embeddings=512, **encoder)
    config = BiLSTMAttentionConfig(
        encoder_type="transformer", encoder_config=bert.to_dict(), vocab_size=21128, pad_token_id=0, max_length=512
    )
    model = BiLSTMAttentionForSequenceClassification(config)
    model.encoder.model.pooler = None
    full_dir, adapter_dir = directory / f"{name}-full", directory / f"{name}-adapter"
    model.save_pretrained(full_dir)
    total = count_parameters(model)[1]
    peft_model = apply_lora(model, LoraOptions(lora_r=rank, lora_alpha=2 * rank), base_path=full_dir)
    trainable = count_parameters(peft_model)[0]
    peft_model.save_pretrained(adapter_dir)
    full_bytes = (full_dir / "model.safetensors").stat().st_size
    adapter_bytes = (adapter_dir / "adapter_model.safetensors").stat().st_size
    return dict(name=name, total=total, trainable=trainable, full=full_bytes, adapter=adapter_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, encoder, args.rank, Path(tmp)) for name, encoder in ENCODERS.items()]
    print(
        f"LoRA r={args.rank} on query/key/value; the BiLSTM (128 per direction), attention and classifier train in full"
    )
    print()
    print("| encoder | parameters | trainable with LoRA | full model | adapter (LoRA + head) | adapter / full |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['total']:,} | {r['trainable']:,} ({r['trainable'] / r['total']:.1%}) "
            f"| {r['full'] / 1e6:.1f} MB | {r['adapter'] / 1e6:.2f} MB | {r['adapter'] / r['full']:.1%} |"
        )


if __name__ == "__main__":
    main()
