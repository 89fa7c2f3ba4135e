"""Dataset adapters: public datasets read from their documented on-disk layout.

A subject file names an adapter in its ``source``::

    source:
      dataset: eegmmidb        # one of brainhead.io.datasets.ADAPTERS
      root: ../../data/eegmmidb  # relative to study.yaml
      subject: 1                # dataset-specific options, checked by the adapter

Each adapter declares its options (type, default, description) so that a wrong or
unknown key is reported with the file, the subject and the key before anything runs,
and returns data in one of the forms that :mod:`brainhead.preprocess` consumes:

- a list of :class:`brainhead.preprocess._common.Run` (continuous recordings with
  annotations ``<condition>[/<stim_id>]``), preprocessed like any EEG/iEEG file;
- an :class:`mne.BaseEpochs` with metadata columns ``condition``, ``stim_id`` and
  ``group`` (datasets that ship already-epoched trials: DEAP, SEED, DREAMER);
- :class:`FmriRuns` (BOLD images with their events, confounds and mask);
- a :class:`brainhead.io.table.ResponseTable` (datasets that ship single-trial
  responses, such as NSD-style betas).

Adapters never unpickle files: see each adapter's documentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["ADAPTERS", "Adapter", "FmriRun", "FmriRuns", "Option", "check_source",
           "load_dataset", "register"]


@dataclass(frozen=True)
class Option:
    """One option of a dataset adapter.

    Parameters
    ----------
    types : tuple of type
        Accepted Python types of the YAML value.
    default : object
        Value used when the key is absent (ignored when ``required``).
    description : str
        Shown in error messages and in the docs.
    required : bool
        The subject file must give it.
    choices : tuple | None
        Allowed values, if restricted.
    path : bool
        The value is a path relative to ``study.yaml`` (made absolute at load time and
        checked to exist).
    """

    types: tuple[type, ...]
    default: Any = None
    description: str = ""
    required: bool = False
    choices: tuple | None = None
    path: bool = False


@dataclass(frozen=True)
class Adapter:
    """A registered dataset adapter."""

    name: str
    modalities: tuple[str, ...]
    options: dict[str, Option]
    load: Callable[..., Any]
    description: str = ""


@dataclass
class FmriRun:
    """One BOLD run of a subject: image, events and optional confounds."""

    label: str
    bold: Path | Any  # path or nibabel image
    events: Any  # pandas.DataFrame with onset, duration, trial_type (and stim_id)
    confounds: Any = None  # pandas.DataFrame, one row per volume, or None
    t_r: float | None = None
    path: Path | None = None


@dataclass
class FmriRuns:
    """The BOLD runs of a subject with its mask and optional region labels."""

    runs: list[FmriRun]
    mask: Path | Any | None = None
    regions: Path | Any | None = None
    info: dict = field(default_factory=dict)


#: Registered adapters by name (filled when the adapter modules are imported).
ADAPTERS: dict[str, Adapter] = {}


def register(name: str, *, modalities: tuple[str, ...], options: dict[str, Option],
             description: str = "") -> Callable:
    """Decorator registering ``load(spec, root, options) -> data`` as adapter ``name``.

    ``load`` receives the :class:`~brainhead.specs.SubjectSpec`, the dataset root (an
    absolute :class:`~pathlib.Path`) and the options with defaults filled in.
    """

    def decorator(func: Callable) -> Callable:
        if name in ADAPTERS:
            raise ValueError(f"dataset adapter {name!r} is registered twice")
        ADAPTERS[name] = Adapter(name, tuple(modalities), dict(options), func, description)
        return func

    return decorator


def _load_adapters() -> None:
    # Import the adapter modules for their registration side effect.
    from importlib import import_module

    for module in _ADAPTER_MODULES:
        import_module(f"{__name__}.{module}")


#: Modules holding adapters; each registers its adapters on import.
_ADAPTER_MODULES: tuple[str, ...] = ("eeg", "fmri")


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def check_source(source: dict, modality: str, where: str, root: Path) -> list[str]:
    """Problems with a ``source: {dataset: ...}`` mapping, each naming ``where`` and the key.

    Parameters
    ----------
    source : dict
        The subject file's ``source`` mapping (paths still relative to ``root``).
    modality : str
        The subject's modality.
    where : str
        ``"<file>: subject '<id>'"``, the prefix of every message.
    root : pathlib.Path
        Folder of ``study.yaml``; relative paths are resolved against it.
    """
    _load_adapters()
    name = source.get("dataset")
    if name not in ADAPTERS:
        return [f"{where}: key 'source.dataset': unknown dataset {name!r} "
                f"(known: {', '.join(sorted(ADAPTERS)) or 'none'})"]
    adapter = ADAPTERS[name]
    problems = []
    if modality not in adapter.modalities:
        problems.append(f"{where}: key 'modality': dataset {name!r} holds "
                        f"{'/'.join(adapter.modalities)} recordings, not {modality!r}")
    if not (root / source["root"]).exists():
        problems.append(f"{where}: key 'source.root': folder not found: "
                        f"{_rel(root / source['root'])}")
    allowed = {"dataset", "root", *adapter.options}
    for key in source:
        if key not in allowed:
            problems.append(f"{where}: unknown key 'source.{key}' for dataset {name!r} "
                            f"(allowed here: {', '.join(sorted(allowed))})")
    for key, opt in adapter.options.items():
        if key not in source:
            if opt.required:
                problems.append(f"{where}: key 'source.{key}': required by dataset "
                                f"{name!r} ({opt.description})")
            continue
        value = source[key]
        if not isinstance(value, opt.types) or (isinstance(value, bool)
                                                and bool not in opt.types):
            problems.append(f"{where}: key 'source.{key}': expected "
                            f"{_type_names(opt.types)}, got {value!r}")
        elif opt.choices is not None and value not in opt.choices:
            problems.append(f"{where}: key 'source.{key}': {value!r} is not one of "
                            f"{list(opt.choices)}")
        elif opt.path and not (root / value).exists():
            problems.append(f"{where}: key 'source.{key}': file not found: "
                            f"{_rel(root / value)}")
    return problems


def resolve_source(source: dict, root: Path) -> dict:
    """``source`` with defaults filled and paths (``root`` and path options) absolute."""
    _load_adapters()
    adapter = ADAPTERS[source["dataset"]]
    out = {key: opt.default for key, opt in adapter.options.items() if not opt.required}
    out.update(source)
    out["root"] = str((root / source["root"]).resolve())
    for key, opt in adapter.options.items():
        if opt.path and out.get(key) is not None:
            out[key] = str((root / out[key]).resolve())
    return out


def load_dataset(spec) -> Any:
    """Load a subject's recordings through its dataset adapter.

    Parameters
    ----------
    spec : brainhead.specs.SubjectSpec
        A subject whose ``source`` names a ``dataset`` (paths already absolute).

    Returns
    -------
    data : list of Run | mne.BaseEpochs | FmriRuns | ResponseTable
        See the module docstring.
    """
    _load_adapters()
    adapter = ADAPTERS[spec.source["dataset"]]
    options = {k: v for k, v in spec.source.items() if k not in ("dataset", "root")}
    return adapter.load(spec, Path(spec.source["root"]), options)


def _rel(path: Path | str) -> str:
    import os

    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)
