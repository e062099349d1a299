"""A recipe's first step: the accelerator, logging, the seed, and the `--report_to` trackers."""

import dataclasses
import datetime
import logging
import os

from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed

from finetune.config.checks import trackers
from finetune.devices import create_accelerator, mixed_precision

logger = logging.getLogger(__name__)


def start_run(seed: int, **accelerator_kwargs) -> Accelerator:
    """A recipe's first step: the accelerator, logging (INFO on the main process only), the seed."""
    accelerator = create_accelerator(**accelerator_kwargs)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    logging.getLogger("gensim").setLevel(logging.WARNING)
    for noisy in ("accelerate.checkpointing", "httpx", "httpx2"):  # a line per file saved, per HTTP request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    set_seed(seed)
    return accelerator


def accelerator_options(training, logging_args) -> dict:
    """`Accelerator` settings of a fine-tuning run: accumulation, `--bf16`/`--fp16`, `--report_to` trackers
    writing under `--logging_dir` (default OUTPUT_DIR/runs), `--ddp_timeout`."""
    logging_dir = logging_args.logging_dir or os.path.join(training.output_dir, "runs")
    return dict(
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=training.ddp_timeout))],
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mixed_precision=mixed_precision(training.bf16, training.fp16),
        log_with=trackers(logging_args.report_to) or None,
        project_dir=logging_dir,
    )


def start_trackers(accelerator: Accelerator, args) -> None:
    """Starts the `--report_to` trackers with the run's hyper-parameters (a no-op without trackers)."""
    if accelerator.log_with:
        name = args.logging.run_name or os.path.basename(os.path.normpath(args.training.output_dir))
        accelerator.init_trackers(name, config=tracker_config(*args.groups))


def tracker_config(*groups) -> dict:
    """The run's hyper-parameters as trackers store them: flat, and only numbers, strings and booleans."""
    flat = {}
    for group in groups:
        for key, value in dataclasses.asdict(group).items():
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            flat[key] = "none" if value is None else value
    return flat
