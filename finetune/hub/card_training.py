"""The model card's Training section, as sentences: the encoder, the data's cleaning and every setting after them.

`finetune.hub.model_card` gathers the template's variables; this module writes the prose among them that
describes how the model was trained (the encoder and its pretrained source, distillation, LoRA, freezing,
the steps and schedule, the loss, adversarial training, the TF-IDF branch, the time it took), each line
read from the run's `config.yaml` settings and `metrics.json`, so the card says what the run did.
"""

from pathlib import Path

__all__ = ["cleaning_description", "encoder_description", "encoder_kind", "run_setting", "training_description"]


def run_setting(run: dict, name: str, old_name: str):
    """A run setting by its name, else by the name older runs' `config.yaml` gave it."""
    return run[name] if run.get(name) is not None else run.get(old_name)


def encoder_kind(run: dict, config: dict):
    """(the model's `encoder_type`, its registered `EncoderKind`, or None when not registered here)."""
    from finetune.models.bilstm_attention import ENCODER_KINDS

    encoder_type = config.get("encoder_type") or run.get("encoder_type") or "word_vectors"
    return encoder_type, ENCODER_KINDS.get(encoder_type)


def encoder_description(run: dict, metrics: dict, config: dict) -> tuple[str, str | None]:
    """(sentence about the encoder, Hub id of the base model if there is one), from its registered kind.

    A kind not registered in this process (a plugin's) is named, not described.
    """
    encoder_type, kind = encoder_kind(run, config)
    what = kind.description if kind else f"a `{encoder_type}` encoder"
    pretrained_from = kind.pretrained_from if kind else None
    if pretrained_from == "word_vectors":
        vectors = metrics.get("vectors", {})
        source = run.get("word_vectors") or "word2vec trained here on the training texts"
        if not run.get("word_vectors") and run.get("pretrain_corpus"):
            source += " and People's Daily 1998"
        coverage = ""
        if vectors:
            coverage = (
                f" ({vectors.get('dim')}-dimensional; {vectors.get('type_coverage', 0):.1%} of the vocabulary's words "
                f"and {vectors.get('token_coverage', 0):.1%} of the training tokens have a pretrained vector)"
            )
        return f"{what}: {source}{coverage}, segmented with {run.get('segmenter', 'rjieba')}", None
    if pretrained_from != "checkpoint":
        return what, None
    # The model's own record of its checkpoint, else the run's flag.
    name = config.get("encoder_name_or_path") or run_setting(run, "model_name_or_path", "encoder_name_or_path")
    base = name if name and not Path(name).exists() and name.count("/") == 1 else None
    return f"{what} (`{Path(name).name if name and not base else name}`)", base


def _distillation_description(distill: dict) -> str:
    """The teachers, loss and transfer set of a distilled student (`distillation.distillation_report`)."""
    teachers = ", ".join(f"`{teacher}`" for teacher in distill["teachers"])
    if len(distill["teachers"]) > 1:
        teachers += " (an ensemble: their probabilities averaged)"
    term = "MSE between the student's and the teacher's logits"
    if distill["loss"] == "kl":
        term = f"KL divergence of the probabilities softened at temperature {distill['temperature']}"
    augment, counts = distill["augmentation"], distill["transfer_set"]
    return (
        f"Distilled (Tang et al. 2019) from {teachers}: loss {distill['alpha']} x {term} + "
        f"{1 - distill['alpha']:g} x cross-entropy on the gold labels; transfer set of {counts['total']} texts: "
        f"{counts['labelled']} labelled training texts, {counts['augmented']} augmented copies "
        f"({augment['copies']} drawn per text; p_mask {augment['p_mask']}, p_pos {augment['p_pos']}, "
        f"p_ng {augment['p_ng']}) and {counts['unlabelled']} unlabelled texts"
    )


def training_description(run: dict, metrics: dict) -> list[str]:
    """The Training section's lines after Data and Encoder: distillation, LoRA, freezing, steps, adversarial
    training, the TF-IDF branch, time."""
    lines = [_distillation_description(metrics["distillation"])] if metrics.get("distillation") else []
    if dropped := metrics.get("data", {}).get("label_issues_dropped"):
        lines.append(
            f"Likely mislabelled rows dropped (`--drop_label_issues {dropped['source']}`): {dropped['dropped']:,} "
            f"training rows ({dropped['how']}), {dropped['kept']:,} kept"
        )
    if trim := metrics.get("encoder", {}).get("vocabulary_trim"):
        lines.append(
            f"Vocabulary trimmed (`--trim_vocabulary`): {trim['pieces_after']:,} of {trim['pieces_before']:,} pieces "
            f"kept ({trim['pieces_used_by_texts']:,} used by the {trim['texts']:,} training texts, "
            f"{trim['single_character_pieces']:,} single characters, the special tokens): embedding "
            f"{trim['embedding_parameters_before'] / 1e6:.1f}M -> {trim['embedding_parameters_after'] / 1e6:.1f}M "
            "parameters. A text with pieces never kept is read in shorter kept pieces and characters"
        )
    if run.get("lora_r"):
        lora = metrics.get("lora", {})
        size = (
            f"; adapter {lora['adapter_bytes'] / 1e6:.2f} MB vs {lora['full_model_bytes'] / 1e6:.1f} MB" if lora else ""
        )
        lines.append(
            f"LoRA r={run['lora_r']}, alpha={run.get('lora_alpha')} on "
            f"{run.get('lora_target_modules') or 'the default target modules'}; the head trained in full{size}"
        )
    freezing = [key for key in ("freeze_embeddings", "freeze_encoder") if run.get(key)]
    if run.get("freeze_bottom_layers"):
        freezing.append(f"freeze_bottom_layers={run['freeze_bottom_layers']}")
    if run.get("gradual_unfreezing_epochs"):
        freezing.append(f"gradual unfreezing every {run['gradual_unfreezing_epochs']} epochs")
    lines.append(f"Freezing: {', '.join(freezing) if freezing else 'none (everything trained)'}")
    lines.append(
        f"{metrics.get('train_steps', '?')} steps (best at epoch {metrics.get('best_epoch', 0) + 1} of "
        f"{run.get('num_train_epochs')} at most), batch {run.get('per_device_train_batch_size')} per device, "
        f"AdamW lr {run.get('learning_rate')}, {run.get('lr_scheduler_type')} schedule, seed {run.get('seed')}"
        + (f" (split seed {run['split_seed']})" if run.get("split_seed") is not None else "")
    )
    if run.get("loss", "cross_entropy") != "cross_entropy" or run.get("class_weights", "none") != "none":
        loss = f"focal (gamma {run.get('focal_gamma')})" if run.get("loss") == "focal" else "cross-entropy"
        lines.append(
            f"Loss: {loss}, class weights {run.get('class_weights')}; the best model by validation "
            f"{run.get('metric_for_best_model')}"
        )
    if run.get("adversarial_epsilon"):
        epsilon = run["adversarial_epsilon"]
        interval = run.get("adversarial_interval", 1)
        every = "every step" if interval == 1 else f"one optimizer step in {interval}"
        lines.append(f"Adversarial training on the input embeddings (Miyato et al., 2017), epsilon {epsilon}, {every}")
    if branch := metrics.get("tfidf_branch"):
        per_label = " (one-vs-rest: one per label)" if "thresholds" in metrics else ""  # multi-label
        per_label += ", classes weighted as in the loss" if branch.get("class_weight") else ""
        lines.append(
            f"TF-IDF branch: character 1-3-gram TF-IDF + logistic regression{per_label} (C {branch['C']:g}, "
            f"{branch['ngrams']:,} n-grams) fitted on the training texts after the BiLSTM; the model's probabilities "
            f"are {1 - branch['mix_weight']:g} x the BiLSTM's + {branch['mix_weight']:g} x the branch's"
        )
    hardware = metrics.get("hardware", {})
    runtime = metrics.get("train_runtime_s")
    if runtime is not None:
        lines.append(
            f"Trained in {runtime / 60:.1f} min on {hardware.get('device', 'an unrecorded device')} "
            f"({hardware.get('processes', 1)} process(es), mixed precision {hardware.get('mixed_precision', 'no')}), "
            f"{metrics.get('train_samples_per_second', 0):.0f} samples/s"
        )
    return lines


def cleaning_description(metrics: dict) -> str:
    """The Data line's note on what cleaning removed from the training file (`metrics.json`'s data stats)."""
    stats = metrics.get("data", {}).get("stats", {}).get("train", {})
    if not stats:
        return "see metrics.json"
    return (
        f"{stats.get('rows_read', '?')} rows read; {stats.get('duplicates_removed', 0)} exact duplicates and "
        f"{stats.get('conflicting_dropped', 0)} rows whose text had two labels removed before splitting"
    )
