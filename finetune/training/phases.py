"""The phases every fine-tuning recipe runs around its loop (`loop.training_loop`), in order:
`prepare_training` (optimizer, schedule, `accelerator.prepare`, trackers), `best_results` (the best
weights back, the test split scored) and `write_outputs` (metrics, pictures, the model card, the
Hub). A recipe keeps only what is its own: its data, its model, its loss.
"""

import logging
from pathlib import Path

import numpy as np

from finetune.config.checks import best_model_metric
from finetune.data.features import add_ngram_columns
from finetune.data.multilabel import (
    config_thresholds,
    is_multi_label,
    multilabel_metrics,
    predicted_label_sets,
    tune_thresholds,
)
from finetune.devices import run_hardware
from finetune.errors import ArgumentError
from finetune.evaluation.metrics import predict, short_metrics
from finetune.evaluation.reports import draw_pictures
from finetune.files import save_pretrained_into, write_json_atomic, write_text_atomic
from finetune.hub.push import push_to_hub, write_model_card
from finetune.training.distributed import check_parameters_in_sync
from finetune.training.loop import Schedule, test_best_model, threshold_metric
from finetune.training.optimization import create_optimizer, create_scheduler
from finetune.training.run_directory import mark_finished
from finetune.training.start import start_trackers
from finetune.training.tfidf_branch import attach_tfidf_branch, branch_class_weight

logger = logging.getLogger(__name__)


def prepare_training(accelerator, model, train_loader, validation_loader, args) -> tuple:
    """(model, optimizer, scheduler, (train_loader, validation_loader), schedule), prepared by the
    accelerator, the run's trackers started."""
    training = args.training
    check_metric_for_problem(training.metric_for_best_model, model.config)
    optimizer = create_optimizer(model, training.learning_rate, training.weight_decay, training.embedding_learning_rate,
                                 head_learning_rate=training.head_learning_rate, layer_decay=training.layer_decay,
                                 include_frozen=args.freezing.gradual_unfreezing_epochs > 0)  # fmt: skip
    schedule = Schedule.of(args, len(train_loader), accelerator.num_processes, multi_label=is_multi_label(model.config))
    scheduler = create_scheduler(training.lr_scheduler_type, optimizer, schedule.total_steps, training.warmup_ratio,
                                 accelerator.num_processes)  # fmt: skip
    model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, validation_loader, scheduler
    )
    start_trackers(accelerator, args)
    return model, optimizer, scheduler, (train_loader, validation_loader), schedule


def check_metric_for_problem(metric_for_best_model: str, config) -> None:
    """Refuse a best-model metric that only multi-label runs compute (`exact_match`) for a single-label model."""
    if best_model_metric(metric_for_best_model) == "exact_match" and not is_multi_label(config):
        raise ArgumentError(
            f"--metric_for_best_model {metric_for_best_model}: exact match is a multi-label metric; "
            "single-label runs have accuracy (the same thing for one label per text)"
        )


def best_results(
    accelerator, model, state, best_weights, test_split, tokenizer, args, parameters: tuple, validation_loader=None,
    tfidf_splits=None,
) -> tuple:  # fmt: skip
    """(results, unwrapped model): the best weights loaded back, the validation metrics they had, the
    loop's speed, the parameter counts, a multi-label model's decision thresholds (tuned on
    `validation_loader`, saved in OUTPUT_DIR/config.json), a TF-IDF branch fitted on `tfidf_splits` (the
    texts; `tfidf_branch_applies`) and attached (the model saved again) and, with `do_predict`, the test split's
    metrics at those thresholds or with that branch (logged)."""
    check_parameters_in_sync(accelerator, model)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_weights)
    trainable, total = parameters
    results = {**state.best, **state.speed(), "trainable_parameters": trainable, "total_parameters": total}
    validation_scores = None
    if tfidf_splits is not None:  # first: a multi-label model's thresholds are tuned on its scores with the branch
        branch = tfidf_phase(accelerator, unwrapped, tokenizer, tfidf_splits, test_split, args)
        results["tfidf_branch"], test_split, validation_scores = branch
    if is_multi_label(unwrapped.config) and validation_loader is not None:
        results["thresholds"] = tune_decision_thresholds(accelerator, model, validation_loader, args, validation_scores)
    if args.training.do_predict and test_split is not None:
        results.update(test_best_model(model, test_split, tokenizer, accelerator, args))
        accelerator.log({f"test/{k}": v for k, v in short_metrics(results, "test_").items()}, step=state.step)
    results["hardware"] = run_hardware(accelerator)
    return results, unwrapped


def tfidf_phase(accelerator, model, tokenizer, splits, test_split, args) -> tuple:
    """The TF-IDF branch fitted (by the main process, sent to the others) and attached, the model saved with
    it; (its report, the test split with the n-gram features it reads, the validation scores with it)."""

    selected = best_model_metric(args.training.metric_for_best_model)
    if is_multi_label(model.config):
        metric = threshold_metric(selected)
    else:
        metric = "accuracy" if selected == "accuracy" else "macro_f1"
    class_weight = branch_class_weight(args.training.class_weights, model.num_labels)
    report, scores = attach_tfidf_branch(model, tokenizer, splits, metric, accelerator, class_weight)
    report["class_weight"] = class_weight
    validation_scores = (scores, np.asarray(splits["validation"]["label"], dtype=np.float32))
    if accelerator.is_main_process:
        save_pretrained_into(model, tokenizer, args.training.output_dir)
    accelerator.wait_for_everyone()
    return report, None if test_split is None else add_ngram_columns(test_split, tokenizer), validation_scores


def tune_decision_thresholds(accelerator, model, validation_loader, args, probabilities=None) -> dict:
    """A multi-label model's thresholds tuned on the validation split (`multilabel.tune_thresholds`
    by `--threshold_strategy`, maximising the F1 that `--metric_for_best_model` names, else micro-F1),
    set in its config and written to OUTPUT_DIR/config.json. Returns them with validation micro/macro-F1
    before (at 0.5) and after: the "after" numbers are tuned on those very rows, the test split's are not.
    `probabilities`: (scores, multi-hot labels) of the validation split, if known (with a TF-IDF branch: its
    mixture, whose n-gram features the loader lacks)."""
    if probabilities is None:
        probabilities, labels, _ = predict(model, validation_loader, accelerator)
    else:
        probabilities, labels = probabilities
    config = accelerator.unwrap_model(model).config
    before = multilabel_metrics(predicted_label_sets(probabilities, config_thresholds(config)), labels, config.id2label)
    metric = threshold_metric(best_model_metric(args.training.metric_for_best_model))
    strategy = args.training.threshold_strategy
    tuned = tune_thresholds(probabilities, labels, strategy, metric)
    config.label_thresholds = {config.id2label[i]: float(value) for i, value in enumerate(tuned)}
    after = multilabel_metrics(predicted_label_sets(probabilities, tuned), labels, config.id2label)
    if accelerator.is_main_process:
        write_text_atomic(config.to_json_string(), Path(args.training.output_dir) / "config.json")
    logger.info(
        "thresholds (%s, on validation): %s; validation micro-F1 %.4f -> %.4f, macro-F1 %.4f -> %.4f", strategy,
        ", ".join(f"{label} {value:.2f}" for label, value in config.label_thresholds.items()),
        before["micro_f1"], after["micro_f1"], before["macro_f1"], after["macro_f1"],
    )  # fmt: skip
    return {
        "strategy": strategy,
        "label_thresholds": config.label_thresholds,
        **{f"validation_{key}_at_0.5": before[key] for key in ("micro_f1", "macro_f1", "exact_match")},
        **{f"validation_{key}_tuned": after[key] for key in ("micro_f1", "macro_f1", "exact_match")},
    }


def write_outputs(accelerator, results: dict, model, tokenizer, splits, args, identity: dict) -> None:
    """metrics.json, the pictures, the model card and, last, the finish marker (`run_directory.FINISHED_FILE`)
    (main process); the trackers closed; the upload with `push_to_hub` (a failed upload loses nothing:
    `finetune push` retries). `identity`: the run's (`run_identity`), named in the marker."""
    output_dir = Path(args.training.output_dir)
    if accelerator.is_main_process:
        write_json_atomic(results, output_dir / "metrics.json")
        draw_pictures(results, model, tokenizer, splits, output_dir)
        write_model_card(output_dir, args.hub.hub_model_id, args.hub.hub_license)
        mark_finished(output_dir, identity)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.hub.push_to_hub and accelerator.is_main_process:
        hub = args.hub
        push_to_hub(output_dir, hub.hub_model_id, private=hub.hub_private_repo, revision=hub.hub_revision,
                    license=hub.hub_license)  # fmt: skip
