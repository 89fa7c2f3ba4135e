"""Scalp EEG: channels, filtering, ICA, re-referencing, epoching and trial responses.

Every step is an MNE call configured by the study's ``preprocess.eeg`` section (keys and
defaults in ``workflows/schemas/study.schema.yaml``, ``$defs/eeg``) with the subject's
overrides. Two entry points:

- :func:`preprocess_eeg` for continuous recordings (a list of ``Run``): channel types,
  bad channels, montage, notch and band-pass, ICA, interpolation, reference,
  resampling, epoching on events or fixed windows, rejection;
- :func:`preprocess_eeg_epochs` for datasets that ship epoched trials (DEAP, SEED,
  DREAMER): the same steps that apply to epochs.

Both write two views: ``stimulus`` (mean amplitude per channel in ``window``, in
microvolts) and ``bands`` (differential entropy per channel and band, optionally minus
that of a baseline window), and record in the table's info the epochs kept and
rejected and the bad channels.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import logger
from ..io.readers import RecordingError
from ..io.table import ResponseTable, Targets, View
from ._common import channel_meta, check_same_channels, check_same_sfreq, drop_bads, parse_events

__all__ = ["clean_raw", "detect_bad_channels", "differential_entropy", "eeg_epochs",
           "epochs_to_views", "preprocess_eeg", "preprocess_eeg_epochs"]


def _where(spec_or_subject, path) -> str:
    subject = getattr(spec_or_subject, "subject", spec_or_subject)
    return f"sub-{subject}: {os.path.relpath(path)}"


# --------------------------------------------------------------------------- channels
def _study_root(spec) -> Path:
    """Folder of the subject's ``study.yaml`` (relative montage files are read from it)."""
    for folder in Path(spec.path).resolve().parents:
        if (folder / "study.yaml").is_file():
            return folder
    return Path(spec.path).resolve().parent


def _montage(params: dict, spec):
    """The montage the study names: an MNE built-in or a file relative to study.yaml."""
    import mne

    from ..specs import montage_name

    name = montage_name(params["montage"])  # MNE's old standard_* names read as colin27_*
    if name in mne.channels.get_builtin_montages():
        return mne.channels.make_standard_montage(name)
    path = Path(name) if Path(name).is_absolute() else _study_root(spec) / name
    if not path.is_file():
        raise RecordingError(
            f"sub-{spec.subject}: {os.path.relpath(spec.path)}: key 'preprocess.montage': "
            f"{name!r} is neither an MNE built-in montage nor a file "
            f"({os.path.relpath(path)} not found)"
        )
    try:
        return mne.channels.read_custom_montage(path)
    except Exception as err:
        raise RecordingError(f"sub-{spec.subject}: {os.path.relpath(path)}: cannot be read "
                             f"as a montage: {err}") from err


def _set_montage(inst, params: dict, spec, path) -> None:
    """Give the channels positions when the recording has none (and a montage is named)."""
    if inst.get_montage() is not None or not params.get("montage"):
        return
    montage = _montage(params, spec)
    eeg = [inst.ch_names[i] for i in _eeg_picks(inst)]
    missing = [c for c in eeg if c not in montage.ch_names]
    if missing:
        raise RecordingError(
            f"{_where(spec, path)}: channels {missing[:6]} are not in montage "
            f"{params['montage']!r} (key 'preprocess.montage'); rename them or name "
            "another montage"
        )
    inst.set_montage(montage, on_missing="ignore", verbose="error")


def rename_channels(inst, params: dict, spec, path) -> dict[str, str]:
    """Rename channels in place as ``strip_prefix``, ``strip_suffix`` and ``rename_channels`` say.

    Prefix and suffix are stripped first (``EEG F3`` -> ``F3``, ``Fz-REF`` -> ``Fz``);
    ``rename_channels`` maps the stripped (or the original) names. Done before the bad
    channels, EOG channels and montage are looked up, which use the new names.

    Returns
    -------
    renamed : dict
        Old name -> new name, for the channels whose name changed.

    Raises
    ------
    RecordingError
        A mapped name that is not a channel, or names that collide after renaming.
    """
    prefix, suffix = params.get("strip_prefix"), params.get("strip_suffix")
    mapping = params.get("rename_channels") or {}
    if not (prefix or suffix or mapping):
        return {}
    stripped = {}
    for name in inst.ch_names:
        new = name
        if prefix and new.startswith(prefix) and len(new) > len(prefix):
            new = new[len(prefix):]
        if suffix and new.endswith(suffix) and len(new) > len(suffix):
            new = new[:-len(suffix)]
        stripped[name] = new
    unknown = [k for k in mapping if k not in stripped and k not in stripped.values()]
    if unknown:
        raise RecordingError(
            f"{_where(spec, path)}: key 'preprocess.rename_channels': {unknown} are not "
            f"channels of this recording (after stripping it has "
            f"{list(stripped.values())[:8]}...)")
    final = {old: mapping.get(new, mapping.get(old, new)) for old, new in stripped.items()}
    seen: dict[str, str] = {}
    clashes = []
    for old, new in final.items():
        if new in seen:
            clashes.append(f"{seen[new]!r} and {old!r} -> {new!r}")
        seen[new] = old
    if clashes:
        raise RecordingError(
            f"{_where(spec, path)}: key 'preprocess.rename_channels': renaming gives two "
            f"channels one name ({'; '.join(clashes[:4])}); every channel must keep its own "
            "name (check strip_prefix/strip_suffix and rename_channels)")
    renamed = {old: new for old, new in final.items() if old != new}
    if renamed:
        inst.rename_channels(renamed, verbose="error")
        logger.info("sub-%s: %s: %d channels renamed (e.g. %s)", spec.subject,
                    os.path.relpath(path), len(renamed),
                    ", ".join(f"{o} -> {n}" for o, n in list(renamed.items())[:3]))
    return renamed


def _eeg_picks(inst) -> np.ndarray:
    import mne

    return mne.pick_types(inst.info, eeg=True, exclude=[])


def _set_channel_types(inst, spec, path) -> None:
    """Type the study's ``eog_channels`` as EOG and keep EEG and EOG channels only."""
    eog = spec.preprocess.get("eog_channels", [])
    unknown = [c for c in eog if c not in inst.ch_names]
    if unknown:
        raise RecordingError(f"{_where(spec, path)}: key 'preprocess.eog_channels': "
                             f"{unknown} are not channels of this recording")
    if eog:
        inst.set_channel_types({c: "eog" for c in eog}, verbose="error")
    inst.pick(["eeg", "eog"], exclude=[])
    if len(_eeg_picks(inst)) == 0:
        raise RecordingError(f"{_where(spec, path)}: no EEG channels")


#: Floor of the robust spread of channel log variances: channels recorded alike (or
#: simulated) have nearly equal variances, and without a floor a channel twice as
#: variable as the others would count as noisy. With it, ``bad_zscore`` 5 flags channels
#: whose variance is above exp(2.5) ~ 12 times the median.
_MIN_LOGVAR_SCALE = 0.5


def detect_bad_channels(data: np.ndarray, ch_names: list[str], *, flat_uv: float,
                        zscore: float | None) -> dict[str, list[str]]:
    """Find NaN, flat and noisy channels.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Volts.
    ch_names : list of str
    flat_uv : float
        A channel whose standard deviation (microvolts) is below this is flat.
    zscore : float | None
        A channel whose log variance lies more than ``zscore`` robust standard deviations
        (median absolute deviation x 1.4826, at least 0.5) above the median is noisy;
        ``None`` skips this test.

    Returns
    -------
    bads : dict
        ``{"nan": [...], "flat": [...], "noisy": [...]}``.
    """
    finite = np.isfinite(data).all(axis=1)
    std = np.where(finite, np.nanstd(np.where(np.isfinite(data), data, 0.0), axis=1), 0.0)
    flat = finite & (std * 1e6 < flat_uv)
    noisy = np.zeros(len(ch_names), bool)
    ok = finite & ~flat
    if zscore is not None and ok.sum() >= 3:
        logvar = np.log(std[ok] ** 2)
        scale = max(np.median(np.abs(logvar - np.median(logvar))) * 1.4826,
                    _MIN_LOGVAR_SCALE)
        noisy[np.flatnonzero(ok)] = (logvar - np.median(logvar)) / scale > zscore
    return {key: [ch_names[i] for i in np.flatnonzero(mask)]
            for key, mask in (("nan", ~finite), ("flat", flat), ("noisy", noisy))}


def _mark_bads(inst, data: np.ndarray, params: dict, spec, path, *, stage: str) -> dict:
    """Mark detected bad channels in ``inst.info['bads']``; NaN without detection is an error.

    ``data`` is the EEG channels' data, (n_channels, n_times); ``stage`` is ``raw``
    (NaN and flat channels) or ``filtered`` (noisy channels).
    """
    names = [inst.ch_names[i] for i in _eeg_picks(inst)]
    if not params["detect_bads"]:
        nan = [n for n, row in zip(names, data) if not np.isfinite(row).all()]
        if nan and not params.get("drop_nonfinite"):
            raise RecordingError(
                f"{_where(spec, path)}: channels {nan[:6]} contain NaN or infinite values; "
                "list them in bad_channels, or set key 'preprocess.drop_nonfinite' (or "
                "preprocess.detect_bads) to true to drop them"
            )
        if not nan or stage != "raw":
            return {}
        found = {"nan": nan}
    else:
        found = detect_bad_channels(data, names, flat_uv=params["flat_uv"],
                                    zscore=params["bad_zscore"] if stage == "filtered" else None)
    if stage == "raw":
        found.pop("noisy", None)
        if found.get("nan"):
            logger.warning("sub-%s: %s: %d channel(s) with NaN or infinite samples %s",
                           spec.subject, os.path.relpath(path), len(found["nan"]),
                           "interpolated" if params["interpolate_bads"] else "dropped")
    else:
        found = {"noisy": [n for n in found["noisy"] if n not in inst.info["bads"]]}
    new = [n for group in found.values() for n in group if n not in inst.info["bads"]]
    inst.info["bads"] = list(inst.info["bads"]) + new
    if found.get("nan"):
        idx = [inst.ch_names.index(n) for n in found["nan"]]
        # zeroed so that filters stay finite; the channels are dropped or interpolated
        inst.apply_function(lambda x: np.zeros_like(x), picks=idx, channel_wise=False)
    n_bad = len([b for b in inst.info["bads"] if b in names])
    if n_bad > params["max_bad_fraction"] * len(names):
        raise RecordingError(
            f"{_where(spec, path)}: {n_bad} of {len(names)} EEG channels are bad "
            f"({inst.info['bads'][:8]}), more than preprocess.max_bad_fraction "
            f"{params['max_bad_fraction']}"
        )
    return {k: v for k, v in found.items() if v}


def _resolve_bads(inst, params: dict, spec, path) -> None:
    """Interpolate (spherical splines) or drop the channels in ``info['bads']``."""
    bads = [b for b in inst.info["bads"] if b in inst.ch_names]
    if not bads:
        return
    if params["interpolate_bads"]:
        montage = inst.get_montage()
        pos = montage.get_positions()["ch_pos"] if montage is not None else {}
        no_pos = [c for c in (inst.ch_names[i] for i in _eeg_picks(inst))
                  if c not in pos or not np.all(np.isfinite(pos[c]))]
        if no_pos:
            raise RecordingError(
                f"{_where(spec, path)}: key 'preprocess.interpolate_bads': channels "
                f"{no_pos[:6]} have no position; name a montage or set interpolate_bads: "
                "false"
            )
        inst.interpolate_bads(reset_bads=True, method={"eeg": "spline"}, verbose="error")
    else:
        inst.drop_channels(bads)
        inst.info["bads"] = []


def _reference(inst, params: dict, spec, path) -> None:
    import mne

    ref = params["reference"]
    if ref == "none":
        return
    if ref == "average":
        inst.set_eeg_reference("average", projection=False, verbose="error")
    elif ref == "REST":
        if inst.get_montage() is None:
            raise RecordingError(f"{_where(spec, path)}: key 'preprocess.reference': REST "
                                 "needs channel positions; name a montage")
        sphere = mne.make_sphere_model("auto", "auto", inst.info, verbose="error")
        src = mne.setup_volume_source_space(sphere=sphere, pos=15.0, verbose="error")
        fwd = mne.make_forward_solution(inst.info, trans=None, src=src, bem=sphere,
                                        meg=False, eeg=True, verbose="error")
        inst.set_eeg_reference("REST", forward=fwd, verbose="error")
    else:
        missing = [c for c in ref if c not in inst.ch_names]
        if missing:
            raise RecordingError(f"{_where(spec, path)}: key 'preprocess.reference': "
                                 f"reference channels {missing} are not in the recording "
                                 "(or were dropped as bad)")
        inst.set_eeg_reference(list(ref), projection=False, verbose="error")
        inst.drop_channels(list(ref))


def _ica(inst, params: dict, spec, path, seed: int) -> list[int]:
    """Remove EOG-related independent components; returns their indices."""
    import mne

    if not params["ica"]:
        return []
    eog = mne.pick_types(inst.info, eog=True)
    if len(eog) == 0:
        raise RecordingError(f"{_where(spec, path)}: key 'preprocess.ica': ICA removes "
                             "EOG components but the recording has no EOG channel; name "
                             "them in preprocess.eog_channels")
    n = params["ica_n_components"]
    n = int(n) if n >= 1 else float(n)
    # MNE >= 1.12 seeds through ``rng``; older versions through ``random_state``.
    seeding = ("rng" if "rng" in inspect.signature(mne.preprocessing.ICA).parameters
               else "random_state")
    ica = mne.preprocessing.ICA(n_components=n, method="fastica", max_iter="auto",
                                **{seeding: seed})
    ica.fit(inst, picks="eeg", verbose="error")
    found, _ = ica.find_bads_eog(inst, measure=params["ica_eog_measure"],
                                 threshold=params["ica_eog_threshold"], verbose="error")
    ica.exclude = list(found)
    if found:
        ica.apply(inst, verbose="error")
    return [int(i) for i in found]


# --------------------------------------------------------------------------- raw
def clean_raw(raw, params: dict, *, subject: str, path, spec=None, seed: int = 0) -> dict:
    """Clean a continuous recording in place; return what was found.

    Steps: EEG/EOG channels, NaN/flat detection, montage, notch, band-pass, noisy-channel
    detection, ICA, interpolation or removal of bad channels, reference, resampling.

    Parameters
    ----------
    raw : mne.io.Raw
        Preloaded; the subject's listed bad channels already in ``info['bads']`` (or
        dropped).
    params : dict
        The subject's ``preprocess`` section.
    subject : str
    path : path-like
        The recording (for messages).
    spec : SubjectSpec | None
        For montage files and ``eog_channels``; a minimal one is made when ``None``.
    seed : int
        ICA seed.

    Returns
    -------
    found : dict
        ``bads`` (by kind) and ``ica_excluded``.
    """
    if spec is None:
        from types import SimpleNamespace

        spec = SimpleNamespace(subject=subject, preprocess=params, path=Path(path))
    params = {**_PARAM_DEFAULTS, **params}
    _set_channel_types(raw, spec, path)
    eeg = _eeg_picks(raw)
    found = {"bads": _mark_bads(raw, raw.get_data(picks=eeg), params, spec, path,
                                stage="raw")}
    _set_montage(raw, params, spec, path)
    nyq = raw.info["sfreq"] / 2
    notch = [f for f in params["notch"] if f < nyq]
    if notch:
        raw.notch_filter(notch, picks=["eeg", "eog"], verbose="error")
    if params["l_freq"] is not None or params["h_freq"] is not None:
        raw.filter(params["l_freq"], params["h_freq"], picks=["eeg", "eog"], verbose="error")
    noisy = _mark_bads(raw, raw.get_data(picks=eeg), params, spec, path, stage="filtered")
    found["bads"].update(noisy)
    found["ica_excluded"] = _ica(raw, params, spec, path, seed)
    _resolve_bads(raw, params, spec, path)
    raw.pick("eeg")
    _reference(raw, params, spec, path)
    if params["resample"]:
        raw.resample(params["resample"], verbose="error")
    return found


def _select_events(raw, run, spec, params):
    """Events, conditions and stimulus ids of a run, restricted to ``event_id``."""
    events, conds, stims = parse_events(raw, run, spec.subject)
    mapping = params["event_id"]
    if mapping:
        keep = np.isin(conds, list(mapping))
        if not keep.any():
            raise RecordingError(
                f"{_where(spec, run.path)}: no events of the type(s) {sorted(mapping)} "
                f"named in preprocess.event_id; the recording has {sorted(set(conds))}"
            )
        events, stims = events[keep], stims[keep]
        conds = np.asarray([mapping[c] for c in conds[keep]])
    return events, conds, stims


def _run_setting(params: dict, key: str, run):
    """A ``run_labels``/``run_segments`` entry of a run: by its label, else its file name."""
    table = params.get(key) or {}
    for name in (str(run.label), Path(run.path).name):
        if name in table:
            return table[name]
    return None


def run_segment(params: dict, run, duration: float, where: str) -> tuple[float, float]:
    """The ``[start, stop]`` (s from the run's start) cut into fixed-length windows.

    ``run_segments`` gives it per run (negative times count from the end, a null stop is
    the end); without an entry the whole run. Raises :class:`RecordingError` naming the
    key when the segment is empty or outside the recording of ``duration`` s.
    """
    segment = _run_setting(params, "run_segments", run)
    if segment is None:
        return 0.0, duration
    start, stop = segment
    t0 = start + duration if start < 0 else start
    t1 = duration if stop is None else (stop + duration if stop < 0 else stop)
    if not 0 <= t0 < t1 <= duration + 1e-9 or t1 - t0 < params["fixed_length"]:
        raise RecordingError(
            f"{where}key 'preprocess.run_segments.{run.label}': {list(segment)} is "
            f"{t0:g} to {t1:g} s of a {duration:g} s recording; it must lie inside it and "
            f"hold one window of preprocess.fixed_length {params['fixed_length']:g} s")
    return t0, min(t1, duration)


def _epochs_of_run(raw, run, spec, params):
    import mne

    reject = None if params["reject_uv"] is None else {"eeg": params["reject_uv"] * 1e-6}
    sfreq = raw.info["sfreq"]
    if params["epoching"] == "fixed":
        length = params["fixed_length"]
        t0, t1 = run_segment(params, run, raw.n_times / sfreq, f"{_where(spec, run.path)}: ")
        events = mne.make_fixed_length_events(raw, start=t0, stop=t1, duration=length,
                                              first_samp=True)
        n = len(events)
        label = _run_setting(params, "run_labels", run) or "fixed"
        onset = (events[:, 0] - raw.first_samp) / sfreq
        meta = pd.DataFrame({"condition": [label] * n,
                             "stim_id": [f"run{run.label}-{k:04d}" for k in range(n)],
                             "group": [run.label] * n, "t_start": onset,
                             "t_stop": onset + length})
        epochs = mne.Epochs(raw, events, event_id=None, tmin=0.0, tmax=length - 1.0 / sfreq,
                            baseline=None, metadata=meta, preload=True, verbose="error")
        epochs.drop_bad(reject=reject, verbose="error")
        return epochs, n
    events, conds, stims = _select_events(raw, run, spec, params)
    onset = (events[:, 0] - raw.first_samp) / sfreq
    meta = pd.DataFrame({"condition": conds, "stim_id": stims, "group": run.label,
                         "t_start": onset + params["tmin"], "t_stop": onset + params["tmax"]})
    baseline = tuple(params["baseline"]) if params["baseline"] else None
    epochs = mne.Epochs(raw, events, event_id=None, tmin=params["tmin"], tmax=params["tmax"],
                        baseline=baseline, metadata=meta, reject=reject, preload=True,
                        verbose="error", on_missing="raise", event_repeated="drop")
    return epochs, len(events)


_PARAM_DEFAULTS = {
    "montage": None, "eog_channels": [], "detect_bads": False, "flat_uv": 0.1,
    "bad_zscore": 5.0, "max_bad_fraction": 0.25, "interpolate_bads": False,
    "reference": "average", "resample": None, "ica": False, "ica_n_components": 0.99,
    "ica_eog_measure": "zscore", "ica_eog_threshold": 3.0,
    "epoching": "events", "fixed_length": 2.0, "event_id": None, "de_baseline": None,
    "reject_uv": None, "notch": [], "l_freq": None, "h_freq": None,
    "rename_channels": {}, "strip_prefix": None, "strip_suffix": None,
    "sfreq_tolerance_hz": 0.0, "drop_nonfinite": False, "run_labels": {}, "run_segments": {},
}


def _params(spec) -> dict:
    """The subject's parameters over the defaults of keys added after a spec was made."""
    return {**_PARAM_DEFAULTS, **spec.preprocess}


def eeg_epochs(spec, runs, *, seed: int = 0) -> tuple:
    """Clean and epoch a subject's continuous EEG runs (what :func:`preprocess_eeg` uses).

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
    runs : list of brainhead.preprocess._common.Run
        Preloaded recordings with annotations ``<condition>[/<stim_id>]``; modified in
        place.
    seed : int
        Seed of the ICA.

    Returns
    -------
    epochs : mne.Epochs
        All runs concatenated; metadata ``condition``, ``stim_id``, ``group`` (the run).
    info : dict
        ``n_epochs_kept``, ``n_epochs_rejected``, ``epochs_per_run``, ``bads``,
        ``ica_excluded``, ``sfreq``, ``runs``.
    """
    import mne

    params = _params(spec)
    for run in runs:
        rename_channels(run.raw, params, spec, run.path)
    check_same_sfreq(runs, spec.subject, params["sfreq_tolerance_hz"])
    all_epochs, per_run, found = [], {}, {}
    for run in runs:
        raw = run.raw
        if params["interpolate_bads"]:
            unknown = [b for b in spec.bad_channels if b not in raw.ch_names]
            if unknown:
                drop_bads(raw, unknown, spec.subject, run.path)  # raises, naming them
            raw.info["bads"] = list(spec.bad_channels)
        else:
            drop_bads(raw, spec.bad_channels, spec.subject, run.path)
        found[run.label] = clean_raw(raw, params, subject=spec.subject, path=run.path,
                                     spec=spec, seed=seed)
        epochs, n_events = _epochs_of_run(raw, run, spec, params)
        if len(epochs) == 0:
            raise RecordingError(f"{_where(spec, run.path)}: every epoch was rejected or "
                                 "fell outside the recording")
        per_run[run.label] = {"kept": len(epochs), "rejected": n_events - len(epochs)}
        all_epochs.append(epochs)
    check_same_channels([e.ch_names for e in all_epochs], runs, spec.subject)
    epochs = mne.concatenate_epochs(all_epochs, verbose="error")
    kept = sum(r["kept"] for r in per_run.values())
    dropped = sum(r["rejected"] for r in per_run.values())
    logger.info("sub-%s: %d epochs kept, %d rejected", spec.subject, kept, dropped)
    info = {"n_epochs_kept": kept, "n_epochs_rejected": dropped, "epochs_per_run": per_run,
            "bads": {k: v["bads"] for k, v in found.items() if v["bads"]},
            "ica_excluded": {k: v["ica_excluded"] for k, v in found.items()
                             if v["ica_excluded"]},
            "sfreq": epochs.info["sfreq"], "runs": [r.label for r in runs],
            "n_nonfinite_channels": len({c for v in found.values()
                                         for c in v["bads"].get("nan", [])})}
    return epochs, info


def preprocess_eeg(spec, runs, *, seed: int = 0, epochs_sfreq: float | None = None
                   ) -> ResponseTable:
    """Preprocess a subject's continuous EEG runs into a response table.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
    runs : list of brainhead.preprocess._common.Run
        Preloaded recordings with annotations ``<condition>[/<stim_id>]``.
    seed : int
        Seed of the ICA.
    epochs_sfreq : float | None
        Also write the ``epochs`` view (the cleaned epochs resampled to this rate), which
        decoding's raw-signal models read; None writes none.

    Returns
    -------
    table : ResponseTable
        Views ``stimulus`` and ``bands`` (and ``epochs``); ``y`` holds the trial
        condition (or the window's ``run_labels`` entry), ``group`` the run, ``t_start``
        and ``t_stop`` each row's span in its run (s). Info: ``n_epochs_kept``, ``n_epochs_rejected`` (also per run), ``bads``,
        ``ica_excluded``, ``sfreq``, ``runs``.

    Raises
    ------
    RecordingError
        Naming the subject, the file and the problem (sampling rates differ, unknown
        channels, NaN channels, too many bad channels, no events of a configured type,
        every epoch rejected, ...).
    """
    epochs, info = eeg_epochs(spec, runs, seed=seed)
    stim_view, band_view = epochs_to_views(epochs, epochs.metadata["group"], _params(spec),
                                           where=f"{_where(spec, runs[0].path)}: ")
    coords, regions = channel_meta(runs[0].raw, runs[0])
    names = np.asarray(epochs.ch_names)
    views = {"stimulus": stim_view, "bands": band_view}
    if epochs_sfreq:
        views["epochs"] = epochs_view(epochs, stim_view.rows, epochs_sfreq)
    return ResponseTable(
        subject=spec.subject, modality="eeg",
        targets=Targets(name=names, kind=["channel"] * len(names), coords=coords,
                        region=regions),
        views=views,
        info=info,
    ).validate()


# --------------------------------------------------------------------------- epochs
def preprocess_eeg_epochs(spec, epochs, *, seed: int = 0,
                          epochs_sfreq: float | None = None) -> ResponseTable:
    """Preprocess already-epoched EEG (DEAP, SEED, DREAMER) into a response table.

    The steps of :func:`clean_raw` that apply to epochs, in the same order, then
    baseline (when the epochs cover the window), rejection and the two views.
    ``tmin``/``tmax``/``epoching``/``event_id`` concern continuous recordings and are
    not used.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
    epochs : mne.BaseEpochs
        Preloaded, with metadata columns ``condition``, ``stim_id`` and ``group``.
    seed : int
        Seed of the ICA.

    Returns
    -------
    table : ResponseTable
        Views ``stimulus`` and ``bands``; ``y`` the condition, ``group`` from metadata.
    """
    import mne

    params = _params(spec)
    # the file the adapter read (in info["description"]), else the dataset root
    path = epochs.info.get("description") or (
        spec.source.get("root", spec.path) if isinstance(spec.source, dict) else spec.path)
    meta = epochs.metadata
    missing = [c for c in ("condition", "stim_id", "group")
               if meta is None or c not in meta.columns]
    if missing:
        raise RecordingError(f"{_where(spec, path)}: the dataset's epochs lack metadata "
                             f"column(s) {missing}")
    epochs = epochs.copy().load_data()
    rename_channels(epochs, params, spec, path)
    unknown = [b for b in spec.bad_channels if b not in epochs.ch_names]
    if unknown:
        raise RecordingError(f"{_where(spec, path)}: bad_channels {unknown} are not channels "
                             f"of this recording (it has {epochs.ch_names[:8]}...)")
    epochs.info["bads"] = list(spec.bad_channels)
    _set_channel_types(epochs, spec, path)
    eeg = _eeg_picks(epochs)

    def flat(inst):
        return np.concatenate(list(inst.get_data(picks=eeg)), axis=1)

    bads = _mark_bads(epochs, flat(epochs), params, spec, path, stage="raw")
    _set_montage(epochs, params, spec, path)
    sfreq = epochs.info["sfreq"]
    notch = [f for f in params["notch"] if f < sfreq / 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if notch:
            epochs.apply_function(mne.filter.notch_filter, picks=["eeg", "eog"],
                                  channel_wise=False, Fs=sfreq, freqs=notch,
                                  verbose="warning")
        if params["l_freq"] is not None or params["h_freq"] is not None:
            epochs.filter(params["l_freq"], params["h_freq"], picks=["eeg", "eog"],
                          verbose="warning")
    if any("longer than the signal" in str(w.message) for w in caught):
        logger.warning("sub-%s: the epochs (%.3g s) are shorter than the notch/band-pass "
                       "filters (preprocess.notch, l_freq): edges are distorted; raise "
                       "l_freq, drop the notch or use longer segments", spec.subject,
                       epochs.times[-1] - epochs.times[0])
    bads.update(_mark_bads(epochs, flat(epochs), params, spec, path, stage="filtered"))
    ica_excluded = _ica(epochs, params, spec, path, seed)
    _resolve_bads(epochs, params, spec, path)
    epochs.pick("eeg")
    _reference(epochs, params, spec, path)
    if params["resample"]:
        epochs.resample(params["resample"], verbose="error")
    if params["baseline"]:
        t0, t1 = params["baseline"]
        if t0 < epochs.tmin - 1e-9 or t1 > epochs.tmax + 1e-9:
            raise RecordingError(
                f"{_where(spec, path)}: key 'preprocess.baseline': {params['baseline']} lies "
                f"outside the epochs ({epochs.tmin:g} to {epochs.tmax:g} s); set "
                "preprocess.baseline: null"
            )
        epochs.apply_baseline((t0, t1), verbose="error")
    n_total = len(epochs)
    if params["reject_uv"] is not None:
        epochs.drop_bad(reject={"eeg": params["reject_uv"] * 1e-6}, verbose="error")
    if len(epochs) == 0:
        raise RecordingError(f"{_where(spec, path)}: every epoch was rejected "
                             f"(preprocess.reject_uv = {params['reject_uv']} uV)")
    stim_view, band_view = epochs_to_views(epochs, epochs.metadata["group"], params,
                                           where=f"{_where(spec, path)}: ")
    names = np.asarray(epochs.ch_names)
    coords = np.full((len(names), 3), np.nan)
    montage = epochs.get_montage()
    if montage is not None:
        pos = montage.get_positions()["ch_pos"]
        for i, name in enumerate(names):
            if name in pos and np.all(np.isfinite(pos[name])):
                coords[i] = np.asarray(pos[name]) * 1000.0
    logger.info("sub-%s: %d epochs kept, %d rejected", spec.subject, len(epochs),
                n_total - len(epochs))
    views = {"stimulus": stim_view, "bands": band_view}
    if epochs_sfreq:
        views["epochs"] = epochs_view(epochs, stim_view.rows, epochs_sfreq)
    return ResponseTable(
        subject=spec.subject, modality="eeg",
        targets=Targets(name=names, kind=["channel"] * len(names), coords=coords,
                        region=[""] * len(names)),
        views=views,
        info={"n_epochs_kept": len(epochs), "n_epochs_rejected": n_total - len(epochs),
              "bads": bads, "ica_excluded": ica_excluded, "sfreq": epochs.info["sfreq"],
              "n_nonfinite_channels": len(bads.get("nan", [])),
              "dataset": spec.source.get("dataset") if isinstance(spec.source, dict) else None},
    ).validate()


# --------------------------------------------------------------------------- views
def epochs_view(epochs, rows: dict, sfreq: float) -> View:
    """The ``epochs`` view: each row's signal (microvolts) resampled to ``sfreq``.

    What decoding's raw-signal models read (CSP, tangent space, shallow ConvNet).
    ``rows`` are those of the other views (the same epochs in the same order).
    """
    data = epochs.copy()
    if abs(data.info["sfreq"] - sfreq) > 1e-6:
        data.resample(sfreq, verbose="error")
    return View(X=(data.get_data(copy=False) * 1e6).astype(np.float32),
                rows={k: np.asarray(v) for k, v in rows.items()},
                labels={"time": np.asarray(data.times, dtype=float)})


def differential_entropy(data: np.ndarray, axis: int = -1) -> np.ndarray:
    """Differential entropy of a Gaussian with the signal's variance: 0.5 log(2 pi e var)."""
    var = np.maximum(data.var(axis=axis), np.finfo(float).tiny)
    return 0.5 * np.log(2 * np.pi * np.e * var)


def _window_in(epochs, window, key: str, where: str) -> tuple[float, float]:
    t0, t1 = window
    step = 1.0 / epochs.info["sfreq"]  # a window may end where the last sample ends
    if t0 < epochs.tmin - 1e-9 or t1 > epochs.tmax + step + 1e-9 or t1 <= t0:
        raise RecordingError(f"{where}key 'preprocess.{key}': window {list(window)} s is "
                             f"not inside the epochs ({epochs.tmin:g} to {epochs.tmax:g} s)")
    return t0, min(t1, epochs.tmax)


def epochs_to_views(epochs, run_labels, params: dict, *,
                    where: str = "") -> tuple[View, View]:
    """Stimulus (window mean) and bands (differential entropy) views of epochs.

    Parameters
    ----------
    epochs : mne.BaseEpochs
        With metadata ``stim_id`` and ``condition``.
    run_labels : array-like of str
        The ``group`` of each epoch.
    params : dict
        ``window``, ``bands`` and ``de_baseline`` (s; its DE is subtracted).
    where : str
        Prefix of error messages (``"sub-<id>: <file>: "``).

    Returns
    -------
    stimulus, bands : View
        Microvolts; DE of microvolt signals (nats).
    """
    stim_ids = np.asarray(epochs.metadata["stim_id"], dtype=str)
    rows = {"stim_id": stim_ids, "group": np.asarray(run_labels, dtype=str),
            "y": np.asarray(epochs.metadata["condition"], dtype=str)}
    for key in ("t_start", "t_stop"):  # each row's span in its run (continuous recordings)
        if key in epochs.metadata.columns:
            rows[key] = epochs.metadata[key].to_numpy(float)
    t0, t1 = _window_in(epochs, params["window"], "window", where)
    window = epochs.copy().crop(t0, t1).get_data(copy=False).mean(-1) * 1e6  # microvolts
    post = max(0.0, epochs.tmin)
    de_base = params.get("de_baseline")
    if de_base is not None:
        b0, b1 = _window_in(epochs, de_base, "de_baseline", where)
    bands = params["bands"]
    de = np.empty((len(epochs), len(epochs.ch_names), len(bands)))
    nyquist = epochs.info["sfreq"] / 2
    for b, (name, (lo, hi)) in enumerate(bands.items()):
        if lo >= nyquist - 1 or hi > nyquist:  # never clipped silently
            raise RecordingError(
                f"{where}key 'preprocess.bands': band {name} [{lo}, {hi}] Hz is not below "
                f"the Nyquist frequency ({nyquist:g} Hz) of the data; drop the band or "
                "resample less"
            )
        band_ep = epochs.copy().filter(lo, min(hi, epochs.info["sfreq"] / 2 - 1), verbose="error")
        de[:, :, b] = differential_entropy(band_ep.copy().crop(post, None).get_data(copy=False)
                                           * 1e6)
        if de_base is not None:
            de[:, :, b] -= differential_entropy(
                band_ep.crop(b0, b1).get_data(copy=False) * 1e6)
    return (View(X=window.astype(np.float32), rows=rows),
            View(X=de.astype(np.float32), rows=dict(rows),
                 labels={"band": np.asarray(list(bands), dtype=str)}))
