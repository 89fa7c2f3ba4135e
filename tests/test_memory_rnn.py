"""Memory RNN with learnable timescales: model, tasks, curricula, training runs.

- the model: shapes, tau >= 1 whatever the optimiser does, no self-connections;
- N-parity and N-DMS labels against brute force; seeded batches;
- the single- and multi-head curricula's advance rule on scripted accuracies;
- network timescales recovered from a process of known autocorrelation;
- curriculum training through ``fit_run``: the same seed gives the same stages, metrics
  and timescales bit for bit, and a curriculum killed with SIGKILL in the middle of a
  stage resumes from that stage's last checkpoint and ends where an uninterrupted one
  ends. The killed process runs this file (``python tests/test_memory_rnn.py ROOT``),
  with the process helpers of ``test_train_resume``; the rerun is in the test process.
"""

from __future__ import annotations

import json
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from _child import child_process

pytest.importorskip("torch")
pytest.importorskip("lightning")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A curriculum small enough for a test: a few seconds on one thread.
SMALL = {"n_units": 32, "total_epochs": 8, "steps_per_epoch": 25, "batch_size": 32,
         "val_batches": 2, "max_extra": 4, "n_max": 6}
HOLD = "hold.json"


def _cfg(seed=0):
    from brainhead.train.trainer import TrainConfig

    return TrainConfig(device="cpu", seed=seed, progress=False, lr=1e-2, weight_decay=0.0)


# ---------------------------------------------------------------------------- the model
def test_shapes_heads_and_errors():
    import torch

    from encoders.memory_rnn import MemoryRNN

    net = MemoryRNN(3, 16, heads={"a": 2, "b": 5})
    x = torch.randn(4, 7, 3)
    out = net(x)
    assert set(out) == {"a", "b"}
    assert out["a"].shape == (4, 7, 2) and out["b"].shape == (4, 7, 5)
    last = net(x, ["b"], last=True)
    assert list(last) == ["b"] and torch.allclose(last["b"], out["b"][:, -1])
    assert net.states(x).shape == (4, 7, 16)
    net.add_head("c")
    assert net(x)["c"].shape == (4, 7, 2)
    with pytest.raises(ValueError, match="exists already"):
        net.add_head("a")
    with pytest.raises(ValueError, match=r"x must be \(batch, time, 3\)"):
        net(torch.randn(4, 7, 2))
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        MemoryRNN(3, 16, nonlinearity="sigmoidish")
    with pytest.raises(ValueError, match="tau must be > 1"):
        MemoryRNN(3, 16, tau_init=1.0)
    assert torch.allclose(MemoryRNN(3, 16, tau_init=4.0).tau, torch.full((16,), 4.0))


def test_update_is_the_leaky_equation():
    """One step by hand: h1 = f((1 - 1/tau) h0 + (W h0 + W_in x + b) / tau)."""
    import torch

    from encoders.memory_rnn import MemoryRNN

    torch.manual_seed(0)
    net = MemoryRNN(2, 5, nonlinearity="tanh", tau_init=3.0)
    with torch.no_grad():
        net.tau_raw.add_(torch.linspace(-1, 1, 5))
    h0, x = torch.randn(2, 5), torch.randn(2, 1, 2)
    tau = net.tau
    W = net.W_rec * (1 - torch.eye(5))
    want = torch.tanh((1 - 1 / tau) * h0 + (h0 @ W.T + net.input(x[:, 0])) / tau)
    assert torch.allclose(net.states(x, h0)[:, 0], want, atol=1e-6)


def test_tau_stays_at_least_one_under_any_steps():
    """An optimiser that pushes every tau down as hard as it can: tau never goes below 1."""
    import torch

    from encoders.memory_rnn import MemoryRNN

    net = MemoryRNN(2, 8, tau_init=1.5)
    opt = torch.optim.SGD([net.tau_raw], lr=100.0)
    for _ in range(30):
        opt.zero_grad()
        net.tau.sum().backward()
        opt.step()
        assert bool((net.tau >= 1).all()), net.tau
    assert float(net.tau.detach().max()) < 1.01  # it did move all the way down
    # and up, when the loss asks for it: the parametrisation has a gradient there
    net = MemoryRNN(2, 8, tau_init=1.5)
    opt = torch.optim.SGD([net.tau_raw], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        (-net.tau.sum()).backward()
        opt.step()
    assert float(net.tau.detach().min()) > 2.0


def test_no_self_connections_after_training_steps():
    import torch
    import torch.nn.functional as F

    from encoders.memory_rnn import MemoryRNN

    torch.manual_seed(0)
    net = MemoryRNN(2, 12)
    assert torch.count_nonzero(torch.diagonal(net.W_rec)) == 0
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    off = ~torch.eye(12, dtype=torch.bool)
    before = net.W_rec.detach().clone()
    for _ in range(10):
        opt.zero_grad()
        out = net(torch.randn(8, 6, 2), last=True)["0"]
        F.cross_entropy(out, torch.randint(0, 2, (8,))).backward()
        assert torch.count_nonzero(torch.diagonal(net.W_rec.grad)) == 0
        opt.step()
    assert torch.count_nonzero(torch.diagonal(net.W_rec)) == 0
    assert torch.count_nonzero(torch.diagonal(net.recurrent_weights)) == 0
    assert not torch.equal(net.W_rec[off], before[off])  # the rest did train


# ---------------------------------------------------------------------------- tasks
def _brute_parity(seq, n):
    total = 0
    for bit in seq[len(seq) - n:]:
        total ^= int(bit)
    return total


def _brute_dms(seq, n):
    return int(seq[-1] == seq[-1 - n])


@pytest.mark.parametrize("task", ["parity", "dms"])
def test_labels_match_brute_force(task):
    from brainhead.train.tasks import TASKS, task_batch

    brute = {"parity": _brute_parity, "dms": _brute_dms}[task]
    rng = np.random.default_rng(0)
    for depths in ([1], [2, 3, 5], [7]):
        x, labels = task_batch(task, depths, 64, rng, max_extra=6)
        assert x.shape[1] >= max(depths) + 1 and x.shape[1] <= max(depths) + 7
        assert set(np.unique(x)) <= {0, 1}
        for n in depths:
            want = [brute(list(seq), n) for seq in x]
            assert labels[n].tolist() == want, (task, n)
            assert labels[n].tolist() == TASKS[task](x, n).tolist()
            assert 0.2 < labels[n].mean() < 0.8  # both classes occur
    # every short sequence at once, exhaustively
    for n, length in product([1, 2, 3], [4, 5]):
        x = np.array(list(product([0, 1], repeat=length)))
        assert TASKS[task](x, n).tolist() == [brute(list(s), n) for s in x]
    with pytest.raises(ValueError, match="cannot hold"):
        TASKS[task](np.zeros((2, 2), int), 3)


def test_parity_bias_is_drawn_per_sequence_and_batches_are_seeded():
    from brainhead.train.tasks import task_batch

    x, _ = task_batch("parity", [2], 400, np.random.default_rng(1), max_extra=0)
    x = np.concatenate([x, task_batch("parity", [60], 400, np.random.default_rng(1))[0]], 1)
    rates = x.mean(1)
    assert rates.std() > 0.2  # uniform biases: sd 0.29; a shared bias of 0.5 gives ~0.06
    a = task_batch("dms", [3], 16, np.random.default_rng(5))
    b = task_batch("dms", [3], 16, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1][3], b[1][3])
    assert abs(task_batch("dms", [60], 400, np.random.default_rng(2))[0].mean() - 0.5) < 0.01


# ---------------------------------------------------------------------------- curricula
def test_single_head_curriculum_on_scripted_accuracies():
    from brainhead.train.tasks import Curriculum

    c = Curriculum("single", n_start=2, threshold=0.9, n_max=4)
    assert c.heads == {"n": 2}
    assert not c.advance({"n": 0.89}) and c.n == 2
    assert c.advance({"n": 0.9}) and c.heads == {"n": 3}  # one head, now asked N = 3
    assert c.advance({"n": 0.95}) and c.heads == {"n": 4} and c.finished
    assert not c.advance({"n": 1.0}) and c.n == 4  # n_max reached
    with pytest.raises(KeyError, match="no accuracy"):
        c.ready({"n2": 1.0})


def test_multi_head_curriculum_on_scripted_accuracies():
    from brainhead.train.tasks import Curriculum

    c = Curriculum("multi", n_start=2, threshold=0.9)
    assert c.heads == {"n2": 2} and c.newest == "n2"
    assert c.advance({"n2": 0.95}) and c.heads == {"n2": 2, "n3": 3}
    # the newest head below the threshold holds N, however good the mean is
    assert not c.advance({"n2": 1.0, "n3": 0.89})
    # the newest above but the mean below (an old head forgotten) holds N too
    c.advance({"n2": 1.0, "n3": 1.0})
    assert c.heads == {"n2": 2, "n3": 3, "n4": 4}
    assert not c.advance({"n2": 0.6, "n3": 0.95, "n4": 0.95}) and c.n == 4
    assert c.advance({"n2": 0.9, "n3": 0.9, "n4": 0.9}) and c.n == 5  # >= threshold
    with pytest.raises(ValueError, match="curriculum must be one of"):
        Curriculum("double")


# ---------------------------------------------------------------------------- timescales
@pytest.mark.parametrize("tau", [1.5, 4.0, 12.0])
def test_network_timescale_of_a_known_process(tau):
    """AR(1) units with autocorrelation exp(-k / tau): the estimate is tau (+-10%)."""
    from brainhead.train.tasks import network_timescales

    rng = np.random.default_rng(0)
    a = np.exp(-1 / tau)
    b, t, h = 40, 600, 3
    z = np.zeros((b, t, h))
    z[:, 0] = rng.standard_normal((b, h))
    noise = rng.standard_normal((b, t, h)) * np.sqrt(1 - a * a)
    for i in range(1, t):
        z[:, i] = a * z[:, i - 1] + noise[:, i]
    est = network_timescales(np.concatenate([z, np.ones((b, t, 1))], 2), max_lag=80)
    assert np.isnan(est[-1])  # a constant unit has no timescale
    assert np.allclose(est[:h], tau, rtol=0.1), est
    # censored at max_lag when the autocorrelation never falls to 1/e
    assert np.allclose(network_timescales(z, max_lag=max(1, int(tau / 3))), max(1, int(tau / 3)))


def test_memory_curve_sees_a_shift_register_that_unit_timescales_miss():
    """Units holding delayed copies of white input (x_t, ..., x_{t-4}): each unit's
    autocorrelation is white (timescale < 1 step), the population remembers 4 steps."""
    from brainhead.train.tasks import memory_curve, network_timescales

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (40, 300))
    h = np.stack([np.roll(x, k, axis=1) for k in range(5)], -1).astype(float)
    h[:, :5] = 0.0  # no wrapped-around values
    acc = memory_curve(h + 0.01 * rng.standard_normal(h.shape), x, 8)
    assert (acc[:5] > 0.99).all() and (np.abs(acc[5:] - 0.5) < 0.05).all(), acc
    assert (network_timescales(h[:, 5:], max_lag=20) < 1).all()
    with pytest.raises(ValueError, match="longer than max_lag"):
        memory_curve(h, x, 400)


# ---------------------------------------------------------------------------- training
def _comparable(result):
    stages = [{k: v for k, v in s.items() if k != "reused"} for s in result["stages"]]
    return stages, result["units"], result["final_accuracy"], result["n_reached"]


def _metrics(root: Path) -> dict:
    return {p.parent.name: p.read_bytes() for p in sorted(root.rglob("metrics.csv"))}


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    import torch

    from brainhead.train.memory import run_curriculum

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("multi")
        return root, run_curriculum("parity", "multi", root, SMALL, _cfg())
    finally:
        torch.set_num_threads(threads)


def test_curriculum_trains_advances_and_records_timescales(multi_run):
    import pandas as pd

    root, res = multi_run
    stages = res["stages"]
    assert res["n_reached"] >= 3, stages  # parity 2 and 3 are learnt in a few epochs
    assert [s["N"] for s in stages] == list(range(2, 2 + len(stages)))
    assert sum(s["epochs"] for s in stages) <= SMALL["total_epochs"]
    assert res["steps"] == sum(s["steps"] for s in stages)
    assert all(s["learned"] for s in stages[:-1])
    # multi-head: the final network answers every depth it passed, with a head each
    assert set(res["final_accuracy"]) == {f"n{n}" for n in range(2, stages[-1]["N"] + 1)}
    assert res["final_accuracy"]["n2"] > 0.9
    units = pd.DataFrame(res["units"])
    assert len(units) == len(stages) * SMALL["n_units"]
    assert (units["tau"] >= 1).all() and units["net_timescale"].notna().any()
    # the network that learnt parity of 3 holds its inputs for 2 steps at least
    learnt = [s for s in stages if s["learned"]]
    assert all(s["memory_span"] >= s["N"] - 1 for s in learnt), stages
    for path in root.rglob("metrics.csv"):
        m = pd.read_csv(path)
        assert {"tau_mean", "tau_min", "tau_max", "val_acc", "val_score"} <= set(m.columns)
        assert (m["tau_min"] >= 1).all()
    assert len(list(root.rglob("done.json"))) == len(stages)


def test_single_head_curriculum_reports_forgetting(tmp_path):
    from brainhead.train.memory import run_curriculum

    res = run_curriculum("dms", "single", tmp_path, {**SMALL, "total_epochs": 4}, _cfg())
    final = res["final_accuracy"]
    assert set(final) == {"n", "single_at_n_start"}
    assert 0 <= final["single_at_n_start"] <= 1
    assert len(res["stages"]) >= 1 and res["stages"][0]["N"] == 2
    with pytest.raises(ValueError, match="unknown memory-RNN curriculum settings"):
        run_curriculum("dms", "single", tmp_path, {"n_unit": 3})


def test_same_seed_same_curriculum(multi_run, tmp_path):
    from brainhead.train.memory import run_curriculum

    root, res = multi_run
    again = run_curriculum("parity", "multi", tmp_path / "again", SMALL, _cfg())
    assert _comparable(again) == _comparable(res)
    assert _metrics(tmp_path / "again") == _metrics(root)
    other = run_curriculum("parity", "multi", tmp_path / "other", SMALL, _cfg(seed=1))
    assert _metrics(tmp_path / "other") != _metrics(root)
    assert other["units"] != res["units"]
    # a complete curriculum is reused, stage by stage, not trained again
    reused = run_curriculum("parity", "multi", root, SMALL, _cfg())
    assert all(s["reused"] for s in reused["stages"]) and _comparable(reused) == _comparable(res)


# ---------------------------------------------------------------------------- SIGKILL
def train_in(root: Path) -> dict:
    """The child's work: ``run_curriculum`` in ``root/run``, result in ``root/result.json``.

    ``root/hold.json`` ``{"pause_after": k}`` makes training wait (to be killed) at the
    start of the first epoch ``>= 1`` of a stage once ``k`` epochs have started, i.e.
    after that stage's first checkpoint.
    """
    import torch

    from brainhead.train import memory

    hold = json.loads((root / HOLD).read_text()) if (root / HOLD).is_file() else {}
    started = root / "epochs.txt"

    class Recording(memory.MemoryTaskModule):
        def on_train_epoch_start(self):
            with open(started, "a") as fid:
                fid.write(f"{self.curriculum.n}:{self.current_epoch}\n")
            count = len(started.read_text().split())
            if "pause_after" in hold and count > hold["pause_after"] and self.current_epoch >= 1:
                (root / "paused").write_text(f"{self.curriculum.n}:{self.current_epoch}")
                time.sleep(3000)

    original, threads = memory.MemoryTaskModule, torch.get_num_threads()
    memory.MemoryTaskModule = Recording
    torch.set_num_threads(1)
    try:
        res = memory.run_curriculum("parity", "multi", root / "run", SMALL, _cfg())
    finally:
        memory.MemoryTaskModule = original
        torch.set_num_threads(threads)
    (root / "result.json").write_text(json.dumps(res))
    return res


@pytest.fixture(scope="module", autouse=True)
def held_child(tmp_path_factory):
    """A training process started with the module (torch and Lightning load while the
    other tests run); it waits, to be killed, after its first checkpoint of a stage."""
    root = tmp_path_factory.mktemp("killed")
    (root / HOLD).write_text(json.dumps({"pause_after": 3}))
    with child_process(__file__, root) as proc:
        yield root, proc


# The kill test comes last: its training process starts with the module and waits.
def test_sigkill_mid_stage_then_resume(held_child, multi_run, caplog):
    import logging

    from test_train_resume import _kill, _wait_for

    root, proc = held_child
    _, reference = multi_run
    _wait_for(root / "paused", proc)
    _kill(proc)
    stage, epoch = (int(v) for v in (root / "paused").read_text().split(":"))
    assert epoch >= 1 and not (root / "result.json").exists()
    (root / HOLD).unlink()
    with caplog.at_level(logging.INFO, logger="brainhead"):
        result = train_in(root)  # the same work again, here in the test process
    assert "resuming from" in caplog.text and "last.ckpt" in caplog.text
    started = (root / "epochs.txt").read_text().split()
    assert started.count(f"{stage}:{epoch}") == 2  # the killed epoch ran again, nothing else
    assert len(started) == len(set(started)) + 1
    # completed stages reused, the killed one resumed
    assert [s["reused"] for s in result["stages"]][: stage - 2] == [True] * (stage - 2)
    assert _comparable(result) == _comparable(reference)
    assert _metrics(root / "run") == _metrics(multi_run[0])


if __name__ == "__main__":
    from brainhead._logging import setup_logging

    setup_logging()
    train_in(Path(sys.argv[1]))
