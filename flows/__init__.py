"""The Dask graphs that run the pipeline's stages over whole data sets: reconstruct, learn.

A flow takes a ``distributed.Client`` and the stages' inputs, decides where
each stage runs (the workers read images and write the store; the client
only schedules), and holds no maths of its own.
"""
