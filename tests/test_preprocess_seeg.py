"""sEEG/ECoG: contact names, bipolar pairs, references, atlas labels, the sample file."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from _bad_inputs_fmri import write_seeg_fif, write_study
from brainhead.io import RecordingError
from brainhead.preprocess import run_preprocessing
from brainhead.preprocess.seeg import (atlas_regions, bipolar_pairs, contacts_of, parse_contact,
                                       read_label_table, rereference)
from conftest import ROOT, SHARED_DATA, needs_shared_data

SAMPLE = SHARED_DATA / "ieeg-sample" / "sample_ecog_ieeg.fif"


@pytest.mark.parametrize("name, expected", [
    ("LA1", ("LA", 1)), ("LA 02", ("LA", 2)), ("OFMG12", ("OFMG", 12)), ("A'3", ("A'", 3)),
    ("REF", None), ("12", None),
])
def test_parse_contact(name, expected):
    assert parse_contact(name) == expected


def test_bipolar_pairs_breaks_and_gaps():
    names = ["A1", "A2", "A3", "A4", "B1", "B2", "B4", "B5"]
    coords = np.array([[0, 0, 0], [3.5, 0, 0], [7, 0, 0], [40, 0, 0],  # A3→A4: a break
                       [0, 9, 0], [3.5, 9, 0], [10.5, 9, 0], [14, 9, 0]], float)
    pairs = bipolar_pairs(names, coords)
    assert pairs == [("A1", "A2"), ("A2", "A3"), ("B1", "B2"), ("B4", "B5")]
    # without positions only the numbering counts
    assert ("A3", "A4") in bipolar_pairs(names, None)
    with pytest.raises(RecordingError, match="sub-s9: .*x.fif: .*shaft 'C' has no neighbouring"):
        bipolar_pairs(["C1", "C3"], None, subject="s9", path="x.fif")


def test_pipeline_bipolar_atlas_and_differing_contacts(tmp_path):
    """Two subjects with different implants: bipolar channels at midpoints, atlas regions."""
    write_seeg_fif(tmp_path / "raw" / "s1.fif", ["LA1", "LA2", "LA3", "LA4", "LB1", "LB2", "LB3"])
    write_seeg_fif(tmp_path / "raw" / "s2.fif", ["RA1", "RA2", "RA3"], seed=1)
    labels = np.zeros((20, 20, 10), np.int16)
    labels[:, :5] = 1  # y < 5 mm: shaft A; y in [5, 20) mm → shaft B
    labels[:, 5:] = 2
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas_lut.txt").write_text("# index name r g b a\n0 Unknown 0 0 0 0\n"
                                            "1 Hippocampus 1 2 3 0\n2 Amygdala 4 5 6 0\n")
    pre = {"reference": "bipolar", "atlas": "atlas.nii.gz", "atlas_lut": "atlas_lut.txt",
           "notch": [50], "high_gamma": [70, 150]}
    study = write_study(tmp_path, [
        {"subject": "s1", "modality": "seeg", "source": {"files": ["raw/s1.fif"]}},
        {"subject": "s2", "modality": "seeg", "source": {"files": ["raw/s2.fif"]}},
    ], preprocess={"seeg": pre})
    t1 = run_preprocessing(study, "s1", tmp_path / "r")
    t2 = run_preprocessing(study, "s2", tmp_path / "r")
    assert t1.targets.name.tolist() == ["LA1-LA2", "LA2-LA3", "LA3-LA4", "LB1-LB2", "LB2-LB3"]
    assert t2.targets.name.tolist() == ["RA1-RA2", "RA2-RA3"]
    np.testing.assert_allclose(t1.targets.coords[0], [5.25, 0, 5])  # (3.5 + 7) / 2 mm
    np.testing.assert_allclose(t1.targets.coords[3], [5.25, 10, 5])
    assert t1.targets.region.tolist() == ["Hippocampus"] * 3 + ["Amygdala"] * 2
    for t, n in ((t1, 5), (t2, 2)):
        assert t.view("stimulus").X.shape == (10, n)  # 10 events in 12 s
        assert t.view("timeseries").X.shape == (240, n)  # 12 s at 20 Hz
        assert t.view("stimulus").rows["y"].tolist() == ["a", "b"] * 5
    assert t1.info["reference"] == "bipolar"


def test_average_reference_and_continuous(tmp_path):
    import mne

    path = write_seeg_fif(tmp_path / "x.fif", ["A1", "A2", "A3", "B1", "B2"])
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    assert rereference(raw, {"reference": "average"}) == []
    np.testing.assert_allclose(raw.get_data().mean(0), 0, atol=1e-12)
    study = write_study(tmp_path, [{"subject": "c1", "modality": "seeg",
                                    "source": {"files": ["x.fif"]},
                                    "preprocess": {"epochs": False}}])
    t = run_preprocessing(study, "c1", tmp_path / "r")
    assert set(t.views) == {"timeseries"} and t.view("timeseries").X.shape == (240, 5)


def test_label_tables(tmp_path):
    (tmp_path / "dseg.tsv").write_text("index\tname\n1\tV1\n2\tV2\n")
    assert read_label_table(tmp_path / "dseg.tsv") == {1: "V1", 2: "V2"}
    img = nib.Nifti1Image(np.array([[[1, 2]]], np.int16), np.diag([2.0, 2, 2, 1]))
    out = atlas_regions(np.array([[0, 0, 0], [0, 0, 2.2], [np.nan] * 3, [50, 0, 0]]), img,
                        {1: "V1", 2: "V2"})
    assert out.tolist() == ["V1", "V2", "", ""]


# --------------------------------------------------------------------------- real data
@needs_shared_data
def test_sample_contacts_and_bipolar_pairs():
    import mne

    raw = mne.io.read_raw_fif(SAMPLE, preload=True, verbose="error")
    contacts = contacts_of(raw)
    assert len(contacts.names) == 394
    types = np.array(raw.get_channel_types())
    assert (types == "ecog").sum() == 320 and (types == "seeg").sum() == 74
    locs = np.array([ch["loc"][:3] for ch in raw.info["chs"]]) * 1000
    np.testing.assert_allclose(contacts.coords, locs)
    assert np.isfinite(contacts.coords).all() and np.abs(contacts.coords).max() < 150

    pairs = bipolar_pairs(raw.ch_names, contacts.coords)
    index = {n: i for i, n in enumerate(raw.ch_names)}
    by_shaft: dict[str, list] = {}
    for a, c in pairs:
        (sa, na), (sc, nc) = parse_contact(a), parse_contact(c)
        assert sa == sc and nc == na + 1  # within one shaft, neighbours only
        assert types[index[a]] == types[index[c]]
        by_shaft.setdefault(sa, []).append((a, c))
    shafts: dict[str, list[str]] = {}
    for name in raw.ch_names:
        shafts.setdefault(parse_contact(name)[0], []).append(name)
    for shaft, names in shafts.items():
        xyz = contacts.coords[[index[n] for n in names]]
        steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
        breaks = int((steps > 1.5 * np.median(steps)).sum())
        assert len(by_shaft[shaft]) == len(names) - 1 - breaks, shaft
    # linear sEEG shafts: pairs = contacts - shafts (DC is two 10-contact shafts)
    seeg_pairs = [p for p in pairs if types[index[p[0]]] == "seeg"]
    assert len(seeg_pairs) == 74 - 10
    # grids numbered row by row: 16 × 16 and 8 × 8 give 16 × 15 and 8 × 7 pairs
    assert len(by_shaft["G"]) == 240 and len(by_shaft["OFMG"]) == 56

    ref = raw.copy()
    rereference(ref, {"reference": "bipolar", "bipolar_max_gap": 1.5})
    assert ref.ch_names == [f"{a}-{c}" for a, c in pairs]
    mid = contacts_of(ref).coords
    expected = (contacts.coords[[index[a] for a, _ in pairs]]
                + contacts.coords[[index[c] for _, c in pairs]]) / 2
    np.testing.assert_allclose(mid, expected, atol=1e-6)
    # the bipolar signal is the anode minus the cathode
    a0, c0 = index[pairs[0][0]], index[pairs[0][1]]
    np.testing.assert_allclose(ref.get_data()[0], raw.get_data()[a0] - raw.get_data()[c0])


@needs_shared_data
def test_sample_study_runs():
    from brainhead.specs import load_study

    study = load_study(ROOT / "data_specs" / "ieeg_sample", design=False)  # no stimuli
    t = run_preprocessing(study, "01", ROOT / "results" / "ieeg_sample")
    assert set(t.views) == {"timeseries"}
    assert t.view("timeseries").X.shape == (14, 360)  # 0.7 s at 20 Hz, 360 bipolar channels
    assert t.targets.name[0] == "G1-G2" and t.info["coord_frame"] == "head"
    spec = dataclasses.replace(study.subjects["01"],
                               preprocess={**study.subjects["01"].preprocess,
                                           "reference": "none"})
    t = run_preprocessing(dataclasses.replace(study, subjects={"01": spec}), "01", ROOT)
    assert len(t.targets) == 394
