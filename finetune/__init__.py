"""finetune: fine-tune pretrained Chinese word vectors and encoders for text classification.

Importing the package registers the BiLSTM + attention model with transformers' Auto classes,
so `pipeline("text-classification", model=DIR)` works on a saved model. Where torch or transformers
is not installed (a server of exported models), the package imports without them:
`finetune.inference.onnx_classifier.OnnxClassifier` needs only onnxruntime, numpy and the segmenter.
"""

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ModuleNotFoundError as error:
    if error.name not in ("torch", "transformers"):
        raise
else:
    from finetune.models.bilstm_attention import (
        BiLSTMAttentionConfig,
        BiLSTMAttentionForSequenceClassification,
        JiebaTokenizer,
    )

__version__ = "0.1.0"

__all__ = ["BiLSTMAttentionConfig", "BiLSTMAttentionForSequenceClassification", "JiebaTokenizer"]
