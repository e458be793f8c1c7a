"""The compiled decoding kernels (``slotfill/decoding/_kernels.c``); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install goes on and slotfill decodes with NumPy
(``slotfill.decoding.kernels.available()`` says which one runs)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("slotfill.decoding._kernels", ["slotfill/decoding/_kernels.c"], optional=True,
                             extra_compile_args=["-O3", "-std=c99"])])
