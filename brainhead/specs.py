"""Study and subject specs: load, validate, fill defaults.

A study is a folder ``data_specs/<study>/`` with ``study.yaml`` and one
``subjects/sub-<id>.yaml`` per subject. Validation runs in two passes, both before any
job starts: the structure against the JSON schemas in ``workflows/schemas/`` (unknown
keys, wrong types, missing fields), then the meaning here (file names match ids, ids
are unique, referenced files exist and are of a readable type, overrides fit the
modality, windows, filters and bands are possible, the stimuli table has texts, the
design gives alignment enough distinct stimuli). A study with ``stimuli: null`` has no
stimuli: it preprocesses (and decodes labels, with a ``decode`` section) but has no
features, alignment or training (see :func:`has_stimuli`). Spec files are read as UTF-8 YAML with
duplicate keys and alias bombs refused. Every problem is reported with the file, the
subject and the key.
"""

from __future__ import annotations

import copy
import math
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


#: A key that picks one form of a subject's ``source`` (the schema's oneOf).
_SOURCE_FORMS = ("bids_root", "files", "dataset")


def _source_branch(err) -> dict | None:
    """The ``source`` form a mapping's keys choose (files, bids_root, dataset), if one."""
    if not isinstance(err.instance, dict):
        return None
    chosen = [k for k in _SOURCE_FORMS if k in err.instance]
    if len(chosen) != 1:
        return None
    for branch in err.schema["oneOf"]:
        if chosen[0] in branch.get("required", []):
            return branch
    return None


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
            branch = _source_branch(err)
            if branch is not None:  # the form its keys choose: say what is wrong in it
                for problem in _schema_problems(err.instance, branch, where):
                    problems.append(problem.replace("key '", "key 'source.", 1)
                                    .replace("'source.<top level>'", "'source'", 1))
                continue
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


#: Most values a spec file may hold once its YAML aliases are expanded. Real specs hold
#: a few hundred; an alias "bomb" (anchors nesting anchors) holds billions.
MAX_YAML_VALUES = 100_000


def _who(path: Path) -> str:
    """``<file>`` for a study file, ``<file>: subject '<id>'`` (from its name) otherwise."""
    stem = path.name.split(".")[0]
    if stem.startswith("sub-"):
        return f"{_rel(path)}: subject '{stem[4:]}'"
    return _rel(path)


def _expanded_size(node, memo: dict) -> int:
    """Number of values a composed YAML node stands for once aliases are expanded."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a node met again while being counted counts once
        if isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo)
                                for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(v, memo) for v in node.value)
    return memo[key]


def _duplicate_keys(node, seen: set, trail: str = "") -> list[tuple[str, int, int]]:
    """``(key path, line, first line)`` of every key given twice in one mapping."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    found = []
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            if name is not None and k.tag != "tag:yaml.org,2002:merge":
                full = f"{trail}.{name}" if trail else str(name)
                ident = (k.tag, name)
                if ident in first:
                    found.append((full, k.start_mark.line + 1, first[ident]))
                else:
                    first[ident] = k.start_mark.line + 1
                found += _duplicate_keys(v, seen, full)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found += _duplicate_keys(v, seen, f"{trail}.{i}" if trail else str(i))
    return found


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    """Parse a spec file safely: UTF-8, no duplicate keys, no alias bombs.

    Returns the data and a list of problems (empty when the file was read). Nothing is
    constructed from a file that fails a check, and no exception escapes.
    """
    who = _who(path)
    try:
        if path.is_dir():
            return None, [f"{who}: is a directory, not a YAML file"]
        data = path.read_bytes()
    except OSError as err:  # a symlink loop, a dangling link, no permission ...
        reason = err.strerror or str(err)
        if not path.exists() and path.is_symlink():
            reason = f"{reason} (a symbolic link whose target is missing or loops)"
        return None, [f"{who}: cannot be read: {reason}"]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        return None, [f"{who}: not UTF-8 text: byte 0x{data[err.start]:02x} on line "
                      f"{line} (byte offset {err.start}); save the file as UTF-8"]
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            return None, [f"{who}: its YAML aliases expand to {size:.3g} values, more than "
                          f"the {MAX_YAML_VALUES} a spec may hold; write the values out "
                          "instead of nesting anchors"]
        dups = _duplicate_keys(node, set())
        if dups:
            return None, [f"{who}: key '{key}': given twice (lines {first} and {line}); "
                          "YAML would silently keep the last: remove one"
                          for key, line, first in dups]
        return loader.construct_document(node), []
    except yaml.YAMLError as err:
        return None, [f"{who}: not valid YAML: {err}"]
    finally:
        loader.dispose()


def _non_finite(value: Any, trail: str = "") -> list[tuple[str, float]]:
    """``(key path, value)`` of every NaN or infinite number in a parsed spec."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(trail or "<top level>", value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items()
                for hit in _non_finite(v, f"{trail}.{k}" if trail else str(k))]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value)
                for hit in _non_finite(v, f"{trail}.{i}" if trail else str(i))]
    return []


def _finite_problems(raw: Any, where: str) -> list[str]:
    return [f"{where}: key '{key}': {value} is not a finite number (NaN and infinity are "
            "never valid settings)" for key, value in _non_finite(raw)]


# --------------------------------------------------------------------------- meaning
#: Montage names of MNE before 1.13 -> the names MNE 1.13 gives the same positions.
MONTAGE_ALIASES = {
    "standard_1005": "colin27_1005",
    "standard_1020": "colin27_1020",
    "standard_alphabetic": "colin27_alphabetic",
    "standard_postfixed": "colin27_postfixed",
    "standard_prefixed": "colin27_prefixed",
    "standard_primed": "colin27_primed",
}

#: Extensions of recordings that brainhead reads, per modality (``source.files``).
RECORDING_EXTENSIONS = {
    "eeg": (".edf", ".bdf", ".vhdr", ".fif", ".fif.gz", ".set", ".gdf", ".csv", ".tsv"),
    "seeg": (".edf", ".bdf", ".vhdr", ".fif", ".fif.gz", ".set", ".gdf", ".csv", ".tsv"),
    "fmri": (".nii", ".nii.gz"),
}

#: Dataset adapters that hand over ready-cut epochs (tmin/tmax do not apply to them).
_EPOCHED_DATASETS = ("deap", "seed", "dreamer")


@lru_cache(maxsize=1)
def builtin_montages() -> tuple[str, ...]:
    """Names of MNE's built-in montages, read from its data folder (no MNE import)."""
    import importlib.util

    spec = importlib.util.find_spec("mne")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        folder = package / "channels" / "data" / "montages"
        names = sorted(p.name.rsplit(".", 1)[0] for p in folder.glob("*.*")
                       if p.suffix in (".elc", ".txt", ".csd", ".sfp", ".tsv"))
        if names:
            return tuple(names)
    import mne  # pragma: no cover - an MNE whose montages live elsewhere

    return tuple(mne.channels.get_builtin_montages())  # pragma: no cover


def montage_name(name: str) -> str:
    """A montage name with MNE's renamed built-ins (``standard_1005``) mapped to today's."""
    return MONTAGE_ALIASES.get(name, name)


def _is_montage_file(name: str) -> bool:
    return ("/" in name or "." in name) and montage_name(name) not in builtin_montages()


def _suggest(value: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _window_problems(params: dict, keys: tuple[str, ...], where: str,
                     span: tuple[float, float] | None, span_text: str | None = None
                     ) -> list[str]:
    """Windows must run forward and, for continuous recordings, lie inside tmin..tmax."""
    problems = []
    for key in keys:
        window = params.get(key)
        if window is None:
            continue
        t0, t1 = window
        if not t0 < t1:
            problems.append(f"{where}: key 'preprocess.{key}': the window {list(window)} s "
                            "must start before it ends")
        elif span is not None and (t0 < span[0] - 1e-9 or t1 > span[1] + 1e-9):
            inside = span_text or (f"the epochs (preprocess.tmin {span[0]:g} to "
                                   f"preprocess.tmax {span[1]:g} s)")
            problems.append(f"{where}: key 'preprocess.{key}': the window {list(window)} s "
                            f"is outside {inside}")
    return problems


def preprocess_problems(modality: str, params: dict, where: str, *,
                        continuous: bool = True, prefix: str = "preprocess") -> list[str]:
    """Meaning checks of one modality's (filled-in) preprocessing section.

    Parameters
    ----------
    modality : {"eeg", "seeg", "fmri"}
    params : dict
        The section with defaults filled in.
    where : str
        ``<file>`` or ``<file>: subject '<id>'``, the start of every message.
    continuous : bool
        Whether the recordings are cut into epochs here (``tmin``/``tmax`` apply), as
        opposed to datasets that ship epochs.
    prefix : str
        How keys are named in messages (``preprocess`` in a subject file,
        ``preprocess.<modality>`` in study.yaml).
    """
    problems: list[str] = []

    def say(key: str, text: str) -> None:
        problems.append(f"{where}: key '{prefix}.{key}': {text}")

    if modality == "fmri":
        return problems
    span = None
    keys = ("window", "baseline") + (("de_baseline",) if modality == "eeg" else ())
    fixed = modality == "eeg" and params.get("epoching") == "fixed"
    if continuous and fixed:  # windows of fixed_length s from 0, no baseline applied
        span, keys = (0.0, params["fixed_length"]), ("window", "de_baseline")
        span_text = f"the fixed-length epochs (0 to preprocess.fixed_length {span[1]:g} s)"
    elif continuous and (modality == "eeg" or params.get("epochs", True)):
        if not params["tmin"] < params["tmax"]:
            say("tmax", f"{params['tmax']:g} s is not after preprocess.tmin "
                        f"{params['tmin']:g} s")
        else:
            span = (params["tmin"], params["tmax"])
        span_text = None
    problems += [p.replace("key 'preprocess.", f"key '{prefix}.", 1)
                 for p in _window_problems(params, keys, where, span,
                                           span_text if span else None)]
    if modality == "seeg":
        lo, hi = params["high_gamma"]
        if not 0 <= lo < hi:
            say("high_gamma", f"[{lo:g}, {hi:g}] Hz must have 0 <= low < high")
        return problems
    # EEG
    for key in ("run_labels", "run_segments"):
        if params.get(key) and params.get("epoching") != "fixed":
            say(key, "applies to fixed-length windows; set preprocess.epoching: fixed (events "
                     "give each epoch its label)")
    for run, (start, stop) in (params.get("run_segments") or {}).items():
        if start is None:
            say(f"run_segments.{run}", "the start is a number of seconds (negative: from the "
                                       "end); only the stop may be null (the end)")
        elif stop is not None and (start >= 0) == (stop > 0) and not start < stop:
            say(f"run_segments.{run}", f"[{start:g}, {stop:g}] s must start before it ends")
    montage = params.get("montage")
    if isinstance(montage, str) and not _is_montage_file(montage):
        known = builtin_montages()
        if montage in MONTAGE_ALIASES and MONTAGE_ALIASES[montage] not in known:
            say("montage", f"{montage!r} is an old MNE name, and this MNE lacks its new "
                           f"name {MONTAGE_ALIASES[montage]!r} too")
        elif montage not in known and montage not in MONTAGE_ALIASES:
            say("montage", f"{montage!r} is not an MNE built-in montage (MNE names "
                           f"{len(known)}, e.g. colin27_1020, colin27_1005, biosemi64)"
                           f"{_suggest(montage, list(known) + list(MONTAGE_ALIASES))}; "
                           "a montage file needs its extension")
    event_id = params.get("event_id") or {}
    not_text = [k for k in event_id if not isinstance(k, str)]
    if not_text:
        say("event_id", f"annotation names {not_text} are numbers but annotations are "
                        f"text: quote them ({', '.join(repr(str(k)) for k in not_text)})")
    l_freq, h_freq = params.get("l_freq"), params.get("h_freq")
    if l_freq is not None and l_freq <= 0:
        say("l_freq", f"{l_freq:g} Hz must be above 0 (null for no high-pass)")
    if h_freq is not None and h_freq <= 0:
        say("h_freq", f"{h_freq:g} Hz must be above 0 (null for no low-pass)")
    if l_freq is not None and h_freq is not None and l_freq >= h_freq:
        say("l_freq", f"{l_freq:g} Hz is not below preprocess.h_freq {h_freq:g} Hz (MNE "
                      "would make a band-stop filter of it); swap them or set one to null")
    nyquist = params["resample"] / 2 if params.get("resample") else None
    if nyquist is not None and h_freq is not None and h_freq >= nyquist:
        say("h_freq", f"{h_freq:g} Hz is not below the Nyquist frequency {nyquist:g} Hz of "
                      f"preprocess.resample {params['resample']:g} Hz")
    for name, (lo, hi) in params.get("bands", {}).items():
        if not 0 <= lo < hi:
            say(f"bands.{name}", f"[{lo:g}, {hi:g}] Hz must have 0 <= low < high")
        elif nyquist is not None and hi > nyquist:
            say(f"bands.{name}", f"[{lo:g}, {hi:g}] Hz reaches above the Nyquist frequency "
                                 f"{nyquist:g} Hz of preprocess.resample "
                                 f"{params['resample']:g} Hz")
    return problems


def nyquist_problems(params: dict, sfreq: float, where: str, recording: str) -> list[str]:
    """Filters and bands of an EEG section that the recording's rate cannot carry.

    ``sfreq`` is the rate of the recording (from its header); the low-pass filter runs at
    it, the bands at ``preprocess.resample`` if set. Messages name the recording.
    """
    problems = []
    nyquist = sfreq / 2
    h_freq = params.get("h_freq")
    if h_freq is not None and h_freq >= nyquist:
        problems.append(f"{where}: key 'preprocess.h_freq': {h_freq:g} Hz is not below the "
                        f"Nyquist frequency {nyquist:g} Hz of {recording} ({sfreq:g} Hz)")
    band_rate = params.get("resample") or sfreq
    band_nyquist = band_rate / 2
    for name, (lo, hi) in params.get("bands", {}).items():
        if lo < hi and (lo >= band_nyquist - 1 or hi > band_nyquist):
            problems.append(
                f"{where}: key 'preprocess.bands.{name}': [{lo:g}, {hi:g}] Hz reaches above "
                f"the Nyquist frequency {band_nyquist:g} Hz of {recording} "
                f"({band_rate:g} Hz{' after preprocess.resample' if params.get('resample') else ''})")
    return problems


def _study_problems(config: dict, raw: dict, path: Path, root: Path, *,
                    design: bool = True) -> list[str]:
    """Meaning checks of a structurally valid study file (``design``: alignment's too)."""
    from .io.readers import check_stimulus_table

    where = _rel(path)
    problems = []
    # align
    align = config["align"]
    lo, hi, count = align["alphas_log10"]
    if not lo < hi:
        problems.append(f"{where}: key 'align.alphas_log10': [start, stop, count] = "
                        f"{align['alphas_log10']} needs start < stop")
    if count != int(count) or count < 2:
        problems.append(f"{where}: key 'align.alphas_log10': the count {count!r} (third "
                        "value) must be a whole number of at least 2")
    # features models that name files
    from .features import PACKAGED_MODELS

    for i, model in enumerate(config["features"]["models"]):
        mpath = model["path"]
        if mpath in PACKAGED_MODELS:
            continue
        target = Path(mpath)
        ok = (target.suffix == ".gguf" and target.is_file()) or (target / "config.json").is_file()
        if not ok:
            problems.append(
                f"{where}: key 'features.models.{i}.path': {mpath!r} is neither a packaged "
                f"model ({', '.join(PACKAGED_MODELS)}) nor a local model folder with "
                "config.json nor a .gguf file (paths are relative to the working directory)")
    # the design: enough distinct stimuli, repeats where a ceiling is asked for
    n_stimuli = None
    if "simulate" in config:
        n_stimuli = config["simulate"]["n_stimuli"]
        what = f"simulate.n_stimuli is {n_stimuli}"
    elif config.get("stimuli") is not None and (root / config["stimuli"]).is_file():
        table = root / config["stimuli"]
        table_problems, counts = check_stimulus_table(table)
        problems += table_problems
        if counts is not None and not table_problems:
            n_ids, n_stimuli = counts
            what = (f"the stimuli table {_rel(table)} has {n_ids} distinct stimuli"
                    if n_ids == n_stimuli else
                    f"the stimuli table {_rel(table)} has {n_ids} stimuli but only "
                    f"{n_stimuli} distinct texts")
    minimum = align["min_stimuli"]
    if design and n_stimuli is not None and n_stimuli < minimum:
        problems.append(
            f"{where}: key 'align.min_stimuli': degenerate design: {what}, fewer than "
            f"align.min_stimuli = {minimum}; layer alignment needs many distinct stimuli "
            "(a few conditions decode labels, they do not align layers): add stimuli, or "
            "lower align.min_stimuli if you know why")
    asked = raw.get("align", {}).get("ceiling")
    if design and asked in ("split_half", "ncsnr") and "simulate" in config and (
            config["simulate"]["n_repeats"] < 2):
        problems.append(
            f"{where}: key 'align.ceiling': degenerate design: a {asked} noise ceiling is "
            "asked for but simulate.n_repeats is 1, so no stimulus repeats; set "
            "simulate.n_repeats >= 2 or align.ceiling: auto")
    return problems


def _source_problems(source: dict, modality: str, where: str, root: Path) -> list[str]:
    """Recording paths of a ``files``/``bids_root`` source: exist, right kind, readable type."""
    problems = []
    if "bids_root" in source:
        target = root / source["bids_root"]
        if not target.exists():
            problems.append(f"{where}: key 'source.bids_root': file not found: {_rel(target)}")
        elif not target.is_dir():
            problems.append(f"{where}: key 'source.bids_root': {_rel(target)} is a file; "
                            "a BIDS root is a folder")
    named = [(f"source.files[{i}]", f, RECORDING_EXTENSIONS[modality])
             for i, f in enumerate(source.get("files", []))]
    named += [(f"source.events[{i}]", f, (".tsv",)) for i, f in enumerate(source.get("events", []))]
    if "mask" in source:
        named.append(("source.mask", source["mask"], (".nii", ".nii.gz")))
    if "stream" in source and not any(str(f).lower().endswith((".csv", ".tsv"))
                                      for f in source.get("files", [])):
        problems.append(f"{where}: key 'source.stream': applies to .csv/.tsv streams, and "
                        "none of source.files is one; remove it")
    for key, value, extensions in named:
        target = root / value
        name = target.name.lower()
        if not name.endswith(extensions):
            problems.append(f"{where}: key '{key}': {_rel(target)}: unsupported file type "
                            f"{''.join(Path(name).suffixes) or 'without extension'!r}; "
                            f"expected one of {', '.join(extensions)}")
        elif not target.exists():
            problems.append(f"{where}: key '{key}': file not found: {_rel(target)}")
        elif target.is_dir():
            problems.append(f"{where}: key '{key}': {_rel(target)} is a directory, not a "
                            "file")
    return problems


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
        problems += _source_problems(source, raw["modality"], where, root)
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
    if raw["modality"] == "eeg" and not problems and isinstance(source, dict) and (
            "files" in source):
        # the rate of EDF/BDF recordings is in their header: check filters and bands now
        from .io.readers import edf_sampling_rate

        merged = fill_defaults({**study["preprocess"].get("eeg", {}), **overrides},
                               schema["$defs"]["eeg"], schema)
        for file in source["files"]:
            if str(file).lower().endswith((".edf", ".bdf")):
                rate = edf_sampling_rate(root / file)
                if rate:
                    problems += nyquist_problems(merged, rate, where, _rel(root / file))
                    break
    if overrides and not problems:
        merged = fill_defaults({**study["preprocess"].get(raw["modality"], {}), **overrides},
                               schema["$defs"][raw["modality"]], schema)
        continuous = not (isinstance(source, dict)
                          and source.get("dataset") in _EPOCHED_DATASETS)
        # only what the overrides cause: the study's own problems are reported once,
        # naming study.yaml
        inherited = set(preprocess_problems(
            raw["modality"], fill_defaults(study["preprocess"].get(raw["modality"], {}),
                                           schema["$defs"][raw["modality"]], schema),
            where, continuous=continuous))
        problems += [p for p in preprocess_problems(raw["modality"], merged, where,
                                                    continuous=continuous)
                     if p not in inherited]
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
        raise SpecError([f"{_who(path)}: expected a mapping of keys, got {type(raw).__name__}"])
    sub = raw.get("subject", path.stem)
    problems = _finite_problems(raw, f"{_rel(path)}: subject '{sub}'")
    problems += _schema_problems(raw, load_schema("subject"), f"{_rel(path)}: subject '{sub}'")
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
        if key == "montage" and isinstance(value, str) and not _is_montage_file(value):
            preprocess[key] = montage_name(value)  # an MNE name, old names mapped
            continue
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


def has_stimuli(config: dict) -> bool:
    """Whether a study aligns stimuli (simulated, or a stimuli table), as opposed to a
    study without stimuli (``stimuli: null``, or a decode section and no stimuli key):
    one that only preprocesses, or only decodes labels."""
    return "simulate" in config or config.get("stimuli") is not None


def preprocess_only(config: dict) -> bool:
    """Whether a study only preprocesses: no stimuli (``stimuli: null``) and no
    ``decode`` section, so its DAG is preprocess -> report."""
    return not has_stimuli(config) and "decode" not in config


#: Decoding models that read the epochs view (raw signals), and those for two classes.
_EPOCH_MODELS = ("csp_lda", "tangent_lr", "logvar_lda", "shallow_convnet")
_BINARY_MODELS = ("csp_lda",)


def _decode_problems(config: dict, subjects: dict[str, SubjectSpec], path: Path) -> list[str]:
    """Meaning checks of the ``decode`` section (and of a study without stimuli)."""
    where = _rel(path)
    problems = []
    decode = config.get("decode")
    if decode is None:
        return problems
    present = sorted({s.modality for s in subjects.values()} & set(decode["modalities"]))
    if subjects and not present:
        have = sorted({s.modality for s in subjects.values()})
        problems.append(f"{where}: key 'decode.modalities': {decode['modalities']} has no "
                        f"subject in this study (its subjects are {', '.join(have)})")
    classes = decode["classes"]
    if classes is not None and len(classes) > 2:
        binary = [m for m in decode["models"] if m in _BINARY_MODELS]
        if binary:
            problems.append(f"{where}: key 'decode.models': {', '.join(binary)} decodes two "
                            f"classes and decode.classes names {len(classes)}; remove it or "
                            "keep two classes")
    return problems


def find_study_file(study: Path | str) -> Path:
    """``study.yaml`` of a study folder, or the file itself."""
    study = Path(study)
    path = study / "study.yaml" if study.is_dir() else study
    if not path.is_file():
        raise SpecError([f"{_rel(path)}: study file not found"])
    return path


def load_study(study: Path | str, *, design: bool = True) -> StudySpec:
    """Load a study folder (or its ``study.yaml``) and every subject in it.

    Parameters
    ----------
    study : path-like
        ``data_specs/<study>`` or ``data_specs/<study>/study.yaml``.
    design : bool
        Also refuse a design that alignment cannot score (fewer distinct stimuli than
        ``align.min_stimuli``; a ceiling asked for without repeats), as ``brainhead
        validate`` and the Snakefile do. ``False`` serves code that only preprocesses.

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
    problems = _finite_problems(raw, _rel(path))
    if problems:
        raise SpecError(problems)
    config = validate_study_config(raw, path)

    problems = _study_problems(config, raw, path, root, design=design)
    if "simulate" in config and "stimuli" in config and config["stimuli"] is None:
        problems.append(f"{_rel(path)}: key 'stimuli': null declares a study without stimuli, "
                        "but the simulate section writes a stimuli table; remove one of them")
    elif "simulate" not in config:
        if config.get("stimuli") is None:
            if "stimuli" not in config and "decode" not in config:
                problems.append(f"{_rel(path)}: key 'stimuli': required when the study is not "
                                "simulated (or add a decode section: a decoding study needs "
                                "no stimuli table; or write 'stimuli: null' for a study "
                                "without stimuli, which only preprocesses)")
            elif config["train"]["families"]:
                problems.append(f"{_rel(path)}: key 'stimuli': required when the study is not "
                                "simulated and trains on stimulus features (train.families: "
                                f"{', '.join(config['train']['families'])}); a study that only "
                                "decodes labels or preprocesses needs none: remove "
                                "train.families or add stimuli")
        elif (root / config["stimuli"]).is_dir():
            problems.append(f"{_rel(path)}: key 'stimuli': {_rel(root / config['stimuli'])} "
                            "is a directory; name the stimuli table (TSV)")
        elif not (root / config["stimuli"]).is_file():
            hint = ("; for a study without stimuli write 'stimuli: null' (YAML's null, "
                    "unquoted)" if config["stimuli"].strip().lower() in ("none", "null", "~", "")
                    else "")
            problems.append(
                f"{_rel(path)}: key 'stimuli': file not found: "
                f"{_rel(root / config['stimuli'])}{hint}"
            )
    sub_dir = root / config["subjects_dir"]
    files = sorted(sub_dir.glob("sub-*.yaml")) + sorted(sub_dir.glob("sub-*.yml"))
    if not files:
        problems.append(
            f"{_rel(path)}: key 'subjects_dir': no sub-*.yaml files in {_rel(sub_dir)}"
        )
    subjects: dict[str, SubjectSpec] = {}
    declared: dict[str, Path] = {}
    declared_sources: list[tuple[Any, Any]] = []  # (modality, source) of every file
    for file in files:
        raw_sub, _ = _read_yaml(file)
        if isinstance(raw_sub, dict):
            declared_sources.append((raw_sub.get("modality"), raw_sub.get("source")))
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
    for modality in MODALITIES:  # windows vs tmin/tmax, where a subject cuts epochs
        mine = [source for mod, source in declared_sources if mod == modality]
        if modality in raw.get("preprocess", {}) and mine:
            continuous = any(not (isinstance(source, dict)
                                  and source.get("dataset") in _EPOCHED_DATASETS)
                             for source in mine)
            problems += [p for p in preprocess_problems(
                modality, config["preprocess"][modality], _rel(path), continuous=continuous,
                prefix=f"preprocess.{modality}") if p not in problems]
    problems += _train_problems(config, subjects, path)
    problems += _decode_problems(config, subjects, path)
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
