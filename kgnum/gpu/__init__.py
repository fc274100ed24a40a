"""GPU engine (CuPy): the array step on devices, each relation pinned to one device, entities on the
host or the device (``engine.GpuEngine``); ``devices`` opens CuPy devices or emulated NumPy ones."""
