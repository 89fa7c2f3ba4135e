"""Tests of the ``brainhead`` command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainhead.cli import build_parser, main
from brainhead.io import (
    ResponseTable,
    Targets,
    View,
    provenance,
    spec_hash,
    write_arrays,
    write_responses,
)

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "data_specs" / "demo"


def test_validate_demo(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["validate", "data_specs/demo"]) == 0
    out, err = capsys.readouterr()
    assert "study 'demo' is valid" in out
    assert "8 subjects" in out and "3 eeg, 2 seeg, 3 fmri" in out
    assert err == ""


def test_validate_study_yaml_path(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["validate", "data_specs/demo/study.yaml"]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_broken_copy(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(DEMO, broken)
    with open(broken / "subjects" / "sub-e01.yaml", "a") as fid:
        fid.write("bogus_key: 1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(broken)]) == 1
    out, err = capsys.readouterr()
    assert "valid" not in out
    assert "1 problem(s) found" in err
    problem = [line for line in err.splitlines() if "bogus_key" in line]
    assert len(problem) == 1
    assert "sub-e01.yaml" in problem[0] and "unknown key 'bogus_key'" in problem[0]
    assert "subject 'e01'" in problem[0]
    assert (DEMO / "subjects" / "sub-e01.yaml").read_text().count("bogus_key") == 0


def test_validate_missing_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "nope"]) == 1
    err = capsys.readouterr().err
    assert "nope: study file not found" in err


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: brainhead" in capsys.readouterr().err


def test_parser_lists_commands():
    help_text = build_parser().format_help()
    for command in ("validate", "simulate", "inspect"):
        assert command in help_text


def test_module_help_subprocess():
    proc = subprocess.run([sys.executable, "-m", "brainhead.cli", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: brainhead")
    for command in ("validate", "simulate", "inspect"):
        assert command in proc.stdout


def test_console_script_installed():
    script = Path(sys.executable).parent / "brainhead"
    if not script.exists():
        pytest.skip(reason="no brainhead console script beside this interpreter (project not installed)")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout and "inspect" in proc.stdout


def _responses(path: Path, params: dict) -> Path:
    rng = np.random.default_rng(0)
    table = ResponseTable(
        subject="x07", modality="eeg",
        targets=Targets(name=["Cz", "Pz", "Oz"], kind=["channel"] * 3,
                        coords=np.zeros((3, 3)), region=["a", "b", ""]),
        views={
            "stimulus": View(X=rng.normal(size=(10, 3)).astype(np.float32),
                             rows={"stim_id": np.arange(10).astype(str),
                                   "group": np.repeat([0, 1], 5)}),
            "bands": View(X=rng.normal(size=(10, 3, 2)).astype(np.float32),
                          rows={"stim_id": np.arange(10).astype(str),
                                "group": np.repeat([0, 1], 5)},
                          labels={"band": np.array(["alpha", "beta"])}),
        },
        info={"sfreq": 100.0})
    return write_responses(path, table, provenance("preprocess", params))


def test_inspect_responses(tmp_path, capsys):
    params = {"l_freq": 0.5, "notch": [50]}
    path = _responses(tmp_path / "responses.h5", params)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sub-x07 (eeg): 3 targets" in out
    assert "view stimulus: X[10, 3]" in out
    assert "view bands: X[10, 3, 2]" in out
    assert '"sfreq": 100.0' in out
    assert "brainhead_step: preprocess" in out
    assert f"params_hash: {spec_hash(params)}" in out


def test_inspect_other_artifact(tmp_path, capsys):
    path = write_arrays(tmp_path / "f.h5", {"trained": np.zeros((2, 3, 4), np.float32)},
                        provenance("features", {"name": "m"}))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sub-" not in out and "view" not in out
    assert "brainhead_step: features" in out
    assert f"params_hash: {spec_hash({'name': 'm'})}" in out
    assert "git_rev:" in out
