"""`brainhead summary results/<study>`: best-layer table and modality summary as text."""

from __future__ import annotations

import json

import pytest
from test_report import TRUTH, _best, _summary

from brainhead.cli import main
from brainhead.summary import SummaryError, format_summary


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results" / "toy"
    (folder / "align").mkdir(parents=True)
    _summary().to_csv(folder / "align" / "summary.tsv", sep="\t", index=False)
    _best().to_csv(folder / "align" / "best_layers.tsv", sep="\t", index=False)
    return folder


def _rows(text: str, header: str) -> list[list[str]]:
    block = text.split(header, 1)[1].strip().split("\n\n")[0].splitlines()
    return [line.split() for line in block]


def test_summary_tables(results):
    text = format_summary(results)
    assert text.splitlines()[0].endswith("toy: 2 subjects, model m")
    modality = _rows(text, "Per modality")
    assert modality[1][:3] == ["modality", "subjects", "regions"]
    body = {row[0]: row for row in modality if row[0] in ("eeg", "fmri")}
    # eeg: best layers 2 and 1 with r 0.60 and 0.70 -> median 0.650
    assert body["eeg"][1:4] == ["1", "2", "0.650"]
    best = _rows(text, "Best layer per subject and region:")
    assert best[0][:4] == ["subject", "modality", "region", "best"]
    rows = {(r[0], r[2]): r for r in best[1:]}
    assert rows[("02", "anterior")][3:6] == ["3", "0.300", "0.400"]
    assert "planted" not in text  # no truth.json: nothing about planted layers


def test_summary_with_truth_marks_recovery(results):
    (results / "truth.json").write_text(json.dumps(TRUTH))
    text = format_summary(results)
    best = _rows(text, "Best layer per subject and region:")
    assert best[0][-2:] == ["planted", "recovered"]
    rows = {(r[0], r[2]): r for r in best[1:]}
    assert rows[("02", "anterior")][-2:] == ["0", "no"]
    assert rows[("01", "anterior")][-2:] == ["2", "yes"]
    modality = {r[0]: r for r in _rows(text, "Per modality")[1:] if r[0] in ("eeg", "fmri")}
    assert modality["eeg"][-1] == "2/2" and modality["fmri"][-1] == "1/2"


def test_summary_cli_and_errors(results, tmp_path, capsys):
    assert main(["summary", str(results)]) == 0
    assert "Best layer per subject and region:" in capsys.readouterr().out
    (results / "align" / "best_layers.tsv").unlink()
    with pytest.raises(SummaryError, match=r"best_layers\.tsv: not found; the workflow's "
                                           r"'summary' rule writes it"):
        format_summary(results)
    assert main(["summary", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: results folder not found" in capsys.readouterr().err


def _scores():
    """A decode/scores.tsv: two subjects x two folds, their pooled rows and the pooled
    row over subjects (fold "all"), for one protocol and model."""
    import pandas as pd

    rows = []
    for subject, fold, bacc, p in (("01", "0", 0.9, 0.01), ("01", "1", 0.7, 0.2),
                                   ("01", "all", 0.8, 0.01), ("02", "0", 0.5, 0.6),
                                   ("02", "1", 0.6, 0.3), ("02", "all", 0.55, 0.2),
                                   ("all", "all", 0.675, 0.004)):
        rows.append({"modality": "eeg", "protocol": "WithinSession", "subject": subject,
                     "fold": fold, "model": "csp_lda", "balanced_accuracy": bacc,
                     "chance_balanced": 0.5, "p_value": p})
    # leave-one-subject-out: one fold per subject, no pooled row over subjects here
    for subject, bacc, p in (("01", 0.8, 0.01), ("02", 0.6, 0.04)):
        rows.append({"modality": "eeg", "protocol": "CrossSubject", "subject": subject,
                     "fold": "0", "model": "csp_lda", "balanced_accuracy": bacc,
                     "chance_balanced": 0.5, "p_value": p})
    return pd.DataFrame(rows)


def test_summary_of_a_decoding_study(tmp_path, capsys):
    folder = tmp_path / "results" / "bci"
    (folder / "decode").mkdir(parents=True)
    _scores().to_csv(folder / "decode" / "scores.tsv", sep="\t", index=False)
    text = format_summary(folder)
    assert text.splitlines()[0].endswith("bci: decoding only (the study has no stimuli)")
    table = {(r[1], r[2]): r for r in _rows(text, "label permutations):")[1:]}
    # pooled over folds and subjects: the subject "all" row; 1 of 2 subjects p < 0.05
    assert table[("WithinSession", "csp_lda")][3:] == ["0.675", "0.500", "0.004", "1/2"]
    # no pooled row: the subjects' mean and no p; both subjects below 0.05
    assert table[("CrossSubject", "csp_lda")][3:] == ["0.700", "0.500", "-", "2/2"]
    assert main(["summary", str(folder)]) == 0
    assert "Best layer" not in capsys.readouterr().out
    # with alignment results too, both parts
    (folder / "align").mkdir()
    from test_report import _best, _summary

    _summary().to_csv(folder / "align" / "summary.tsv", sep="\t", index=False)
    _best().to_csv(folder / "align" / "best_layers.tsv", sep="\t", index=False)
    text = format_summary(folder)
    assert "Best layer per subject and region:" in text and "label permutations" in text
    # a scores table without a column it needs
    _scores().drop(columns="p_value").to_csv(folder / "decode" / "scores.tsv", sep="\t",
                                             index=False)
    with pytest.raises(SummaryError, match=r"scores\.tsv: missing columns \['p_value'\]"):
        format_summary(folder)


def test_summary_of_a_preprocessing_only_study(tmp_path, capsys):
    folder = tmp_path / "results" / "rest"
    folder.mkdir(parents=True)
    with pytest.raises(SummaryError, match="no alignment .* or response tables"):
        format_summary(folder)
    for s in ("01", "02"):
        (folder / f"sub-{s}").mkdir()
        (folder / f"sub-{s}" / "responses.h5").write_bytes(b"")
    assert main(["summary", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "2 response tables" in out and "preprocessed only" in out
