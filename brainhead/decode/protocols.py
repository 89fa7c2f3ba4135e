"""Evaluation protocols of a decoding study, leakage-proof by construction.

Three protocols, named as MOABB names them:

- :class:`WithinSession`: k folds inside each session of each subject. Trials are
  grouped by their identity (repeated presentations of a stimulus stay together) and
  folded with a stratified grouped k-fold; fixed-length windows of a continuous
  recording are grouped in ``n_folds`` contiguous blocks per run, and fold ``k`` tests
  block ``k`` of every run (so each class of a rest-versus-task design is tested).
- :class:`CrossSession`: leave one session out, per subject (subjects with one session
  have no fold).
- :class:`CrossSubject`: leave one subject out.

Every split, including the validation split carved for early stopping from the training
side (:func:`validation_split`), is built so that nothing is shared, then checked by
:func:`check_split` before it is returned: no row, trial, subject (across subjects) or
time span of a run (overlapping windows or epochs) on both sides. Rows of the training
side whose span overlaps a test row of the same run are left out of training
("purged"), which is how overlapping windows inherit their neighbours' group; what is
left must pass the check. A split that would leak raises :class:`LeakageError` naming
the study, the subject and the offending groups, so no score can come from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CrossSession", "CrossSubject", "Fold", "LeakageError", "PROTOCOLS",
           "WithinSession", "check_split", "make_folds", "validation_split"]


class LeakageError(RuntimeError):
    """A split would put the same row, trial, subject or time span on both sides."""


@dataclass(frozen=True)
class Fold:
    """One split of a protocol.

    Attributes
    ----------
    protocol : str
    subject : str
        The subject tested (within-subject protocols, and the left-out subject of
        CrossSubject).
    fold : int
    train, test : ndarray of int
        Global rows of :class:`~brainhead.decode.trials.DecodeRows`, sorted.
    session : str
        The session tested ("" when the fold spans sessions).
    n_purged : int
        Training rows left out because their span overlaps a test row.
    """

    protocol: str
    subject: str
    fold: int
    train: np.ndarray
    test: np.ndarray
    session: str = ""
    n_purged: int = 0


# --------------------------------------------------------------------------- the check
def _overlaps(rows, a: np.ndarray, b: np.ndarray) -> list[tuple[str, str, str, str]]:
    """``(subject, run, row of a, row of b)`` whose time spans in the same run intersect."""
    found = []
    for s in np.unique(rows.subject[b]):
        for r in np.unique(rows.run[b][rows.subject[b] == s]):
            ia = a[(rows.subject[a] == s) & (rows.run[a] == r)]
            ib = b[(rows.subject[b] == s) & (rows.run[b] == r)]
            if not len(ia) or not len(ib):
                continue
            sa, ea = rows.t_start[ia], rows.t_stop[ia]
            sb, eb = rows.t_start[ib], rows.t_stop[ib]
            ok_a, ok_b = np.isfinite(sa) & np.isfinite(ea), np.isfinite(sb) & np.isfinite(eb)
            ia, sa, ea = ia[ok_a], sa[ok_a], ea[ok_a]
            ib, sb, eb = ib[ok_b], sb[ok_b], eb[ok_b]
            if not len(ia) or not len(ib):
                continue
            order = np.argsort(sb)
            sb, eb, ib = sb[order], eb[order], ib[order]
            # intervals [s, e) intersect when s_a < e_b and s_b < e_a
            end_max = np.maximum.accumulate(eb)
            for k in range(len(ia)):
                j = np.searchsorted(sb, ea[k], side="left")  # b rows starting before a ends
                if j and end_max[j - 1] > sa[k]:
                    hits = np.nonzero((sb[:j] < ea[k]) & (eb[:j] > sa[k]))[0]
                    found.append((str(s), str(r), str(rows.trial[ia[k]]), str(rows.trial[ib[hits[0]]])))
    return found


def _purge(rows, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, int]:
    """``train`` without rows whose span overlaps a test row of the same run."""
    hits = _overlaps(rows, train, test)
    if not hits:
        return train, 0
    bad = {(s, r, t) for s, r, t, _ in hits}
    keep = np.array([(rows.subject[i], rows.run[i], rows.trial[i]) not in bad for i in train])
    return train[keep], int((~keep).sum())


def check_split(rows, train, test, *, protocol: str, what: str = "test") -> None:
    """Refuse a split that shares anything between its two sides.

    Parameters
    ----------
    rows : DecodeRows
    train, test : array of int
        Global rows of the two sides (``test`` is the validation side when ``what`` is
        ``"validation"``).
    protocol : str
        Named in the message.
    what : {"test", "validation"}

    Raises
    ------
    LeakageError
        Naming the study, the protocol, the subject and the offending groups: a row on
        both sides, a trial (the same ``stim_id`` of a subject) on both sides, a subject
        on both sides of CrossSubject, or rows of the same run whose time spans overlap.
    """
    train, test = np.asarray(train, int), np.asarray(test, int)
    head = f"study {rows.study}: {rows.modality} {protocol}: leaking {what} split"
    if not len(train) or not len(test):
        raise LeakageError(f"{head}: an empty side ({len(train)} training, {len(test)} "
                           f"{what} rows)")
    both = np.intersect1d(train, test)
    if len(both):
        i = both[0]
        raise LeakageError(f"{head}: sub-{rows.subject[i]}: {len(both)} row(s) on both sides "
                           f"(e.g. trial {str(rows.trial[i])!r})")
    if protocol == "CrossSubject" and what == "test":
        shared = np.intersect1d(rows.subject[train], rows.subject[test])
        if len(shared):
            raise LeakageError(f"{head}: subject(s) {['sub-' + str(s) for s in shared]} on both "
                               "sides of a leave-one-subject-out split")
    train_trials = set(zip(rows.subject[train].tolist(), rows.trial[train].tolist()))
    shared = sorted(k for k in set(zip(rows.subject[test].tolist(), rows.trial[test].tolist()))
                    if k in train_trials)
    if shared:
        subject = shared[0][0]
        trials = [t for s, t in shared if s == subject]
        raise LeakageError(f"{head}: sub-{subject}: trial group(s) {trials[:5]}"
                           f"{' ...' if len(trials) > 5 else ''} on both sides "
                           f"({len(shared)} shared in all)")
    hits = _overlaps(rows, train, test)
    if hits:
        s, r, a, b = hits[0]
        raise LeakageError(f"{head}: sub-{s}: run {r}: window(s) overlapping in time on both "
                           f"sides (training {a!r} overlaps {what} {b!r}; {len(hits)} "
                           "training rows in all)")


# --------------------------------------------------------------------------- groups
def block_groups(rows, idx: np.ndarray, n_blocks: int) -> np.ndarray:
    """Contiguous block (0 .. n_blocks-1) of each windowed row within its run, by time."""
    blocks = np.zeros(len(idx), int)
    for s in np.unique(rows.subject[idx]):
        for r in np.unique(rows.run[idx]):
            mine = np.nonzero((rows.subject[idx] == s) & (rows.run[idx] == r))[0]
            if not len(mine):
                continue
            start = rows.t_start[idx[mine]]
            order = mine[np.argsort(np.where(np.isfinite(start), start, 0), kind="stable")]
            for b, part in enumerate(np.array_split(order, min(n_blocks, len(order)))):
                blocks[part] = b
    return blocks


def _group_labels(rows, idx: np.ndarray, n_blocks: int, window_groups: str) -> np.ndarray:
    """The group of each row for folding: its trial, or its run's block for windows."""
    groups = np.char.add(np.char.add(rows.subject[idx].astype(str), "/"),
                         rows.trial[idx].astype(str)).astype(object)
    win = rows.windowed[idx]
    if win.any() and window_groups == "block":
        blocks = block_groups(rows, idx[win], n_blocks)
        groups[win] = [f"{s}/run{r}/block{b}" for s, r, b in
                       zip(rows.subject[idx[win]], rows.run[idx[win]], blocks)]
    return groups.astype(str)


def _grouped_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int):
    """Stratified grouped k-fold (fewer folds when there are fewer groups).

    Groups (one label each: a trial, a block of one run) are dealt to folds class by
    class in a seeded random order, so every fold gets about the same number of groups
    of each class (scikit-learn's StratifiedGroupKFold solves the general case, with
    mixed-label groups, and is much slower).
    """
    from sklearn.model_selection import GroupKFold

    names, inverse = np.unique(groups, return_inverse=True)
    k = min(n_folds, len(names))
    if k < 2:
        return []
    # the label of each group (its most frequent one)
    classes, y_code = np.unique(y, return_inverse=True)
    counts = np.zeros((len(names), len(classes)), int)
    np.add.at(counts, (inverse, y_code), 1)
    label = counts.argmax(1)
    if (counts > 0).sum(1).max() > 1 or min(np.bincount(label, minlength=len(classes))) < k:
        return list(GroupKFold(n_splits=k).split(np.zeros(len(y)), y, groups))
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(names), int)
    start = 0
    for c in range(len(classes)):
        mine = rng.permutation(np.nonzero(label == c)[0])
        fold_of[mine] = (start + np.arange(len(mine))) % k
        start += len(mine)  # the next class continues where this one stopped
    fold = fold_of[inverse]
    return [(np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]) for f in range(k)]


# --------------------------------------------------------------------------- protocols
class WithinSession:
    """k folds inside each session of each subject (MOABB's WithinSessionEvaluation).

    Parameters
    ----------
    n_folds : int
    window_groups : {"block", "window"}
        Windows of continuous recordings in contiguous blocks (fold k tests block k of
        every run) or one by one.
    seed : int
    """

    name = "WithinSession"

    def __init__(self, n_folds: int = 5, window_groups: str = "block", seed: int = 0):
        self.n_folds, self.window_groups, self.seed = n_folds, window_groups, seed

    def split(self, rows) -> list[Fold]:
        folds = []
        for s in rows.subjects:
            for session in np.unique(rows.session[rows.subject == s]):
                idx = np.nonzero((rows.subject == s) & (rows.session == session))[0]
                win = rows.windowed[idx]
                if win.all() and self.window_groups == "block":
                    blocks = block_groups(rows, idx, self.n_folds)
                    pairs = [(np.nonzero(blocks != b)[0], np.nonzero(blocks == b)[0])
                             for b in range(blocks.max() + 1)]
                else:
                    groups = _group_labels(rows, idx, self.n_folds, self.window_groups)
                    pairs = _grouped_folds(rows.y[idx], groups, self.n_folds,
                                           self.seed + len(folds))
                for k, (tr, te) in enumerate(pairs):
                    train, test = np.sort(idx[tr]), np.sort(idx[te])
                    train, purged = _purge(rows, train, test)
                    check_split(rows, train, test, protocol=self.name)
                    unseen = sorted(set(rows.y[test].tolist()) - set(rows.y[train].tolist()))
                    if unseen:
                        raise ValueError(
                            f"study {rows.study}: sub-{s} ({rows.modality}) {self.name}: "
                            f"fold {k} tests class(es) {unseen} that its training side lacks "
                            "(too few trial groups per class); lower decode.n_folds, or set "
                            "decode.trial_groups: trial if stim_id names the condition")
                    folds.append(Fold(self.name, s, k, train, test, str(session), purged))
        return folds


class CrossSession:
    """Leave one session out, per subject (MOABB's CrossSessionEvaluation)."""

    name = "CrossSession"

    def split(self, rows) -> list[Fold]:
        folds = []
        for s in rows.subjects:
            mine = rows.subject == s
            sessions = np.unique(rows.session[mine])
            if len(sessions) < 2:
                continue
            for k, session in enumerate(sessions):
                test = np.nonzero(mine & (rows.session == session))[0]
                train = np.nonzero(mine & (rows.session != session))[0]
                train, purged = _purge(rows, train, test)
                check_split(rows, train, test, protocol=self.name)
                folds.append(Fold(self.name, s, k, train, test, str(session), purged))
        return folds


class CrossSubject:
    """Leave one subject out (MOABB's CrossSubjectEvaluation)."""

    name = "CrossSubject"

    def split(self, rows) -> list[Fold]:
        folds = []
        if len(rows.subjects) < 2:
            return folds
        for k, s in enumerate(rows.subjects):
            test = np.nonzero(rows.subject == s)[0]
            train = np.nonzero(rows.subject != s)[0]
            check_split(rows, train, test, protocol=self.name)
            folds.append(Fold(self.name, s, k, train, test))
        return folds


PROTOCOLS = {"WithinSession": WithinSession, "CrossSession": CrossSession,
             "CrossSubject": CrossSubject}


def make_folds(rows, protocol: str, *, n_folds: int = 5, window_groups: str = "block",
               seed: int = 0) -> list[Fold]:
    """Every checked fold of one protocol (empty when it does not apply)."""
    if protocol == "WithinSession":
        return WithinSession(n_folds, window_groups, seed).split(rows)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]().split(rows)


def validation_split(rows, train: np.ndarray, *, fraction: float, seed: int,
                     protocol: str = "", n_blocks: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation set for early stopping out of a fold's training rows only.

    Whole groups (trials; blocks of windows) are drawn per class, about ``fraction`` of
    each class's groups and at least one, leaving at least one to fit on; fit rows that
    overlap a validation row in time are purged; the result passes :func:`check_split`.

    Returns
    -------
    fit, val : ndarray of int
        Sorted global rows, both subsets of ``train``.
    """
    train = np.sort(np.asarray(train, int))
    rng = np.random.default_rng(seed)
    groups = _group_labels(rows, train, n_blocks, "block")
    y = rows.y[train]
    val_groups = []
    for c in np.unique(y):
        mine = np.unique(groups[y == c])
        rng.shuffle(mine)
        n = int(round(fraction * len(mine)))
        n = min(max(n, 1), len(mine) - 1)
        val_groups.extend(mine[:n])
    is_val = np.isin(groups, val_groups)
    fit, val = train[~is_val], train[is_val]
    fit, _ = _purge(rows, fit, val)
    check_split(rows, fit, val, protocol=protocol or "fold", what="validation")
    return fit, val
