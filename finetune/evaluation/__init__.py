"""Judging a model: metrics (`metrics`), a saved model on a labelled file or a run's splits
(`saved_model`), reports and pictures (`reports`), the baselines (`baselines`: TF-IDF + LR, fastText)
and comparisons over seeds (`comparison`)."""
