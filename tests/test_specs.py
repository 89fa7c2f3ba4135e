"""Tests of brainhead.specs: loading, validating and filling in study/subject specs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from brainhead.specs import (
    SpecError,
    StudySpec,
    fill_defaults,
    load_schema,
    load_study,
    validate_study_config,
)

REPO = Path(__file__).parents[1]
DEMO = REPO / "data_specs" / "demo"
DEMO_IDS = ["e01", "e02", "e03", "f01", "f02", "f03", "s01", "s02"]


# --------------------------------------------------------------------------- helpers
def _copy_demo(tmp_path: Path) -> Path:
    """Copy the demo study into ``tmp_path/study`` and return that folder."""
    dst = tmp_path / "study"
    shutil.copytree(DEMO, dst)
    return dst


def _read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _write(path: Path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _assert_nothing_written(tmp_path: Path, before: set[Path]) -> None:
    """A failing load must not write anything: no results folder, no new file."""
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "study" / "results").exists()
    assert _snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def demo() -> StudySpec:
    return load_study(DEMO)


# --------------------------------------------------------------------------- the demo
def test_demo_subjects_discovered(demo):
    assert demo.name == "demo"
    assert demo.seed == 42
    assert demo.root == DEMO
    assert demo.path == DEMO / "study.yaml"
    assert list(demo.subjects) == DEMO_IDS  # sorted
    for sid, spec in demo.subjects.items():
        assert spec.subject == sid
        assert spec.label == f"sub-{sid}"
        assert spec.path.name == f"sub-{sid}.yaml"
        assert spec.source == "simulated"


def test_demo_modalities(demo):
    assert {s: spec.modality for s, spec in demo.subjects.items()} == {
        "e01": "eeg", "e02": "eeg", "e03": "eeg",
        "f01": "fmri", "f02": "fmri", "f03": "fmri",
        "s01": "seeg", "s02": "seeg",
    }
    assert [s.subject for s in demo.by_modality("eeg")] == ["e01", "e02", "e03"]
    assert [s.subject for s in demo.by_modality("fmri")] == ["f01", "f02", "f03"]
    assert [s.subject for s in demo.by_modality("seeg")] == ["s01", "s02"]
    assert demo.by_modality("meg") == []
    assert demo.simulated is True


def test_demo_study_defaults_filled(demo):
    cfg = demo.config
    # given in study.yaml
    assert cfg["align"]["n_inner_splits"] == 3
    assert cfg["align"]["alphas_log10"] == [-1, 6, 15]
    # defaults from the schema
    assert cfg["align"]["view"] == "stimulus"
    assert cfg["subjects_dir"] == "subjects"
    assert cfg["features"]["batch_size"] == 32
    assert cfg["preprocess"]["eeg"]["montage"] == "colin27_1020"
    assert cfg["preprocess"]["eeg"]["tmin"] == -0.2
    assert cfg["preprocess"]["eeg"]["bands"]["alpha"] == [8, 14]
    assert cfg["preprocess"]["seeg"]["timeseries_sfreq"] == 20.0
    assert cfg["preprocess"]["fmri"]["detrend"] is True
    assert cfg["preprocess"]["fmri"]["mask"] is None
    # the study's own values survive
    assert cfg["preprocess"]["eeg"]["notch"] == [50]
    assert cfg["simulate"]["snr"] == {"fmri": 1.0, "eeg": 2.0, "seeg": 1.0}


def test_demo_subject_preprocess_override(demo):
    s01, s02 = demo.subjects["s01"], demo.subjects["s02"]
    assert s02.preprocess["high_gamma"] == [70, 140]
    assert s01.preprocess["high_gamma"] == [70, 150]
    # everything else comes from the study / the schema for both
    for spec in (s01, s02):
        assert spec.preprocess["notch"] == [50, 100, 150]
        assert spec.preprocess["window"] == [0.1, 0.6]
        assert spec.preprocess["baseline"] == [-0.2, 0.0]
    # an eeg subject gets the eeg section, not the seeg one
    e01 = demo.subjects["e01"].preprocess
    assert "high_gamma" not in e01
    assert e01["window"] == [0.3, 0.5]
    assert e01["reference"] == "average"


def test_demo_subject_defaults_filled(demo):
    s01 = demo.subjects["s01"]
    assert s01.simulate["n_shafts"] == 4
    assert s01.simulate["contacts_per_shaft"] == 8
    assert s01.simulate["voxel_size"] == 12  # schema default
    assert demo.subjects["f01"].simulate["voxel_size"] == 10
    assert demo.subjects["e02"].simulate["n_channels"] == 28
    for spec in demo.subjects.values():
        assert spec.bad_channels == []
        assert spec.exclude_runs == []


def test_load_study_accepts_folder_or_file():
    a = load_study(DEMO)
    b = load_study(DEMO / "study.yaml")
    c = load_study(str(DEMO))
    assert a == b == c
    assert list(b.subjects) == DEMO_IDS


def test_load_study_missing_study_file(tmp_path):
    with pytest.raises(SpecError, match=r"study\.yaml: study file not found"):
        load_study(tmp_path)
    assert not (tmp_path / "results").exists()


def test_load_does_not_write(tmp_path):
    root = _copy_demo(tmp_path)
    before = _snapshot(tmp_path)
    spec = load_study(root)
    assert len(spec.subjects) == 8
    _assert_nothing_written(tmp_path, before)


# --------------------------------------------------------------------------- malformed
def _set_study(key, value):
    def edit(root: Path):
        data = _read(root / "study.yaml")
        data[key] = value
        _write(root / "study.yaml", data)
    return edit


def _set_subject(sid, key, value):
    def edit(root: Path):
        path = root / "subjects" / f"sub-{sid}.yaml"
        data = _read(path)
        data[key] = value
        _write(path, data)
    return edit


def _del_subject_key(sid, key):
    def edit(root: Path):
        path = root / "subjects" / f"sub-{sid}.yaml"
        data = _read(path)
        del data[key]
        _write(path, data)
    return edit


# (id, edit, file named in the message, regex the message must match)
MALFORMED = [
    ("study-seed-wrong-type", _set_study("seed", "abc"), "study.yaml",
     r"key 'seed': 'abc' is not of type 'integer'"),
    ("study-unknown-key", _set_study("colour", "red"), "study.yaml",
     r"unknown key 'colour'"),
    ("study-nested-wrong-type", _set_study("align", {"n_inner_splits": "three"}), "study.yaml",
     r"key 'align\.n_inner_splits': 'three' is not of type 'integer'"),
    ("study-nested-unknown-key", _set_study("align", {"folds": 3}), "study.yaml",
     r"unknown key 'align\.folds'"),
    ("study-unknown-view", _set_study("align", {"view": "trials"}), "study.yaml",
     r"key 'align\.view': 'trials' fits none of the allowed forms: 'trials' is not one of "
     r"\['stimulus', 'timeseries'\]"),
    ("study-unknown-view-per-modality", _set_study("align", {"view": {"fmri": "volumes"}}),
     "study.yaml", r"key 'align\.view'.*'volumes' is not one of \['stimulus', 'timeseries'\]"),
    ("study-bad-name", _set_study("name", "has space"), "study.yaml",
     r"key 'name': 'has space' does not match"),
    ("subject-id-integer", _set_subject("e01", "subject", 1), "sub-e01.yaml",
     r"key 'subject': 1 is not of type 'string'"),
    ("subject-unknown-key", _set_subject("e01", "colour", "red"), "sub-e01.yaml",
     r"unknown key 'colour'"),
    ("subject-missing-modality", _del_subject_key("f02", "modality"), "sub-f02.yaml",
     r"'modality' is a required property"),
    ("subject-missing-source", _del_subject_key("f02", "source"), "sub-f02.yaml",
     r"'source' is a required property"),
    ("subject-unknown-modality", _set_subject("e03", "modality", "meg"), "sub-e03.yaml",
     r"key 'modality': 'meg' is not one of"),
    ("subject-missing-file", _set_subject("e01", "source", {"bids_root": "nowhere", "task": "x"}),
     "sub-e01.yaml", r"key 'source\.bids_root': file not found: .*nowhere"),
    ("subject-missing-listed-file", _set_subject("f01", "source", {"files": ["nope.nii.gz"]}),
     "sub-f01.yaml", r"key 'source\.files\[0\]': file not found: .*nope\.nii\.gz"),
    ("subject-bad-source", _set_subject("f01", "source", "somewhere"), "sub-f01.yaml",
     r"key 'source': must be 'simulated'"),
    ("subject-id-mismatch", _set_subject("e01", "subject", "x99"), "sub-e01.yaml",
     r"key 'subject': the file is named sub-e01\.yaml but declares subject 'x99'"),
    ("subject-duplicate-id", _set_subject("e02", "subject", "e01"), "sub-e02.yaml",
     r"key 'subject': duplicate subject id, already declared in .*sub-e01\.yaml"),
    ("preprocess-unknown-key", _set_subject("s02", "preprocess", {"bogus": 1}), "sub-s02.yaml",
     r"unknown key 'preprocess\.bogus'"),
    ("preprocess-key-of-other-modality",
     _set_subject("e01", "preprocess", {"high_gamma": [70, 150]}), "sub-e01.yaml",
     r"unknown key 'preprocess\.high_gamma'"),
    ("preprocess-wrong-type", _set_subject("s02", "preprocess", {"high_gamma": "wide"}),
     "sub-s02.yaml", r"key 'preprocess\.high_gamma': 'wide' is not of type 'array'"),
    ("preprocess-wrong-item-type", _set_subject("s02", "preprocess", {"high_gamma": [70, "x"]}),
     "sub-s02.yaml", r"key 'preprocess\.high_gamma\.1': 'x' is not of type 'number'"),
    ("preprocess-wrong-enum", _set_subject("f01", "preprocess", {"hrf_model": "fir"}),
     "sub-f01.yaml", r"key 'preprocess\.hrf_model': 'fir' is not one of"),
    ("simulate-below-minimum", _set_subject("e01", "simulate", {"n_channels": 2}),
     "sub-e01.yaml", r"key 'simulate\.n_channels': 2 is less than the minimum of 8"),
]


@pytest.mark.parametrize("edit, filename, pattern",
                         [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_study_raises(tmp_path, edit, filename, pattern):
    root = _copy_demo(tmp_path)
    edit(root)
    before = _snapshot(tmp_path)
    with pytest.raises(SpecError) as info:
        load_study(root)
    msg = str(info.value)
    # one problem line names the file and says what is wrong with which key
    lines = [line for line in msg.splitlines() if re.search(pattern, line)]
    assert lines, f"no problem matches {pattern!r} in:\n{msg}"
    assert any(filename in line for line in lines), msg
    assert info.value.problems == msg.splitlines()
    _assert_nothing_written(tmp_path, before)


def test_subject_problems_name_file_and_subject(tmp_path):
    root = _copy_demo(tmp_path)
    _set_subject("s02", "preprocess", {"bogus": 1})(root)
    with pytest.raises(SpecError, match=r"sub-s02\.yaml: subject 's02': unknown key "
                                        r"'preprocess\.bogus'"):
        load_study(root)


def test_every_problem_reported_at_once(tmp_path):
    root = _copy_demo(tmp_path)
    _set_subject("e01", "colour", "red")(root)
    _set_subject("f02", "modality", "meg")(root)
    _set_subject("s02", "preprocess", {"bogus": 1})(root)
    with pytest.raises(SpecError) as info:
        load_study(root)
    problems = info.value.problems
    assert len(problems) == 3
    assert "sub-e01.yaml" in problems[0] and "unknown key 'colour'" in problems[0]
    assert "sub-f02.yaml" in problems[1] and "key 'modality'" in problems[1]
    assert "sub-s02.yaml" in problems[2] and "preprocess.bogus" in problems[2]


def test_simulated_subject_needs_simulate_section(tmp_path):
    root = _copy_demo(tmp_path)
    data = _read(root / "study.yaml")
    del data["simulate"]
    _write(root / "study.yaml", data)
    before = _snapshot(tmp_path)
    with pytest.raises(SpecError) as info:
        load_study(root)
    problems = info.value.problems
    # the unsimulated study needs a stimuli table, and every subject is refused
    assert any("study.yaml" in p and "key 'stimuli'" in p and "required" in p for p in problems)
    needs = [p for p in problems if "'simulated' needs a 'simulate' section" in p]
    assert len(needs) == 8
    _assert_nothing_written(tmp_path, before)


def test_stimuli_file_must_exist(tmp_path):
    root = _copy_demo(tmp_path)
    data = _read(root / "study.yaml")
    del data["simulate"]
    data["stimuli"] = "stimuli.tsv"
    _write(root / "study.yaml", data)
    for sub in (root / "subjects").glob("sub-*.yaml"):
        sub.unlink()
    (root / "subjects" / "sub-e01.yaml").write_text(
        "subject: e01\nmodality: eeg\nsource: {files: [rec.edf]}\n"
    )
    (root / "rec.edf").write_bytes(b"")
    with pytest.raises(SpecError, match=r"study\.yaml: key 'stimuli': file not found: "
                                        r".*stimuli\.tsv"):
        load_study(root)
    # with the table present the study loads, with its paths made absolute
    (root / "stimuli.tsv").write_text("stim_id\ttext\n"
                                      + "".join(f"{i}\tword {i}\n" for i in range(8)))
    spec = load_study(root)
    assert spec.simulated is False
    assert spec.subjects["e01"].source["files"] == [str((root / "rec.edf").resolve())]


def test_no_subject_files(tmp_path):
    root = _copy_demo(tmp_path)
    shutil.rmtree(root / "subjects")
    (root / "subjects").mkdir()
    with pytest.raises(SpecError, match=r"study\.yaml: key 'subjects_dir': no sub-\*\.yaml"):
        load_study(root)


def test_invalid_yaml_names_file(tmp_path):
    root = _copy_demo(tmp_path)
    (root / "subjects" / "sub-e01.yaml").write_text("subject: [e01\nmodality: eeg\n")
    with pytest.raises(SpecError, match=r"sub-e01\.yaml: subject 'e01': not valid YAML"):
        load_study(root)


def test_non_mapping_subject_file(tmp_path):
    root = _copy_demo(tmp_path)
    (root / "subjects" / "sub-e01.yaml").write_text("- e01\n- eeg\n")
    with pytest.raises(SpecError, match=r"sub-e01\.yaml: subject 'e01': expected a mapping "
                                        r"of keys, got list"):
        load_study(root)


def test_validate_study_config_names_path():
    with pytest.raises(SpecError, match=r"my/study\.yaml: key '<top level>': 'seed' is a "
                                        r"required property"):
        validate_study_config({"name": "x"}, "my/study.yaml")
    cfg = validate_study_config({"name": "x", "seed": 0})
    assert cfg["align"] == {"alphas_log10": [-1, 6, 15], "n_inner_splits": 3,
                            "layer_selection": "loo", "view": "stimulus", "n_permutations": 1000,
                            "n_bootstraps": 1000, "ci": 0.95, "min_ceiling": 0.3, "min_stimuli": 8,
                            "fir_delays_s": [2, 4, 6, 8], "trf_lags_s": [0.0, 0.6],
                            "trf_step_s": 0.1, "n_components": 64, "block_s": 20.0,
                            "timeseries_baseline": "onset",
                            "ceiling": "auto", "rsa_distance": "correlation"}
    assert cfg["preprocess"]["seeg"]["high_gamma"] == [70, 150]


# --------------------------------------------------------------------------- fill_defaults
TINY = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "default": 1},
        "b": {
            "type": "object",
            "default": {},
            "properties": {
                "c": {"type": "string", "default": "x"},
                "d": {"$ref": "#/$defs/pair"},
                "e": {"$ref": "#/$defs/inner"},
            },
        },
        "f": {"$ref": "#/$defs/inner"},
        "g": {"type": "object", "properties": {"h": {"default": 5}}},  # no default itself
    },
    "$defs": {
        "pair": {"type": "array", "default": [0, 1]},
        "inner": {"type": "object", "default": {}, "properties": {"z": {"default": 9}}},
    },
}


def test_fill_defaults_nested_and_ref():
    out = fill_defaults({}, TINY)
    assert out == {"a": 1, "b": {"c": "x", "d": [0, 1], "e": {"z": 9}}, "f": {"z": 9}}


def test_fill_defaults_keeps_given_values_and_extras():
    inst = {"a": 7, "b": {"c": "y", "e": {"z": 0, "w": 3}}, "g": {}, "other": "kept"}
    out = fill_defaults(inst, TINY)
    assert out == {"a": 7, "b": {"c": "y", "d": [0, 1], "e": {"z": 0, "w": 3}},
                   "f": {"z": 9}, "g": {"h": 5}, "other": "kept"}
    # the input is not modified
    assert inst == {"a": 7, "b": {"c": "y", "e": {"z": 0, "w": 3}}, "g": {}, "other": "kept"}


def test_fill_defaults_returns_copies():
    out1 = fill_defaults({}, TINY)
    out1["b"]["d"].append(99)
    out2 = fill_defaults({}, TINY)
    assert out2["b"]["d"] == [0, 1]
    assert TINY["$defs"]["pair"]["default"] == [0, 1]


def test_fill_defaults_ref_sibling_default_wins():
    schema = {
        "type": "object",
        "properties": {"w": {"$ref": "#/$defs/pair", "default": [3, 4]}},
        "$defs": {"pair": {"type": "array", "default": [0, 1]}},
    }
    assert fill_defaults({}, schema) == {"w": [3, 4]}


def test_fill_defaults_non_object_passthrough():
    assert fill_defaults(5, TINY) == 5
    assert fill_defaults(None, TINY) is None


def test_fill_defaults_rejects_remote_ref():
    with pytest.raises(ValueError, match="only local \\$ref"):
        fill_defaults({}, {"properties": {"a": {"$ref": "other.yaml#/x"}}})


def test_fill_defaults_fills_array_items():
    cfg = validate_study_config({"name": "x", "seed": 0})
    assert cfg["features"]["models"] == [{"name": "minilm", "path": "minilm", "pooling": "mean",
                                          "context_words": 0}]


def test_schema_defaults_are_valid():
    """Every filled-in default must itself pass the schema."""
    from jsonschema import Draft202012Validator

    schema = load_schema("study")
    cfg = validate_study_config({"name": "x", "seed": 0})
    assert list(Draft202012Validator(schema).iter_errors(cfg)) == []


def test_preprocess_file_paths_are_resolved_and_checked(tmp_path):
    root = _copy_demo(tmp_path)
    sub = root / "subjects" / "sub-f01.yaml"
    cfg = yaml.safe_load(sub.read_text())
    cfg["preprocess"] = {"mask": "masks/brain.nii.gz"}
    sub.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SpecError, match=r"sub-f01\.yaml: subject 'f01': key 'preprocess\.mask': "
                                        r"file not found: .*masks/brain\.nii\.gz"):
        load_study(root)
    (root / "masks").mkdir()
    (root / "masks" / "brain.nii.gz").write_bytes(b"")
    spec = load_study(root).subjects["f01"]
    assert spec.preprocess["mask"] == str((root / "masks" / "brain.nii.gz").resolve())
