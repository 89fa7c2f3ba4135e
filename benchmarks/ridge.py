"""Benchmark brainhead's torch ridge against himalaya and scikit-learn on one problem.

Usage::

    python benchmarks/ridge.py [--small] [--device cpu|cuda|auto] [--n-targets N] ...

Every method runs in its own freshly spawned process on the same data, loaded from
``.npy`` files written once by another child (the parent stays small). Wall time
covers ``fit`` (alpha selection plus refit) and, separately, ``predict`` on the test
set. Peak memory is the extra resident memory the method needed at its peak, torch
allocations included (which ``tracemalloc`` would not see): after the libraries are
imported, the data loaded and a small warm-up product run, the child resets its peak
RSS (``/proc/self/clear_refs``) and reads it (``VmHWM``); after the method it reads
``VmHWM`` again; the difference is reported. (``ru_maxrss`` is not used on Linux: it
is inherited from the parent through fork and exec.) The ratio is to the bytes of
``X_train`` and ``Y_train``; outputs (coefficients, predictions) are included. On
CUDA the peak GPU memory of the method is reported as well.

Definitions are aligned: the features are z-scored once on the training set by the
parent; brainhead (``standardize=False``) and himalaya then only centre features and
targets inside each fold (both fit an intercept), use the same ``KFold`` object (no
shuffle), the same alphas and the same criterion (validation squared error; himalaya's
default ``l2_neg_loss`` averaged over equal-sized folds has the same argmin).
scikit-learn's ``RidgeCV(alpha_per_target=True)`` does not do k-fold: it uses its
efficient leave-one-out closed form, so its alphas are compared with brainhead's
``cv="loo"`` instead, and its time is not a k-fold time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("brainhead", "brainhead-loo", "brainhead-gcv", "himalaya-numpy",
           "himalaya-torch", "sklearn-loo")


# --------------------------------------------------------------------------- data
def make_data(n_train: int, n_test: int, n_features: int, n_targets: int,
              seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic encoding problem whose best alpha differs from target to target.

    Features have a decaying spectrum (a random mixing of independent sources with
    log-spaced scales), so ridge shrinkage matters. Each target is ``X @ w_j`` plus
    Gaussian noise, with signal-to-noise ratios log-spaced over four decades and
    weight vectors of random sparsity, so the best alphas spread over the grid
    instead of piling up on one value.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    scales = np.logspace(0, -1.5, n_features).astype(np.float32)
    sources = rng.standard_normal((n, n_features), dtype=np.float32) * scales
    mixing, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    X = sources @ mixing.astype(np.float32)
    W = rng.standard_normal((n_features, n_targets), dtype=np.float32)
    keep = rng.uniform(0.02, 1.0, size=n_targets)
    W *= rng.uniform(size=(n_features, n_targets)) < keep
    signal = X @ W
    signal /= signal[:n_train].std(0) + np.float32(1e-12)
    noise_sd = np.logspace(-1, 1.5, n_targets, dtype=np.float32)[rng.permutation(n_targets)]
    Y = signal
    Y += rng.standard_normal((n, n_targets), dtype=np.float32) * noise_sd
    mean, std = X[:n_train].mean(0), X[:n_train].std(0)
    X = ((X - mean) / std).astype(np.float32)
    return {"X_train": np.ascontiguousarray(X[:n_train]),
            "Y_train": np.ascontiguousarray(Y[:n_train]),
            "X_test": np.ascontiguousarray(X[n_train:]),
            "Y_test": np.ascontiguousarray(Y[n_train:])}


def kfold_flops(n: int, p: int, t: int, n_alphas: int, n_folds: int) -> float:
    """Matrix-product flops of brainhead's k-fold fit, primal mode (p <= n_train).

    Counted: X0.T @ Y once; per fold the Gram matrix, the validation basis, the
    stacked prediction operators, the validation correction of the cross-products and
    the stacked predictions; the final Gram matrix and the refit in the eigenbasis
    (which reuses X0.T @ Y). Not counted: eigendecompositions (O(p^3), a few percent
    here), elementwise work, and the cross-product correction repeated when the
    alphas are processed in several chunks to bound memory: the rate is a lower bound.
    """
    n_va = n / n_folds
    n_tr = n - n_va
    flops = 2 * n * p * t
    per_fold = (2 * n_tr * p * p + 2 * n_va * p * p + 2 * n_alphas * n_va * p * p
                + 2 * n_va * p * t + 2 * n_alphas * n_va * p * t)
    final = 2 * n * p * p + 4 * p * p * t
    return flops + n_folds * per_fold + final


def measure_gemm(device: str, size: int = 4096, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GEMM throughput (GFLOP/s) of torch on ``device``."""
    import torch

    dev = torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available()
                       else "cpu")
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    a @ b
    best = np.inf
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


# --------------------------------------------------------------------------- child
def _proc_status(field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process in bytes from /proc (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process since exec (or since :func:`_reset_peak`).

    ``VmHWM`` belongs to the process image, unlike ``ru_maxrss``, which Linux carries
    over from the parent through fork and exec (a child of a big parent would start
    with the parent's peak).
    """
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _run_method(method: str, folder: str, alphas: np.ndarray, n_folds: int,
                device: str, queue) -> None:
    """Run one method in this (spawned) process and report timings and memory."""
    try:
        import torch
        from sklearn.model_selection import KFold

        data = {k: np.load(Path(folder) / f"{k}.npy")
                for k in ("X_train", "Y_train", "X_test")}
        X, Y, X_test = data["X_train"], data["Y_train"], data["X_test"]
        if method.startswith("himalaya"):
            import himalaya.backend
            from himalaya.ridge import RidgeCV as HRidgeCV
        elif method.startswith("sklearn"):
            from sklearn.linear_model import RidgeCV
        else:
            from brainhead.align.ridge import GroupRidgeCV
        torch.ones(64, 64) @ torch.ones(64, 64)  # thread pools up before the baseline
        cuda = device in ("cuda", "auto") and torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _reset_peak()
        baseline = _peak_rss_bytes()
        cv = KFold(n_splits=n_folds)
        t0 = time.perf_counter()
        if method.startswith("brainhead"):
            mode = {"brainhead": cv, "brainhead-loo": "loo", "brainhead-gcv": "gcv"}[method]
            model = GroupRidgeCV(alphas=alphas, cv=mode, standardize=False,
                                 device=device, dtype="float32").fit(X, Y)
            fit_s = time.perf_counter() - t0
            best = model.best_alphas_
            t0 = time.perf_counter()
            pred = model.predict(X_test)
        elif method.startswith("himalaya"):
            backend = himalaya.backend.set_backend(
                "numpy" if method == "himalaya-numpy" else
                ("torch_cuda" if cuda else "torch"), on_error="raise")
            model = HRidgeCV(alphas=alphas, fit_intercept=True, cv=cv).fit(X, Y)
            fit_s = time.perf_counter() - t0
            best = backend.to_numpy(model.best_alphas_)
            t0 = time.perf_counter()
            pred = backend.to_numpy(model.predict(X_test))
        else:
            model = RidgeCV(alphas=alphas, alpha_per_target=True, fit_intercept=True)
            model.fit(X, Y)
            fit_s = time.perf_counter() - t0
            best = np.asarray(model.alpha_)
            t0 = time.perf_counter()
            pred = model.predict(X_test)
        predict_s = time.perf_counter() - t0
        peak = _peak_rss_bytes() - baseline
        gpu_peak = torch.cuda.max_memory_allocated() if cuda else 0
        np.save(Path(folder) / f"pred_{method}.npy", np.asarray(pred, dtype=np.float32))
        np.save(Path(folder) / f"alpha_{method}.npy", np.asarray(best, dtype=np.float64))
        queue.put({"method": method, "fit_s": fit_s, "predict_s": predict_s,
                   "peak_bytes": peak, "gpu_peak_bytes": gpu_peak, "error": None})
    except Exception as err:  # reported by the parent, never swallowed
        queue.put({"method": method, "error": f"{type(err).__name__}: {err}"})


def _make_and_save(folder: str, sizes: tuple[int, int, int, int], queue) -> None:
    try:
        t0 = time.perf_counter()
        data = make_data(*sizes)
        for key, value in data.items():
            np.save(Path(folder) / f"{key}.npy", value)
        queue.put({"seconds": time.perf_counter() - t0,
                   "data_bytes": data["X_train"].nbytes + data["Y_train"].nbytes,
                   "error": None})
    except Exception as err:
        queue.put({"error": f"{type(err).__name__}: {err}"})


def _gemm_child(device: str, queue) -> None:
    try:
        queue.put({"gflops": measure_gemm(device), "error": None})
    except Exception as err:
        queue.put({"error": f"{type(err).__name__}: {err}"})


def in_child(target, *args) -> dict:
    """Run ``target(*args, queue)`` in a fresh spawned process; return what it put."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run_in_child(method: str, folder: str, alphas, n_folds: int, device: str) -> dict:
    """Run ``method`` in a fresh spawned process; return its report."""
    return in_child(_run_method, method, folder, alphas, n_folds, device)


# --------------------------------------------------------------------------- report
def _corr_cols(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = A - A.mean(0)
    B = B - B.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (A * B).sum(0) / np.sqrt((A * A).sum(0) * (B * B).sum(0))


def compare(folder: Path, a: str, b: str, alphas: np.ndarray) -> str:
    """Agreement of chosen alphas and of test predictions between methods a and b."""
    al_a, al_b = np.load(folder / f"alpha_{a}.npy"), np.load(folder / f"alpha_{b}.npy")
    same = np.isclose(al_a, al_b, rtol=1e-6)
    grid = np.log10(alphas)
    off = np.abs(np.log10(al_a) - np.log10(al_b))[~same] / np.diff(grid).mean()
    pa, pb = np.load(folder / f"pred_{a}.npy"), np.load(folder / f"pred_{b}.npy")
    r = _corr_cols(pa[:, same], pb[:, same])
    return (f"{a} vs {b}: same alpha on {same.mean():.2%} of targets "
            f"({int((~same).sum())} of {same.size} differ)"
            f"{f' (others off by {off.max():.0f} grid step(s) at most)' if off.size else ''}"
            f"; where equal, test predictions correlate min r = {np.nanmin(r):.6f}, "
            f"{np.mean(r > 0.999):.2%} of targets > 0.999")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="quick run: 600 x 256 train, 100 test, 2000 targets")
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-features", type=int, default=1536)
    parser.add_argument("--n-targets", type=int, default=20_000)
    parser.add_argument("--n-alphas", type=int, default=15)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {', '.join(METHODS)}")
    args = parser.parse_args(argv)
    if args.small:
        args.n_train, args.n_test, args.n_features, args.n_targets = 600, 100, 256, 2000
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    alphas = np.logspace(-1, 6, args.n_alphas)

    with tempfile.TemporaryDirectory(prefix="brainhead-ridge-bench-") as tmp:
        folder = Path(tmp)
        # data and GEMM in children: the parent stays small, children start clean
        made = in_child(_make_and_save, str(folder),
                        (args.n_train, args.n_test, args.n_features, args.n_targets))
        if made["error"]:
            print(f"data generation failed: {made['error']}")
            return 1
        data_bytes = made["data_bytes"]
        print(f"data: X_train {args.n_train} x {args.n_features}, {args.n_test} test rows, "
              f"{args.n_targets} targets, float32, {args.n_alphas} alphas "
              f"(1e-1 .. 1e6), {args.folds}-fold KFold; X_train + Y_train = "
              f"{data_bytes / 2**20:.0f} MiB (made in {made['seconds']:.1f} s)")
        gemm_res = in_child(_gemm_child, args.device)
        if gemm_res["error"]:
            print(f"GEMM measurement failed: {gemm_res['error']}")
            return 1
        gemm = gemm_res["gflops"]
        print(f"measured float32 GEMM throughput (torch, 4096^3, best of 5): "
              f"{gemm:.0f} GFLOP/s on {args.device}")
        print("peak memory = peak resident memory of the method's process (VmHWM, reset "
              "after imports + data loading) minus its resident memory at that point\n")
        results = {}
        for method in methods:
            res = run_in_child(method, str(folder), alphas, args.folds, args.device)
            results[method] = res
            if res["error"]:
                print(f"{method:15s} FAILED: {res['error']}")
                continue
            gpu = (f", GPU peak {res['gpu_peak_bytes'] / 2**20:.0f} MiB"
                   if res["gpu_peak_bytes"] else "")
            print(f"{method:15s} fit {res['fit_s']:7.2f} s  predict {res['predict_s']:5.2f} s"
                  f"  peak +{res['peak_bytes'] / 2**20:6.0f} MiB "
                  f"({res['peak_bytes'] / data_bytes:.2f} x data){gpu}", flush=True)

        ok = {m for m, r in results.items() if not r["error"]}
        print()
        if "brainhead" in ok:
            ours = results["brainhead"]
            flops = kfold_flops(args.n_train, args.n_features, args.n_targets,
                                args.n_alphas, args.folds)
            rate = flops / ours["fit_s"] / 1e9
            print(f"brainhead k-fold: {flops / 1e12:.2f} TFLOP of matrix products, "
                  f"{rate:.0f} GFLOP/s = {rate / gemm:.0%} of measured GEMM throughput")
            hims = [m for m in ("himalaya-numpy", "himalaya-torch") if m in ok]
            if hims:
                fastest = min(hims, key=lambda m: results[m]["fit_s"])
                h = results[fastest]
                print(f"vs fastest himalaya ({fastest}): {h['fit_s'] / ours['fit_s']:.2f}x "
                      f"faster, peak memory {ours['peak_bytes'] / max(h['peak_bytes'], 1):.2f}"
                      f"x of himalaya's")
                for m in hims:
                    print(compare(folder, "brainhead", m, alphas))
        if {"brainhead-loo", "sklearn-loo"} <= ok:
            print(compare(folder, "brainhead-loo", "sklearn-loo", alphas)
                  + "  [both exact leave-one-out]")
            print(f"sklearn-loo is leave-one-out, not k-fold: brainhead-loo takes "
                  f"{results['brainhead-loo']['fit_s']:.1f} s for the same criterion "
                  f"({results['sklearn-loo']['fit_s'] / results['brainhead-loo']['fit_s']:.2f}"
                  "x faster)")
        if {"brainhead-gcv", "brainhead"} <= ok:
            print(compare(folder, "brainhead-gcv", "brainhead", alphas)
                  + "  [GCV vs k-fold: different criteria]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
