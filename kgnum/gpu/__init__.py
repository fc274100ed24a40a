"""GPU engine (CuPy): batches offloaded to GPUs, each relation pinned to one device. Not built yet."""
