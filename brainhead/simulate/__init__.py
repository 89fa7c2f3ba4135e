"""The embedded demo study: synthetic subjects with a planted ground truth.

:func:`simulate_study` writes, for a study spec with a ``simulate`` section:

- ``stimuli.tsv``: the sentence stimuli shared by all modalities;
- ``bids/``: a BIDS dataset (EEG and iEEG as EDF through mne-bids, BOLD as NIfTI),
  which the preprocessing rules read back with the real readers;
- ``truth.json``: for every subject and region, the model layer that drives it.

Responses are linear read-outs of one layer of the study's first model (the trained
weights), so an alignment analysis should find that layer best for that region. With
``simulate.shared_rank`` r > 0, the read-outs of every region lie in an r-dimensional
subspace of that layer common to all subjects of the modality
(:func:`~brainhead.simulate.signals.shared_bases`), so subjects share structure that
pooled models can exploit; with 0, every target is an independent read-out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .._logging import logger, progress
from ..io.store import atomic_path
from .signals import planted_responses, shared_bases
from .stimuli import make_stimuli

__all__ = ["simulate_study", "make_stimuli", "planted_responses", "shared_bases"]


def _writers():
    from .eeg import simulate_eeg_subject, simulate_seeg_subject
    from .fmri import simulate_fmri_subject

    return {"fmri": simulate_fmri_subject, "eeg": simulate_eeg_subject,
            "seeg": simulate_seeg_subject}


def simulate_study(study, out_dir: str | Path) -> dict:
    """Simulate every subject of a study and write stimuli, BIDS data and truth.

    Parameters
    ----------
    study : brainhead.specs.StudySpec
        A study whose config has a ``simulate`` section.
    out_dir : path-like
        ``results/<study>``; ``stimuli.tsv``, ``bids/`` and ``truth.json`` go here.

    Returns
    -------
    truth : dict
        The content of ``truth.json``.
    """
    from mne_bids import make_dataset_description

    from ..features import extract_layer_features

    if not study.simulated:
        raise ValueError(f"{study.path}: study '{study.name}' has no 'simulate' section")
    sim = study.config["simulate"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = study.config["features"]["models"][0]

    stimuli = make_stimuli(sim["n_stimuli"], study.seed)
    features = extract_layer_features(list(stimuli["text"]), model["path"],
                                      pooling=model["pooling"])
    rank = sim["shared_rank"]
    dim = features.shape[-1]
    if rank > dim:
        raise ValueError(f"{study.path}: key 'simulate.shared_rank': {rank} is more than the "
                         f"{dim} features of model '{model['name']}'")
    with atomic_path(out_dir / "stimuli.tsv") as tmp:
        stimuli.to_csv(tmp, sep="\t", index=False)

    bids_root = out_dir / "bids"
    tmp_root = out_dir / ".bids.tmp"
    shutil.rmtree(tmp_root, ignore_errors=True)
    make_dataset_description(path=tmp_root, name=f"brainhead simulated study {study.name}",
                             dataset_type="raw", overwrite=True, verbose="error")
    writers = _writers()
    truth = {"study": study.name, "model": model["name"], "seed": study.seed,
             "shared_rank": rank, "memory": sim.get("memory") or {}, "subjects": {}}
    for index, spec in enumerate(progress(list(study.subjects.values()), desc="simulate")):
        if spec.source != "simulated":
            continue
        planted = sim["planted_layers"].get(spec.modality)
        if not planted:
            raise ValueError(f"{study.path}: key 'simulate.planted_layers.{spec.modality}': "
                             f"no regions planted for sub-{spec.subject} ({spec.modality})")
        rng = np.random.default_rng([study.seed, index])
        bases = shared_bases(features, planted, rank, study.seed, modality=spec.modality)
        # the planted memory (simulate.memory) reaches the EEG/sEEG writers with the params
        params = {**spec.simulate, "memory": sim.get("memory") or {}}
        info = writers[spec.modality](
            tmp_root, spec.subject, stimuli, features, planted, params,
            sim["snr"][spec.modality], sim["n_runs"], rng, sim["n_repeats"],
            shared_bases=bases)
        truth["subjects"][spec.subject] = {"modality": spec.modality,
                                           "regions": dict(planted), **info}
        logger.info("simulated sub-%s (%s): %d targets", spec.subject, spec.modality,
                    info["n_targets"])
    shutil.rmtree(bids_root, ignore_errors=True)
    tmp_root.rename(bids_root)
    with atomic_path(out_dir / "truth.json") as tmp:
        tmp.write_text(json.dumps(truth, indent=2))
    return truth
