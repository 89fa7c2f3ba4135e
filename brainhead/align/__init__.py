"""Brain-model alignment: ridge encoding scores layer by layer, with a random control."""

from .ridge import GroupRidgeCV, pearson_r, solve_ridge_coef, solve_ridge_svd
from .scores import (
    SUMMARY_COLUMNS,
    align_subject,
    collect_summary,
    encoding_scores,
    leakage_free_groups,
    score_subject,
)

__all__ = ["GroupRidgeCV", "pearson_r", "solve_ridge_coef", "solve_ridge_svd",
           "SUMMARY_COLUMNS", "align_subject", "collect_summary", "encoding_scores",
           "leakage_free_groups", "score_subject"]
