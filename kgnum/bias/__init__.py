"""Social bias in trained embeddings: measurement (``measure``) and a generated graph with
planted bias for tests (``planted``). Debiasing inside the training step is not built yet."""
