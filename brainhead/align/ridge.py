"""Ridge encoding models with one regularisation strength per target, in torch.

Every solver here shares one decomposition of the training design between all
candidate alphas and all targets: the eigendecomposition of the Gram matrix
``X.T @ X`` (``n_features <= n_samples``, "primal") or of the kernel ``X @ X.T``
(``n_features > n_samples``, "dual"), whichever is smaller. Choosing an alpha per
target by cross-validation then costs one eigendecomposition per fold plus matrix
products, batched over targets so that memory stays bounded.

The same code runs on CPU and CUDA (``device``); inputs and outputs are numpy arrays.

Notation used in shapes: ``n`` samples, ``p`` features, ``t`` targets, ``a`` alphas.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from sklearn.utils.validation import check_is_fitted, validate_data

DEFAULT_ALPHAS = tuple(np.logspace(-1, 6, 15).tolist())

#: Upper bound of the scratch memory of one target batch (bytes), per device type.
#: Larger batches do not make the products faster once they have a few thousand
#: columns, and keeping them small keeps the peak memory near the size of the data.
MAX_WORKSPACE_BYTES = {"cpu": 64 * 2**20, "cuda": 2 * 2**30}
#: Fraction of the available memory that one target batch may use.
WORKSPACE_FRACTION = 0.25
_FALLBACK_AVAILABLE_BYTES = 2 * 2**30
#: Threads of the CPU eigendecomposition (None: torch's setting). The symmetric
#: eigensolver spends most of its time in a memory-bound tridiagonal reduction that
#: gains little from a second thread, and collapses when cores are oversubscribed
#: (measured 4-5x slower with 2 threads than with 1 on a shared 2-core machine).
EIGH_CPU_THREADS: int | None = 1

_CV_CLOSED_FORMS = ("loo", "gcv")


# --------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:1"``) into a torch device.

    ``"auto"`` picks CUDA when available, else CPU. Asking for CUDA on a machine
    without it raises ``ValueError`` rather than silently using the CPU.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ValueError(
                f"device must be 'auto', 'cpu' or 'cuda' (optionally 'cuda:<index>'), "
                f"got {device!r}") from err
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available "
                         "on this machine; use device='auto' or 'cpu'")
    return dev


def _resolve_dtype(dtype, like: np.ndarray) -> torch.dtype:
    if dtype is None:
        return torch.float32 if like.dtype == np.float32 else torch.float64
    name = np.dtype(dtype).name if not isinstance(dtype, torch.dtype) else str(dtype)
    table = {"float32": torch.float32, "float64": torch.float64,
             "torch.float32": torch.float32, "torch.float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    return table[name]


def available_memory(device: torch.device) -> int:
    """Bytes of memory that can still be allocated on ``device``.

    CUDA: free memory reported by ``torch.cuda.mem_get_info``. CPU: ``MemAvailable``
    of ``/proc/meminfo`` on Linux; elsewhere (or if unreadable) a 2 GiB fallback.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _FALLBACK_AVAILABLE_BYTES


def auto_target_batch_size(n_targets: int, bytes_per_target: int,
                           device: torch.device) -> int:
    """Number of targets per batch so that a batch's scratch memory stays bounded.

    The budget is the smaller of :data:`WORKSPACE_FRACTION` of the available memory
    (:func:`available_memory`) and :data:`MAX_WORKSPACE_BYTES` of the device type.

    Parameters
    ----------
    n_targets : int
        Total number of targets (the batch is never larger).
    bytes_per_target : int
        Scratch bytes that one more target in the batch costs.
    device : torch.device

    Returns
    -------
    batch_size : int
        At least 1, at most ``n_targets``.
    """
    budget = min(WORKSPACE_FRACTION * available_memory(device),
                 MAX_WORKSPACE_BYTES[device.type])
    return int(max(1, min(n_targets, budget // max(bytes_per_target, 1))))


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _check_batch_size(target_batch_size, n_targets, bytes_per_target, device) -> int:
    if target_batch_size is None:
        return auto_target_batch_size(n_targets, bytes_per_target, device)
    if (not isinstance(target_batch_size, numbers.Integral) or isinstance(target_batch_size, bool)
            or target_batch_size < 1):
        raise ValueError(f"target_batch_size must be a positive int or None, "
                         f"got {target_batch_size!r}")
    return int(min(target_batch_size, n_targets))


def _check_alphas(alphas) -> np.ndarray:
    arr = np.asarray(alphas, dtype=float).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"alphas must be positive and non-empty, got {alphas!r}")
    return arr


# --------------------------------------------------------------------------- helpers
def _to_tensor(a: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """numpy -> tensor on ``device`` in ``dtype``; shares memory when nothing changes."""
    return torch.as_tensor(np.asarray(a), device=device).to(dtype)


def _y_batch(Y: np.ndarray, cols: slice, device, dtype) -> torch.Tensor:
    """A fresh copy of ``Y[:, cols]`` (callers modify it in place, never ``Y``)."""
    return torch.from_numpy(np.array(Y[:, cols], order="C")).to(device=device, dtype=dtype)


def _decompose(Xs: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Eigendecomposition of the smaller of ``Xs.T @ Xs`` and ``Xs @ Xs.T``.

    Returns
    -------
    mode : {"primal", "dual"}
    lam : tensor, shape (r,)
        Eigenvalues, clipped at 0 (``r = p`` in primal mode, ``n`` in dual mode).
    vecs : tensor, shape (r, r)
        Orthonormal eigenvectors in columns.
    """
    n, p = Xs.shape
    if p <= n:
        lam, vecs = _eigh(Xs.T @ Xs)
        mode = "primal"
    else:
        lam, vecs = _eigh(Xs @ Xs.T)
        mode = "dual"
    return mode, lam.clamp_min(0), vecs


def _eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh``, on CPU with at most :data:`EIGH_CPU_THREADS` threads."""
    if M.device.type != "cpu" or EIGH_CPU_THREADS is None:
        return torch.linalg.eigh(M)
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, EIGH_CPU_THREADS))
    try:
        return torch.linalg.eigh(M)
    finally:
        torch.set_num_threads(previous)


def _fold_scaling(X0_train: torch.Tensor, constant: np.ndarray, standardize: bool):
    """Training mean and inverse scale of every feature (0 for constant features)."""
    mean = X0_train.mean(0)
    if standardize:
        std = X0_train.std(0, correction=0)
        inv = torch.where(std > 0, 1.0 / std, torch.zeros_like(std))
    else:
        inv = torch.ones_like(mean)
    inv[torch.as_tensor(constant, device=inv.device)] = 0.0
    return mean, inv


# --------------------------------------------------------------------------- solvers
def solve_ridge_svd(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray,
                    X_test: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Ridge predictions on ``X_test`` for every alpha, from one decomposition of ``X``.

    Solves ``min_W ||X W - Y||^2 + alpha ||W||^2`` for each alpha; ``X`` and ``Y`` are
    expected centred (no intercept is fitted here). The arithmetic follows the dtype
    of ``X`` (float32 stays float32).

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    alphas : ndarray, shape (n_alphas,)
    X_test : ndarray, shape (n_test, n_features)
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    predictions : ndarray, shape (n_alphas, n_test, n_targets)
    """
    dev = resolve_device(device)
    X = np.asarray(X)
    dtype = _resolve_dtype(None, X)
    alphas = _check_alphas(alphas)
    Xt, Yt, Xte = (_to_tensor(a, dev, dtype) for a in (X, Y, X_test))
    mode, lam, vecs = _decompose(Xt)
    al = torch.as_tensor(alphas, device=dev, dtype=dtype)
    if mode == "primal":
        left = Xte @ vecs                                   # (n_test, p)
        right = vecs.T @ (Xt.T @ Yt)                        # (p, t)
        gain = 1.0 / (lam[None, :] + al[:, None])           # (a, p)
    else:
        left = (Xte @ Xt.T) @ vecs                          # (n_test, n)
        right = vecs.T @ Yt                                 # (n, t)
        gain = 1.0 / (lam[None, :] + al[:, None])
    out = torch.stack([left @ (g[:, None] * right) for g in gain])
    return out.cpu().numpy()


def solve_ridge_coef(X: np.ndarray, Y: np.ndarray, alpha_per_target: np.ndarray,
                     *, device: str = "cpu") -> np.ndarray:
    """Ridge weights with one alpha per target, from one decomposition of ``X``.

    ``X`` and ``Y`` are expected centred (no intercept is fitted here).

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    alpha_per_target : ndarray, shape (n_targets,)
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    coef : ndarray, shape (n_features, n_targets)
    """
    dev = resolve_device(device)
    X = np.asarray(X)
    dtype = _resolve_dtype(None, X)
    Y = np.asarray(Y)
    al = _check_alphas(alpha_per_target)
    if Y.ndim != 2 or al.shape[0] != Y.shape[1]:
        raise ValueError(f"alpha_per_target has {al.shape[0]} entries, Y has shape "
                         f"{Y.shape}: expected one alpha per column of Y")
    Xt, Yt = _to_tensor(X, dev, dtype), _to_tensor(Y, dev, dtype)
    mode, lam, vecs = _decompose(Xt)
    gain = 1.0 / (lam[:, None] + torch.as_tensor(al, device=dev, dtype=dtype)[None, :])
    if mode == "primal":
        coef = vecs @ (gain * (vecs.T @ (Xt.T @ Yt)))
    else:
        coef = Xt.T @ (vecs @ (gain * (vecs.T @ Yt)))
    return coef.cpu().numpy()


def solve_ridge_cv_splits(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray,
                          splits: Sequence[tuple[np.ndarray, np.ndarray]], *,
                          standardize: bool = True, device: str = "auto",
                          dtype=None, target_batch_size: int | None = None,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Validation squared errors of ridge for every alpha and target, over given folds.

    For each fold, features are centred (and scaled to unit variance when
    ``standardize``) and targets centred with the statistics of the fold's training
    rows; an intercept is therefore fitted. Each fold costs one eigendecomposition of
    its training design; all alphas and targets share it. Targets are processed in
    batches of ``target_batch_size``; in primal mode ``X.T @ Y`` (``(p, t)``) is formed
    once and each fold's cross-products are obtained from it by subtracting the
    fold's validation part.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    alphas : ndarray, shape (n_alphas,)
    splits : sequence of (train_indices, validation_indices)
    standardize : bool
    device : {"auto", "cpu", "cuda"}
    dtype : None, "float32" or "float64"
        None follows the dtype of ``X``.
    target_batch_size : int or None
        None chooses it from the available memory (:func:`auto_target_batch_size`).

    Returns
    -------
    sse : ndarray of float64, shape (n_alphas, n_targets)
        Squared validation error summed over the validation rows of every fold.
    sst : ndarray of float64, shape (n_targets,)
        Squared deviation of the validation rows from their own fold mean, summed
        over folds (``1 - sse / sst`` is a pooled validation R^2).
    """
    sse, sst, _ = _cv_splits(X, Y, alphas, splits, standardize=standardize,
                             device=device, dtype=dtype,
                             target_batch_size=target_batch_size)
    return sse, sst


def _cv_splits(X, Y, alphas, splits, *, standardize, device, dtype, target_batch_size):
    """Worker of :func:`solve_ridge_cv_splits`.

    Also returns, for the final refit (:func:`_fit_coef`), a dict with ``XtY`` =
    ``X0.T @ Y0`` (p, t) when it was formed (else None), ``y_mean`` (t,) and
    ``y0_sum`` (t,), where ``X0`` and ``Y0`` are ``X`` and ``Y`` centred on all rows.
    """
    dev = resolve_device(device)
    X = np.asarray(X)
    tdtype = _resolve_dtype(dtype, X)
    alphas = _check_alphas(alphas)
    n, p = X.shape
    t = Y.shape[1]
    item = torch.finfo(tdtype).bits // 8
    Xt = _to_tensor(X, dev, tdtype)
    X0 = Xt - Xt.mean(0)
    del Xt
    al = torch.as_tensor(alphas, device=dev, dtype=tdtype)
    splits = [(np.asarray(tr), np.asarray(va)) for tr, va in splits]
    n_va_max = max(len(va) for _, va in splits)
    n_tr_max = max(len(tr) for tr, _ in splits)
    r_max = min(p, n_tr_max)
    # scratch per target: the stacked residuals of one alpha chunk, the target rows
    # the fold needs (validation, and training in dual mode), cross-products
    n_alpha_chunk = _alpha_chunk(len(alphas), n_va_max * r_max * item, dev)
    per_target = item * (n_alpha_chunk * n_va_max + 3 * n_va_max + 3 * r_max
                         + (n_tr_max if p > min(len(tr) for tr, _ in splits) else 0))
    bs = _check_batch_size(target_batch_size, t, per_target, dev)

    # one pass over Y: target means, and X0.T @ Y0 when some fold is in primal mode
    primal = any(p <= len(tr) for tr, _ in splits)
    P = torch.empty((p, t), device=dev, dtype=tdtype) if primal else None
    y_mean = torch.empty(t, device=dev, dtype=tdtype)
    y0_sum = torch.empty(t, device=dev, dtype=tdtype)   # ~0, kept for exactness
    for cols in _batches(t, _check_batch_size(target_batch_size, t,
                                              item * (2 * n + p), dev)):
        Yb = _y_batch(Y, cols, dev, tdtype)
        y_mean[cols] = Yb.mean(0)
        Yb -= y_mean[cols]
        y0_sum[cols] = Yb.sum(0)
        if primal:
            P[:, cols] = X0.T @ Yb
        del Yb

    sse = torch.zeros((len(alphas), t), device=dev, dtype=torch.float64)
    sst = torch.zeros(t, device=dev, dtype=torch.float64)
    # the largest scratch arrays are allocated once and reused by every batch, so
    # that the allocator does not churn (and hold on to) freed blocks
    resid_buf = torch.empty(n_alpha_chunk * n_va_max * bs, device=dev, dtype=tdtype)
    cross_buf = torch.empty(p * bs, device=dev, dtype=tdtype) if primal else None
    w_buf = torch.empty(n_alpha_chunk * n_va_max * r_max, device=dev, dtype=tdtype)
    for train, val in splits:
        tr_t = torch.as_tensor(train, device=dev)
        va_t = torch.as_tensor(val, device=dev)
        n_tr, n_va = len(train), len(val)
        X0tr, X0va = X0[tr_t], X0[va_t]
        mean, inv = _fold_scaling(X0tr, np.ptp(X[train], axis=0) == 0, standardize)
        Xtr = (X0tr - mean) * inv
        Xva = (X0va - mean) * inv
        del X0tr
        mode, lam, vecs = _decompose(Xtr)
        if mode == "primal":
            left = Xva @ vecs                   # (n_va, p)
        else:
            left = (Xva @ Xtr.T) @ vecs         # (n_va, n_tr)
        del Xtr, Xva
        r = vecs.shape[0]
        # Residuals are (left * gain) @ vecs.T @ R per alpha. Forming W = (left * gain) @
        # vecs.T costs n_alphas * n_va * r**2 whatever the number of targets; with fewer
        # targets than n_alphas * n_va, multiplying vecs.T @ R first is cheaper.
        target_side = t < len(alphas) * n_va
        if target_side and mode == "dual":
            vecs_sum = vecs.sum(0)                                        # (r,)
        for a_sl in _batches(len(alphas), n_alpha_chunk):
            n_a = a_sl.stop - a_sl.start
            gain = 1.0 / (lam[None, :] + al[a_sl, None])                  # (a, r)
            W = w_buf[:n_a * n_va * r].view(n_a, n_va, r)
            if target_side:   # W holds left * gain, (a, n_va, r)
                torch.mul(left[None], gain[:, None, :], out=W)
                w_sum = (W @ vecs_sum)[..., None] if mode == "dual" else None
            else:
                for i in range(n_a):
                    torch.mm(left * gain[i], vecs.T, out=W[i])            # (n_va, r)
                w_sum = W.sum(2, keepdim=True) if mode == "dual" else None  # (a, n_va, 1)
            for cols in _batches(t, bs):
                tb = cols.stop - cols.start
                Yva = _y_rows(Y, val, cols, dev, tdtype) - y_mean[cols]    # (n_va, tb)
                if mode == "primal":
                    ytr_sum = y0_sum[cols] - Yva.sum(0)
                    # Xtr.T @ Ytr = inv * (X0[tr].T @ Y0[tr] - mean * sum(Y0[tr]))
                    R = torch.mm(X0va.T, Yva, out=cross_buf[:p * tb].view(p, tb))
                    torch.sub(P[:, cols], R, out=R)
                    R -= mean[:, None] * ytr_sum[None, :]
                    R *= inv[:, None]
                    target = Yva - ytr_sum / n_tr
                else:
                    R = _y_rows(Y, train, cols, dev, tdtype) - y_mean[cols]  # (n_tr, tb)
                    ytr_mean = R.mean(0)
                    target = Yva - ytr_mean
                    # W @ (R - ytr_mean) = W @ R - rowsum(W) * ytr_mean
                    target = target[None] + w_sum * ytr_mean[None, None, :]
                if target_side:
                    R = vecs.T @ R                                        # (r, tb)
                # residuals of every alpha: W @ R - target, in one batched product
                resid = torch.baddbmm(target.expand(n_a, n_va, tb), W,
                                      R[None].expand(n_a, r, tb), beta=-1,
                                      out=resid_buf[:n_a * n_va * tb].view(n_a, n_va, tb))
                del R, target
                # sqrt of the summed squares: the same float as vector_norm, which is
                # about 9x slower on these shapes (benchmarks/align_stats.py)
                sse[a_sl, cols] += resid.square().sum(1).sqrt().to(torch.float64).square()
                del resid
                if a_sl.start == 0:
                    sst[cols] += (Yva - Yva.mean(0)).to(torch.float64).square().sum(0)
    return (sse.cpu().numpy(), sst.cpu().numpy(),
            {"XtY": P, "y_mean": y_mean, "y0_sum": y0_sum})


def _y_rows(Y: np.ndarray, rows: np.ndarray, cols: slice, device, dtype) -> torch.Tensor:
    """A copy of ``Y[rows][:, cols]`` as a tensor, without copying other columns."""
    return torch.from_numpy(np.ascontiguousarray(Y[rows, cols])).to(device=device,
                                                                      dtype=dtype)


def _alpha_chunk(n_alphas: int, bytes_per_alpha: int, device: torch.device) -> int:
    """Alphas whose stacked prediction operators fit in half the workspace budget."""
    budget = min(WORKSPACE_FRACTION * available_memory(device),
                 MAX_WORKSPACE_BYTES[device.type]) / 2
    return int(max(1, min(n_alphas, budget // max(bytes_per_alpha, 1))))


def solve_ridge_cv_closed_form(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, *,
                               method: str = "loo", standardize: bool = True,
                               device: str = "auto", dtype=None,
                               target_batch_size: int | None = None,
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out (exact) or generalised cross-validation errors in closed form.

    Features are standardised with the statistics of all rows and then held fixed
    (the scaling is not re-estimated without the left-out sample); the intercept is
    left out properly (leverage ``1/n + h_ii``). With ``U`` an orthonormal basis of
    the centred design's column space, ``lam`` its eigenvalues and ``q = U.T @ y``,
    the residual of ridge is ``y_perp + U @ (alpha / (lam + alpha) * q)``, computed
    in this form so that nearly perfect fits do not suffer cancellation:

    - ``"loo"``: ``sse = sum_i (r_i / (1 - 1/n - h_ii))**2``, exactly the squared
      error of ``n`` leave-one-out refits; a product ``(n, r) @ (r, t)`` per alpha.
    - ``"gcv"``: ``sse = ||r||**2 / (1 - (1 + trace(H)) / n)**2``, Golub, Heath &
      Wahba's generalised CV (the leverages replaced by their mean); ``O(r t)`` per
      alpha once ``q`` is known.

    Both are only meaningful when every sample can be left out on its own, that is
    when samples are independent (each sample its own group).

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_targets)
    alphas : ndarray, shape (n_alphas,)
    method : {"loo", "gcv"}
    standardize, device, dtype, target_batch_size
        As in :func:`solve_ridge_cv_splits`.

    Returns
    -------
    sse : ndarray of float64, shape (n_alphas, n_targets)
        Sum over samples of the (generalised) leave-one-out squared error.
    sst : ndarray of float64, shape (n_targets,)
        Sum of squared deviations of ``Y`` from its mean, times ``(n / (n - 1))**2``
        (the leave-one-out error of the mean-only model), so ``1 - sse / sst`` is
        a leave-one-out R^2.

    References
    ----------
    Golub, G. H., Heath, M., & Wahba, G. (1979). Generalized cross-validation as a
    method for choosing a good ridge parameter. Technometrics, 21(2), 215-223.
    """
    if method not in _CV_CLOSED_FORMS:
        raise ValueError(f"method must be one of {_CV_CLOSED_FORMS}, got {method!r}")
    dev = resolve_device(device)
    X = np.asarray(X)
    tdtype = _resolve_dtype(dtype, X)
    alphas = _check_alphas(alphas)
    n, p = X.shape
    if n < 3:
        raise ValueError(f"closed-form cross-validation needs at least 3 samples, got {n}")
    t = Y.shape[1]
    item = torch.finfo(tdtype).bits // 8
    Xt = _to_tensor(X, dev, tdtype)
    X0 = Xt - Xt.mean(0)
    mean, inv = _fold_scaling(X0, np.ptp(X, axis=0) == 0, standardize)
    Xs = (X0 - mean) * inv
    mode, lam, vecs = _decompose(Xs)
    if mode == "primal":
        # orthonormal basis of the column space; directions of ~0 variance carry no
        # part of y that the design can fit and are left to the orthogonal remainder
        keep = lam > lam.max() * max(n, p) * torch.finfo(tdtype).eps
        lam = lam[keep]
        U = (Xs @ vecs[:, keep]) / lam.sqrt()
        complete = False
    else:
        U = vecs  # (n, n): complete basis, the remainder is 0
        complete = True
    r = U.shape[1]
    al = torch.as_tensor(alphas, device=dev, dtype=tdtype)
    shrink = al[:, None] / (lam[None, :] + al[:, None])          # (a, r), 1 - hat eigs
    trace = 1.0 + (1.0 - shrink).sum(1).to(torch.float64)       # (a,), with intercept
    # loo: one (n, tb) residual per alpha, computed into a reused buffer
    per_target = item * (4 * n + 3 * r) + 8 * (len(alphas) + 2 * r)
    bs = _check_batch_size(target_batch_size, t, per_target, dev)
    sse = torch.zeros((len(alphas), t), device=dev, dtype=torch.float64)
    sst = torch.zeros(t, device=dev, dtype=torch.float64)
    if method == "loo":
        denom = 1.0 - 1.0 / n - U.square() @ (1.0 - shrink).T          # (n, a)
        resid_buf = torch.empty(n * bs, device=dev, dtype=tdtype)
    for cols in _batches(t, bs):
        tb = cols.stop - cols.start
        Yb = _y_batch(Y, cols, dev, tdtype)
        Yb -= Yb.mean(0)
        q = U.T @ Yb                                                       # (r, tb)
        sst[cols] += Yb.to(torch.float64).square().sum(0) * (n / (n - 1)) ** 2
        if method == "loo":
            perp = None if complete else Yb - U @ q                        # (n, tb)
            del Yb
            resid = resid_buf[:n * tb].view(n, tb)
            for i in range(len(alphas)):
                torch.mm(U, shrink[i][:, None] * q, out=resid)
                if perp is not None:
                    resid += perp
                resid /= denom[:, i:i + 1]
                sse[i, cols] += resid.square().sum(0).sqrt().to(torch.float64).square()
        else:
            q2 = q.to(torch.float64).square()
            rss = shrink.to(torch.float64).square() @ q2                    # (a, tb)
            if not complete:
                perp = Yb.to(torch.float64).square().sum(0) - q2.sum(0)
                rss += perp.clamp_min(0)[None, :]
            sse[:, cols] += rss / ((1.0 - trace / n) ** 2)[:, None]
    return sse.cpu().numpy(), sst.cpu().numpy()


def _fit_coef(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, best: np.ndarray, *,
              standardize: bool, device: torch.device, dtype: torch.dtype,
              target_batch_size: int | None, cv_state: dict | None = None):
    """Refit on all rows with the chosen alpha of every target.

    ``cv_state``, when given, comes from :func:`_cv_splits` (same dtype and device):
    ``XtY`` = ``X0.T @ Y0`` (p, t) or None, ``y_mean`` and ``y0_sum`` (t,). With
    ``XtY`` no pass over ``Y`` is needed, and its memory is reused for the
    coefficients (it is overwritten).

    Returns ``coef`` (p, t) in the standardised feature space, the feature mean and
    scale used by :meth:`GroupRidgeCV.predict`, and the target mean (float64).
    """
    n, p = X.shape
    t = Y.shape[1]
    item = torch.finfo(dtype).bits // 8
    Xt = _to_tensor(X, device, dtype)
    x_mean_t = Xt.mean(0)
    X0 = Xt - x_mean_t
    del Xt
    mean, inv = _fold_scaling(X0, np.ptp(X, axis=0) == 0, standardize)
    Xs = (X0 - mean) * inv
    del X0
    mode, lam, vecs = _decompose(Xs)
    al = torch.as_tensor(alphas, device=device, dtype=dtype)
    gain = 1.0 / (lam[:, None] + al[None, :])                # (r, a)
    best_t = torch.as_tensor(best, device=device)
    r = vecs.shape[0]
    XtY = None if cv_state is None else cv_state["XtY"]
    reuse = XtY is not None and mode == "primal"
    per_target = item * (8 * r + p) if reuse else item * (2 * n + 8 * r + p)
    bs = _check_batch_size(target_batch_size, t, per_target, device)
    coef = XtY if reuse else torch.empty((p, t), device=device, dtype=dtype)
    y_mean = torch.empty(t, device=device, dtype=dtype)
    for cols in _batches(t, bs):
        g = gain[:, best_t[cols]]
        if reuse:
            y_mean[cols] = cv_state["y_mean"][cols]
            # Xs.T @ Y0 = inv * (X0.T @ Y0 - mean * sum(Y0))
            C = coef[:, cols] - mean[:, None] * cv_state["y0_sum"][None, cols]
            C *= inv[:, None]
            coef[:, cols] = vecs @ (g * (vecs.T @ C))
            del C
            continue
        Yb = _y_batch(Y, cols, device, dtype)
        y_mean[cols] = Yb.mean(0)
        Yb -= y_mean[cols]
        if mode == "primal":
            coef[:, cols] = vecs @ (g * (vecs.T @ (Xs.T @ Yb)))
        else:
            coef[:, cols] = Xs.T @ (vecs @ (g * (vecs.T @ Yb)))
        del Yb
    x_mean = (x_mean_t + mean).to(torch.float64).cpu().numpy()
    inv64 = inv.to(torch.float64).cpu().numpy()
    x_scale = np.where(inv64 > 0, 1.0 / np.where(inv64 > 0, inv64, 1.0), 1.0)
    return (coef.cpu().numpy(), x_mean, x_scale,
            y_mean.to(torch.float64).cpu().numpy())


# --------------------------------------------------------------------------- splitters
def _is_closed_form(cv) -> bool:
    return isinstance(cv, str) and cv in _CV_CLOSED_FORMS


def _make_splits(cv, X, Y, user_groups: np.ndarray | None,
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs; no groups means one group per sample."""
    groups = np.arange(X.shape[0]) if user_groups is None else user_groups
    n_groups = len(np.unique(groups))
    if isinstance(cv, str):
        if cv != "logo":
            raise ValueError(f"cv must be an int, 'logo', 'loo', 'gcv' or a scikit-learn "
                             f"splitter, got {cv!r}")
        if n_groups < 2:
            raise ValueError("cv='logo' needs at least 2 groups inside the training "
                             f"data, got {n_groups}")
        splitter = LeaveOneGroupOut()
    elif isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv (or n_splits) must be at least 2, got {cv}")
        if n_groups < 2:
            raise ValueError("alpha selection needs at least 2 groups inside the "
                             f"training data, got {n_groups}")
        splitter = LeaveOneGroupOut() if n_groups <= cv else GroupKFold(n_splits=int(cv))
    elif hasattr(cv, "split"):
        splitter = cv
    else:
        raise ValueError(f"cv must be an int, 'logo', 'loo', 'gcv' or a scikit-learn "
                         f"splitter with a split() method, got {cv!r}")
    # a user's splitter gets the user's groups (None stays None: KFold warns otherwise)
    split_groups = user_groups if splitter is cv else groups
    splits = [(np.asarray(tr), np.asarray(va))
              for tr, va in splitter.split(X, Y, split_groups)]
    if not splits:
        raise ValueError(f"the splitter {splitter!r} produced no folds")
    for k, (tr, va) in enumerate(splits):
        if len(tr) == 0 or len(va) == 0:
            raise ValueError(f"fold {k} of {splitter!r} has {len(tr)} training and "
                             f"{len(va)} validation samples; both must be non-empty")
    return splits


# --------------------------------------------------------------------------- estimator
class GroupRidgeCV(RegressorMixin, BaseEstimator):
    """Ridge regression with an alpha per target, chosen by grouped cross-validation.

    Features are standardised and targets centred with statistics of the training
    data (of each inner fold while choosing alphas, then of all rows for the final
    fit); an intercept is fitted. The alpha of each target minimises its squared
    validation error summed over the inner folds, which never split a group (run,
    session or stimulus). Computation runs in torch, on CPU or CUDA, batched over
    targets; one eigendecomposition per fold is shared by all alphas and targets.

    Parameters
    ----------
    alphas : array-like of float
        Candidate regularisation strengths (positive).
    n_splits : int
        Inner folds when ``cv`` is None (GroupKFold); with this many groups or fewer,
        leave-one-group-out is used.
    cv : None, int, "logo", "loo", "gcv" or scikit-learn splitter
        Inner cross-validation. None uses ``n_splits``. An int: GroupKFold with that
        many folds (leave-one-group-out when there are no more groups than folds).
        ``"logo"``: leave-one-group-out. A splitter: its ``split(X, y, groups)``.
        ``"loo"`` (exact leave-one-out) and ``"gcv"`` (generalised CV) are closed
        forms that need no refit per fold; they are **only valid when every sample
        is its own group** (independent samples, e.g. one row per stimulus): with
        groups that are not all singletons they raise ``ValueError``. In these two
        modes the feature scaling is estimated once on all training rows.
    standardize : bool
        Scale features to unit variance (True) or only centre them (False).
    device : {"auto", "cpu", "cuda"}
        Where to compute; "auto" picks CUDA when available.
    dtype : None, "float32" or "float64"
        Arithmetic precision. None follows the dtype of ``X``: float32 data (as in
        brainhead's response tables) is computed in float32, float64 data in float64.
    target_batch_size : int or None
        Targets per batch; None derives it from the available memory of the device.

    Attributes
    ----------
    coef_ : ndarray, shape (n_features, n_targets)
        Weights on the standardised features.
    intercept_ : ndarray, shape (n_targets,)
    best_alphas_ : ndarray, shape (n_targets,)
    cv_scores_ : ndarray, shape (n_alphas, n_targets)
        Pooled inner-validation R^2 of every alpha for every target.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 4)); Y = X @ rng.normal(size=(4, 3))
    >>> model = GroupRidgeCV(alphas=[0.1, 10.0], cv=3, device="cpu")
    >>> model.fit(X, Y, groups=np.repeat(np.arange(6), 10)).coef_.shape
    (4, 3)
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, n_splits: int = 5, *, cv=None,
                 standardize: bool = True, device: str = "auto", dtype=None,
                 target_batch_size: int | None = None):
        self.alphas = alphas
        self.n_splits = n_splits
        self.cv = cv
        self.standardize = standardize
        self.device = device
        self.dtype = dtype
        self.target_batch_size = target_batch_size

    def fit(self, X, y, groups=None):
        """Choose an alpha per target by inner cross-validation, then refit on all rows.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,) or (n_samples, n_targets)
        groups : array-like, shape (n_samples,), optional
            Group label of every sample (run, session or stimulus); inner folds never
            split a group. None makes every sample its own group.

        Returns
        -------
        self : GroupRidgeCV
        """
        X, Y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32])
        Y = np.asarray(Y, dtype=X.dtype)
        self._y_1d = Y.ndim == 1
        if Y.ndim == 1:
            Y = Y[:, None]
        n = X.shape[0]
        alphas = _check_alphas(self.alphas)
        dev = resolve_device(self.device)
        tdtype = _resolve_dtype(self.dtype, X)
        cv = self.n_splits if self.cv is None else self.cv
        opts = dict(standardize=self.standardize, device=dev, dtype=tdtype,
                    target_batch_size=self.target_batch_size)
        if groups is not None:
            groups = np.asarray(groups)
            if groups.ndim != 1 or groups.shape[0] != n:
                raise ValueError(f"groups has {groups.shape[0] if groups.ndim else 0} "
                                 f"entries, X has {n} samples: expected one group "
                                 "label per row of X")
        if _is_closed_form(cv):
            if groups is not None and len(np.unique(groups)) != n:
                raise ValueError(
                    f"cv={cv!r} is only valid when every sample is its own group, but "
                    f"groups puts {n} samples in {len(np.unique(groups))} groups; use "
                    "an int, 'logo' or a splitter for grouped data")
            sse, sst = solve_ridge_cv_closed_form(X, Y, alphas, method=cv, **opts)
            cv_state = None
        else:
            sse, sst, cv_state = _cv_splits(X, Y, alphas, _make_splits(cv, X, Y, groups),
                                       **opts)
        best = np.argmin(sse, axis=0)
        self.best_alphas_ = alphas[best]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.cv_scores_ = 1.0 - sse / np.maximum(sst, np.finfo(float).tiny)
        coef, self._x_mean, self._x_scale, y_mean = _fit_coef(
            X, Y, alphas, best, cv_state=cv_state, **opts)
        self.coef_ = coef
        self.intercept_ = y_mean.astype(X.dtype)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """Predict targets for ``X`` of shape (n_samples, n_features).

        Returns
        -------
        pred : ndarray, shape (n_samples, n_targets), or (n_samples,) when fitted on
            a 1-D ``y``.
        """
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        Xs = ((X - self._x_mean) / self._x_scale).astype(self.coef_.dtype, copy=False)
        pred = Xs @ self.coef_
        pred += self.intercept_
        return pred[:, 0] if self._y_1d else pred

    def score(self, X, y, sample_weight=None):
        """Mean Pearson r over targets between predictions and ``y``."""
        pred = self.predict(X)
        y = np.asarray(y)
        if pred.ndim == 1:
            pred, y = pred[:, None], y.reshape(-1, 1)
        return float(np.nanmean(pearson_r(pred, y)))


def pearson_r(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of ``A`` and ``B`` (n_samples, n_cols).

    A constant column gives NaN (no correlation is defined), never a silent 0.
    """
    constant = (np.ptp(A, axis=0) == 0) | (np.ptp(B, axis=0) == 0)
    A = A - A.mean(0)
    B = B - B.mean(0)
    denom = np.sqrt((A**2).sum(0) * (B**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(~constant & (denom > 0), (A * B).sum(0) / denom, np.nan)


#: Cross-validation solvers by name (the closed forms take ``method=``).
SOLVERS = {"splits": solve_ridge_cv_splits, "loo": solve_ridge_cv_closed_form,
           "gcv": solve_ridge_cv_closed_form}

__all__ = ["DEFAULT_ALPHAS", "GroupRidgeCV", "SOLVERS", "auto_target_batch_size",
           "available_memory", "pearson_r", "resolve_device", "solve_ridge_coef",
           "solve_ridge_cv_closed_form", "solve_ridge_cv_splits", "solve_ridge_svd"]
