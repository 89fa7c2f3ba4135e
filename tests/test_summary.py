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
