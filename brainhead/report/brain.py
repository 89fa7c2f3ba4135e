"""Brain pictures of the report: where each layer fits best, on a brain.

- fMRI: held-out r per voxel at its best layer (glass brain and stat map on the MNI152
  template that nilearn ships), the best layer per voxel, and the region map.
- EEG: topomaps (MNE) of r at the best layer and of the best layer per channel, at the
  subject's channel positions.
- sEEG/ECoG: contacts on a glass brain (nilearn markers at their MNI coordinates),
  coloured by best layer and sized by r; contacts without coordinates are listed.

Per target, the best layer here is the layer of highest held-out r (descriptive, read
off the test scores); the report's region tables use the layers chosen on training
folds. Targets count as significant where the permutation q (Benjamini-Hochberg across
the subject's targets) at that layer is below ``q_max``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .figures import figure_name, pyplot


@dataclass
class TargetMaps:
    """Per-target scores of one subject and model, with the targets' metadata.

    Attributes
    ----------
    subject, modality : str
    names, regions : ndarray of str, shape (n_targets,)
    coords : ndarray, shape (n_targets, 3)
        MNI mm; NaN where unknown.
    r, q : ndarray, shape (n_layers, n_targets)
        Held-out r of the trained model and its permutation q per layer.
    bands : ndarray of str, shape (n_targets,), or None
        The frequency band of each target where the EEG ``bands`` view was scored (a
        target per channel and band; ``names`` are then the channels); None otherwise.
    """

    subject: str
    modality: str
    names: np.ndarray
    regions: np.ndarray
    coords: np.ndarray
    r: np.ndarray
    q: np.ndarray
    bands: np.ndarray | None = None

    def band(self, name: str) -> TargetMaps:
        """The targets of one band, as a map of the channels."""
        cols = self.bands == name
        return TargetMaps(self.subject, self.modality, self.names[cols], self.regions[cols],
                          self.coords[cols], self.r[:, cols], self.q[:, cols])

    @property
    def n_layers(self) -> int:
        return self.r.shape[0]

    @property
    def best_layer(self) -> np.ndarray:
        """Layer of highest held-out r per target."""
        return np.nanargmax(np.where(np.isfinite(self.r), self.r, -np.inf), axis=0)

    @property
    def r_best(self) -> np.ndarray:
        return self.r[self.best_layer, np.arange(self.r.shape[1])]

    @property
    def q_best(self) -> np.ndarray:
        return self.q[self.best_layer, np.arange(self.q.shape[1])]

    def significant(self, q_max: float) -> np.ndarray:
        """Targets whose q at the best layer is below ``q_max`` (and r above 0)."""
        return (self.q_best < q_max) & (self.r_best > 0)

    def shown(self, q_max: float) -> tuple[np.ndarray, str]:
        """Targets drawn on thresholded maps, and a sentence saying which.

        The significant targets; where none is, every target with r > 0 (a study with
        few permutations cannot reach a small q over thousands of voxels), said so.
        """
        sig = self.significant(q_max)
        if sig.any():
            return sig, f"voxels with q < {q_max:g} only"
        qmin = float(np.nanmin(self.q_best)) if np.isfinite(self.q_best).any() else np.nan
        return self.r_best > 0, (
            f"no target reached q < {q_max:g} (smallest q {qmin:.3g}; the number of "
            "permutations bounds it), so every voxel with r > 0 is drawn, unthresholded")


def _strings(arr) -> np.ndarray:
    return np.array([a.decode() if isinstance(a, bytes) else str(a) for a in np.asarray(arr)])


def load_target_maps(align_h5, responses_h5) -> TargetMaps:
    """Per-target r and q (``align/sub-XX_<model>.h5``) with coordinates (responses.h5).

    Raises
    ------
    ValueError
        When the two files disagree on the targets (names the files).
    """
    import h5py

    with h5py.File(responses_h5, "r") as f:
        subject = str(f.attrs["subject"])
        modality = str(f.attrs["modality"])
        names = _strings(f["targets/name"][()])
        coords = np.asarray(f["targets/coords"][()], dtype=float).reshape(-1, 3)
        regions = _strings(f["targets/region"][()])
    with h5py.File(align_h5, "r") as f:
        r = np.asarray(f["r_trained"][()], dtype=float)
        q = np.asarray(f["q_trained"][()], dtype=float)
        align_names = _strings(f["target_name"][()]) if "target_name" in f else names
    bands = None
    band_names = _band_names(align_names, names)
    if band_names is not None:  # the bands view: a target per channel and band
        n_bands = len(band_names)
        names, regions = np.repeat(names, n_bands), np.repeat(regions, n_bands)
        coords = np.repeat(coords, n_bands, axis=0)
        bands = np.tile(band_names, len(names) // n_bands)
        align_names = np.array([a.rsplit(":", 1)[0] for a in align_names])
    if r.ndim != 2 or r.shape[1] != len(names) or not np.array_equal(align_names, names):
        raise ValueError(
            f"{align_h5}: sub-{subject}: key 'r_trained' has shape {r.shape} and "
            f"{len(align_names)} target names; {responses_h5} has {len(names)} targets "
            "(the alignment is out of date: rerun it)")
    return TargetMaps(subject, modality, names, regions, coords, r, q, bands)


def _band_names(align_names: np.ndarray, channels: np.ndarray) -> np.ndarray | None:
    """Band names when the alignment's targets are ``<channel>:<band>`` pairs in
    channel-major order (the scored ``bands`` view), else None."""
    n_chan = len(channels)
    if not n_chan or len(align_names) <= n_chan or len(align_names) % n_chan:
        return None
    n_bands = len(align_names) // n_chan
    bands = np.array([a.rsplit(":", 1)[-1] for a in align_names[:n_bands]])
    expected = np.array([f"{c}:{b}" for c in channels for b in bands])
    return bands if np.array_equal(expected, align_names) else None


def _layer_cmap(n_layers: int):
    import matplotlib.colors as mcolors
    from matplotlib import colormaps

    base = colormaps["viridis"].resampled(n_layers)
    return mcolors.ListedColormap(base(np.arange(n_layers)), name="layers")


def _voxel_image(coords: np.ndarray, values: np.ndarray, fill: float = 0.0):
    """A NIfTI image on the grid the voxel coordinates (MNI mm) lie on."""
    import nibabel as nib

    steps = []
    for axis in range(3):
        diffs = np.diff(np.unique(np.round(coords[:, axis], 3)))
        diffs = diffs[diffs > 1e-3]
        steps.append(float(diffs.min()) if diffs.size else 1.0)
    steps = np.asarray(steps)
    origin = coords.min(axis=0)
    ijk = np.round((coords - origin) / steps).astype(int)
    shape = ijk.max(axis=0) + 1
    data = np.full(shape, fill, dtype=np.float32)
    data[tuple(ijk.T)] = values
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = origin
    return nib.Nifti1Image(data, affine)


def fmri_figure(maps: TargetMaps, q_max: float = 0.05):
    """Four rows: r glass brain, r stat map, best-layer stat map, region map."""
    from nilearn import datasets, plotting

    plt = pyplot()
    ok = np.isfinite(maps.coords).all(axis=1)
    coords = maps.coords[ok]
    sig = maps.shown(q_max)[0][ok]
    r_sig = np.where(sig, maps.r_best[ok], 0.0)
    template = datasets.load_mni152_template(resolution=2)
    fig = plt.figure(figsize=(9.0, 10.0))
    axes = [fig.add_axes([0.0, 1 - 0.25 * (k + 1), 1.0, 0.23]) for k in range(4)]
    vmax = float(np.nanmax(np.abs(r_sig))) if sig.any() else 1.0
    r_img = _voxel_image(coords, r_sig)
    tiny = 1e-6
    plotting.plot_glass_brain(r_img, axes=axes[0], figure=fig, display_mode="lzry",
                              colorbar=True, cmap="hot", vmin=0, vmax=vmax, threshold=tiny,
                              plot_abs=False, title="held-out r at best layer")
    plotting.plot_stat_map(r_img, bg_img=template, axes=axes[1], figure=fig,
                           display_mode="z", cut_coords=5, colorbar=True, cmap="hot",
                           vmin=0, vmax=vmax, threshold=tiny, symmetric_cbar=False,
                           title="held-out r (stat map)")
    n_layers = maps.n_layers
    layer = np.where(sig, maps.best_layer[ok] + 1.0, 0.0)  # 0 = not significant
    plotting.plot_stat_map(_voxel_image(coords, layer), bg_img=template, axes=axes[2],
                           figure=fig, display_mode="z", cut_coords=5, colorbar=True,
                           cmap=_layer_cmap(n_layers), vmin=1, vmax=n_layers, threshold=0.5,
                           symmetric_cbar=False, title="best layer + 1 (1 = embeddings)")
    names = sorted(set(maps.regions[ok]) - {""})
    labels = np.array([names.index(g) + 1 if g in names else 0 for g in maps.regions[ok]],
                      dtype=float)
    plotting.plot_roi(_voxel_image(coords, labels), bg_img=template, axes=axes[3],
                      figure=fig, display_mode="z", cut_coords=5, cmap="tab10", vmin=1,
                      vmax=10, colorbar=False,
                      title="regions: " + ", ".join(f"{k + 1}={g}" for k, g in enumerate(names)))
    return fig


def _eeg_info(maps: TargetMaps):
    import mne

    ok = np.isfinite(maps.coords).all(axis=1)
    names = [str(n) for n in maps.names[ok]]
    info = mne.create_info(names, sfreq=100.0, ch_types="eeg")
    montage = mne.channels.make_dig_montage(
        ch_pos={n: c / 1000.0 for n, c in zip(names, maps.coords[ok])}, coord_frame="head")
    info.set_montage(montage, on_missing="ignore")
    return info, ok


def eeg_figure(maps: TargetMaps, q_max: float = 0.05):
    """Two topomaps: r at the best layer (significant channels marked), best layer.

    Where the ``bands`` view was scored, one such row per frequency band.
    """
    plt = pyplot()
    rows = ([(None, maps)] if maps.bands is None
            else [(b, maps.band(b)) for b in dict.fromkeys(maps.bands)])
    fig, axes = plt.subplots(len(rows), 2, figsize=(7.0, 3.4 * len(rows)), squeeze=False)
    for (band, one), row in zip(rows, axes):
        _eeg_topomaps(one, row, q_max, "" if band is None else f"{band}: ")
    return fig


def _eeg_topomaps(maps: TargetMaps, axes, q_max: float, prefix: str) -> None:
    import mne

    fig = axes[0].figure
    info, ok = _eeg_info(maps)
    sig = maps.significant(q_max)[ok]
    r_best = maps.r_best[ok]
    vmax = float(np.nanmax(np.abs(r_best))) or 1.0
    im, _ = mne.viz.plot_topomap(r_best, info, axes=axes[0], show=False, cmap="RdBu_r",
                                 vlim=(-vmax, vmax), mask=sig, sensors=True, contours=4,
                                 mask_params={"marker": "o", "markerfacecolor": "w",
                                              "markeredgecolor": "k", "markersize": 4})
    fig.colorbar(im, ax=axes[0], shrink=0.7).set_label("held-out r", fontsize=8)
    axes[0].set_title(f"{prefix}r at best layer (o: q < {q_max:g})", fontsize=9)
    n_layers = maps.n_layers
    im, _ = mne.viz.plot_topomap(maps.best_layer[ok].astype(float), info, axes=axes[1],
                                 show=False, cmap=_layer_cmap(n_layers),
                                 vlim=(-0.5, n_layers - 0.5), contours=0, sensors=True,
                                 image_interp="nearest")
    cbar = fig.colorbar(im, ax=axes[1], shrink=0.7, ticks=range(n_layers))
    cbar.set_label("best layer", fontsize=8)
    axes[1].set_title(f"{prefix}best layer per channel", fontsize=9)


def seeg_figure(maps: TargetMaps, q_max: float = 0.05):
    """Contacts with coordinates on a glass brain: colour = best layer, size = r."""
    from nilearn import plotting

    plt = pyplot()
    ok = np.isfinite(maps.coords).all(axis=1)
    fig = plt.figure(figsize=(9.0, 3.4))
    n_layers = maps.n_layers
    r = np.clip(maps.r_best[ok], 0, None)
    sizes = 8 + 120 * (r / r.max() if r.size and r.max() > 0 else r)
    display = plotting.plot_markers(
        maps.best_layer[ok].astype(float), maps.coords[ok], node_size=sizes,
        node_cmap=_layer_cmap(n_layers), node_vmin=-0.5, node_vmax=n_layers - 0.5,
        display_mode="lzry", figure=fig, colorbar=True, alpha=0.85,
        title="contacts: colour = best layer, size = held-out r")
    sig = maps.significant(q_max)[ok]
    if sig.any():  # outline the significant contacts
        display.add_markers(maps.coords[ok][sig], marker_color="none", marker_size=sizes[sig] + 30,
                            edgecolors="k", linewidths=0.8)
    return fig


def contacts_without_coordinates(maps: TargetMaps) -> list[dict]:
    """Targets with unknown (NaN) coordinates: name, region, best layer, r, q."""
    bad = ~np.isfinite(maps.coords).all(axis=1)
    return [{"name": str(maps.names[k]), "region": str(maps.regions[k]) or "n/a",
             "best_layer": int(maps.best_layer[k]), "r": float(maps.r_best[k]),
             "q": float(maps.q_best[k])} for k in np.flatnonzero(bad)]


#: modality -> (figure function, file-name metric, caption template)
BRAIN_FIGURES = {
    "fmri": (fmri_figure, "r-bestlayer-regions_glassbrain-statmap", (
             "sub-{subject} (fMRI, {n} voxels, {n_sig} with q < {q:g}): top, held-out r of "
             "each voxel at its best layer as a glass brain (maximum projection) and "
             "axial slices on the MNI152 template ({shown}); then the best layer of those "
             "voxels (layer of highest held-out r), drawn as layer + 1 so that 1 = "
             "embeddings and the background stays 0; "
             "bottom, the region map.")),
    "eeg": (eeg_figure, "r-bestlayer_topomap", (
            "sub-{subject} (EEG, {n} channels, {n_sig} with q < {q:g}): left, held-out r of "
            "each channel at its best layer (layer of highest held-out r), channels with "
            "q < {q:g} marked; right, the best layer per channel (0 = embeddings); "
            "positions from the subject's montage.")),
    "seeg": (seeg_figure, "bestlayer-r_contacts_glassbrain", (
             "sub-{subject} (sEEG, {n} contacts with MNI coordinates, {n_sig} with q < "
             "{q:g}, circled): contacts on a glass brain, coloured by their best layer "
             "(layer of highest held-out r; 0 = embeddings) and sized by that r.")),
}


def brain_figure_name(maps: TargetMaps) -> str:
    """File-name stem of a subject's brain figure: modality, subject, region, metric."""
    return figure_name(maps.modality, f"sub-{maps.subject}", "all-regions",
                       BRAIN_FIGURES[maps.modality][1])


def brain_figure(align_h5, responses_h5, q_max: float = 0.05):
    """Draw one subject's brain figure; return (figure, caption).

    A top-level function of file names, so that figures can be drawn in parallel
    (:meth:`brainhead.report.figures.FigureWriter.render`).
    """
    maps = load_target_maps(align_h5, responses_h5)
    func, _, caption = BRAIN_FIGURES[maps.modality]
    fig = func(maps, q_max)
    ok = np.isfinite(maps.coords).all(axis=1)
    text = caption.format(subject=maps.subject, n=int(ok.sum()),
                          n_sig=int(maps.significant(q_max)[ok].sum()), q=q_max,
                          shown=maps.shown(q_max)[1])
    if maps.bands is not None:
        bands = list(dict.fromkeys(maps.bands))
        text = text.replace(" channels, ", " channel-band pairs, ", 1) + (
            f" One row per frequency band ({', '.join(bands)}): the bands view was scored, "
            "a target per channel and band.")
    return fig, text
