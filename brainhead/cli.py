"""The ``brainhead`` command: validate a study, simulate the demo, inspect artifacts."""

from __future__ import annotations

import argparse
import json
import sys


def _load_study(path):
    """The study at ``path``, or None after printing every problem of its spec."""
    from .specs import SpecError, load_study

    try:
        return load_study(path)
    except SpecError as err:
        print(f"{len(err.problems)} problem(s) found:", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def _cmd_validate(args) -> int:
    study = _load_study(args.study)
    if study is None:
        return 1
    counts = {m: len(study.by_modality(m)) for m in ("eeg", "seeg", "fmri")}
    print(f"study '{study.name}' is valid: {len(study.subjects)} subjects "
          + ", ".join(f"{n} {m}" for m, n in counts.items() if n))
    return 0


def _cmd_simulate(args) -> int:
    from .simulate import simulate_study
    from .specs import load_study

    study = load_study(args.study)
    out = args.out or f"results/{study.name}"
    truth = simulate_study(study, out)
    print(f"simulated {len(truth['subjects'])} subjects into {out}")
    return 0


def _inspect_problem(path: str) -> str | None:
    """Why ``path`` cannot be inspected (missing, a folder, not HDF5), or None."""
    from pathlib import Path

    target = Path(path)
    if not target.exists():
        return f"{path}: file not found"
    if target.is_dir():
        return f"{path}: is a directory; name an HDF5 artifact (responses.h5, features/*.h5)"
    try:
        with open(target, "rb") as fid:
            head = fid.read(8)
    except OSError as err:
        return f"{path}: cannot be read: {err.strerror or err}"
    if head != b"\x89HDF\r\n\x1a\n":
        return (f"{path}: not an HDF5 file (brainhead artifacts are HDF5: responses.h5, "
                "features/*.h5, align/*.h5)")
    return None


def _cmd_inspect(args) -> int:
    from .io.store import read_attrs, read_responses

    problem = _inspect_problem(args.path)
    if problem is None:
        try:
            attrs = read_attrs(args.path)
        except OSError as err:  # a damaged HDF5 file
            problem = f"{args.path}: cannot be read as HDF5: {err}"
    if problem is not None:
        print(f"brainhead inspect: {problem}", file=sys.stderr)
        return 1
    if attrs.get("brainhead_step") == "preprocess":
        table = read_responses(args.path)
        print(f"sub-{table.subject} ({table.modality}): {len(table.targets)} targets")
        for name, view in table.views.items():
            print(f"  view {name}: X{list(view.X.shape)}")
        print(f"  info: {json.dumps(table.info)}")
    for key in ("brainhead_step", "params_hash", "git_rev"):
        print(f"  {key}: {attrs.get(key)}")
    return 0


def _cmd_train(args) -> int:
    from .train.jobs import train_family

    study = _load_study(args.study)
    if study is None:
        return 1
    summary = train_family(args.family, study, args.modality, args.responses, args.features,
                           args.out, threads=args.threads)
    print(f"trained {args.family} on {len(summary['subjects'])} {args.modality} subjects "
          f"({len(summary['runs'])} runs, {summary['seconds']:.0f} s) into {args.out}")
    return 0


def _cmd_init(args) -> int:
    from .scaffold import ScaffoldError, init_study

    try:
        out = init_study(args.study_dir, args.bids, name=args.name)
    except ScaffoldError as err:
        print(f"cannot scaffold a study from {args.bids} ({len(err.problems)} problem(s)):",
              file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    subjects = out["subjects"]
    print(f"wrote {out['study']} with {len(subjects)} subject file(s) and "
          f"{out['n_stimuli']} stimuli")
    for sub in subjects:
        print(f"  sub-{sub.subject}: {sub.modality}, task {sub.task}, "
              f"{len(sub.runs) or 1} run(s), {len(sub.bad_channels)} bad channel(s)")
    if out["n_without_text"]:
        print(f"  {out['n_without_text']} stimuli have no text in the events files: edit "
              "stimuli.tsv")
    study = _load_study(args.study_dir)
    if study is None:
        return 1
    print(f"brainhead validate: study '{study.name}' is valid; run it with "
          f"snakemake --cores N --configfile {out['study']}")
    return 0


def _cmd_summary(args) -> int:
    from .summary import SummaryError, format_summary

    try:
        print(format_summary(args.results))
    except SummaryError as err:
        print(f"brainhead summary: {err}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``brainhead`` command."""
    parser = argparse.ArgumentParser(
        prog="brainhead",
        description="Connect brains and models: validate studies, simulate the demo, "
                    "inspect artifacts. The pipeline itself runs with `snakemake --cores N`.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a study folder and all its subject files")
    p.add_argument("study", help="data_specs/<study> or its study.yaml")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("simulate", help="write a simulated study's data (BIDS) and truth")
    p.add_argument("study", help="data_specs/<study> with a 'simulate' section")
    p.add_argument("--out", help="output folder (default results/<study name>)")
    p.set_defaults(func=_cmd_simulate)
    p = sub.add_parser("init", help="scaffold a study folder (study.yaml, subjects/, "
                                    "stimuli.tsv) from a BIDS dataset")
    p.add_argument("study_dir", help="the new study folder, e.g. data_specs/<study>")
    p.add_argument("--bids", required=True, help="root of the BIDS dataset")
    p.add_argument("--name", help="study name (default: the folder's name)")
    p.set_defaults(func=_cmd_init)
    p = sub.add_parser("summary", help="print a finished run's results: the best-layer "
                                       "table, the modality summary and the decoding table")
    p.add_argument("results", help="results/<study>")
    p.set_defaults(func=_cmd_summary)
    p = sub.add_parser("inspect", help="print the content and provenance of an artifact")
    p.add_argument("path", help="an HDF5 artifact (responses.h5, features/*.h5, align/*.h5)")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("train", help="train one model family on one modality's subjects "
                                     "(what the workflow's train rules run)")
    p.add_argument("family", help="model family, e.g. voxel_xattn")
    p.add_argument("--study", required=True, help="data_specs/<study> or its study.yaml")
    p.add_argument("--modality", required=True, choices=["eeg", "seeg", "fmri"])
    p.add_argument("--features", required=True, help="results/<study>/features/<model>.h5")
    p.add_argument("--out", required=True, help="output folder of this family and modality")
    p.add_argument("--threads", type=int, default=None, help="cap torch/BLAS threads")
    p.add_argument("responses", nargs="+", help="responses.h5 of every subject to train on")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brainhead`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
