"""Label decoding studies: protocols, baselines, scores (issue 10).

- :mod:`~brainhead.decode.trials`: the rows to classify, pooled per modality, with the
  bookkeeping (trial, run, session, time span) that keeps splits honest;
- :mod:`~brainhead.decode.protocols`: WithinSession, CrossSession and CrossSubject
  folds (MOABB's names), each split checked for leakage where it is made;
- :mod:`~brainhead.decode.baselines`: CSP + LDA, tangent space + logistic regression,
  log-variance + LDA and a shallow ConvNet;
- :mod:`~brainhead.decode.metrics`: accuracy, balanced accuracy, ROC AUC, kappa, chance
  and permutation p-values;
- :mod:`~brainhead.decode.study`: the decode stage (:func:`run_decoding`).

Submodules are imported on use, so ``import brainhead.decode`` stays light.
"""

from __future__ import annotations

__all__ = ["run_decoding", "decode_study"]


def __getattr__(name):
    if name in __all__:
        from . import study

        return getattr(study, name)
    raise AttributeError(f"module 'brainhead.decode' has no attribute {name!r}")
