"""Distil a teacher (or an ensemble) into a BiLSTM + attention word-vector student (Tang et al. 2019).

    accelerate launch recipes/distill_bilstm_attention.py --config recipes/configs/distill_bilstm_attn.yaml \
        --teacher_model_name_or_path runs/bert/best [runs/bilm/best ...] --output_dir runs/distilled
    accelerate launch --multi_gpu --num_processes 2 recipes/distill_bilstm_attention.py \
        --config recipes/configs/distill_bilstm_attn.yaml --teacher_model_name_or_path runs/bert/best

The student trains on a transfer set (the training texts, their augmented copies, and unlabelled
texts with `--unlabelled_file` / `--unlabelled_corpus`) against the teacher's logits (`--distill_loss
mse`, or `kl`), mixed with cross-entropy on the gold labels by `--distill_alpha`. The teachers'
logits are computed once and cached (see `finetune/training/distillation.py`). Validation, test, outputs and
`best/` are those of `train_bilstm_attention.py`; the model card names the teachers.
"""

import logging
from pathlib import Path

from finetune.config.checks import resolve_best_model_metric
from finetune.config.distill_arguments import parse_distill_args
from finetune.config.parsing import to_yaml
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
from finetune.training.distillation import (
    DistillationLoss,
    check_single_label,
    distillation_report,
    encode_transfer_set,
    teacher_logits,
    transfer_texts,
)
from finetune.training.freezing import apply_freezing
from finetune.training.interruptions import remember_command
from finetune.training.loop import TrainingStep, training_loop
from finetune.training.phases import best_results, prepare_training, write_outputs
from finetune.training.run_directory import (
    check_output_dir,
    data_fingerprint,
    hold_output_dir,
    run_identity,
    start_output_dir,
)

logger = logging.getLogger("finetune.recipe")


def main(argv=None):
    args, config_path = parse_distill_args(argv)
    remember_command(argv)  # for the line that says how to resume a run stopped by SIGTERM or Ctrl-C
    accelerator = start_run(args.training.seed, **accelerator_options(args.training, args.logging))
    if not args.training.do_train:  # a distilled run's best/ is scored as any run's
        return evaluate_saved_run(args, accelerator)
    with hold_output_dir(accelerator, args.training.output_dir):  # one run at a time writes into it
        return distill_run(args, accelerator, config_path)


def distill_run(args, accelerator, config_path):
    training, distill, output_dir = args.training, args.distill, Path(args.training.output_dir)
    check_output_dir(output_dir, run_identity(*args.groups), overwrite=training.overwrite_output_dir,
                     resume=bool(training.resume_from_checkpoint))  # fmt: skip
    logger.info("%s, %d process(es); config %s", accelerator.distributed_type.value, accelerator.num_processes,
                config_path)  # fmt: skip

    ##### Data, student (vocabulary from the labelled training texts), transfer set, teacher logits #####
    with main_process_first(accelerator):
        splits, data_info = load_data(args.data, training.seed)
        check_single_label(data_info["problem_type"])
        resolve_best_model_metric(training, multi_label=False)
        built = build_model(splits, data_info["id2label"], args)
    model, tokenizer, encoded = built.model, built.tokenizer, built.splits
    texts, labels, counts = transfer_texts(list(splits["train"]["text"]), list(splits["train"]["label"]), distill,
                                           args.data.text_column, training.seed)  # fmt: skip
    fit_data = {split: {"texts": list(splits[split]["text"]), "labels": list(splits[split]["label"])}
                for split in ("train", "validation")}  # what a baseline teacher (tfidf_lr) is fitted on  # fmt: skip
    targets, sources = teacher_logits(distill.teacher_model_name_or_path, texts, data_info["id2label"], accelerator,
                                      distill.teacher_batch_size, fit_data)  # fmt: skip
    transfer = encode_transfer_set(texts, labels, targets, tokenizer, args.data.max_seq_length)
    logger.info("transfer set: %s", counts)
    identity = run_identity(*args.groups, {"data_fingerprint": data_fingerprint(args.data, splits)})
    resume = resolve_checkpoint(training.resume_from_checkpoint, output_dir / "checkpoints", identity)
    if accelerator.is_main_process:
        start_output_dir(output_dir, to_yaml(*args.groups), overwrite=training.overwrite_output_dir)
    accelerator.wait_for_everyone()
    apply_freezing(model.encoder, args.freezing, epoch=0)
    trainable, total = count_parameters(model)

    ##### Batches, optimizer, schedule #####
    train_loader = train_dataloader(transfer, tokenizer, training.per_device_train_batch_size, training.seed,
                                    training.dataloader_num_workers, extra_columns=("teacher_logits",))  # fmt: skip
    validation_loader, _ = eval_dataloader(encoded["validation"], tokenizer, training.per_device_eval_batch_size)
    model, optimizer, scheduler, loaders, schedule = prepare_training(
        accelerator, model, train_loader, validation_loader, args
    )

    ##### Train on the teacher's logits (and the gold labels), keeping the best by validation; test #####
    loss = DistillationLoss(distill.distill_loss, distill.distill_alpha, distill.distill_temperature)
    step = TrainingStep(accelerator, model, optimizer, scheduler, training, loss_function=loss)
    model, state, best_weights = training_loop(model, tokenizer, loaders, step, accelerator, args, schedule,
                                               (identity, resume))  # fmt: skip
    results, unwrapped = best_results(accelerator, model, state, best_weights, encoded.get("test"), tokenizer, args,
                                      (trainable, total))  # fmt: skip
    results.update({"data": data_info, **built.report, "distillation": distillation_report(distill, counts, sources),
                    "history": state.history})  # fmt: skip

    ##### Outputs: metrics, pictures, the model card (naming the teachers); the Hub #####
    write_outputs(accelerator, results, unwrapped, tokenizer, splits, args, identity)
    return results


if __name__ == "__main__":
    report_errors("distill_bilstm_attention.py")(main)()
