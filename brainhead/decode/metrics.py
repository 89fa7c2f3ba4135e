"""Scores of a decoder on held-out rows, each with its chance level and a permutation p.

The p-value is that of a label permutation test within the test fold, on balanced
accuracy: the test labels are permuted ``n_permutations`` times against the fixed
predictions, and p is the fraction of permutations whose balanced accuracy reaches the
observed one, counting the observed labelling itself (``(1 + #{null >= observed}) / (1 +
n_permutations)``, so p is never 0). This tests whether the predictions depend on the
labels at all; it refits nothing. Balanced accuracy is the statistic because its null
sits at one over the number of classes whatever the class balance and the predictions'
bias (accuracy's null, the sum over classes of predicted x true rates, can sit below the
majority rate, so an accuracy under the majority rate could come out "significant").
Scores pooled over the folds of a protocol permute within each fold and add the per-class
counts over folds, so the null keeps every fold's class balance. Chance is reported for
both scores: the accuracy of always answering the most frequent test label (majority
rate), and one over the number of classes for balanced accuracy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCORE_COLUMNS", "fold_scores", "permutation_null", "pooled_scores"]

#: Columns of ``decode/scores.tsv``.
SCORE_COLUMNS = ["modality", "protocol", "subject", "fold", "model", "n_train", "n_test",
                 "n_classes", "accuracy", "balanced_accuracy", "roc_auc", "kappa",
                 "chance", "chance_balanced", "null_mean", "p_value", "n_permutations",
                 "n_purged"]


def permutation_null(y_true: np.ndarray, y_pred: np.ndarray, classes, n_permutations: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Correct predictions per class under ``n_permutations`` permutations of ``y_true``.

    Returns
    -------
    correct : ndarray of int, shape (n_permutations, n_classes)
        Rows whose permuted label is the class and is predicted.
    """
    classes = np.asarray(classes, str)
    t = np.searchsorted(classes, np.asarray(y_true, str))
    p = np.searchsorted(classes, np.asarray(y_pred, str))
    perms = rng.permuted(np.tile(t, (n_permutations, 1)), axis=1)
    hit = perms == p[None, :]
    return np.stack([(hit & (perms == c)).sum(1) for c in range(len(classes))], axis=1)


def _null_balanced(correct: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each permutation from per-class correct counts."""
    present = support > 0
    return (correct[:, present] / support[present]).mean(1)


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
        Sorted labels of the study.
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    scores : dict
        Keys of :data:`SCORE_COLUMNS` from ``n_classes`` to ``n_permutations``;
        ``null_mean`` and ``p_value`` are those of balanced accuracy.
    """
    return pooled_scores([(y_true, proba)], classes, n_permutations=n_permutations, rng=rng)


def pooled_scores(folds: list[tuple[np.ndarray, np.ndarray]], classes, *,
                  n_permutations: int = 1000, rng: np.random.Generator | None = None) -> dict:
    """Scores over the test rows of one or several folds, with a within-fold permutation
    null of balanced accuracy.

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
    correct = np.zeros((n_permutations, len(classes)))
    for t, p in folds:
        correct += permutation_null(t, classes[np.argmax(p, axis=1)], classes,
                                    n_permutations, rng)
    support = np.array([(y_true == c).sum() for c in classes])
    null = _null_balanced(correct, support)
    out.update(null_mean=float(null.mean()), n_permutations=n_permutations,
               p_value=float((1 + np.sum(null >= out["balanced_accuracy"] - 1e-12))
                             / (1 + n_permutations)))
    return out
