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

__all__ = ["OUTPUTS", "RAW_MODELS", "epochs_view_rate", "run_decoding", "decode_study"]

#: Decoding models that read the ``epochs`` view (raw signals) of the response tables.
RAW_MODELS = ("csp_lda", "tangent_lr", "logvar_lda", "shallow_convnet")


def epochs_view_rate(config: dict, modality: str) -> float | None:
    """Rate (Hz) of the ``epochs`` view that preprocessing writes for ``modality``: the
    study's ``decode.epochs_sfreq`` when it decodes the modality with a model of
    :data:`RAW_MODELS`, else None (no such view)."""
    decode = config.get("decode")
    if not decode or modality not in decode.get("modalities", ()):
        return None
    return decode.get("epochs_sfreq") if set(RAW_MODELS) & set(decode.get("models", ())) else None

#: Files the decode rule writes in ``results/<study>/decode/`` (see
#: :mod:`brainhead.decode.study`); here so that parsing the workflow imports nothing else.
OUTPUTS = ("scores.tsv", "predictions.h5", "attention.h5", "summary.json")


def __getattr__(name):
    if name in ("run_decoding", "decode_study"):
        from . import study

        return getattr(study, name)
    raise AttributeError(f"module 'brainhead.decode' has no attribute {name!r}")
