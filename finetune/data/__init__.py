"""Labelled data: tables and `datasets` (`tables`, `sources`, `named_datasets`), cleaning, labels
(single, multi-label), splits, the embedded corpora (`corpora`), Chinese normalisation, and the
features a model reads (`features`: tokenized, batched)."""
