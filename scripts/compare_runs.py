"""Compare fine-tuning runs (and the pretraining behind them) in one markdown table.

    python scripts/compare_runs.py outputs/word2vec_bilstm_attn outputs/bilm_frozen outputs/bert_tuned ...

Each argument is a run directory of `recipes/train_bilstm_attention.py`; for encoders pretrained
from a checkpoint (the kind's `pretrained_from`, in the encoder registry) the checkpoint's own
`metrics.json` (validation perplexity, pretraining time) is read too.
"""

import json
import sys
from pathlib import Path

import yaml

from finetune.models.bilstm_attention import ENCODER_KINDS


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def describe(run: Path) -> list[str]:
    metrics = read_json(run / "metrics.json")
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    encoder = config["encoder_type"]
    kind = ENCODER_KINDS.get(encoder)  # None: a kind registered by a plugin, not here
    pretrained_from = kind.pretrained_from if kind else None
    pretraining = "word2vec (cached)" if pretrained_from == "word_vectors" else "-"
    if pretrained_from == "checkpoint":
        checkpoint = config.get("model_name_or_path") or config.get("encoder_name_or_path")  # older runs' name
        pretrained = read_json(Path(checkpoint) / "metrics.json")
        if pretrained:
            pretraining = (
                f"{pretrained['train_runtime_s'] / 60:.0f} min, ppl {pretrained['best_validation_perplexity']:.0f}"
            )
    # The pretrained weights of a word-vector encoder are its table: --freeze_embeddings keeps them as they were.
    frozen = config.get("freeze_encoder") or (pretrained_from == "word_vectors" and config.get("freeze_embeddings"))
    return [
        run.name,
        encoder,
        pretraining,
        "frozen" if frozen else "fine-tuned",
        f"{metrics['test_accuracy']:.4f}",
        f"{metrics['test_macro_f1']:.4f}",
        f"{metrics['train_samples_per_second']:.0f}",
        f"{metrics['train_runtime_s'] / 60:.1f} min, {metrics['train_steps']} steps",
    ]


def main(runs: list[str]) -> None:
    header = ["run", "encoder", "pretraining", "encoder weights", "test acc", "test macro-F1",
              "train samples/s", "fine-tuning time"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for run in runs:
        print("| " + " | ".join(describe(Path(run))) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
