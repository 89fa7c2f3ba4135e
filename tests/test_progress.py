"""Progress of long steps: a bar on the terminal, and lines in the step's log."""

from __future__ import annotations

import logging

from brainhead._logging import ProgressBar, log_to, progress


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


def test_progress_bar_advanced_by_callbacks_names_the_step(caplog, monkeypatch):
    monkeypatch.setenv("BRAINHEAD_NO_PROGRESS", "1")
    with caplog.at_level(logging.INFO, logger="brainhead"):
        with ProgressBar("sub-02 trained", total=4) as bar:
            for fold in range(4):
                bar.advance(what=f"layer 0: ridge fold {fold + 1}/4")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "sub-02 trained: started (4 steps)"
    assert lines[1].startswith("sub-02 trained: 1/4 done (")
    assert lines[1].endswith("), layer 0: ridge fold 1/4")
    assert lines[-1].startswith("sub-02 trained: 4 steps done in ")


def test_align_logs_each_ridge_fold_and_the_resampling(caplog, monkeypatch):
    """The align step's bar counts ridge folds and each layer's resampling."""
    import numpy as np

    from brainhead.align.scores import score_responses

    monkeypatch.setenv("BRAINHEAD_NO_PROGRESS", "1")
    rng = np.random.default_rng(0)
    stim = np.array([f"s{i:02d}" for i in range(24)])
    F = rng.standard_normal((2, 24, 5))
    Y = F[1] @ rng.standard_normal((5, 6)) + rng.standard_normal((24, 6))
    params = {"n_permutations": 20, "n_bootstraps": 20, "ci": 0.95,
              "alphas_log10": [-1, 3, 5], "n_inner_splits": 3, "min_ceiling": 0.1}
    with caplog.at_level(logging.INFO, logger="brainhead"):
        score_responses(Y, stim, stim, np.array(["a"] * 6), {"trained": F},
                        {s: i for i, s in enumerate(stim)}, params, seed=0, label="sub-03")
    lines = [r.getMessage() for r in caplog.records if "sub-03 trained" in r.getMessage()]
    total = int(lines[0].split("(")[1].split()[0])
    assert total % 2 == 0 and total >= 2 * 3  # 2 layers x (>= 2 folds + resampling)
    assert any("ridge fold" in line for line in lines[1:-1])
    assert lines[-1].startswith(f"sub-03 trained: {total} steps done in ")
