"""HDF5 artifacts: atomic writes with provenance, and the response-table file format.

Every artifact is written to a temporary file beside its destination and renamed into
place only once complete, so a crash never leaves a file that a later step would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from .table import VIEW_AXES, ResponseTable, Targets, View

FORMAT_VERSION = "1"
_TRACKED_PACKAGES = ("brainhead", "numpy", "scipy", "mne", "mne-bids", "nilearn",
                     "nibabel", "torch", "transformers", "scikit-learn", "h5py")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def spec_hash(obj) -> str:
    """Short, stable hash of a JSON-serialisable object (a spec or parameters)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _git_rev() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(step: str, params=None) -> dict:
    """Attributes recorded in every artifact: step, parameter hash, versions, git rev."""
    versions = {}
    for pkg in _TRACKED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {
        "brainhead_step": step,
        "brainhead_format": FORMAT_VERSION,
        "params_hash": spec_hash(params or {}),
        "params": json.dumps(params or {}, sort_keys=True, default=str),
        "versions": json.dumps(versions, sort_keys=True),
        "git_rev": _git_rev(),
    }


def _write_array(group: h5py.Group, name: str, arr) -> None:
    arr = np.asarray(arr)
    if arr.dtype.kind in "USO":
        group.create_dataset(name, data=arr.astype(str).astype(object),
                             dtype=h5py.string_dtype())
    else:
        group.create_dataset(name, data=arr)


def _read_array(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.asarray(ds.asstr()[()], dtype=str)
    return ds[()]


def write_responses(path: str | os.PathLike, table: ResponseTable, prov: dict) -> Path:
    """Validate ``table`` and write it atomically to ``path`` (``responses.h5``).

    Parameters
    ----------
    path : path-like
        Destination file.
    table : ResponseTable
        Validated before anything is written.
    prov : dict
        Provenance attributes (see :func:`provenance`).
    """
    table.validate()
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(prov)
        f.attrs["subject"] = table.subject
        f.attrs["modality"] = table.modality
        f.attrs["info"] = json.dumps(table.info, sort_keys=True, default=str)
        tg = f.create_group("targets")
        for key in ("name", "kind", "coords", "region"):
            _write_array(tg, key, getattr(table.targets, key))
        for vname, view in table.views.items():
            g = f.create_group(f"views/{vname}")
            g.attrs["axes"] = json.dumps(VIEW_AXES[vname])
            g.create_dataset("X", data=view.X, compression="gzip", compression_opts=1)
            for part in ("rows", "labels", "events"):
                sub = g.create_group(part)
                for key, arr in getattr(view, part).items():
                    _write_array(sub, key, arr)
    return path


def read_responses(path: str | os.PathLike) -> ResponseTable:
    """Read a ``responses.h5`` written by :func:`write_responses` and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"response table not found: {path}")
    with h5py.File(path, "r") as f:
        targets = Targets(**{k: _read_array(f["targets"][k])
                             for k in ("name", "kind", "coords", "region")})
        views = {}
        for vname, g in f["views"].items():
            parts = {part: {k: _read_array(ds) for k, ds in g[part].items()}
                     for part in ("rows", "labels", "events")}
            views[vname] = View(X=g["X"][()], **parts)
        table = ResponseTable(
            subject=str(f.attrs["subject"]),
            modality=str(f.attrs["modality"]),
            targets=targets,
            views=views,
            info=json.loads(f.attrs.get("info", "{}")),
        )
    return table.validate()


def read_attrs(path: str | os.PathLike) -> dict:
    """Root attributes (provenance) of any brainhead artifact."""
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict) -> Path:
    """Write named arrays (``"group/name"`` keys allowed) atomically with attributes."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(attrs)
        for key, arr in arrays.items():
            parent, _, name = key.rpartition("/")
            group = f.require_group(parent) if parent else f
            _write_array(group, name, arr)
    return path


def read_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read every dataset of an HDF5 file into ``{"group/name": array}`` plus root attrs."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = _read_array(obj)
        f.visititems(visit)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out, attrs
