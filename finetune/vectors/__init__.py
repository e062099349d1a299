"""Word vectors: file formats (`formats`), the cached filtered reader (`reading`, `cache`), the
embedding matrix (`embeddings`), and training word2vec where no vectors are given (`word2vec`)."""
