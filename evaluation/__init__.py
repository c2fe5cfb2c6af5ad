"""The defense measured: oblivious and adaptive attacks, baselines, classifiers, the
accuracy table, its sanity checks and verdict.

This package imports the product (``pipeline``'s stages and the reconstruct
flow); the product never imports it.  Its command is ``python -m
pipeline.evaluate``; :mod:`evaluation.flow` runs a whole evaluation,
:mod:`evaluation.adaptive` attacks through a defense (and
:mod:`evaluation.autoattack` with the rest of AutoAttack), and
:class:`evaluation.defense.CSCDefense` and
:class:`evaluation.art_adapter.CSCPreprocessor` put the defense in front of a
PyTorch or ART classifier.
"""
