"""Scores of a decoder on held-out rows, each with its chance level and a permutation p.

The p-value is that of a label permutation test within the test fold: the test labels
are permuted ``n_permutations`` times against the fixed predictions, and p is the
fraction of permutations whose accuracy reaches the observed one, counting the observed
labelling itself (``(1 + #{null >= observed}) / (1 + n_permutations)``, so p is never
0). This tests whether the predictions depend on the labels at all, given the
prediction and label frequencies of the fold; it refits nothing. Scores pooled over the
folds of a protocol permute within each fold and sum correct predictions over folds,
so the null keeps every fold's class balance. Chance is the accuracy of always
answering the most frequent test label (the majority rate); balanced accuracy's chance
is one over the number of classes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCORE_COLUMNS", "fold_scores", "permutation_null", "pooled_scores"]

#: Columns of ``decode/scores.tsv``.
SCORE_COLUMNS = ["modality", "protocol", "subject", "fold", "model", "n_train", "n_test",
                 "n_classes", "accuracy", "balanced_accuracy", "roc_auc", "kappa",
                 "chance", "chance_balanced", "null_mean", "p_value", "n_permutations",
                 "fit_seconds", "n_purged"]


def permutation_null(y_true: np.ndarray, y_pred: np.ndarray, n_permutations: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Correct predictions under ``n_permutations`` permutations of ``y_true``.

    Returns
    -------
    correct : ndarray of int, shape (n_permutations,)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    perms = rng.permuted(np.tile(y_true, (n_permutations, 1)), axis=1)
    return (perms == y_pred[None, :]).sum(1)


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U of the scores of the positive rows
    against the negative ones over their product (ties count one half)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _scores(y_true, y_pred, proba, classes) -> dict:
    """Accuracy, balanced accuracy, ROC AUC, Cohen's kappa and chance (numpy; the same
    definitions as scikit-learn's accuracy_score, balanced_accuracy_score, roc_auc_score
    and cohen_kappa_score, without their per-call validation cost)."""
    y_true, y_pred = np.asarray(y_true, str), np.asarray(y_pred, str)
    labels = np.asarray(classes, str)
    t = np.searchsorted(labels, y_true)
    p = np.searchsorted(labels, y_pred)
    k = len(labels)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (t, p), 1)
    n = confusion.sum()
    support = confusion.sum(1)
    present = support > 0
    accuracy = float(np.trace(confusion) / n)
    balanced = float(np.mean(np.diag(confusion)[present] / support[present]))
    expected = float((support * confusion.sum(0)).sum() / n ** 2)
    kappa = (accuracy - expected) / (1 - expected) if present.sum() > 1 and expected < 1 else np.nan
    auc = np.nan
    if k == 2 and present.all():
        auc = roc_auc(t == 1, proba[:, 1])
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "roc_auc": auc,
            "kappa": float(kappa), "chance": float(support.max() / n),
            "chance_balanced": 1.0 / k, "n_test": int(n), "n_classes": k}


def fold_scores(y_true, proba, classes, *, n_permutations: int = 1000,
                rng: np.random.Generator | None = None) -> dict:
    """Accuracy, balanced accuracy, ROC AUC (two classes), kappa, chance and p of a fold.

    Parameters
    ----------
    y_true : array of str, shape (n,)
    proba : ndarray, shape (n, n_classes)
        Class probabilities, columns in the order of ``classes``.
    classes : array of str
        Sorted labels of the training side.
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    scores : dict
        Keys of :data:`SCORE_COLUMNS` from ``n_classes`` to ``n_permutations``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    classes = np.asarray(classes, str)
    y_pred = classes[np.argmax(proba, axis=1)]
    out = _scores(y_true, y_pred, proba, classes)
    null = permutation_null(y_true, y_pred, n_permutations, rng) / len(y_true)
    out.update(null_mean=float(null.mean()), n_permutations=n_permutations,
               p_value=float((1 + np.sum(null >= out["accuracy"] - 1e-12))
                             / (1 + n_permutations)))
    return out


def pooled_scores(folds: list[tuple[np.ndarray, np.ndarray]], classes, *,
                  n_permutations: int = 1000, rng: np.random.Generator | None = None) -> dict:
    """Scores over the test rows of several folds, with a within-fold permutation null.

    Parameters
    ----------
    folds : list of (y_true, proba)
    classes : array of str
    """
    rng = np.random.default_rng(0) if rng is None else rng
    classes = np.asarray(classes, str)
    y_true = np.concatenate([np.asarray(t, str) for t, _ in folds])
    proba = np.concatenate([p for _, p in folds])
    y_pred = classes[np.argmax(proba, axis=1)]
    out = _scores(y_true, y_pred, proba, classes)
    null = np.zeros(n_permutations)
    for t, p in folds:
        null += permutation_null(t, classes[np.argmax(p, axis=1)], n_permutations, rng)
    null /= len(y_true)
    out.update(null_mean=float(null.mean()), n_permutations=n_permutations,
               p_value=float((1 + np.sum(null >= out["accuracy"] - 1e-12))
                             / (1 + n_permutations)))
    return out
