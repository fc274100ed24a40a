"""Bias measurement and debiasing of trained embeddings. Not built yet."""
