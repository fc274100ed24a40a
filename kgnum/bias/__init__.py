"""Social bias in trained embeddings: measurement (``measure``), a generated graph with planted
bias for tests (``planted``) and the adversarial-filters baseline's engine (``adversarial``,
PyTorch, imported only when chosen). The KL debiasing term lives with the step (kernels/kl.py)."""
