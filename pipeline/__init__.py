"""Stratified convolutional sparse coding as an adversarial defense.

Stages are plain functions over NumPy arrays (``pipeline.options``,
``pipeline.datasets``, ``pipeline.basis``, ``pipeline.store``); the Dask graphs
that run them over whole data sets live in the ``flows`` package.
"""

__version__ = "0.1.0"
