"""`finetune` command line: train / evaluate / predict / explain / export / push / env.

    finetune train --train_file reviews.csv    (the word2vec recipe's settings: word2vec_bilstm_attn.yaml)
    finetune train --config bert_bilstm_attn --model_name_or_path hfl/chinese-macbert-base
        (--config: a shipped config by name, or a YAML file)
    finetune evaluate runs/reviews test.csv [--output_dir runs/reviews/evaluation/test]
    finetune predict runs/reviews new_reviews.csv --output predictions.csv
    finetune predict runs/reviews --text 这部电影真的很棒！ --text 这部电影真的很差劲。
    accelerate launch --multi_gpu --num_processes 2 -m finetune.cli predict runs/reviews big.csv
        (each process labels a share of the rows; --multi_gpu on CPUs too)
    finetune export runs/reviews [--output DIR] [--quantize int8] [--opset 17]
    finetune predict runs/reviews --backend onnx --text 物流很快 (the exported model, no PyTorch)
    finetune explain runs/reviews --text 物流很快，但是质量很差 --output attention.html
    finetune push runs/reviews --repo-id user/reviews-sentiment [--private] [--revision v1]
        [--dataset_title "ChnSentiCorp 酒店评论"]

    finetune inspect reviews.csv [--model runs/reviews | --folds 5]   (label errors, near-duplicates, leaks)
    finetune env    (versions and devices, for a bug report)

`finetune train` runs the same recipe as `accelerate launch recipes/train_bilstm_attention.py`
(in one process; use `accelerate launch` for several).

Each command imports what it needs when it runs: `--help`, `--version` and a mistyped command or flag
answer without loading torch (`finetune train`'s flags: with transformers' HfArgumentParser only).
"""

import argparse
import functools
import importlib.util
import json
import logging
import sys
from pathlib import Path

import finetune
from finetune.config.config_files import unknown_flag_error
from finetune.errors import DEBUG_HELP, ArgumentError, FinetuneError, report_errors
from finetune.inspection.command import add_inspect_parser

DISTRIBUTION = "finetune-zh"  # the name on PyPI; the package and the command are `finetune`


def require_extra(command: str, modules: tuple[str, ...], extra: str) -> None:
    """A command's optional dependencies, checked before any work: one line with the install command.

    Raises:
        FinetuneError: One of `modules` is not installed.
    """
    if any(importlib.util.find_spec(module) is None for module in modules):
        raise FinetuneError(f'{command} needs {" and ".join(modules)}: pip install "{DISTRIBUTION}[{extra}]"')


def _train(argv: list[str]) -> None:
    from finetune.config.parsing import parse_recipe_args

    parse_recipe_args(argv)  # --help and mistyped flags answer here, before the recipe loads torch
    from finetune.recipes.train_bilstm_attention import main as train_main

    train_main(argv)


def _evaluate(args: argparse.Namespace) -> None:
    from finetune.evaluation.reports import LABEL_SCORES
    from finetune.evaluation.saved_model import (
        CONFUSION_FILE,
        METRICS_FILE,
        PER_CLASS_FILE,
        evaluate_file,
        markdown_summary,
    )

    results = evaluate_file(
        args.model, args.file, args.output_dir, text_column=args.text_column, label_column=args.label_column,
        encoding=args.encoding, batch_size=args.per_device_eval_batch_size, label_separator=args.label_separator,
    )  # fmt: skip
    print(markdown_summary(results))
    picture = LABEL_SCORES if "test_exact_match" in results else CONFUSION_FILE  # multi-label
    print(f"wrote {METRICS_FILE}, {PER_CLASS_FILE} and {picture} to {results['output_dir']}")


def _positive_int(value: str) -> int:
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")


def _load_text_classifier(model: str, backend: str, bf16: bool = False):
    """`pipeline()` (pytorch) or the onnxruntime classifier over the exported folder (onnx, onnx_int8)."""
    from finetune.inference.classifier import check_bf16_backend, load_classifier

    check_bf16_backend(bf16, backend)
    if backend == "pytorch":
        return load_classifier(model, bf16=bf16)
    from finetune.inference.onnx_classifier import OnnxClassifier

    return OnnxClassifier(model, quantized=backend == "onnx_int8")


def _predict(args: argparse.Namespace) -> None:
    if not args.input_file and not args.text:
        raise ArgumentError("predict: give an input file or --text")
    if args.backend != "pytorch":
        require_extra(f"predict --backend {args.backend}", ("onnxruntime",), "onnx")
    from finetune.inference.file_labelling import OUTPUT_FORMATS, predict_file

    if args.input_file:
        # The default output keeps the input's format, so its values keep their types.
        suffix = Path(args.input_file).suffix.lower()
        suffix = suffix if suffix in OUTPUT_FORMATS else ".csv"
        output = args.output or str(Path(args.input_file).with_suffix("")) + ".predictions" + suffix
        count = predict_file(
            args.model, args.input_file, output, text_column=args.text_column, top_k=args.top_k,
            encoding=args.encoding, batch_size=args.per_device_eval_batch_size, backend=args.backend,
            bf16=args.bf16, num_proc=args.num_proc,
        )  # fmt: skip
        if count:  # 0: a process of `accelerate launch` other than the main one, which writes
            print(f"wrote {count} predictions to {output}")
    if args.text:
        classifier = _load_text_classifier(args.model, args.backend, args.bf16)
        if args.top_k is None:
            for text, prediction in zip(args.text, classifier(args.text)):
                print(json.dumps({"text": text, **prediction}, ensure_ascii=False))
        else:
            top_k = None if args.top_k == "all" else args.top_k  # the pipeline's None: every label
            for text, predictions in zip(args.text, classifier(args.text, top_k=top_k)):
                print(json.dumps({"text": text, "top_k": predictions}, ensure_ascii=False))


def _export(args: argparse.Namespace) -> None:
    require_extra("export", ("onnx", "onnxruntime"), "onnx")
    from finetune.inference.export import export_onnx

    summary = export_onnx(args.model, args.output, quantize=args.quantize, opset=args.opset)
    sizes = ", ".join(
        f"{name} {size / 1e6:.1f} MB" for name, size in summary["files"].items() if name.endswith(".onnx")
    )
    print(f"wrote {summary['directory']} ({sizes}); fp32 logits within {summary['fp32_max_abs_logit_difference']:.1e}")


def _top_k(value: str) -> int | str:
    """`--top_k`: a positive integer, or "all"."""
    if value == "all":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")


def _explain(args: argparse.Namespace) -> None:
    from finetune.evaluation.reports import attention_html
    from finetune.inference.classifier import explain, load_for_explain

    model, tokenizer = load_for_explain(args.model)
    examples = explain(model, tokenizer, args.text)
    for example in examples:
        words = " ".join(f"{t}:{w:.2f}" for t, w in zip(example["tokens"], example["weights"]))
        print(f"{example['label']} ({example['score']:.3f})  {words}")
    if args.output:
        attention_html(examples, args.output)
        print(f"wrote {args.output}")


def _push(args: argparse.Namespace) -> None:
    from finetune.hub.push import push_to_hub

    try:
        commits = push_to_hub(
            args.model, args.repo_id, private=args.private, revision=args.revision, license=args.license,
            dataset_title=args.dataset_title, commit_message=args.commit_message,
        )  # fmt: skip
    except (RuntimeError, FileNotFoundError) as error:
        raise FinetuneError(f"push: {error}") from None
    for url in commits:
        print(url)


def environment_report() -> str:
    """What a bug report needs, as a markdown list (as `transformers env` prints it): versions, platform, devices."""
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    rows = {DISTRIBUTION: finetune.__version__, "Python": platform.python_version(), "Platform": platform.platform()}
    try:
        import torch
    except ImportError:
        rows["torch"] = "not installed"
    else:
        rows["torch"] = f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"
    for name in ("transformers", "accelerate", "peft", "datasets", "gensim", "onnxruntime", "onnx"):
        rows[name] = version(name)
    if "torch" in sys.modules:
        from finetune.devices import cpu_has_native_bf16

        rows["CPU bf16 native (AVX512-BF16 or AMX)"] = "yes" if cpu_has_native_bf16() else "no"
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = ", ".join(torch.cuda.get_device_name(index) for index in range(count))
        rows["CUDA devices"] = f"{count} ({names})" if count else "none"
    return "\n".join(f"- {name}: {value}" for name, value in rows.items())


def _inspect(args: argparse.Namespace) -> None:
    require_extra("finetune inspect", ("cleanlab", "datasketch"), "inspect")
    from finetune.inspection.command import run_inspect

    run_inspect(args)


def _env(args: argparse.Namespace) -> None:
    print(environment_report())


class CommandParser(argparse.ArgumentParser):
    """argparse whose mistakes are `ArgumentError`s: one line naming the flag, not the usage dump."""

    def error(self, message: str):
        command = self.prog.removeprefix("finetune").strip()  # "" for the top level
        raise ArgumentError(f"{command + ': ' if command else ''}{message} (see --help)")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self._subparsers._group_actions[0].choices[parsed.command]
            flags = [flag for action in command._actions for flag in action.option_strings]
            raise unknown_flag_error(unknown, flags, f"{parsed.command}: ")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="finetune", description=__doc__, formatter_class=argparse.RawTextHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {finetune.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser = functools.partial(commands.add_parser, allow_abbrev=False)
    commands.add_parser("train", help="fine-tune (flags as the recipe: finetune train --help)", add_help=False)
    evaluate = commands.add_parser(
        "evaluate",
        help="score a saved model on a labelled file: metrics.json, per_class.csv, confusion_matrix.png",
        description="Scores a saved model on a labelled file, cleaned and encoded as a training run's test file "
        "is: on a run's own test file the numbers are its test_* metrics. Prints the headline numbers and a "
        "per-label table (markdown) and writes metrics.json, per_class.csv and confusion_matrix.png.",
    )
    evaluate.add_argument("model", help="a run directory (OUTPUT_DIR: its model; a LoRA adapter's too) or Hub id")
    evaluate.add_argument("file", help="labelled csv/tsv/json/jsonl/parquet file")
    evaluate.add_argument(
        "--output_dir",
        help="directory to write into (default: MODEL/evaluation/FILE_STEM: runs/reviews and test.csv "
        "give runs/reviews/evaluation/test; ./evaluation/FILE_STEM for a Hub id)",
    )
    evaluate.add_argument("--text_column", default="text", help="the column holding the texts")
    evaluate.add_argument("--label_column", default="label", help="the column holding the labels")
    evaluate.add_argument(
        "--label_separator", help="multi-label models: the character between a row's labels in one string (e.g. |)"
    )
    evaluate.add_argument(
        "--encoding", help="the file's encoding (e.g. big5, gbk); default: UTF-8, else detected and logged"
    )
    evaluate.add_argument("--per_device_eval_batch_size", type=_positive_int, default=256, help="examples per batch")
    predict = commands.add_parser("predict", help="label texts with a saved model")
    predict.add_argument("model", help="a run directory (OUTPUT_DIR: the model saved in it) or Hub id")
    predict.add_argument("input_file", nargs="?", help="csv/tsv/json/jsonl/parquet file to label")
    predict.add_argument(
        "--output",
        help="file to write, never the input: .csv, .tsv, .jsonl/.json (JSON Lines) or .parquet, by its extension "
        "(default: INPUT.predictions with the input's extension, .csv for others); the input's columns, then "
        "predicted_label and score",
    )
    predict.add_argument("--text_column", default="text", help="the input column holding the texts")
    predict.add_argument("--text", action="append", help="a text to label (repeatable)")
    predict.add_argument(
        "--top_k",
        type=_top_k,
        help="K or 'all': also a score_<label> column per label, filled for the row's K best labels "
        "(with --text: print the K best labels and scores)",
    )
    predict.add_argument(
        "--encoding", help="the input's encoding (e.g. big5, gbk); default: UTF-8, else detected and logged"
    )
    predict.add_argument(
        "--per_device_eval_batch_size",
        type=_positive_int,
        default=None,
        help="texts per batch and process, texts of similar length together (default: 64; 32 with onnx)",
    )
    predict.add_argument(
        "--backend",
        choices=("pytorch", "onnx", "onnx_int8"),
        default="pytorch",
        help="pytorch: pipeline(); onnx / onnx_int8: onnxruntime over MODEL/onnx/model.onnx / model_int8.onnx "
        "(finetune export), no PyTorch",
    )
    predict.add_argument(
        "--bf16",
        action="store_true",
        help="the PyTorch model in bfloat16, for CPUs with AVX512-BF16 or AMX (refused on others) and GPUs: "
        "1.2-1.6x the rows/s here, the same labels as float32 on all but 2 in 10,000 reviews",
    )
    predict.add_argument(
        "--num_proc",
        type=_positive_int,
        default=None,
        help="processes that label an input file on a CPU (Linux), one thread each (default: one per core for "
        "files of 2,048 rows a process or more; 1: this process alone, with every core's threads)",
    )
    export = commands.add_parser(
        "export",
        help="write MODEL/onnx/: model.onnx (+ model_int8.onnx) with the tokenizer files, for onnxruntime",
        description="Exports a saved model (a LoRA adapter is merged into its base first) to ONNX with dynamic "
        "batch and sequence axes, checks its logits against PyTorch's, and writes DIR/onnx/ with the tokenizer "
        "files and config.json. Serve it with finetune.inference.onnx_classifier.OnnxClassifier or finetune predict "
        "--backend onnx.",
    )
    export.add_argument("model", help="a run directory (OUTPUT_DIR: the model saved in it; a LoRA adapter's too)")
    export.add_argument("--output", help="directory to write onnx/ into (default: MODEL)")
    export.add_argument(
        "--quantize", choices=("int8",), help="also model_int8.onnx: onnxruntime dynamic quantization (int8 weights)"
    )
    export.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset, 14 to 20")
    explain = commands.add_parser("explain", help="show attention weights over the words of texts")
    explain.add_argument("model")
    explain.add_argument("--text", action="append", required=True)
    explain.add_argument("--output", help="HTML file with the words shaded by weight")
    push = commands.add_parser("push", help="upload a model, its card, metrics and pictures to the Hugging Face Hub")
    push.add_argument("model", help="a run directory (OUTPUT_DIR: the model saved in it)")
    push.add_argument("--repo-id", "--repo_id", dest="repo_id", required=True, help="user/name on the Hub")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to push to (created if missing; default main)")
    push.add_argument("--license", default="apache-2.0", help="license in the model card")
    push.add_argument(
        "--dataset-title",
        "--dataset_title",
        dest="dataset_title",
        help="the training data's proper name in the model card (default: the run's --dataset_title, else its "
        "--dataset_name, else the train file's name)",
    )
    push.add_argument(
        "--commit-message", "--commit_message", dest="commit_message", default="Upload model trained with finetune"
    )
    add_inspect_parser(commands)
    commands.add_parser(
        "env",
        help="print the versions and devices a bug report needs (markdown)",
        description=environment_report.__doc__,
    )
    return parser


@report_errors("finetune")
def main(argv: list[str] | None = None) -> None:
    """Runs a subcommand; a user's mistake is one line on stderr and exit status 1 (`--debug`: traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "httpx2"):  # a line per HTTP request of the Hub client
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv and argv[0] == "train":
        return _train(argv[1:])
    args = build_parser().parse_args(argv)
    commands = {
        "evaluate": _evaluate, "predict": _predict, "explain": _explain, "export": _export, "push": _push, "env": _env,
        "inspect": _inspect,
    }  # fmt: skip
    commands[args.command](args)


if __name__ == "__main__":
    main()
