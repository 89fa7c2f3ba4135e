"""Tests of brainhead.io: the response table, the HDF5 store and the recording readers."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from brainhead.io import (
    RecordingError,
    ResponseTable,
    ResponseTableError,
    Targets,
    View,
    atomic_path,
    provenance,
    read_arrays,
    read_attrs,
    read_bold,
    read_events_tsv,
    read_raw,
    read_responses,
    spec_hash,
    write_arrays,
    write_responses,
)

DATA = Path(__file__).parents[2] / "shared" / "data"
EEG_R04 = DATA / "eegmmidb-S001" / "S001" / "S001R04.edf"
HAXBY = DATA / "haxby2001" / "sub001"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is absent")


# --------------------------------------------------------------------------- fixtures
def make_table(n_targets: int = 4, n_rows: int = 6, n_bands: int = 3,
               n_times: int = 50) -> ResponseTable:
    rng = np.random.default_rng(0)
    targets = Targets(
        name=[f"ch{i}" for i in range(n_targets - 1)] + ["Fp1-café"],
        kind=["channel"] * n_targets,
        coords=rng.normal(size=(n_targets, 3)),
        region=["posterior", "", "anterior", "ünïcode"][:n_targets],
    )
    rows = {
        "stim_id": np.array([f"s{i:03d}" for i in range(n_rows)]),
        "group": np.arange(n_rows) % 2,
        "y": rng.normal(size=n_rows),
    }
    views = {
        "stimulus": View(X=rng.normal(size=(n_rows, n_targets)).astype(np.float32),
                         rows=dict(rows)),
        "bands": View(X=rng.normal(size=(n_rows, n_targets, n_bands)).astype(np.float32),
                      rows=dict(rows),
                      labels={"band": np.array(["theta", "alpha", "beta"][:n_bands])}),
        "timeseries": View(
            X=rng.normal(size=(n_times, n_targets)).astype(np.float32),
            rows={"time": np.arange(n_times) / 20.0, "group": np.zeros(n_times, int)},
            events={"onset": np.array([0.5, 1.0, 1.5]),
                    "stim_id": np.array(["s000", "s001", "s002"]),
                    "group": np.array([0, 1, 0])},
        ),
    }
    return ResponseTable(subject="e01", modality="eeg", targets=targets, views=views,
                         info={"sfreq": 160.0, "note": "test"})


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- round trip
def test_write_read_roundtrip(tmp_path):
    table = make_table().validate()
    path = tmp_path / "sub-e01" / "responses.h5"
    out = write_responses(path, table, provenance("test", {"a": 1}))
    assert out == path and path.is_file()
    assert _listing(path.parent) == ["responses.h5"]  # no temporary file left

    back = read_responses(path)
    assert back.subject == "e01" and back.modality == "eeg"
    assert back.info == {"sfreq": 160.0, "note": "test"}
    np.testing.assert_array_equal(back.targets.name, table.targets.name)
    np.testing.assert_array_equal(back.targets.kind, table.targets.kind)
    np.testing.assert_array_equal(back.targets.region, table.targets.region)
    np.testing.assert_array_equal(back.targets.coords, table.targets.coords)
    assert back.targets.name[-1] == "Fp1-café"
    assert back.targets.region.tolist() == ["posterior", "", "anterior", "ünïcode"]
    assert back.targets.name.dtype.kind == "U"
    assert set(back.views) == {"stimulus", "bands", "timeseries"}
    for name, view in table.views.items():
        got = back.view(name)
        assert got.X.dtype == np.float32
        np.testing.assert_array_equal(got.X, view.X)
        for part in ("rows", "labels", "events"):
            assert set(getattr(got, part)) == set(getattr(view, part)), (name, part)
            for key, arr in getattr(view, part).items():
                np.testing.assert_array_equal(getattr(got, part)[key], arr)
    assert back.view("stimulus").rows["stim_id"].tolist() == [f"s{i:03d}" for i in range(6)]
    assert back.view("bands").labels["band"].tolist() == ["theta", "alpha", "beta"]
    assert back.view("timeseries").events["stim_id"].tolist() == ["s000", "s001", "s002"]


def test_provenance_attrs(tmp_path):
    path = tmp_path / "responses.h5"
    write_responses(path, make_table(), provenance("test", {"a": 1}))
    attrs = read_attrs(path)
    for key in ("brainhead_step", "brainhead_format", "params_hash", "params", "versions",
                "git_rev", "subject", "modality"):
        assert key in attrs, key
    assert attrs["brainhead_step"] == "test"
    assert attrs["params_hash"] == spec_hash({"a": 1})
    assert re.fullmatch(r"[0-9a-f]{16}", attrs["params_hash"])
    assert json.loads(attrs["params"]) == {"a": 1}
    versions = json.loads(attrs["versions"])
    assert "numpy" in versions and "h5py" in versions
    assert versions["numpy"] == np.__version__
    assert isinstance(attrs["git_rev"], str) and attrs["git_rev"]
    assert attrs["subject"] == "e01" and attrs["modality"] == "eeg"


def test_spec_hash_stable_and_order_free():
    assert spec_hash({"a": 1, "b": [1, 2]}) == spec_hash({"b": [1, 2], "a": 1})
    assert spec_hash({"a": 1}) != spec_hash({"a": 2})
    assert provenance("x")["params_hash"] == spec_hash({})


def test_write_read_arrays(tmp_path):
    path = tmp_path / "arrays.h5"
    arrays = {"scores/r": np.arange(6, dtype=float).reshape(2, 3),
              "scores/layer": np.array(["l0", "l1"]), "top": np.array([1, 2, 3])}
    write_arrays(path, arrays, {"brainhead_step": "score"})
    back, attrs = read_arrays(path)
    assert set(back) == set(arrays)
    for key, arr in arrays.items():
        np.testing.assert_array_equal(back[key], arr)
    assert attrs["brainhead_step"] == "score"


def test_read_responses_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="response table not found"):
        read_responses(tmp_path / "nope.h5")


# --------------------------------------------------------------------------- validation
def _nan(t):
    t.views["stimulus"].X[0, 0] = np.nan


def _inf(t):
    t.views["bands"].X[1, 2, 0] = np.inf


def _float64(t):
    t.views["stimulus"].X = t.views["stimulus"].X.astype(np.float64)


def _rows_length(t):
    t.views["stimulus"].rows["group"] = np.zeros(5, int)


def _missing_row(t):
    del t.views["stimulus"].rows["stim_id"]


def _dup_names(t):
    t.targets.name[1] = t.targets.name[0]


def _unknown_view(t):
    t.views["erp"] = t.views.pop("stimulus")


def _unknown_kind(t):
    t.targets.kind[2] = "pixel"


def _no_band_labels(t):
    t.views["bands"].labels = {}


def _wrong_band_labels(t):
    t.views["bands"].labels = {"band": np.array(["theta", "alpha"])}


def _no_onset(t):
    del t.views["timeseries"].events["onset"]


def _wrong_shape(t):
    t.views["stimulus"].X = t.views["stimulus"].X[:, :3]


def _no_rows(t):
    v = t.views["stimulus"]
    v.X = v.X[:0]
    v.rows = {k: a[:0] for k, a in v.rows.items()}


def _bad_modality(t):
    t.modality = "meg"


def _no_views(t):
    t.views.clear()


def _region_length(t):
    t.targets.region = t.targets.region[:2]


INVALID = [
    ("nan", _nan, r"view stimulus: X has 1 non-finite values"),
    ("inf", _inf, r"view bands: X has 1 non-finite values"),
    ("float64", _float64, r"view stimulus: X is float64, expected float32"),
    ("rows-length", _rows_length, r"view stimulus: rows\['group'\] has 5 entries for 6 rows"),
    ("missing-row", _missing_row, r"view stimulus: missing rows\['stim_id'\]"),
    ("duplicate-names", _dup_names, r"target names are not unique"),
    ("unknown-view", _unknown_view, r"unknown view 'erp'"),
    ("unknown-kind", _unknown_kind, r"unknown target kinds \['pixel'\]"),
    ("bands-no-labels", _no_band_labels, r"view bands: labels\['band'\] must name the 3 bands"),
    ("bands-wrong-labels", _wrong_band_labels,
     r"view bands: labels\['band'\] must name the 3 bands"),
    ("timeseries-no-onset", _no_onset, r"view timeseries: events\['onset'\] missing"),
    ("wrong-shape", _wrong_shape, r"view stimulus: X has shape \(6, 3\), expected axes"),
    ("no-rows", _no_rows, r"view stimulus: no rows"),
    ("bad-modality", _bad_modality, r"unknown modality 'meg'"),
    ("no-views", _no_views, r"no views"),
    ("region-length", _region_length, r"targets\.region has 2 entries for 4 targets"),
]


@pytest.mark.parametrize("breaks, pattern", [i[1:] for i in INVALID],
                         ids=[i[0] for i in INVALID])
def test_validate_rejects(breaks, pattern):
    table = make_table()
    breaks(table)
    with pytest.raises(ResponseTableError, match=r"^sub-e01: " + pattern):
        table.validate()


@pytest.mark.parametrize("breaks, pattern", [i[1:] for i in INVALID],
                         ids=[i[0] for i in INVALID])
def test_write_invalid_leaves_no_file(tmp_path, breaks, pattern):
    table = make_table()
    breaks(table)
    path = tmp_path / "out" / "responses.h5"
    with pytest.raises(ResponseTableError, match=pattern):
        write_responses(path, table, provenance("test"))
    assert not path.exists()
    # nothing at all, temporary file included, was left behind
    assert not path.parent.exists() or _listing(path.parent) == []


def test_validate_returns_self_and_coerces_lists():
    table = make_table()
    table.views["stimulus"].X = table.views["stimulus"].X.tolist()  # a list of lists
    with pytest.raises(ResponseTableError, match="X is float64"):
        table.validate()
    table = make_table()
    assert table.validate() is table


def test_missing_view_is_named():
    table = make_table()
    del table.views["timeseries"]
    table.validate()
    with pytest.raises(ResponseTableError,
                       match=r"sub-e01 \(eeg\) has no 'timeseries' view; it has "
                             r"\['bands', 'stimulus'\]"):
        table.view("timeseries")
    assert table.view("stimulus") is table.views["stimulus"]


# --------------------------------------------------------------------------- atomic_path
def test_atomic_path_exception_leaves_nothing(tmp_path):
    dest = tmp_path / "sub" / "artifact.h5"
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(dest) as tmp:
            seen["tmp"] = tmp
            assert tmp.parent == dest.parent and tmp != dest
            tmp.write_text("partial")
            assert tmp.exists()
            raise RuntimeError("boom")
    assert not dest.exists()
    assert not seen["tmp"].exists()
    assert _listing(dest.parent) == []


def test_atomic_path_exception_keeps_old_destination(tmp_path):
    dest = tmp_path / "artifact.txt"
    dest.write_text("old")
    with pytest.raises(KeyError):
        with atomic_path(dest) as tmp:
            tmp.write_text("new")
            raise KeyError("x")
    assert dest.read_text() == "old"
    assert _listing(tmp_path) == ["artifact.txt"]


def test_atomic_path_success_renames(tmp_path):
    dest = tmp_path / "artifact.txt"
    dest.write_text("old")
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
        assert dest.read_text() == "old"  # not visible until the block ends
    assert dest.read_text() == "new"
    assert not tmp.exists()
    assert _listing(tmp_path) == ["artifact.txt"]


# --------------------------------------------------------------------------- readers
def test_read_raw_unsupported_extension(tmp_path):
    path = tmp_path / "rec.xyz"
    path.write_bytes(b"data")
    with pytest.raises(RecordingError, match=r"rec\.xyz: unsupported file type '\.xyz'"):
        read_raw(path)


def test_read_raw_missing_file(tmp_path):
    with pytest.raises(RecordingError, match=r"sub-x1: .*missing\.edf: file not found"):
        read_raw(tmp_path / "missing.edf", subject="x1")


def test_read_raw_truncated_edf(tmp_path):
    path = tmp_path / "x.edf"
    path.write_bytes(b"0       truncated")
    with pytest.raises(RecordingError, match=r"x\.edf: cannot be read") as info:
        read_raw(path)
    assert info.value.__cause__ is not None


def test_read_events_tsv(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("onset\tduration\ttrial_type\n1.0\t0.5\ta\n2.0\tn/a\tb\n")
    ev = read_events_tsv(path)
    assert ev["onset"].tolist() == [1.0, 2.0]
    assert np.isnan(ev["duration"].iloc[1])
    with pytest.raises(RecordingError, match=r"events\.tsv: events file lacks column\(s\) "
                                             r"\['value'\]"):
        read_events_tsv(path, required=("onset", "value"))
    with pytest.raises(RecordingError, match=r"none\.tsv: events file not found"):
        read_events_tsv(tmp_path / "none.tsv")


def _nifti(path: Path, shape, tr: float | None = None):
    import nibabel as nib

    img = nib.Nifti1Image(np.random.default_rng(0).normal(size=shape).astype(np.float32),
                          np.eye(4))
    if tr is not None:
        img.header.set_zooms((2.0, 2.0, 2.0, tr))
    nib.save(img, path)
    return path


def test_read_bold_3d_rejected(tmp_path):
    path = _nifti(tmp_path / "anat.nii.gz", (4, 4, 4))
    with pytest.raises(RecordingError, match=r"anat\.nii\.gz: expected a 4D BOLD image, got 3D"):
        read_bold(path)


def test_read_bold_without_tr(tmp_path):
    path = _nifti(tmp_path / "bold.nii.gz", (3, 3, 3, 5), tr=0.0)
    import nibabel as nib

    assert nib.load(path).header["pixdim"][4] == 0
    with pytest.raises(RecordingError, match=r"bold\.nii\.gz: repetition time \(TR\) missing"):
        read_bold(path)
    img, t_r = read_bold(path, t_r=1.5)
    assert t_r == 1.5
    assert img.shape == (3, 3, 3, 5)


def test_read_bold_tr_from_header_and_sidecar(tmp_path):
    path = _nifti(tmp_path / "bold.nii.gz", (3, 3, 3, 5), tr=2.0)
    img, t_r = read_bold(path)
    assert (img.shape, t_r) == ((3, 3, 3, 5), 2.0)
    (tmp_path / "bold.json").write_text(json.dumps({"RepetitionTime": 0.8}))
    assert read_bold(path)[1] == 0.8  # the BIDS sidecar is used when present
    assert read_bold(path, t_r=3.0)[1] == 3.0  # an explicit t_r wins


def test_read_bold_missing_and_broken(tmp_path):
    with pytest.raises(RecordingError, match=r"nope\.nii\.gz: file not found"):
        read_bold(tmp_path / "nope.nii.gz")
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(RecordingError, match=r"bad\.nii: cannot be read as NIfTI"):
        read_bold(bad)


# --------------------------------------------------------------------------- real data
@needs_data
def test_real_eeg_motor_imagery_run():
    import mne

    raw = read_raw(EEG_R04, subject="S001")
    assert raw.info["sfreq"] == 160.0
    assert len(raw.ch_names) == 64
    assert raw.get_channel_types() == ["eeg"] * 64
    assert raw.n_times == 20000  # 125 s
    counts = Counter(raw.annotations.description)
    assert counts == {"T0": 15, "T1": 8, "T2": 7}

    events, event_id = mne.events_from_annotations(raw, verbose="error")
    assert set(event_id) == {"T0", "T1", "T2"}
    epochs = mne.Epochs(raw, events, {k: event_id[k] for k in ("T1", "T2")},
                        tmin=0, tmax=4, baseline=None, preload=True, verbose="error")
    assert len(epochs["T1"]) == counts["T1"] == 8
    assert len(epochs["T2"]) == counts["T2"] == 7
    assert epochs.get_data().shape == (15, 64, 641)
    assert np.isfinite(epochs.get_data()).all()


@needs_data
def test_real_haxby_bold():
    from nilearn.maskers import NiftiMasker

    bold = HAXBY / "BOLD" / "task001_run001" / "bold_25mm.nii.gz"
    img, t_r = read_bold(bold, subject="001")
    assert img.ndim == 4
    assert img.shape[3] == 121
    assert t_r == 2.5

    mask = HAXBY / "masks" / "25mm" / "brain.nii.gz"
    import nibabel as nib

    n_mask = int(np.count_nonzero(nib.load(mask).get_fdata()))
    assert n_mask > 0
    ts = NiftiMasker(mask_img=str(mask), standardize=None).fit_transform(img)
    assert ts.shape == (121, n_mask)
    assert np.isfinite(ts).all()
    assert ts.std(axis=0).min() > 0  # real signal in every masked voxel

    events = read_events_tsv(bold.parent / "bold_events.tsv", subject="001",
                             required=("onset", "duration", "trial_type"))
    assert len(events) == 8
    assert sorted(events["trial_type"]) == sorted(
        ["house", "scrambledpix", "cat", "shoe", "bottle", "scissors", "chair", "face"])
    assert (events["duration"] == 22.5).all()
    assert events["onset"].is_monotonic_increasing
    # every block fits inside the 121 x 2.5 s run
    assert (events["onset"] + events["duration"]).max() <= 121 * t_r
