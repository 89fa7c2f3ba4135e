"""Provenance of a report: spec hash, package versions, git revision, seeds, settings,
and the run time and peak memory of every rule (Snakemake's benchmark files)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pandas as pd

from ..io.store import provenance, spec_hash

#: Packages shown first (the rest are listed below them).
KEY_PACKAGES = ("brainhead", "numpy", "scipy", "pandas", "scikit-learn", "mne", "mne-bids",
                "nilearn", "nibabel", "h5py", "torch", "lightning", "transformers",
                "matplotlib", "snakemake")


def package_versions() -> dict[str, str]:
    """Every installed distribution: name -> version, sorted by name."""
    versions = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            versions.setdefault(name, dist.version)
    return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def read_benchmarks(folder) -> pd.DataFrame:
    """Snakemake benchmark TSVs under ``folder`` (``benchmarks/<rule>/<job>.tsv``).

    Returns
    -------
    table : DataFrame
        Columns rule, job, seconds, max_rss_mb (peak resident memory), cpu_seconds;
        one row per file (the mean when a file holds repeats), sorted by rule and job.
        Empty when the folder is absent.
    """
    rows = []
    folder = Path(folder) if folder is not None else None
    if folder is not None and folder.is_dir():
        for path in sorted(folder.rglob("*.tsv")):
            bench = pd.read_csv(path, sep="\t")
            if bench.empty or "s" not in bench:
                continue
            rel = path.relative_to(folder)
            rows.append({"rule": rel.parts[0] if len(rel.parts) > 1 else "",
                         "job": rel.with_suffix("").name,
                         "seconds": float(bench["s"].mean()),
                         "max_rss_mb": float(bench["max_rss"].mean())
                         if "max_rss" in bench else float("nan"),
                         "cpu_seconds": float(bench["cpu_time"].mean())
                         if "cpu_time" in bench else float("nan")})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb", "cpu_seconds"])


def collect(spec: dict | None, *, settings: dict | None = None, benchmarks=None,
            artifacts=()) -> dict:
    """Everything the provenance section shows.

    Parameters
    ----------
    spec : dict | None
        The study config (after defaults); its hash identifies the study.
    settings : dict | None
        Alignment settings (``align`` section) shown as a table.
    benchmarks : path-like | None
        ``results/<study>/benchmarks``.
    artifacts : sequence of path-like
        HDF5 artifacts whose provenance attributes (step, params hash, git rev) are
        listed.
    """
    from ..io.store import read_attrs

    here = provenance("report", spec or {})
    seeds = {}
    if spec:
        seeds["study seed"] = spec.get("seed")
        train = spec.get("train") or {}
        if train.get("families"):
            seeds["train seed"] = train.get("seed") if train.get("seed") is not None \
                else f"{spec.get('seed')} (study seed)"
    arts = []
    for path in artifacts:
        try:
            attrs = read_attrs(path)
        except OSError:
            continue
        arts.append({"file": Path(path).name, "step": attrs.get("brainhead_step", "?"),
                     "params_hash": attrs.get("params_hash", "?"),
                     "git_rev": str(attrs.get("git_rev", "?"))[:12]})
    return {
        "spec_hash": spec_hash(spec) if spec else "n/a",
        "git_rev": here["git_rev"],
        "seeds": seeds,
        "settings": settings or {},
        "versions": package_versions(),
        "key_packages": [p for p in KEY_PACKAGES],
        "benchmarks": read_benchmarks(benchmarks),
        "artifacts": arts,
        "settings_json": json.dumps(settings or {}, sort_keys=True, default=str),
    }
