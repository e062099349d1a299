"""finetune: fine-tune pretrained Chinese word vectors and encoders for text classification.

Importing the package registers the BiLSTM + attention model with transformers' Auto classes,
so `pipeline("text-classification", model=DIR)` works on a saved model.
"""

from .models.bilstm_attention import (
    BiLSTMAttentionConfig,
    BiLSTMAttentionForSequenceClassification,
    JiebaTokenizer,
)

__version__ = "0.1.0"

__all__ = ["BiLSTMAttentionConfig", "BiLSTMAttentionForSequenceClassification", "JiebaTokenizer"]
