"""Distil a teacher (or an ensemble) into a BiLSTM + attention word-vector student (Tang et al. 2019).

    accelerate launch recipes/distill_bilstm_attention.py --config recipes/configs/distill_bilstm_attn.yaml \
        --teacher_model_name_or_path runs/bert [runs/bilm ...] --output_dir runs/distilled
    accelerate launch --multi_gpu --num_processes 2 recipes/distill_bilstm_attention.py \
        --config recipes/configs/distill_bilstm_attn.yaml --teacher_model_name_or_path runs/bert

The student trains on a transfer set (the training texts, their augmented copies, and unlabelled
texts with `--unlabelled_file` / `--unlabelled_corpus`) against the teacher's logits (`--distill_loss
mse`, or `kl`), mixed with cross-entropy on the gold labels by `--distill_alpha`. The teachers'
logits are computed once and cached (see `finetune/training/distillation.py`). Validation, test, outputs and
the model saved in OUTPUT_DIR are those of `train_bilstm_attention.py`; the model card names the teachers.
"""

import logging
from pathlib import Path

from finetune.config import checks, distill_arguments, parsing
from finetune.data import features, loading
from finetune.devices import main_process_first
from finetune.errors import report_errors
from finetune.evaluation import saved_model
from finetune.inspection import dropping
from finetune.training import (
    builders,
    checkpointing,
    distillation,
    freezing,
    interruptions,
    loop,
    optimization,
    phases,
    run_directory,
    run_lock,
    start,
)

logger = logging.getLogger("finetune.recipe")


def main(argv=None):
    args, config_path = distill_arguments.parse_distill_args(argv)
    interruptions.remember_command(argv)  # for the line that says how to resume a run stopped by SIGTERM or Ctrl-C
    accelerator = start.start_run(args.training.seed, **start.accelerator_options(args.training, args.logging))
    if not args.training.do_train:  # a distilled run's model is scored as any run's
        return saved_model.evaluate_saved_run(args, accelerator)
    with run_lock.hold_output_dir(accelerator, args.training.output_dir):  # one run at a time writes into it
        return distill_run(args, accelerator, config_path)


def distill_run(args, accelerator, config_path):
    train_args, distill, output_dir = args.training, args.distill, Path(args.training.output_dir)
    run_directory.check_output_dir(output_dir, run_directory.run_identity(*args.groups),
                                   overwrite=train_args.overwrite_output_dir,
                                   resume=bool(train_args.resume_from_checkpoint))  # fmt: skip
    logger.info("%s, %d process(es); config %s", accelerator.distributed_type.value, accelerator.num_processes,
                config_path)  # fmt: skip

    ##### Data, student (vocabulary from the labelled training texts), transfer set, teacher logits #####
    with main_process_first(accelerator):
        splits, data_info = loading.load_data(args.data, train_args.seed)
        if args.data.drop_label_issues:
            splits, data_info["label_issues_dropped"] = dropping.drop_label_issues(
                splits, args.data.drop_label_issues, train_args.seed
            )
        distillation.check_single_label(data_info["problem_type"])
        checks.resolve_best_model_metric(train_args, multi_label=False)
        built = builders.build_model(splits, data_info["id2label"], args)
    model, tokenizer, encoded = built.model, built.tokenizer, built.splits
    texts, labels, counts = distillation.transfer_texts(list(splits["train"]["text"]), list(splits["train"]["label"]),
                                                        distill, args.data.text_column, train_args.seed)  # fmt: skip
    fit_data = {split: {"texts": list(splits[split]["text"]), "labels": list(splits[split]["label"])}
                for split in ("train", "validation")}  # what a baseline teacher (tfidf_lr) is fitted on  # fmt: skip
    targets, sources = distillation.teacher_logits(distill.teacher_model_name_or_path, texts, data_info["id2label"],
                                                   accelerator, distill.teacher_batch_size, fit_data)  # fmt: skip
    transfer = distillation.encode_transfer_set(texts, labels, targets, tokenizer, args.data.max_seq_length)
    logger.info("transfer set: %s", counts)
    fingerprint = run_directory.data_fingerprint(args.data, splits)
    identity = run_directory.run_identity(*args.groups, {"data_fingerprint": fingerprint})
    resume = checkpointing.resolve_checkpoint(train_args.resume_from_checkpoint, output_dir, identity)
    if accelerator.is_main_process:
        run_directory.start_output_dir(output_dir, parsing.to_yaml(*args.groups),
                                       overwrite=train_args.overwrite_output_dir)  # fmt: skip
    accelerator.wait_for_everyone()
    freezing.apply_freezing(model.encoder, args.freezing, epoch=0)
    trainable, total = optimization.count_parameters(model)

    ##### Batches, optimizer, schedule #####
    train_loader = features.train_dataloader(transfer, tokenizer, train_args.per_device_train_batch_size,
                                             train_args.seed, train_args.dataloader_num_workers,
                                             extra_columns=("teacher_logits",))  # fmt: skip
    validation_loader, _ = features.eval_dataloader(encoded["validation"], tokenizer,
                                                    train_args.per_device_eval_batch_size)  # fmt: skip
    model, optimizer, scheduler, loaders, schedule = phases.prepare_training(
        accelerator, model, train_loader, validation_loader, args
    )

    ##### Train on the teacher's logits (and the gold labels), keeping the best by validation; test #####
    loss = distillation.DistillationLoss(distill.distill_loss, distill.distill_alpha, distill.distill_temperature)
    step = loop.TrainingStep(accelerator, model, optimizer, scheduler, train_args, loss_function=loss)
    model, state, best_weights = loop.training_loop(model, tokenizer, loaders, step, accelerator, args, schedule,
                                                    (identity, resume))  # fmt: skip
    results, unwrapped = phases.best_results(accelerator, model, state, best_weights, encoded.get("test"), tokenizer,
                                             args, (trainable, total))  # fmt: skip
    report = distillation.distillation_report(distill, counts, sources)
    results.update({"data": data_info, **built.report, "distillation": report, "history": state.history})

    ##### Outputs: metrics, pictures, the model card (naming the teachers); the Hub #####
    phases.write_outputs(accelerator, results, unwrapped, tokenizer, splits, args, identity)
    return results


if __name__ == "__main__":
    report_errors("distill_bilstm_attention.py")(main)()
