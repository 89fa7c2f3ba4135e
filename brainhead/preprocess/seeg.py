"""Intracranial EEG (sEEG/ECoG): contacts, re-reference, high-gamma envelope.

The pipeline of one run, all through MNE:

1. keep the sEEG/ECoG contacts, drop the subject's bad channels;
2. remove line noise (``notch``);
3. re-reference: common average, bipolar along each shaft/grid row
   (:func:`bipolar_pairs`, :func:`mne.set_bipolar_reference`; a bipolar channel sits at
   the midpoint of its two contacts), or none;
4. band-pass to the high-gamma band and take the analytic amplitude (Hilbert envelope);
5. epoch around the events (``stimulus`` view: the mean envelope in ``window``,
   baseline-corrected) and/or resample to ``timeseries_sfreq`` (``timeseries`` view:
   the continuous envelope with the stimulus onsets kept).

Contacts carry coordinates in mm (the recording's montage, e.g. from a BIDS
``electrodes.tsv``) and a region label: from ``electrodes.tsv``/``channels.tsv``
(columns ``region`` or ``anat``) or, when ``atlas`` is configured, looked up in a labels
image. Subjects differ in contacts: nothing here assumes a shared count.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import logger
from ..io.readers import RecordingError
from ..io.table import ResponseTable, Targets, View
from ._common import check_same_channels, check_same_sfreq, drop_bads, parse_events
from ._common import study_path as _study_path

__all__ = ["Contacts", "atlas_regions", "bipolar_pairs", "contacts_of", "high_gamma_envelope",
           "parse_contact", "preprocess_seeg", "read_label_table", "rereference"]

#: ``<shaft><number>``: a shaft name that does not end in a digit, then the contact number
#: (``LA1``, ``LA 02``, ``A'3``, ``OFMG12``).
_CONTACT = re.compile(r"^(?P<shaft>.*?\D)\s*(?P<num>\d+)$")
#: Columns of electrodes.tsv / channels.tsv read as a contact's region label.
_REGION_COLUMNS = ("region", "anat", "anatomy")


@dataclass
class Contacts:
    """The contacts (or bipolar channels) of a run after re-referencing.

    Attributes
    ----------
    names : ndarray of str, shape (n_contacts,)
    coords : ndarray of float, shape (n_contacts, 3)
        Position in mm in the montage's frame; NaN where unknown.
    regions : ndarray of str, shape (n_contacts,)
        Region label, ``""`` where none.
    coord_frame : str
        The montage's coordinate frame (``mni_tal``, ``head``, ``unknown``...).
    """

    names: np.ndarray
    coords: np.ndarray
    regions: np.ndarray
    coord_frame: str = "unknown"


def parse_contact(name: str) -> tuple[str, int] | None:
    """Split a contact name into its shaft and number.

    Parameters
    ----------
    name : str
        E.g. ``"LA1"``, ``"LA 02"``, ``"G10"``.

    Returns
    -------
    shaft_number : tuple of (str, int) | None
        ``("LA", 1)``; None when the name does not end in a number after a shaft name.
    """
    match = _CONTACT.match(name.strip())
    if match is None:
        return None
    return match["shaft"].strip(), int(match["num"])


def _where(subject: str | None, path) -> str:
    who = f"sub-{subject}: " if subject else ""
    return f"{who}{os.path.relpath(path)}" if path is not None else who.rstrip(": ")


def bipolar_pairs(ch_names: list[str], coords: np.ndarray | None = None, *,
                  max_gap_factor: float = 1.5, subject: str | None = None,
                  path=None) -> list[tuple[str, str]]:
    """Neighbouring contact pairs on the same shaft (or grid row) for bipolar montages.

    Contacts are grouped by shaft name and paired with the next number
    (``LA1-LA2``, ``LA2-LA3``...). With positions, a step longer than
    ``max_gap_factor`` times the shaft's median step is a break (the end of a grid row,
    or two shafts sharing a name) and is not paired, so a linear shaft of ``n`` contacts
    gives ``n - 1`` pairs and an 8 × 8 grid numbered row by row gives 56.

    Parameters
    ----------
    ch_names : list of str
        Contact names.
    coords : ndarray, shape (n_channels, 3) | None
        Positions (any unit); rows with NaN do not take part in the break test.
    max_gap_factor : float
        Longest step, relative to the shaft's median step, still counted as neighbours.
    subject, path : str, path-like | None
        Named in error messages.

    Returns
    -------
    pairs : list of (anode, cathode)
        In shaft order, then contact order.

    Raises
    ------
    RecordingError
        When a name has no ``<shaft><number>`` form, a shaft has a single contact, or a
        shaft yields no neighbouring pair.
    """
    where = _where(subject, path)
    unparsed = [n for n in ch_names if parse_contact(n) is None]
    if unparsed:
        raise RecordingError(
            f"{where}: reference 'bipolar' needs contact names '<shaft><number>' "
            f"(e.g. LA1, LA2); cannot pair {unparsed[:8]}"
        )
    index = {n: i for i, n in enumerate(ch_names)}
    shafts: dict[str, dict[int, str]] = {}
    for name in ch_names:
        shaft, num = parse_contact(name)
        if num in shafts.setdefault(shaft, {}):
            raise RecordingError(f"{where}: contacts {shafts[shaft][num]!r} and {name!r} "
                                 f"both are number {num} of shaft {shaft!r}")
        shafts[shaft][num] = name
    single = {s: list(c.values()) for s, c in shafts.items() if len(c) == 1}
    if single:
        raise RecordingError(
            f"{where}: reference 'bipolar': shaft(s) with a single contact cannot be "
            f"paired: {single}; drop them with bad_channels or use reference 'average'"
        )
    pairs = []
    for shaft, contacts in shafts.items():
        nums = sorted(contacts)
        cand = [(contacts[a], contacts[a + 1]) for a in nums if a + 1 in contacts]
        if coords is not None and cand:
            steps = np.array([np.linalg.norm(coords[index[a]] - coords[index[b]])
                              for a, b in cand])
            finite = np.isfinite(steps)
            if finite.any():
                limit = max_gap_factor * np.median(steps[finite])
                cand = [p for p, s in zip(cand, steps) if not (np.isfinite(s) and s > limit)]
        if not cand:
            raise RecordingError(
                f"{where}: reference 'bipolar': shaft {shaft!r} has no neighbouring "
                f"contacts to pair (numbers {nums})"
            )
        pairs += cand
    return pairs


def read_label_table(path: str | os.PathLike) -> dict[int, str]:
    """Index → name of a labels image's lookup table.

    Parameters
    ----------
    path : path-like
        A TSV with columns ``index`` and ``name`` (BIDS ``dseg.tsv``), or a FreeSurfer
        style colour table (``index name [r g b a]`` per line, ``#`` comments).
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{os.path.relpath(path)}: atlas lookup table not found")
    with open(path) as fid:
        first = fid.readline()
    if "\t" in first and {"index", "name"} <= set(first.strip().split("\t")):
        table = pd.read_csv(path, sep="\t")
        return {int(i): str(n) for i, n in zip(table["index"], table["name"])}
    lookup = {}
    with open(path) as fid:
        for k, line in enumerate(fid, start=1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
                raise RecordingError(f"{os.path.relpath(path)}: line {k}: expected "
                                     f"'<index> <name> ...', got {line.strip()!r}")
            lookup[int(parts[0])] = parts[1]
    return lookup


def atlas_regions(coords_mm: np.ndarray, labels_img, lookup: dict[int, str]) -> np.ndarray:
    """Region name of each position in a labels image (``""`` outside or unlabelled).

    Parameters
    ----------
    coords_mm : ndarray, shape (n, 3)
        Positions in mm in the image's world space; NaN rows get ``""``.
    labels_img : path-like | nibabel image
        3D integer labels image.
    lookup : dict of int to str
        Label value → region name (see :func:`read_label_table`).

    Returns
    -------
    regions : ndarray of str, shape (n,)
    """
    from nilearn.image import check_niimg_3d, coord_transform

    img = check_niimg_3d(labels_img)
    data = np.asarray(img.dataobj)
    inv = np.linalg.inv(img.affine)
    out = np.full(len(coords_mm), "", dtype=object)
    for k, xyz in enumerate(np.asarray(coords_mm, dtype=float)):
        if not np.all(np.isfinite(xyz)):
            continue
        ijk = np.rint(coord_transform(*xyz, inv)).astype(int)
        if np.all(ijk >= 0) and np.all(ijk < data.shape[:3]):
            out[k] = lookup.get(int(data[tuple(ijk)]), "")
    return out.astype(str)


def _positions_mm(raw) -> tuple[np.ndarray, str]:
    """Contact positions (mm, NaN unknown) from the montage, and its coordinate frame."""
    coords = np.full((len(raw.ch_names), 3), np.nan)
    montage = raw.get_montage()
    if montage is None:
        return coords, "unknown"
    pos = montage.get_positions()
    for i, name in enumerate(raw.ch_names):
        xyz = pos["ch_pos"].get(name)
        if xyz is not None and np.all(np.isfinite(xyz)):
            coords[i] = np.asarray(xyz) * 1000.0
    return coords, str(pos["coord_frame"])


def _tsv_regions(run) -> dict[str, str]:
    """Contact → region from the run's electrodes.tsv and channels.tsv (BIDS)."""
    tables = []
    if getattr(run, "channels_tsv", None) is not None:
        tables.append(Path(run.channels_tsv))
        prefix = Path(run.path).name.split("_")[0]
        tables += sorted(Path(run.path).parent.glob(f"{prefix}_*electrodes.tsv"))
    lookup: dict[str, str] = {}
    for path in tables:
        table = pd.read_csv(path, sep="\t", keep_default_na=False)
        col = next((c for c in _REGION_COLUMNS if c in table.columns), None)
        if col is None or "name" not in table.columns:
            continue
        for name, region in zip(table["name"], table[col]):
            if region not in ("", "n/a") and name not in lookup:
                lookup[str(name)] = str(region)
    return lookup


def contacts_of(raw, run=None, *, subject: str | None = None, atlas=None,
                atlas_lut=None) -> Contacts:
    """Names, positions (mm) and region labels of a recording's sEEG/ECoG channels.

    Parameters
    ----------
    raw : mne.io.Raw
        With a montage for positions (MNE reads BIDS ``electrodes.tsv`` into it).
    run : brainhead.preprocess._common.Run | None
        Its ``channels.tsv`` and the ``electrodes.tsv`` beside it give region labels.
    atlas, atlas_lut : path-like | None
        Labels image and its lookup table; when given, regions come from the image at
        each contact's position (positions must be in the image's space).
    """
    coords, frame = _positions_mm(raw)
    names = np.asarray(raw.ch_names, dtype=str)
    if atlas is not None:
        regions = atlas_regions(coords, atlas, read_label_table(atlas_lut))
    else:
        lookup = _tsv_regions(run) if run is not None else {}
        regions = np.array([lookup.get(n, "") for n in names], dtype=str)
    return Contacts(names, coords, regions, frame)


def rereference(raw, params: dict, *, subject: str | None = None, path=None):
    """Re-reference sEEG/ECoG contacts in place; return the bipolar pairs (or ``[]``).

    ``params["reference"]`` is ``average`` (per channel type), ``bipolar``
    (:func:`bipolar_pairs`, then :func:`mne.set_bipolar_reference` with the
    bipolar channel placed at the midpoint of its contacts) or ``none``.
    """
    import mne

    ref = params.get("reference", "average")
    if ref == "average":
        types = [t for t in ("seeg", "ecog") if t in raw]
        for ch_type in types:
            raw.set_eeg_reference("average", ch_type=ch_type, projection=False,
                                  verbose="error")
        return []
    if ref != "bipolar":
        return []
    coords, _ = _positions_mm(raw)
    pairs = bipolar_pairs(raw.ch_names, coords, max_gap_factor=params.get("bipolar_max_gap", 1.5),
                          subject=subject, path=path)
    locs = {ch["ch_name"]: ch["loc"][:3].copy() for ch in raw.info["chs"]}
    anodes, cathodes = [a for a, _ in pairs], [c for _, c in pairs]
    names = [f"{a}-{c}" for a, c in pairs]
    mne.set_bipolar_reference(raw, anodes, cathodes, ch_name=names, drop_refs=False,
                              copy=False, verbose="error")
    raw.pick(names)
    for ch, (a, c) in zip(raw.info["chs"], pairs):
        ch["loc"][:3] = (locs[a] + locs[c]) / 2.0
    return pairs


def high_gamma_envelope(raw, params: dict, *, subject: str | None = None, path=None):
    """Notch, re-reference and high-gamma analytic amplitude, in place.

    Returns
    -------
    raw : mne.io.Raw
        The envelope (same unit as the input), sEEG/ECoG channels only.
    pairs : list of (str, str)
        Bipolar pairs, ``[]`` for other references.
    """
    raw.pick(["seeg", "ecog"])
    nyq = raw.info["sfreq"] / 2
    lo, hi = params["high_gamma"]
    if hi >= nyq:
        raise RecordingError(
            f"{_where(subject, path)}: high_gamma upper edge {hi} Hz is not below the "
            f"Nyquist frequency {nyq} Hz"
        )
    notch = [f for f in params["notch"] if f < nyq]
    if notch:
        raw.notch_filter(notch, picks="all", verbose="error")
    pairs = rereference(raw, params, subject=subject, path=path)
    raw.filter(lo, hi, picks="all", verbose="error")
    raw.apply_hilbert(picks="all", envelope=True, verbose="error")
    return raw, pairs


def preprocess_seeg(spec, runs, *, epochs_sfreq: float | None = None) -> ResponseTable:
    """Preprocess a subject's sEEG/ECoG runs into a response table.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
        ``spec.preprocess`` holds the ``seeg`` keys of the study schema.
    runs : list of brainhead.preprocess._common.Run
    epochs_sfreq : float | None
        Also write the ``epochs`` view (the high-gamma envelope epochs at this rate) that
        decoding's raw-signal models read; None writes none.

    Returns
    -------
    table : ResponseTable
        Views ``stimulus`` (trial × contact; when ``epochs`` is true), ``epochs`` and
        ``timeseries`` (time × contact, envelope at ``timeseries_sfreq``).
    """
    import mne

    params = spec.preprocess
    check_same_sfreq(runs, spec.subject, params.get("sfreq_tolerance_hz", 0.0))
    atlas = _study_path(spec, params["atlas"]) if params.get("atlas") else None
    lut = _study_path(spec, params["atlas_lut"]) if params.get("atlas_lut") else None
    if atlas is not None and lut is None:
        raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(spec.path)}: key "
                             "'preprocess.atlas_lut': needed with 'atlas' (its lookup table)")
    for key, value in (("atlas", atlas), ("atlas_lut", lut)):
        if value is not None and not value.is_file():
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(spec.path)}: key "
                                 f"'preprocess.{key}': file not found: {os.path.relpath(value)}")
    epochs_list, run_of_epoch, ts_blocks, ts_rows, ev = [], [], [], [], []
    contacts, chans = None, []
    for run in runs:
        raw = run.raw
        drop_bads(raw, spec.bad_channels, spec.subject, run.path)
        if not any(t in raw for t in ("seeg", "ecog")):
            raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(run.path)}: no sEEG or "
                                 "ECoG channels in the recording")
        if params.get("epochs", True):
            events, conds, stims = parse_events(raw, run, spec.subject)
        raw, pairs = high_gamma_envelope(raw, params, subject=spec.subject, path=run.path)
        chans.append(list(raw.ch_names))
        if contacts is None:
            contacts = contacts_of(raw, run, subject=spec.subject, atlas=atlas, atlas_lut=lut)
            if pairs and atlas is None:  # a bipolar channel's region: its contacts' if equal
                lookup = _tsv_regions(run)
                contacts.regions = np.array(
                    [lookup.get(a, "") if lookup.get(a, "") == lookup.get(c, "") else ""
                     for a, c in pairs], dtype=str)
        onsets = np.empty(0)
        stim_ev = np.empty(0, dtype=str)
        if params.get("epochs", True):
            meta = pd.DataFrame({"condition": conds, "stim_id": stims})
            epochs = mne.Epochs(raw, events, event_id=None, tmin=params["tmin"],
                                tmax=params["tmax"],
                                baseline=tuple(params["baseline"]) if params["baseline"] else None,
                                metadata=meta, preload=True, verbose="error")
            if len(epochs) == 0:
                raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(run.path)}: no "
                                     "epoch fits inside the recording")
            epochs_list.append(epochs)
            run_of_epoch += [run.label] * len(epochs)
            onsets = (events[:, 0] - raw.first_samp) / raw.info["sfreq"]
            stim_ev = stims
        low = raw.copy().resample(params["timeseries_sfreq"], verbose="error")
        ts_blocks.append(low.get_data().T * 1e6)
        ts_rows.append(pd.DataFrame({"time": low.times, "group": run.label}))
        ev.append(pd.DataFrame({"onset": onsets, "stim_id": stim_ev, "group": run.label}))
    check_same_channels(chans, runs, spec.subject)
    ts_r = pd.concat(ts_rows, ignore_index=True)
    ev_t = pd.concat(ev, ignore_index=True)
    views = {"timeseries": View(
        X=np.concatenate(ts_blocks).astype(np.float32),
        rows={"time": ts_r["time"].to_numpy(float), "group": ts_r["group"].astype(str).to_numpy()},
        events={"onset": ev_t["onset"].to_numpy(float),
                "stim_id": ev_t["stim_id"].astype(str).to_numpy(),
                "group": ev_t["group"].astype(str).to_numpy()},
    )}
    n_epochs = 0
    if params.get("epochs", True):
        epochs = mne.concatenate_epochs(epochs_list, verbose="error")
        t0, t1 = params["window"]
        X = epochs.copy().crop(t0, t1).get_data(copy=False).mean(-1) * 1e6
        views["stimulus"] = View(
            X=X.astype(np.float32),
            rows={"stim_id": np.asarray(epochs.metadata["stim_id"], dtype=str),
                  "group": np.asarray(run_of_epoch, dtype=str),
                  "y": np.asarray(epochs.metadata["condition"], dtype=str)})
        n_epochs = len(epochs)
        if epochs_sfreq:
            from .eeg import epochs_view

            views["epochs"] = epochs_view(epochs, views["stimulus"].rows, epochs_sfreq)
    names = contacts.names
    logger.info("sub-%s: %d contacts (%s reference), %d epochs", spec.subject, len(names),
                params.get("reference", "average"), n_epochs)
    return ResponseTable(
        subject=spec.subject, modality="seeg",
        targets=Targets(name=names, kind=["electrode"] * len(names), coords=contacts.coords,
                        region=contacts.regions),
        views={k: views[k] for k in ("stimulus", "timeseries", "epochs") if k in views},
        info={"n_epochs": n_epochs, "runs": [r.label for r in runs],
              "high_gamma": params["high_gamma"], "reference": params.get("reference", "average"),
              "coord_frame": contacts.coord_frame},
    ).validate()
