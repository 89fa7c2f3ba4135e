"""Which training jobs an edit of the study's train section reruns, on the finished demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml


def _planned_training(work) -> set[str]:
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(re.findall(r"^rule (train_\w+):", proc.stdout + proc.stderr, re.M))


def test_a_family_section_edit_reruns_that_family_only(demo_results):
    """An edit of one family's section reruns that family's jobs and no other's; an
    edit of a key that every family reads reruns them all."""
    work = demo_results.parent.parent
    study = work / "data_specs" / "demo" / "study.yaml"
    original = study.read_text()
    spec = yaml.safe_load(original)
    families = spec["train"]["families"]
    other = next(f for f in families if f != "voxel_xattn" and spec["train"].get(f))
    try:
        key, value = next(iter(spec["train"][other].items()))
        assert isinstance(value, int), (other, key, value)
        spec["train"][other][key] = value + 1
        study.write_text(yaml.safe_dump(spec, sort_keys=False))
        assert _planned_training(work) == {f"train_{other}"}
        spec = yaml.safe_load(original)
        spec["train"]["patience"] += 1
        study.write_text(yaml.safe_dump(spec, sort_keys=False))
        assert _planned_training(work) == {f"train_{f}" for f in families}
    finally:
        study.write_text(original)
    assert _planned_training(work) == set()
