"""Matplotlib figures of the report and the files they are saved as.

Every figure of the report goes through :class:`FigureWriter`: it is written once as PNG
(what the HTML embeds) and once as a vector file (SVG by default) under
``results/<study>/figures/``, named by subject, region and metric, for papers.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.store import atomic_path

#: Metrics drawn as layer-curve panels, in this order, when the summary has them.
CURVE_METRICS = ("r", "r_ceiled", "rsa", "rsa_crossnobis", "cka")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_name(*parts: str) -> str:
    """A file-name stem from parts (subject, region, metric, kind): safe characters only."""
    stem = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)


def _save(fig, folder: Path, name: str, vector: str | None, dpi: int) -> list[Path]:
    """Write ``fig`` as PNG (and ``vector``) in ``folder``, atomically; close it."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    written = []
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        written.append(png)
        if vector:
            vec = png.with_suffix(f".{vector}")
            with atomic_path(vec) as tmp:
                fig.savefig(tmp, format=vector, dpi=dpi)
            written.append(vec)
    finally:
        plt.close(fig)
    return written


def _render(task) -> tuple[list[Path], str | None]:
    """Draw one figure job and save it (runs in a worker process when parallel)."""
    func, args, name, folder, vector, dpi = task
    out = func(*args)
    fig, caption = out if isinstance(out, tuple) else (out, None)
    return _save(fig, Path(folder), name, vector, dpi), caption


class FigureWriter:
    """Save figures as PNG plus a vector format, in ``folder`` or a temporary folder.

    Parameters
    ----------
    folder : path-like | None
        ``results/<study>/figures``. Figures are staged in a temporary folder beside it
        and replace it in one step in :meth:`commit`, so that a failed report leaves the
        previous figures as they were. None keeps the PNGs in a temporary folder
        (removed by :meth:`close`) and writes no vector files.
    vector : {"svg", "pdf"}
        Vector format written next to every PNG.
    dpi : int
        Resolution of the PNGs.
    workers : int
        Processes that :meth:`render` draws figures in.
    """

    def __init__(self, folder=None, *, vector: str = "svg", dpi: int = 90, workers: int = 1):
        if vector not in ("svg", "pdf"):
            raise ValueError(f"vector format must be 'svg' or 'pdf', got {vector!r}")
        self.destination = Path(folder) if folder is not None else None
        if self.destination is not None:  # staged beside it, moved into place by commit()
            self.destination.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(
            prefix=f".{self.destination.name}.tmp-" if self.destination else "brainhead-figures-",
            dir=self.destination.parent if self.destination else None)
        self.folder = Path(self._tmp.name)
        self.vector = vector if folder is not None else None
        self.dpi = dpi
        self.workers = max(1, int(workers))
        self.written: list[Path] = []

    def save(self, fig, name: str) -> Path:
        """Write ``fig`` as ``<name>.png`` (and ``<name>.<vector>``), close it, return the PNG."""
        written = _save(fig, self.folder, name, self.vector, self.dpi)
        self.written += written
        return written[0]

    def render(self, jobs) -> list[tuple[Path, str | None]]:
        """Draw and save many figures, in ``workers`` processes when more than one.

        Parameters
        ----------
        jobs : list of (function, args, name)
            ``function(*args)`` returns a figure, or (figure, caption); both must be
            picklable top-level functions and arguments when ``workers > 1``.

        Returns
        -------
        results : list of (PNG path, caption or None)
            In the order of ``jobs``.
        """
        tasks = [(func, args, name, self.folder, self.vector, self.dpi)
                 for func, args, name in jobs]
        if self.workers > 1 and len(tasks) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(min(self.workers, len(tasks)),
                                     mp_context=multiprocessing.get_context(method)) as pool:
                results = list(pool.map(_render, tasks))
        else:
            results = [_render(task) for task in tasks]
        out = []
        for written, caption in results:
            self.written += written
            out.append((written[0], caption))
        return out

    def commit(self) -> list[Path]:
        """Replace the destination folder with the staged figures; return their paths."""
        if self.destination is None:
            return []
        import shutil

        old = self.destination.with_name(f".{self.destination.name}.old-{os.getpid()}")
        if self.destination.exists():
            self.destination.rename(old)
        os.replace(self.folder, self.destination)
        self.folder.mkdir()  # so that the temporary directory's cleanup finds it
        shutil.rmtree(old, ignore_errors=True)
        return [self.destination / p.name for p in self.written]

    def close(self) -> None:
        """Remove the staging folder (whatever was not committed)."""
        self._tmp.cleanup()


def layer_curves(sub: pd.DataFrame, planted: dict[str, int]):
    """One subject's layer curves: a panel per metric, a colour per region.

    Solid: trained model; dashed: random-weights control; band: bootstrap interval of
    the trained and random curves; vertical lines: planted layers (simulated studies).
    """
    plt = pyplot()
    metrics = [m for m in CURVE_METRICS if (sub["metric"] == m).any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    regions = sorted(set(sub["region"]) - {"all"}) or ["all"]
    for ax, metric in zip(axes[0], metrics):
        for k, region in enumerate(regions):
            color = colors[k % len(colors)]
            grp = sub[(sub["region"] == region) & (sub["metric"] == metric)]
            for control, style in (("trained", "-"), ("random", "--")):
                g = grp[grp["control"] == control].sort_values("layer")
                if g.empty:
                    continue
                ax.plot(g["layer"], g["score"], style, color=color, marker="o", ms=3,
                        label=f"{region} ({control})")
                if g["ci_low"].notna().any():
                    ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], color=color,
                                    alpha=0.15, lw=0)
            if region in planted:
                ax.axvline(planted[region], color=color, lw=1, alpha=0.6)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("score", fontsize=8)
    axes[0][0].legend(fontsize=6, ncol=1)
    # fixed margins: tight_layout measured every tick label of every panel (a third of
    # the figure's drawing time)
    width = fig.get_figwidth()
    fig.subplots_adjust(left=0.62 / width, right=1 - 0.08 / width, bottom=0.16, top=0.9,
                        wspace=0.3)
    return fig


def subject_curves(summary: pd.DataFrame, metric: str = "r") -> pd.DataFrame:
    """Per subject, control and layer: the score of all targets at relative depth.

    Uses the ``all`` region rows where the summary has them, else the mean over the
    subject's regions. Relative depth is layer / last layer (0 = embeddings, 1 = last).

    Returns
    -------
    curves : DataFrame
        Columns modality, subject, control, layer, depth, score.
    """
    rows = summary[(summary["metric"] == metric)
                   & summary["control"].isin(["trained", "random"])]
    out = []
    for (modality, subject, control), grp in rows.groupby(
            ["modality", "subject", "control"], sort=True):
        whole = grp[grp["region"] == "all"]
        use = whole if not whole.empty else grp
        curve = use.groupby("layer")["score"].mean().sort_index()
        last = max(int(curve.index.max()), 1)
        for layer, score in curve.items():
            out.append({"modality": modality, "subject": subject, "control": control,
                        "layer": int(layer), "depth": int(layer) / last, "score": float(score)})
    return pd.DataFrame(out, columns=["modality", "subject", "control", "layer", "depth",
                                      "score"])


def cross_modal(curves: pd.DataFrame, metric: str = "r", quantiles=(0.25, 0.75)):
    """One layer curve per modality on relative depth: median over subjects with a band.

    Solid: trained model; dashed: random-weights control; the band spans the given
    quantiles over subjects at each depth (the range when a modality has 2 subjects).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colors = {"eeg": "#1f77b4", "seeg": "#d62728", "fmri": "#2ca02c"}
    for k, (modality, grp) in enumerate(curves.groupby("modality", sort=True)):
        color = colors.get(modality, f"C{k + 3}")
        n = grp["subject"].nunique()
        for control, style in (("trained", "-"), ("random", "--")):
            g = grp[grp["control"] == control]
            if g.empty:
                continue
            stats = g.groupby("depth")["score"].quantile([0.5, *quantiles]).unstack()
            ax.plot(stats.index, stats[0.5], style, color=color, marker="o", ms=3,
                    label=f"{modality} (n={n}, {control})")
            ax.fill_between(stats.index, stats[quantiles[0]], stats[quantiles[1]],
                            color=color, alpha=0.15 if control == "trained" else 0.07, lw=0)
    ax.set_xlabel("relative depth (0 = embeddings, 1 = last layer)", fontsize=8)
    ax.set_ylabel(f"held-out {metric}, all targets" if metric == "r" else metric, fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    return fig


def profile_figure(profile: pd.DataFrame, planted: dict[str, int]):
    """Voxel-encoder layer profiles: per subject (thin) and their mean (thick) per region;
    each layer's contribution to the predictions (left, when recorded) and the attention
    weight (right)."""
    plt = pyplot()
    trained = profile[(profile["control"] == "trained") & (profile["region"] != "all")]
    regions = sorted(set(trained["region"]))
    measures = [("contribution", "share of predicted variance"),
                ("weight", "attention weight")]
    measures = [m for m in measures if m[0] in trained]
    fig, axes = plt.subplots(1, len(measures), figsize=(5.0 * len(measures), 3.0),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (column, label) in zip(axes[0], measures):
        for k, region in enumerate(regions):
            color = colors[k % len(colors)]
            grp = trained[trained["region"] == region]
            for _, sub in grp.groupby("subject"):
                sub = sub.sort_values("layer")
                ax.plot(sub["layer"], sub[column], color=color, lw=0.6, alpha=0.5)
            mean = grp.groupby("layer")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), color=color, lw=2, marker="o", ms=3,
                    label=region)
            if region in planted:
                ax.axvline(planted[region], color=color, lw=1, ls=":")
        ax.set_xlabel("layer (0 = embeddings)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def transfer_figure(transfer: pd.DataFrame):
    """New-subject transfer against training alone, by fraction of training stimuli."""
    return fraction_figure(transfer[transfer["region"] == "all"], "r",
                           ("transfer", "alone"), "held-out r (all targets)")


def fraction_figure(frame: pd.DataFrame, value: str, methods: tuple[str, str], ylabel: str):
    """A new subject's score by fraction of its training stimuli: the method that reuses
    the shared model (``methods[0]``, solid) against the one trained alone (dashed)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for method, style in zip(methods, ("-o", "--s")):
        g = frame[frame["method"] == method].sort_values("fraction")
        ax.plot(g["fraction"], g[value], style, ms=4, label=method.replace("_", "-"))
    ax.set_xlabel("fraction of the new subject's training stimuli", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def finite(values) -> np.ndarray:
    """Boolean mask of finite entries."""
    return np.isfinite(np.asarray(values, dtype=float))
