"""Progress of long steps: a bar on the terminal, and lines in the step's log."""

from __future__ import annotations

import logging

from brainhead._logging import log_to, progress


def test_progress_logs_start_quarters_and_end(caplog, monkeypatch):
    monkeypatch.setenv("BRAINHEAD_NO_PROGRESS", "1")
    with caplog.at_level(logging.INFO, logger="brainhead"):
        assert list(progress(range(8), desc="sub-07: runs")) == list(range(8))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "sub-07: runs: started (8 steps)"
    assert [line.split(" done")[0] for line in lines[1:-1]] == [
        "sub-07: runs: 2/8", "sub-07: runs: 4/8", "sub-07: runs: 6/8"]
    assert lines[-1].startswith("sub-07: runs: 8 steps done in ")


def test_progress_of_a_generator_and_the_rule_log(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINHEAD_NO_PROGRESS", "1")
    log = tmp_path / "logs" / "step.log"
    with log_to(log):
        assert sum(progress((i for i in range(5)), desc="sub-01: batches")) == 10
    text = log.read_text()
    assert "sub-01: batches: started (? steps)" in text
    assert "sub-01: batches: 5 steps done in " in text
