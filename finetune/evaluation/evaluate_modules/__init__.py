"""Local `evaluate` modules: the Hub's metric scripts cannot be fetched offline."""
