"""The BiLSTM + attention model family, registered with the Auto classes in one place.

Encoder kinds are registered in `encoders.py` (`register_encoder`; its docstring says how to add one).
"""

try:  # without torch or transformers (an onnxruntime server), only segmentation_jieba.py is usable
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ModuleNotFoundError as error:
    if error.name not in ("torch", "transformers"):
        raise
else:
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForPreTraining,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from .configuration_bilm import BiLMConfig
    from .configuration_bilstm_attention import BiLSTMAttentionConfig
    from .encoders import (
        ENCODER_KINDS,
        ENCODER_TYPES,
        Encoder,
        EncoderKind,
        encoder_kind,
        register_encoder,
        unregister_encoder,
    )
    from .modeling_bilm import BiLMForLanguageModeling, BiLMModel
    from .modeling_bilstm_attention import BiLSTMAttentionForSequenceClassification
    from .tokenization_jieba import JiebaTokenizer

    AutoConfig.register(BiLSTMAttentionConfig.model_type, BiLSTMAttentionConfig, exist_ok=True)
    AutoConfig.register(BiLMConfig.model_type, BiLMConfig, exist_ok=True)
    AutoModel.register(BiLMConfig, BiLMModel, exist_ok=True)
    AutoModelForPreTraining.register(BiLMConfig, BiLMForLanguageModeling, exist_ok=True)
    AutoModelForSequenceClassification.register(
        BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification, exist_ok=True
    )
    AutoTokenizer.register(BiLSTMAttentionConfig, slow_tokenizer_class=JiebaTokenizer, exist_ok=True)

    # save_pretrained() then copies these files and writes `auto_map`, so a model on the Hub loads
    # with trust_remote_code=True where finetune is not installed.
    BiLSTMAttentionConfig.register_for_auto_class()
    BiLSTMAttentionForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    JiebaTokenizer.register_for_auto_class("AutoTokenizer")
    BiLMConfig.register_for_auto_class()
    BiLMModel.register_for_auto_class("AutoModel")
    BiLMForLanguageModeling.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "ENCODER_KINDS",
    "ENCODER_TYPES",
    "BiLMConfig",
    "BiLMForLanguageModeling",
    "BiLMModel",
    "BiLSTMAttentionConfig",
    "BiLSTMAttentionForSequenceClassification",
    "Encoder",
    "EncoderKind",
    "JiebaTokenizer",
    "encoder_kind",
    "register_encoder",
    "unregister_encoder",
]
