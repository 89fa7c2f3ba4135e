"""The uniform response table: one per subject, whatever the modality.

A :class:`ResponseTable` holds the subject's targets (voxels, channels, electrodes) with
their metadata, and one or more *views* of the same responses:

``stimulus``  X[sample, target]          one row per trial or stimulus
``bands``     X[sample, target, band]    band differential entropy per trial
``timeseries`` X[time, target]           continuous signal, with stimulus onsets
``epochs``    X[sample, target, time]    each row's signal (decoding's raw-signal models)

Every reader and preprocessing step returns through :meth:`ResponseTable.validate`,
so everything downstream can trust the shapes and the absence of NaNs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Axis names of each view, first axis the rows.
VIEW_AXES = {
    "stimulus": ("sample", "target"),
    "bands": ("sample", "target", "band"),
    "timeseries": ("time", "target"),
    "epochs": ("sample", "target", "time"),
}
#: Per-row arrays each view must carry.
VIEW_ROWS = {
    "stimulus": ("stim_id", "group"),
    "bands": ("stim_id", "group"),
    "timeseries": ("time", "group"),
    "epochs": ("stim_id", "group"),
}
TARGET_KINDS = ("voxel", "channel", "electrode", "band", "parcel")
MODALITIES = ("eeg", "seeg", "fmri")


class ResponseTableError(ValueError):
    """A response table breaks the contract described in :mod:`brainhead.io.table`."""


@dataclass
class Targets:
    """Per-target metadata shared by all views.

    Attributes
    ----------
    name : ndarray of str, shape (n_targets,)
    kind : ndarray of str, shape (n_targets,)
        One of :data:`TARGET_KINDS`.
    coords : ndarray of float, shape (n_targets, 3)
        MNI coordinates in mm; NaN where unknown.
    region : ndarray of str, shape (n_targets,)
        Region label (``""`` where none).
    """

    name: np.ndarray
    kind: np.ndarray
    coords: np.ndarray
    region: np.ndarray

    def __post_init__(self):
        self.name = np.asarray(self.name, dtype=str)
        self.kind = np.asarray(self.kind, dtype=str)
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 3)
        self.region = np.asarray(self.region, dtype=str)

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class View:
    """One view of a subject's responses.

    Attributes
    ----------
    X : ndarray, float32
        Axes as in :data:`VIEW_AXES` for the view's name.
    rows : dict of str to ndarray
        Arrays with one entry per row of ``X`` (``stim_id``, ``group`` and optional
        ``y``; ``time`` in seconds for the time-series view).
    labels : dict of str to ndarray
        Labels of extra axes (``band`` for the bands view).
    events : dict of str to ndarray
        Stimulus onsets of a time-series view (``onset`` in s, ``stim_id``, ``group``).
    """

    X: np.ndarray
    rows: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    events: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ResponseTable:
    """A subject's responses: targets plus named views. See the module docstring."""

    subject: str
    modality: str
    targets: Targets
    views: dict[str, View]
    info: dict = field(default_factory=dict)

    def view(self, name: str) -> View:
        """Return one view, with a clear error when this subject lacks it."""
        if name not in self.views:
            raise ResponseTableError(
                f"sub-{self.subject} ({self.modality}) has no '{name}' view; it has "
                f"{sorted(self.views)}. The {self.modality} preprocessing does not "
                f"write '{name}'."
            )
        return self.views[name]

    def validate(self) -> "ResponseTable":
        """Check the table's contract; return ``self`` or raise ResponseTableError."""
        where = f"sub-{self.subject}"
        if self.modality not in MODALITIES:
            raise ResponseTableError(f"{where}: unknown modality {self.modality!r}")
        t = self.targets
        n = len(t)
        if n == 0:
            raise ResponseTableError(f"{where}: no targets")
        for key in ("kind", "region"):
            if len(getattr(t, key)) != n:
                raise ResponseTableError(f"{where}: targets.{key} has {len(getattr(t, key))} "
                                         f"entries for {n} targets")
        if t.coords.shape != (n, 3):
            raise ResponseTableError(f"{where}: targets.coords has shape {t.coords.shape}, "
                                     f"expected ({n}, 3)")
        if len(set(t.name.tolist())) != n:
            raise ResponseTableError(f"{where}: target names are not unique")
        bad_kinds = sorted(set(t.kind.tolist()) - set(TARGET_KINDS))
        if bad_kinds:
            raise ResponseTableError(f"{where}: unknown target kinds {bad_kinds}; "
                                     f"expected some of {TARGET_KINDS}")
        if not self.views:
            raise ResponseTableError(f"{where}: no views")
        for name, v in self.views.items():
            if name not in VIEW_AXES:
                raise ResponseTableError(f"{where}: unknown view {name!r}; expected one of "
                                         f"{sorted(VIEW_AXES)}")
            axes = VIEW_AXES[name]
            v.X = np.asarray(v.X)
            if v.X.dtype != np.float32:
                raise ResponseTableError(f"{where}: view {name}: X is {v.X.dtype}, expected float32")
            if v.X.ndim != len(axes) or v.X.shape[1] != n:
                raise ResponseTableError(
                    f"{where}: view {name}: X has shape {v.X.shape}, expected axes {axes} "
                    f"with {n} targets"
                )
            if v.X.shape[0] == 0:
                raise ResponseTableError(f"{where}: view {name}: no rows")
            if not np.isfinite(v.X).all():
                raise ResponseTableError(
                    f"{where}: view {name}: X has {int((~np.isfinite(v.X)).sum())} "
                    "non-finite values"
                )
            for key in VIEW_ROWS[name]:
                if key not in v.rows:
                    raise ResponseTableError(f"{where}: view {name}: missing rows[{key!r}]")
            for key, arr in v.rows.items():
                if len(arr) != v.X.shape[0]:
                    raise ResponseTableError(
                        f"{where}: view {name}: rows[{key!r}] has {len(arr)} entries for "
                        f"{v.X.shape[0]} rows"
                    )
            if name == "bands":
                bands = v.labels.get("band")
                if bands is None or len(bands) != v.X.shape[2]:
                    raise ResponseTableError(f"{where}: view bands: labels['band'] must name "
                                             f"the {v.X.shape[2]} bands")
            if name == "timeseries" and "onset" not in v.events:
                raise ResponseTableError(f"{where}: view timeseries: events['onset'] missing")
        return self
