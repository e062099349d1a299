"""Word vectors: file formats, the cached filtered reader, the embedding matrix, word2vec training."""
