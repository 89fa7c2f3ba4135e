"""Study and subject specs: load, validate, fill defaults.

A study is a folder ``data_specs/<study>/`` with ``study.yaml`` and one
``subjects/sub-<id>.yaml`` per subject. Validation runs in two passes, both before any
job starts: the structure against the JSON schemas in ``workflows/schemas/`` (unknown
keys, wrong types, missing fields), then the meaning here (file names match ids, ids
are unique, referenced files exist, overrides fit the modality). Every problem is
reported with the file, the subject and the key.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

MODALITIES = ("eeg", "seeg", "fmri")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "workflows" / "schemas"


class SpecError(ValueError):
    """A study or subject spec is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class SubjectSpec:
    """One validated subject.

    Attributes
    ----------
    subject : str
        Id without the ``sub-`` prefix.
    modality : str
        ``eeg``, ``seeg`` or ``fmri``.
    source : str | dict
        ``"simulated"`` or the ``source`` mapping of the file (paths made absolute).
    preprocess : dict
        The study's preprocessing for this modality with the subject's overrides.
    path : pathlib.Path
        The YAML file.
    """

    subject: str
    modality: str
    source: str | dict
    bad_channels: list[str]
    exclude_runs: list
    simulate: dict
    preprocess: dict
    path: Path
    train: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``sub-<id>``."""
        return f"sub-{self.subject}"


@dataclass(frozen=True)
class StudySpec:
    """A validated study with its subjects.

    Attributes
    ----------
    name : str
    seed : int
    root : pathlib.Path
        Folder holding ``study.yaml``.
    config : dict
        The study file with every default filled in.
    subjects : dict of str to SubjectSpec
        Keyed by subject id, sorted.
    """

    name: str
    seed: int
    root: Path
    path: Path
    config: dict
    subjects: dict[str, SubjectSpec] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """Whether the study's data come from ``brainhead.simulate``."""
        return "simulate" in self.config

    def by_modality(self, modality: str) -> list[SubjectSpec]:
        """Subjects of one modality, sorted by id."""
        return [s for s in self.subjects.values() if s.modality == modality]


# --------------------------------------------------------------------------- schemas
@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """The JSON schema ``workflows/schemas/<name>.schema.yaml`` as a dict."""
    with open(SCHEMA_DIR / f"{name}.schema.yaml") as fid:
        return yaml.safe_load(fid)


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref are supported, got {ref}")
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """Return a copy of ``instance`` with the schema's ``default`` values filled in.

    Defaults are applied to missing properties of objects, recursively, following
    local ``$ref``; the schema is the one place where defaults are written.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(item, schema["items"], root) for item in instance]
    if not isinstance(instance, dict) or "properties" not in schema:
        return copy.deepcopy(instance)
    out = copy.deepcopy(instance)
    for key, sub in schema["properties"].items():
        sub_resolved = _resolve(sub, root)
        if key not in out and "default" in sub_resolved:
            out[key] = copy.deepcopy(sub_resolved["default"])
        if key in out:
            out[key] = fill_defaults(out[key], sub_resolved, root)
    return out


def _rel(path: Path | str) -> str:
    """A path as the user should read it: relative to the working directory if possible."""
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


def _schema_problems(instance: Any, schema: dict, where: str) -> list[str]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            for name in extra:
                full = f"{key}.{name}" if err.absolute_path else name
                problems.append(f"{where}: unknown key '{full}' (allowed here: {allowed})")
            continue
        if err.validator == "oneOf" and key == "source":
            msg = ("must be 'simulated', a mapping with bids_root and task, a mapping "
                   f"with files, or a mapping with dataset and root; got {err.instance!r}")
        elif err.validator == "oneOf" and err.context:
            # say what each alternative wanted, e.g. "'trials' is not one of [...]"
            reasons = "; or ".join(dict.fromkeys(sub.message for sub in err.context))
            msg = f"{err.instance!r} fits none of the allowed forms: {reasons}"
        else:
            msg = err.message
        problems.append(f"{where}: key '{key}': {msg}")
    return problems


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    try:
        with open(path) as fid:
            return yaml.safe_load(fid), []
    except yaml.YAMLError as err:
        return None, [f"{_rel(path)}: not valid YAML: {err}"]


# --------------------------------------------------------------------------- loading
def validate_study_config(config: dict, path: Path | str = "study.yaml") -> dict:
    """Validate a study mapping against the schema and return it with defaults.

    Raises
    ------
    SpecError
        Listing every structural problem, each naming ``path`` and the key.
    """
    schema = load_schema("study")
    problems = _schema_problems(config, schema, _rel(path))
    if problems:
        raise SpecError(problems)
    return fill_defaults(config, schema)


def _subject_problems(raw: dict, path: Path, study: dict, root: Path) -> list[str]:
    """Meaning checks of one structurally valid subject file."""
    where = f"{_rel(path)}: subject '{raw['subject']}'"
    problems = []
    expected = f"sub-{raw['subject']}"
    if path.stem != expected:
        problems.append(
            f"{where}: key 'subject': the file is named {path.name} but declares "
            f"subject '{raw['subject']}' (expected {expected}.yaml)"
        )
    source = raw["source"]
    if source == "simulated":
        if "simulate" not in study:
            problems.append(
                f"{where}: key 'source': 'simulated' needs a 'simulate' section in study.yaml"
            )
    elif "dataset" in source:
        from .io.datasets import check_source

        problems += check_source(source, raw["modality"], where, root)
    else:
        paths = []
        if "bids_root" in source:
            paths.append(("source.bids_root", source["bids_root"]))
        for i, f in enumerate(source.get("files", [])):
            paths.append((f"source.files[{i}]", f))
        for i, f in enumerate(source.get("events", [])):
            paths.append((f"source.events[{i}]", f))
        if "mask" in source:
            paths.append(("source.mask", source["mask"]))
        for key, value in paths:
            if not (root / value).exists():
                problems.append(f"{where}: key '{key}': file not found: {_rel(root / value)}")
        if "events" in source and len(source["events"]) != len(source["files"]):
            problems.append(
                f"{where}: key 'source.events': {len(source['events'])} events files for "
                f"{len(source['files'])} recordings"
            )
    # Overrides must be keys of this modality's preprocessing section, with right types.
    overrides = raw.get("preprocess", {})
    schema = load_schema("study")
    mod_schema = {**schema["$defs"][raw["modality"]], "$defs": schema["$defs"]}
    for problem in _schema_problems(overrides, mod_schema, where):
        problems.append(problem.replace("key '", "key 'preprocess.", 1))
    return problems


#: Preprocessing keys that may name a file (made absolute against study.yaml's folder).
#: A value without a slash or a dot is a name (e.g. a built-in montage), left as is.
_PREPROCESS_PATHS = ("mask", "parcellation", "parcellation_lut", "atlas", "atlas_lut",
                     "montage")


def load_subject(path: Path | str, study_config: dict, root: Path) -> SubjectSpec:
    """Load and validate one subject file against an already validated study.

    Raises
    ------
    SpecError
        Listing every problem, each naming the file, the subject and the key.
    """
    path = Path(path)
    raw, problems = _read_yaml(path)
    if problems:
        raise SpecError(problems)
    if not isinstance(raw, dict):
        raise SpecError([f"{_rel(path)}: expected a mapping of keys, got {type(raw).__name__}"])
    sub = raw.get("subject", path.stem)
    problems = _schema_problems(raw, load_schema("subject"), f"{_rel(path)}: subject '{sub}'")
    if problems:
        raise SpecError(problems)
    problems = _subject_problems(raw, path, study_config, root)
    if problems:
        raise SpecError(problems)
    raw = fill_defaults(raw, load_schema("subject"))
    preprocess = fill_defaults(
        {**study_config["preprocess"].get(raw["modality"], {}), **raw["preprocess"]},
        load_schema("study")["$defs"][raw["modality"]],
        load_schema("study"),
    )
    missing = []
    for key in _PREPROCESS_PATHS:  # files named in preprocessing: relative to study.yaml
        value = preprocess.get(key)
        if isinstance(value, str) and ("/" in value or "." in value):
            preprocess[key] = str((root / value).resolve())
            if not Path(preprocess[key]).exists():
                missing.append(f"{_rel(path)}: subject '{raw['subject']}': key "
                               f"'preprocess.{key}': file not found: {_rel(root / value)}")
    if missing:
        raise SpecError(missing)
    source = raw["source"]
    if isinstance(source, dict) and "dataset" in source:
        from .io.datasets import resolve_source

        source = resolve_source(source, root)
    elif isinstance(source, dict):
        source = dict(source)
        for key in ("bids_root", "mask"):
            if key in source:
                source[key] = str((root / source[key]).resolve())
        for key in ("files", "events"):
            if key in source:
                source[key] = [str((root / f).resolve()) for f in source[key]]
    return SubjectSpec(
        subject=raw["subject"],
        modality=raw["modality"],
        source=source,
        bad_channels=list(raw["bad_channels"]),
        exclude_runs=list(raw["exclude_runs"]),
        simulate=raw["simulate"],
        preprocess=preprocess,
        path=path,
        train=dict(raw["train"]),
    )


def _train_problems(config: dict, subjects: dict[str, SubjectSpec], path: Path) -> list[str]:
    """Meaning checks of the ``train`` section that the schema cannot express."""
    train = config["train"]
    where = _rel(path)
    problems = []
    models = [m["name"] for m in config["features"]["models"]]
    if train["model"] is not None and train["model"] not in models:
        problems.append(f"{where}: key 'train.model': {train['model']!r} is not a features "
                        f"model of this study (features.models names: {', '.join(models)})")
    vx = train["voxel_xattn"]
    if vx["d_model"] % vx["n_heads"]:
        problems.append(f"{where}: key 'train.voxel_xattn.n_heads': {vx['n_heads']} heads do "
                        f"not divide d_model {vx['d_model']}")
    for modality in MODALITIES:
        held = [s for s in subjects.values()
                if s.modality == modality and s.train["transfer_holdout"]]
        if len(held) > 1:
            problems.append(
                f"{_rel(held[1].path)}: subject '{held[1].subject}': key "
                f"'train.transfer_holdout': only one {modality} subject can be held out "
                f"for transfer (also set for sub-{held[0].subject})")
    return problems


def find_study_file(study: Path | str) -> Path:
    """``study.yaml`` of a study folder, or the file itself."""
    study = Path(study)
    path = study / "study.yaml" if study.is_dir() else study
    if not path.is_file():
        raise SpecError([f"{_rel(path)}: study file not found"])
    return path


def load_study(study: Path | str) -> StudySpec:
    """Load a study folder (or its ``study.yaml``) and every subject in it.

    Parameters
    ----------
    study : path-like
        ``data_specs/<study>`` or ``data_specs/<study>/study.yaml``.

    Returns
    -------
    spec : StudySpec

    Raises
    ------
    SpecError
        Listing every problem in the study file and all subject files, each naming the
        file, the subject and the key. Nothing is written.
    """
    path = find_study_file(study)
    root = path.parent
    raw, problems = _read_yaml(path)
    if problems:
        raise SpecError(problems)
    if not isinstance(raw, dict):
        raise SpecError([f"{_rel(path)}: expected a mapping of keys, got {type(raw).__name__}"])
    config = validate_study_config(raw, path)

    problems = []
    if "simulate" not in config:
        if "stimuli" not in config:
            problems.append(f"{_rel(path)}: key 'stimuli': required when the study is not simulated")
        elif not (root / config["stimuli"]).is_file():
            problems.append(
                f"{_rel(path)}: key 'stimuli': file not found: {_rel(root / config['stimuli'])}"
            )
    sub_dir = root / config["subjects_dir"]
    files = sorted(sub_dir.glob("sub-*.yaml")) + sorted(sub_dir.glob("sub-*.yml"))
    if not files:
        problems.append(
            f"{_rel(path)}: key 'subjects_dir': no sub-*.yaml files in {_rel(sub_dir)}"
        )
    subjects: dict[str, SubjectSpec] = {}
    declared: dict[str, Path] = {}
    for file in files:
        raw_sub, _ = _read_yaml(file)
        sid = raw_sub.get("subject") if isinstance(raw_sub, dict) else None
        if isinstance(sid, str) and sid in declared:
            problems.append(
                f"{_rel(file)}: subject '{sid}': key 'subject': duplicate subject id, "
                f"already declared in {_rel(declared[sid])}"
            )
            continue
        if isinstance(sid, str):
            declared[sid] = file
        try:
            spec = load_subject(file, config, root)
        except SpecError as err:
            problems.extend(err.problems)
            continue
        subjects[spec.subject] = spec
    problems += _train_problems(config, subjects, path)
    if problems:
        raise SpecError(problems)
    return StudySpec(
        name=config["name"],
        seed=config["seed"],
        root=root,
        path=path,
        config=config,
        subjects=dict(sorted(subjects.items())),
    )
