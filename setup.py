"""The compiled decoding kernels (``slotfill/_decode.c``); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install goes on and slotfill decodes with NumPy
(``slotfill.fastdecode.available()`` says which one runs)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("slotfill._decode", ["slotfill/_decode.c"], optional=True,
                             extra_compile_args=["-O3", "-std=c99"])])
