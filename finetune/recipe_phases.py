"""The phases every fine-tuning recipe runs around its loop (`loop.training_loop`), in order:
`prepare_training` (optimizer, schedule, `accelerator.prepare`, trackers), `best_results` (the best
weights back, the test split scored) and `write_outputs` (metrics, pictures, the model card, the
Hub). A recipe keeps only what is its own: its data, its model, its loss.
"""

from pathlib import Path

from .files import write_json_atomic
from .hub import push_to_hub, write_model_card
from .loop import Schedule, test_best_model
from .metrics import short_metrics
from .reports import draw_pictures
from .training import check_parameters_in_sync, create_optimizer, create_scheduler, run_hardware, start_trackers


def prepare_training(accelerator, model, train_loader, validation_loader, args) -> tuple:
    """(model, optimizer, scheduler, (train_loader, validation_loader), schedule), prepared by the
    accelerator, the run's trackers started."""
    training = args.training
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
    return model, optimizer, scheduler, (train_loader, validation_loader), schedule


def best_results(accelerator, model, state, best_weights, test_split, tokenizer, args, parameters: tuple) -> tuple:
    """(results, unwrapped model): the best weights loaded back, the validation metrics they had, the
    loop's speed, the parameter counts and, with `do_predict`, the test split's metrics (logged)."""
    check_parameters_in_sync(accelerator, model)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_weights)
    trainable, total = parameters
    results = {**state.best, **state.speed(), "trainable_parameters": trainable, "total_parameters": total}
    if args.training.do_predict and test_split is not None:
        results.update(test_best_model(model, test_split, tokenizer, accelerator, args))
        accelerator.log({f"test/{k}": v for k, v in short_metrics(results, "test_").items()}, step=state.step)
    results["hardware"] = run_hardware(accelerator)
    return results, unwrapped


def write_outputs(accelerator, results: dict, model, tokenizer, splits, args) -> None:
    """metrics.json, the pictures and best/'s model card (main process); the trackers closed; the
    upload with `push_to_hub` (a failed upload loses nothing: `finetune push` retries)."""
    output_dir = Path(args.training.output_dir)
    if accelerator.is_main_process:
        write_json_atomic(results, output_dir / "metrics.json")
        draw_pictures(results, model, tokenizer, splits, output_dir)
        write_model_card(output_dir / "best", args.hub.hub_model_id, args.hub.hub_license)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.hub.push_to_hub and accelerator.is_main_process:
        hub = args.hub
        push_to_hub(output_dir / "best", hub.hub_model_id, private=hub.hub_private_repo, revision=hub.hub_revision,
                    license=hub.hub_license)  # fmt: skip
