"""Brain-model alignment, layer by layer, always next to a random-weights control.

- :mod:`~brainhead.align.ridge`: ridge encoding with an alpha per target (torch).
- :mod:`~brainhead.align.delays`: FIR delays and TRF lags as scikit-learn transformers.
- :mod:`~brainhead.align.rsa`, :mod:`~brainhead.align.cka`: model-free comparisons.
- :mod:`~brainhead.align.ceilings`: split-half and NCSNR noise ceilings.
- :mod:`~brainhead.align.stats`: permutations, FDR, bootstrap, paired tests.
- :mod:`~brainhead.align.scores`: everything above for one subject, as summary tables.
- :mod:`~brainhead.align.timeseries`: the same for continuous recordings (FIR/TRF
  designs, circular-shift nulls).
"""

from .ceilings import (
    ncsnr,
    ncsnr_ceiling,
    normalise_by_ceiling,
    r_ceiling,
    split_half_ceiling,
)
from .cka import linear_cka
from .delays import Delayer, Lagger
from .ridge import GroupRidgeCV, pearson_r, solve_ridge_coef, solve_ridge_svd
from .rsa import compare_rdms, compute_rdm, crossnobis_rdm, rsa_per_region_layer
from .scores import (
    BEST_COLUMNS,
    METRICS,
    SUMMARY_COLUMNS,
    align_subject,
    collect_alignment,
    collect_summary,
    encoding_scores,
    leakage_free_groups,
    noise_ceiling,
    score_responses,
    score_subject,
)
from .stats import (
    best_layer_on_train,
    bootstrap_ci,
    bootstrap_r_ci,
    fdr_bh,
    intermediate_layer_advantage,
    paired_test,
    permutation_pvalues,
    permutation_test,
    permute_indices,
)
from .timeseries import score_timeseries

__all__ = [
    "GroupRidgeCV", "Delayer", "Lagger", "pearson_r", "solve_ridge_coef", "solve_ridge_svd",
    "BEST_COLUMNS", "METRICS", "SUMMARY_COLUMNS", "align_subject", "collect_alignment",
    "collect_summary", "encoding_scores", "leakage_free_groups", "noise_ceiling",
    "score_responses", "score_subject", "score_timeseries",
    "compare_rdms", "compute_rdm", "crossnobis_rdm", "rsa_per_region_layer", "linear_cka",
    "ncsnr", "ncsnr_ceiling", "normalise_by_ceiling", "r_ceiling", "split_half_ceiling",
    "best_layer_on_train", "bootstrap_ci", "bootstrap_r_ci", "fdr_bh",
    "intermediate_layer_advantage", "paired_test", "permutation_pvalues", "permutation_test",
    "permute_indices",
]
