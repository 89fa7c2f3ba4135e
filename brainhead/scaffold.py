"""``brainhead init``: scaffold a study folder from a BIDS dataset.

Writes ``study.yaml`` (every modality section found in the dataset filled with the
schema's defaults, each key explained on its line), one ``subjects/sub-XX.yaml`` per
subject (task, session, runs, bad channels from ``channels.tsv``) and ``stimuli.tsv``
(the stimulus ids of the events files, with their text where the events carry it).

A BIDS root that cannot be read is refused with every problem named before anything
is written; the study folder appears in one step (built beside it, then renamed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

#: BIDS datatype folder -> brainhead modality, and the recording suffixes of each.
DATATYPES = {"eeg": ("eeg", ("eeg",)), "ieeg": ("seeg", ("ieeg",)), "func": ("fmri", ("bold",))}
_RECORDING_EXT = (".edf", ".bdf", ".vhdr", ".set", ".fif", ".nii", ".nii.gz", ".mef", ".nwb")
_ENTITY = re.compile(r"(?:^|_)(sub|ses|task|acq|run)-([A-Za-z0-9]+)")


class ScaffoldError(ValueError):
    """A BIDS root that ``brainhead init`` cannot scaffold from; lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class BidsSubject:
    """What ``brainhead init`` found of one subject in a BIDS dataset."""

    subject: str
    modality: str
    datatype: str
    task: str
    session: str | None = None
    runs: list[str] = field(default_factory=list)
    other_tasks: list[str] = field(default_factory=list)
    other_datatypes: list[str] = field(default_factory=list)
    bad_channels: list[str] = field(default_factory=list)
    events: list[Path] = field(default_factory=list)


def _entities(name: str) -> dict[str, str]:
    return dict(_ENTITY.findall(name))


def _is_recording(path: Path, suffixes) -> bool:
    name = path.name
    ext = next((e for e in _RECORDING_EXT if name.endswith(e)), None)
    if ext is None and not path.is_dir():  # .ds (CTF) folders are not supported here
        return False
    stem = name[: -len(ext)] if ext else name
    return stem.rsplit("_", 1)[-1] in suffixes


def scan_bids(bids_root) -> list[BidsSubject]:
    """Subjects, tasks, runs and bad channels of a BIDS dataset.

    Raises
    ------
    ScaffoldError
        When ``bids_root`` is not a BIDS dataset that brainhead reads (no folder, no
        ``dataset_description.json``, no ``sub-*`` folder with eeg, ieeg or func
        recordings), naming the path and what is missing.
    """
    root = Path(bids_root)
    where = os.path.relpath(root)
    if not root.exists():
        raise ScaffoldError([f"{where}: BIDS root not found"])
    if not root.is_dir():
        raise ScaffoldError([f"{where}: BIDS root is a file, expected the dataset folder"])
    problems = []
    desc = root / "dataset_description.json"
    if not desc.is_file():
        found = sorted(p.name for p in root.iterdir())[:8]
        problems.append(f"{where}: not a BIDS root: no dataset_description.json "
                        f"(found {found or 'nothing'})")
    else:
        try:
            json.loads(desc.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problems.append(f"{os.path.relpath(desc)}: not valid JSON ({err})")
    subject_dirs = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subject_dirs:
        problems.append(f"{where}: no sub-* subject folders")
    subjects = []
    for sub_dir in subject_dirs:
        sid = sub_dir.name[4:]
        if not re.fullmatch(r"[A-Za-z0-9]+", sid):
            problems.append(f"{os.path.relpath(sub_dir)}: subject '{sid}': key 'participant_id':"
                            " BIDS labels are alphanumeric")
            continue
        found = _scan_subject(root, sub_dir, sid)
        if found is None:
            problems.append(f"{os.path.relpath(sub_dir)}: subject '{sid}': no eeg, ieeg or "
                            "func recordings (sub-<id>[/ses-<id>]/<datatype>/"
                            "sub-<id>_task-<id>[_run-<id>]_<eeg|ieeg|bold>.<ext>)")
            continue
        subjects.append(found)
    if problems:
        raise ScaffoldError(problems)
    return subjects


def _scan_subject(root: Path, sub_dir: Path, sid: str) -> BidsSubject | None:
    recordings: dict[str, list[tuple[dict, Path]]] = {}
    for datatype, (_, suffixes) in DATATYPES.items():
        for folder in [sub_dir / datatype, *sorted(sub_dir.glob(f"ses-*/{datatype}"))]:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if _is_recording(path, suffixes):
                    ents = _entities(path.name)
                    if ents.get("sub") == sid and "task" in ents:
                        recordings.setdefault(datatype, []).append((ents, path))
    if not recordings:
        return None
    datatype = max(recordings, key=lambda d: len(recordings[d]))
    recs = recordings[datatype]
    by_task: dict[str, list] = {}
    for ents, path in recs:
        by_task.setdefault(ents["task"], []).append((ents, path))
    task = max(sorted(by_task), key=lambda t: len(by_task[t]))
    chosen = by_task[task]
    sessions = sorted({e.get("ses") for e, _ in chosen if e.get("ses")})
    session = sessions[0] if sessions else None
    chosen = [(e, p) for e, p in chosen if e.get("ses") == session]
    runs = sorted({e["run"] for e, _ in chosen if "run" in e}, key=_run_key)
    bads, events = [], []
    for ents, path in chosen:
        stem = path.name.split(f"_{DATATYPES[datatype][1][0]}")[0]
        chan = path.parent / f"{stem}_channels.tsv"
        if chan.is_file():
            table = pd.read_csv(chan, sep="\t", dtype=str, keep_default_na=False)
            if {"name", "status"} <= set(table.columns):
                bads += [n for n, s in zip(table["name"], table["status"])
                         if s.strip().lower() == "bad" and n not in bads]
        ev = path.parent / f"{stem}_events.tsv"
        if ev.is_file():
            events.append(ev)
    return BidsSubject(
        subject=sid, modality=DATATYPES[datatype][0], datatype=datatype, task=task,
        session=session, runs=runs, other_tasks=sorted(set(by_task) - {task}),
        other_datatypes=sorted(set(recordings) - {datatype}), bad_channels=bads,
        events=events)


def _run_key(run: str):
    return (0, int(run)) if run.isdigit() else (1, run)


def collect_stimuli(events: list[Path]) -> pd.DataFrame:
    """Distinct stimuli of the events files: ``stim_id`` and ``text`` (id where unknown).

    The id is the ``stim_id`` column where present, else the part of ``trial_type``
    after its first ``/`` (brainhead's ``<condition>/<stim_id>`` convention), else
    ``trial_type`` itself. The text is the ``text`` column where present.
    """
    texts: dict[str, str] = {}
    for path in events:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if "stim_id" in table and (~table["stim_id"].str.strip().isin(["", "n/a"])).any():
            ids = table["stim_id"]
        elif "trial_type" in table:
            ids = table["trial_type"].map(lambda t: t.split("/", 1)[1] if "/" in t else t)
        else:
            continue
        text = table["text"] if "text" in table else pd.Series([""] * len(table))
        for sid, txt in zip(ids.str.strip(), text.str.strip()):
            if sid and sid != "n/a" and (sid not in texts or not texts[sid]):
                texts[sid] = txt if txt and txt != "n/a" else texts.get(sid, "")
    rows = sorted(texts.items())
    return pd.DataFrame({"stim_id": [s for s, _ in rows],
                         "text": [t or s for s, t in rows],
                         "text_known": [bool(t) for _, t in rows]})


# --------------------------------------------------------------------------- study.yaml
def _one_line(text: str | None, limit: int = 160) -> str:
    """A description on one line: whole when short, else its first sentence."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    return re.split(r"(?<!e\.g)(?<!i\.e)(?<=[a-z0-9)\]])\.\s+(?=[A-Z])", text, maxsplit=1)[0].rstrip(".") + "."


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000,
                          sort_keys=False).strip().removesuffix("...").strip()


def _resolve(node: dict, schema: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        target = schema
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


#: One-line explanations of keys that the schema leaves undescribed.
_FALLBACK = {
    "tmin": "Epoch start relative to the event onset (s).",
    "tmax": "Epoch end relative to the event onset (s).",
    "baseline": "Baseline window (s) subtracted from each epoch, or null.",
    "detrend": "Remove linear trends from each run's time series (nilearn).",
    "standardize": "Z-score each voxel's time series within a run (nilearn).",
    "dropout": "Dropout probability.",
}


def _explain(key: str, node: dict) -> str:
    """The schema's description on one line, else a fallback or the allowed values."""
    desc = _one_line(node.get("description"))
    if desc:
        return desc
    if key in _FALLBACK:
        return _FALLBACK[key]
    if "enum" in node:
        return f"One of {', '.join(map(str, node['enum']))}."
    kind = node.get("type", "value")
    return f"A {kind if isinstance(kind, str) else ' or '.join(kind)}."


def _section_lines(props: dict, schema: dict, indent: int, skip=()) -> list[str]:
    """``key: default  # description`` for every key with a default (recursing objects)."""
    lines = []
    pad = " " * indent
    for key, node in props.items():
        if key in skip:
            continue
        node = _resolve(node, schema)
        desc = _explain(key, node)
        if node.get("type") == "object" and "properties" in node and not node.get("default"):
            lines.append(f"{pad}{key}:" + (f"  # {desc}" if desc else ""))
            lines += _section_lines(node["properties"], schema, indent + 2)
        elif "default" in node:
            lines.append(f"{pad}{key}: {_flow(node['default'])}" + (f"  # {desc}" if desc else ""))
        else:
            lines.append(f"{pad}# {key}: (no default)" + (f"  {desc}" if desc else ""))
    return lines


def study_yaml(name: str, description: str, modalities: list[str], *, seed: int = 42,
               bids_root: str, stimuli_note: str) -> str:
    """The commented study.yaml of a scaffolded study (schema defaults, one line each)."""
    from .specs import SCHEMA_DIR

    schema = yaml.safe_load((SCHEMA_DIR / "study.schema.yaml").read_text())
    props = schema["properties"]
    lines = [
        f"# Study scaffolded by `brainhead init` from the BIDS dataset {bids_root}.",
        "# Every key below holds the schema's default (workflows/schemas/study.schema.yaml);",
        "# edit what your data needs, then `brainhead validate <this folder>` and",
        "# `snakemake --cores N --configfile <this file>`.",
        f"name: {_flow(name)}  # {_one_line(props['name']['description'])}",
        f"description: {_flow(description)}  # {_one_line(props['description']['description'])}",
        f"seed: {seed}  # {_one_line(props['seed']['description'])}",
        f"subjects_dir: subjects  # {_one_line(props['subjects_dir']['description'])}",
        f"stimuli: stimuli.tsv  # {_one_line(props['stimuli']['description'])} {stimuli_note}",
        f"features:  # {_one_line(props['features']['description'])}",
        *_section_lines(props["features"]["properties"], schema, 2),
        f"preprocess:  # {_one_line(props['preprocess']['description'])}",
    ]
    pre = props["preprocess"]["properties"]
    for modality in modalities:
        node = _resolve(pre[modality], schema)
        lines.append(f"  {modality}:")
        lines += _section_lines(node["properties"], schema, 4)
    lines.append(f"align:  # {_one_line(props['align']['description'])}")
    lines += _section_lines(props["align"]["properties"], schema, 2)
    train = props.get("train")
    if train:
        lines.append(f"train:  # {_one_line(train['description'])}")
        lines.append(f"  families: []  # {_one_line(train['properties']['families']['description'])}"
                     " Add e.g. voxel_xattn to train encoders.")
    return "\n".join(lines) + "\n"


def subject_yaml(sub: BidsSubject, bids_root: str) -> str:
    """One subject file: modality, BIDS source (task, session, runs), bad channels."""
    source = {"bids_root": bids_root, "task": sub.task}
    if sub.session:
        source["session"] = sub.session
    if sub.runs:
        source["runs"] = [int(r) if r.isdigit() else r for r in sub.runs]
    lines = [f"# sub-{sub.subject}: {sub.datatype} recordings of task '{sub.task}' found by "
             "`brainhead init`."]
    if sub.other_tasks:
        lines.append(f"# Other tasks of this subject (not used): {', '.join(sub.other_tasks)}.")
    if sub.other_datatypes:
        lines.append(f"# Other datatypes of this subject (not used): "
                     f"{', '.join(sub.other_datatypes)}.")
    lines += [f"subject: {_flow(sub.subject)}",
              f"modality: {sub.modality}",
              "source:",
              *[f"  {k}: {_flow(v)}" for k, v in source.items()],
              f"bad_channels: {_flow(sub.bad_channels)}  # from channels.tsv (status bad)"]
    return "\n".join(lines) + "\n"


def init_study(study_dir, bids_root, *, name: str | None = None, seed: int = 42) -> dict:
    """Scaffold ``study_dir`` from the BIDS dataset ``bids_root``.

    Parameters
    ----------
    study_dir : path-like
        The new study folder; must not exist or be empty.
    bids_root : path-like
        The BIDS dataset (``dataset_description.json`` and ``sub-*`` folders).
    name : str | None
        Study name (results go to results/<name>); default: the folder's name.
    seed : int
        The study seed.

    Returns
    -------
    summary : dict
        ``study`` (path of study.yaml), ``subjects`` (list of BidsSubject),
        ``n_stimuli`` and ``n_without_text``.

    Raises
    ------
    ScaffoldError
        The BIDS root cannot be scaffolded from, or ``study_dir`` is not empty;
        nothing is written.
    """
    study_dir = Path(study_dir)
    if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
        raise ScaffoldError([f"{os.path.relpath(study_dir)}: exists and is not an empty "
                             "folder; choose a new study folder"])
    subjects = scan_bids(bids_root)
    name = name or re.sub(r"[^A-Za-z0-9_-]+", "_", study_dir.resolve().name)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ScaffoldError([f"study name {name!r}: key 'name': use letters, digits, _ and -"])
    events = [ev for sub in subjects for ev in sub.events]
    stimuli = collect_stimuli(events)
    if stimuli.empty:
        raise ScaffoldError([f"{os.path.relpath(bids_root)}: no stimuli: none of the "
                             f"{len(events)} events.tsv files of the chosen runs has a "
                             "stim_id or trial_type column with values"])
    desc_file = Path(bids_root) / "dataset_description.json"
    description = json.loads(desc_file.read_text(encoding="utf-8")).get("Name") or name
    n_missing = int((~stimuli["text_known"]).sum())
    note = ("(generated from the events files; every stimulus has its text)" if not n_missing
            else f"(generated from the events files; {n_missing} of {len(stimuli)} stimuli "
                 "have no text there and show their id: put the real text in)")
    modalities = sorted({s.modality for s in subjects},
                        key=lambda m: ["eeg", "seeg", "fmri"].index(m))
    study_dir.parent.mkdir(parents=True, exist_ok=True)
    rel_root = os.path.relpath(Path(bids_root).resolve(), study_dir.resolve())
    stage = Path(tempfile.mkdtemp(prefix=f".{study_dir.name}.tmp-", dir=study_dir.parent))
    try:
        (stage / "study.yaml").write_text(study_yaml(
            name, str(description), modalities, seed=seed, bids_root=rel_root,
            stimuli_note=note))
        stimuli[["stim_id", "text"]].to_csv(stage / "stimuli.tsv", sep="\t", index=False)
        (stage / "subjects").mkdir()
        for sub in subjects:
            (stage / "subjects" / f"sub-{sub.subject}.yaml").write_text(
                subject_yaml(sub, rel_root))
        if study_dir.exists():
            study_dir.rmdir()
        os.replace(stage, study_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"study": study_dir / "study.yaml", "subjects": subjects,
            "n_stimuli": len(stimuli), "n_without_text": n_missing}
