"""Training data: reading JSONL formats into examples (``formats``), tokenizing with assistant-only labels
(``tokenization``), the cached dataset (``dataset``), token-budget batches, and validating a file's rows."""
