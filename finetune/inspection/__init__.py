"""What is wrong in a labelled data set: likely label errors (out-of-fold probabilities ranked by
cleanlab), exact and near-duplicate texts within and across splits, and a profile of the texts (classes,
lengths, truncation, unknown, traditional and full-width characters). `finetune inspect` writes them as a
report; `finetune train --drop_label_issues` trains without the flagged rows.

Needs the `inspect` extra (cleanlab, datasketch): `pip install "finetune-zh[inspect]"`.
"""
