"""Emissions to labels and confidences: the NumPy reference (``reference``), the compiled kernels that serve
when they were built (``kernels``, ``_kernels.c``), and the decoder a predictor picks once (``decoders``)."""
