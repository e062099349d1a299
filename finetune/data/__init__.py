"""Labelled data: tables and `datasets`, cleaning, labels (single, multi-label), splits, the embedded
corpora, Chinese normalisation, features (tokenized, batched)."""
