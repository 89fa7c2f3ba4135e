"""Training runs are repeatable, survive SIGKILL, and never unpickle code.

Every model family trains through :func:`brainhead.train.trainer.fit_run`, whose promises
are checked here on a tiny synthetic study (3 subjects, 64 stimuli, 5 layers x 16
features, a few CPU epochs):

- the same data, settings and seed give the same metrics and predictions, bit for bit;
- a training process killed with SIGKILL (between epochs, or in the middle of writing a
  checkpoint) and started again resumes from its last complete checkpoint and ends
  exactly where an uninterrupted run ends; temporary files are never resumed from;
- checkpoints are read with ``weights_only=True``: a file whose unpickling would run
  code is refused (and the code does not run), a truncated one is reported as such;
- a complete run is reused, not trained again.

The kill tests run training in child processes: this file is also the script they run
(``python tests/test_train_resume.py ROOT``, see :func:`train_in`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

SEED = 1
MAX_EPOCHS = 8
PARAMS = {"d_model": 16, "n_heads": 2, "dropout": 0.1, "n_sampled_targets": 16}
CHILD_TIMEOUT = 300  # seconds; a training process that takes longer has hung

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- the study
def synthetic_subjects(n_stimuli: int = 64):
    """Three subjects whose targets read out layer 1 or layer 3 of random features."""
    from brainhead.simulate.signals import planted_responses
    from brainhead.splits import stimulus_folds
    from brainhead.train.data import SubjectResponses

    rng = np.random.default_rng(0)
    features = rng.standard_normal((5, n_stimuli, 16))
    ids = np.array([f"s{i:03d}" for i in range(n_stimuli)])
    folds = stimulus_folds(ids, np.arange(n_stimuli) % 4)
    subjects = {}
    for k, n_targets in enumerate([20, 30, 24]):
        region = np.array(["a"] * (n_targets // 2) + ["b"] * (n_targets - n_targets // 2))
        sub_rng = np.random.default_rng(100 + k)
        Y = planted_responses(features, region, {"a": 1, "b": 3}, sub_rng)
        Y = Y + sub_rng.standard_normal(Y.shape)
        name = f"0{k}"
        subjects[name] = SubjectResponses(
            name, "fmri", Y.astype(np.float32), ids,
            np.array([f"t{i}" for i in range(n_targets)]), region, folds)
    return subjects, {"trained": features}, ids


def make_experiment(out_dir, *, seed: int = SEED, max_epochs: int = MAX_EPOCHS):
    from brainhead.train.trainer import TrainConfig
    from brainhead.train.voxel import VoxelEncoderExperiment

    subjects, features, ids = synthetic_subjects()
    cfg = TrainConfig(max_epochs=max_epochs, patience=100, batch_size=8, seed=seed,
                      min_steps_per_epoch=8, device="cpu", progress=False)
    return VoxelEncoderExperiment(subjects, features, ids, out_dir, PARAMS, cfg)


def train_fold0(exp):
    """``exp.run`` on outer fold 0: (run info, test predictions of every subject)."""
    train, test = exp.split(0)
    fit, val = exp.fit_val(train, "cv0")
    module, data = exp.run("fold0", "trained", fit, val)
    preds = {s: exp.predict(module, data, s, test[s])[0] for s in exp.subjects}
    return exp.runs[-1], preds


def direct_run(exp, module_cls=None):
    """The pieces that ``fit_run`` takes, built by hand so that the module can be a
    subclass (pausing, counting): module, loaders, data and test stimuli of fold 0."""
    import torch

    from brainhead.train.data import EncodingData, loader
    from brainhead.train.modules import EncoderModule
    from brainhead.train.trainer import epoch_seed
    from encoders.voxel_xattn import VoxelCrossAttention

    cfg = exp.cfg
    train, test = exp.split(0)
    fit, val = exp.fit_val(train, "cv0")
    data = EncodingData(exp.features["trained"], exp.feature_ids, exp.subjects,
                        {s: fit[s] + val[s] for s in fit})
    torch.manual_seed(epoch_seed(cfg.seed, 0, "init"))
    net = VoxelCrossAttention({s: data.Y[s].shape[1] for s in fit}, data.layer_dims,
                              d_model=PARAMS["d_model"], n_heads=PARAMS["n_heads"],
                              dropout=PARAMS["dropout"])
    module = (module_cls or EncoderModule)(net, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           subject_lr_scale=3.0)
    train_loader = loader(data, fit, batch_size=cfg.batch_size,
                          n_sampled_targets=PARAMS["n_sampled_targets"], shuffle=True,
                          seed=epoch_seed(cfg.seed, 0, "batches"),
                          min_batches=cfg.min_steps_per_epoch * len(fit))
    val_loader = loader(data, val, batch_size=cfg.batch_size, n_sampled_targets=None,
                        shuffle=False, seed=0)
    return module, train_loader, val_loader, data, test


# ---------------------------------------------------------------------------- the child
HOLD = "hold.json"


def _block_checkpoint_write(epoch: int, marker: Path) -> None:
    """Make the atomic writer stop half-way through its first ``last.ckpt`` of an epoch
    ``>= epoch``.

    ``brainhead.train.checkpoints.save_checkpoint`` is left as it is; only the
    ``torch.save`` that it calls is slowed: it writes half of the bytes into the file
    that the writer opened, flushes them, names that file in ``marker`` and waits to be
    killed. Used in child processes only.
    """
    import brainhead.train.checkpoints as checkpoints

    real = checkpoints.torch

    class _HalfThenWait:
        def __getattr__(self, name):
            return getattr(real, name)

        def save(self, obj, f, *args, **kwargs):
            name = Path(getattr(f, "name", f)).name
            if not (isinstance(obj, dict) and obj.get("epoch", -1) >= epoch
                    and name.startswith(".last.ckpt")):
                return real.save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real.save(obj, buf, *args, **kwargs)
            blob = buf.getvalue()
            fid = f if hasattr(f, "write") else open(f, "wb")  # noqa: SIM115
            fid.write(blob[:len(blob) // 2])
            fid.flush()
            os.fsync(fid.fileno())
            marker.write_text(json.dumps({"file": name, "epoch": obj["epoch"]}))
            time.sleep(CHILD_TIMEOUT * 5)
            fid.write(blob[len(blob) // 2:])

    checkpoints.torch = _HalfThenWait()


def train_in(root: Path) -> dict:
    """Train fold 0 in ``root/run`` with ``fit_run``; save what the tests compare.

    Writes ``root/pred_<subject>.npy`` (test predictions), ``root/info.json`` (what
    ``fit_run`` returned) and appends every epoch that starts training to
    ``root/epochs.txt``. Runs on one torch thread, so that child processes and the
    test process compute with the same kernels. ``root/hold.json`` (test hook) makes
    training wait, to be killed, at the start of epoch ``pause_epoch`` (after the
    checkpoint of the epoch before) or half-way through writing a ``last.ckpt`` (the
    first of an epoch ``>= block_write_epoch``).
    """
    import torch

    from brainhead.train.modules import EncoderModule
    from brainhead.train.trainer import fit_run

    hold = json.loads((root / HOLD).read_text()) if (root / HOLD).is_file() else {}
    if "block_write_epoch" in hold:
        _block_checkpoint_write(hold["block_write_epoch"], root / "writing")

    class Recording(EncoderModule):
        def on_train_epoch_start(self):
            with open(root / "epochs.txt", "a") as fid:
                fid.write(f"{self.current_epoch}\n")
            if self.current_epoch == hold.get("pause_epoch"):
                (root / "paused").write_text(str(self.current_epoch))
                time.sleep(CHILD_TIMEOUT * 5)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exp = make_experiment(root)
        module, train_loader, val_loader, data, test = direct_run(exp, Recording)
        info = fit_run(module, train_loader, val_loader, root / "run", exp.cfg, name="child")
        for s in exp.subjects:
            np.save(root / f"pred_{s}.npy", exp.predict(module, data, s, test[s])[0])
    finally:
        torch.set_num_threads(threads)
    (root / "info.json").write_text(json.dumps(info))
    return info


def _start_child(root: Path) -> subprocess.Popen:
    """``python tests/test_train_resume.py ROOT``: :func:`train_in` in a new process."""
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1"}
    here = Path(__file__).resolve()
    return subprocess.Popen([sys.executable, str(here), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=here.parents[1])


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, f"training process failed (rc {proc.returncode}):\n{out}"
    return out


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training process ended (rc {proc.returncode}) before {path.name} "
                        f"appeared:\n{proc.communicate()[0]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {CHILD_TIMEOUT} s")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def _outputs(root: Path):
    metrics = (root / "run" / "metrics.csv").read_bytes()
    preds = {p.stem: np.load(p) for p in sorted(root.glob("pred_*.npy"))}
    return metrics, preds


def _assert_same(result, reference):
    metrics, preds = result
    ref_metrics, ref_preds = reference
    rows, ref_rows = metrics.decode().splitlines(), ref_metrics.decode().splitlines()
    differ = [r.split(",")[0] for r, ref in zip(rows, ref_rows) if r != ref]
    assert rows == ref_rows, (
        f"metrics.csv differs from the uninterrupted run's in epochs {differ}:\n"
        + "\n".join(rows) + "\n-- uninterrupted --\n" + "\n".join(ref_rows))
    assert preds.keys() == ref_preds.keys() and len(preds) == 3
    for s in preds:
        assert np.array_equal(preds[s], ref_preds[s]), f"{s}: predictions differ"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one torch thread here, as the children do (:func:`train_in`): the
    models are tiny, and on a busy machine extra threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def held_children(tmp_path_factory):
    """Two training processes, started first so that they start up (torch, Lightning)
    while the in-process tests run; each waits at the point its hold.json names."""
    children = {}
    holds = {"between_epochs": {"pause_epoch": 3}, "mid_write": {"block_write_epoch": 2}}
    for name, hold in holds.items():
        root = tmp_path_factory.mktemp(name)
        (root / HOLD).write_text(json.dumps(hold))
        children[name] = (root, _start_child(root))
    yield children
    for _, proc in children.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run that the resumed ones must match (in this process)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    info = train_in(root)
    assert info["resumed"] is False and info["epochs"] == MAX_EPOCHS
    return _outputs(root)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """One in-process ``exp.run`` with the default seed."""
    out = tmp_path_factory.mktemp("seed_run")
    exp = make_experiment(out)
    start = time.perf_counter()
    info, preds = train_fold0(exp)
    return out, info, preds, time.perf_counter() - start


# ---------------------------------------------------------------------------- tests
def test_same_seed_same_metrics_and_predictions(seed_run, tmp_path):
    out, info, preds, _ = seed_run
    assert info["epochs"] == MAX_EPOCHS and info["resumed"] is False
    info2, preds2 = train_fold0(make_experiment(tmp_path / "again"))
    assert info2["dir"] == info["dir"]  # same definition, same run key
    assert not info2.get("reused")  # a fresh folder: trained again, not reused
    metrics = (out / info["dir"] / "metrics.csv").read_bytes()
    assert metrics == (tmp_path / "again" / info2["dir"] / "metrics.csv").read_bytes()
    assert len(metrics.decode().strip().splitlines()) == MAX_EPOCHS + 1
    for s in preds:
        assert np.array_equal(preds[s], preds2[s]), s

    info3, preds3 = train_fold0(make_experiment(tmp_path / "other", seed=SEED + 1))
    assert info3["dir"] != info["dir"]
    assert (tmp_path / "other" / info3["dir"] / "metrics.csv").read_bytes() != metrics
    for s in preds:
        assert preds3[s].shape == preds[s].shape
        assert not np.array_equal(preds3[s], preds[s]), f"{s}: the seed changes nothing"


class _RunsCode:
    """Unpickling this runs a shell command (what weights_only=True must prevent)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    import torch

    from brainhead.train.checkpoints import CheckpointError, load_checkpoint
    from brainhead.train.trainer import fit_run

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 0, "extra": _RunsCode(marker)},
               evil)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_checkpoint(evil)
    assert str(evil) in str(err.value)
    assert not marker.exists()

    # a run folder whose last.ckpt is such a file: refused before any training
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(evil.read_bytes())
    exp = make_experiment(tmp_path / "exp")
    module, train_loader, val_loader, _, _ = direct_run(exp)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(CheckpointError, match="refused"):
        fit_run(module, train_loader, val_loader, run, exp.cfg)
    assert not marker.exists()
    assert not (run / "done.json").exists() and not (run / "metrics.csv").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())

    # the file is live: an unsafe load would have run the command
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("keep", [0, 1, 3, 100, 0.5, -1])
def test_truncated_checkpoint_is_a_checkpoint_error(seed_run, tmp_path, keep):
    """Any prefix of a real checkpoint: "not readable", never "refused", never raw."""
    from brainhead.train.checkpoints import CheckpointError, load_checkpoint

    out, info, _, _ = seed_run
    good = (out / info["dir"] / "checkpoints" / "last.ckpt").read_bytes()
    n = int(len(good) * keep) if isinstance(keep, float) else keep % len(good)
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(good[:n])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert type(err.value) is CheckpointError and str(bad) in str(err.value)
    assert "not a readable checkpoint" in str(err.value), (
        f"a checkpoint cut to {n} bytes is misreported: {err.value}")


def test_unreadable_checkpoints_are_checkpoint_errors(seed_run, tmp_path):
    from brainhead.train.checkpoints import CheckpointError, load_checkpoint
    from brainhead.train.trainer import fit_run

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.ckpt")
    out, info, _, _ = seed_run
    good = (out / info["dir"] / "checkpoints" / "last.ckpt").read_bytes()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(good[: len(good) // 2])
    exp = make_experiment(tmp_path / "exp")
    module, train_loader, val_loader, _, _ = direct_run(exp)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        fit_run(module, train_loader, val_loader, run, exp.cfg)
    assert not (run / "done.json").exists()

    # a file that is not a checkpoint at all (a log written in its place, say)
    text = tmp_path / "text.ckpt"
    text.write_text("hello, not a checkpoint\n")
    try:
        load_checkpoint(text)
    except CheckpointError as err:
        assert "not a readable checkpoint" in str(err), str(err)
    except Exception as err:  # noqa: BLE001 (the point of the test)
        pytest.fail(f"load_checkpoint let a raw {type(err).__name__}({err}) out of torch "
                    f"for a text file; expected CheckpointError")
    else:
        pytest.fail("a text file loaded as a checkpoint")


def test_complete_run_is_reused_not_retrained(seed_run):
    from brainhead.train.modules import EncoderModule
    from brainhead.train.trainer import fit_run

    out, info, preds, first_seconds = seed_run
    run = out / info["dir"]
    files = sorted(p for p in run.rglob("*") if p.is_file())
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    exp = make_experiment(out)
    start = time.perf_counter()
    info2, preds2 = train_fold0(exp)
    seconds = time.perf_counter() - start
    assert info2["reused"] is True and info2["dir"] == info["dir"]
    assert info2["epochs"] == info["epochs"] and info2["best_epoch"] == info["best_epoch"]
    for s in preds:
        assert np.array_equal(preds2[s], preds[s]), s
    assert seconds < first_seconds, (seconds, first_seconds)

    class MustNotTrain(EncoderModule):
        def training_step(self, batch, batch_idx):
            raise AssertionError("a complete run was trained again")

    # a module with other initial weights ends with the run's best weights
    module, train_loader, val_loader, data, test = direct_run(exp, MustNotTrain)
    assert fit_run(module, train_loader, val_loader, run, exp.cfg)["reused"] is True
    if exp.params["readout"] == "ridge":  # exp.run's last step, deterministic
        exp._refit_readouts(module.net, data, list(preds), exp.split(0)[0], run)
    for s in preds:
        assert np.array_equal(exp.predict(module, data, s, test[s])[0], preds[s]), s
    assert sorted(p for p in run.rglob("*") if p.is_file()) == files
    assert all((p.stat().st_mtime_ns, p.read_bytes()) == snapshot[p] for p in files)


def test_last_checkpoint_is_written_every_epoch(tmp_path):
    """``last.ckpt`` after every epoch, also when the validation metric does not improve
    (the trainer's promise; otherwise a kill loses every epoch since the best one)."""
    import torch

    from brainhead.train.checkpoints import load_checkpoint
    from brainhead.train.modules import EncoderModule
    from brainhead.train.trainer import fit_run

    run = tmp_path / "run"
    seen = []

    exp = make_experiment(tmp_path / "exp", max_epochs=4)
    sign = 1.0 if exp.cfg.monitor_mode == "min" else -1.0

    class GetsWorse(EncoderModule):
        """The monitored validation metric worsens every epoch: epoch 0 stays the best."""

        def on_train_epoch_start(self):
            last = run / "checkpoints" / "last.ckpt"
            seen.append(load_checkpoint(last)["epoch"] if last.is_file() else None)

        def validation_step(self, batch, batch_idx):
            self.log(exp.cfg.monitor, torch.tensor(sign * (1.0 + self.current_epoch)),
                     on_epoch=True, batch_size=1)

        def on_validation_epoch_end(self):
            pass

    module, train_loader, val_loader, _, _ = direct_run(exp, GetsWorse)
    info = fit_run(module, train_loader, val_loader, run, exp.cfg)
    assert info["epochs"] == 4 and info["best_epoch"] == 0
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert seen == [None, 0, 1, 2], (
        f"last.ckpt at the start of epochs 0..3 held epochs {seen}: it is written only "
        f"when the monitored validation metric improves, not every epoch")
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 3


# The kill tests come last: their training processes start with the module and wait.
def test_sigkill_between_epochs_then_resume(held_children, reference):
    from brainhead.train.checkpoints import load_checkpoint

    root, proc = held_children["between_epochs"]
    pause = json.loads((root / HOLD).read_text())["pause_epoch"]
    run = root / "run"
    last = run / "checkpoints" / "last.ckpt"
    _wait_for(root / "paused", proc)
    assert last.is_file() and not (run / "done.json").exists()
    _kill(proc)
    assert not (run / "done.json").exists() and not (run / "metrics.csv").exists()
    held = load_checkpoint(last)["epoch"]
    assert held == pause - 1, f"killed at the start of epoch {pause}, last.ckpt holds {held}"
    # a half-written temporary checkpoint beside it must never be resumed from
    (run / "checkpoints" / ".last.ckpt.tmp-123").write_bytes(
        last.read_bytes()[: last.stat().st_size // 2])

    (root / HOLD).unlink()
    out = _finish(_start_child(root))  # the same command again
    assert "resuming from" in out and "last.ckpt" in out
    assert json.loads((root / "info.json").read_text())["resumed"] is True
    assert json.loads((run / "done.json").read_text())["resumed"] is True
    epochs = [int(x) for x in (root / "epochs.txt").read_text().split()]
    # first attempt: epochs 0..pause (killed at its start); second: pause..end
    assert epochs == [*range(pause + 1), *range(pause, MAX_EPOCHS)]
    _assert_same(_outputs(root), reference)


def test_sigkill_while_writing_a_checkpoint_then_resume(held_children, reference, caplog):
    from brainhead.train.checkpoints import CheckpointError, load_checkpoint

    root, proc = held_children["mid_write"]
    ckpts = root / "run" / "checkpoints"
    _wait_for(root / "writing", proc)
    assert not (root / "run" / "done.json").exists()
    _kill(proc)
    assert not (root / "run" / "done.json").exists()
    writing = json.loads((root / "writing").read_text())
    partial, epoch = ckpts / writing["file"], writing["epoch"]
    assert partial.is_file() and partial.name != "last.ckpt"
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(partial)
    # the complete checkpoint of the epoch before is still in place
    held = load_checkpoint(ckpts / "last.ckpt")["epoch"]
    assert held == epoch - 1, f"killed writing epoch {epoch}, last.ckpt holds {held}"

    # rerun here, in the test process (the test above reruns in a new process)
    (root / HOLD).unlink()
    with caplog.at_level(logging.INFO, logger="brainhead"):
        info = train_in(root)
    assert info["resumed"] is True and "resuming from" in caplog.text
    assert json.loads((root / "run" / "done.json").read_text())["resumed"] is True
    epochs = [int(x) for x in (root / "epochs.txt").read_text().split()]
    assert epochs == [*range(epoch + 1), *range(epoch, MAX_EPOCHS)]
    _assert_same(_outputs(root), reference)


if __name__ == "__main__":
    from brainhead._logging import setup_logging

    setup_logging()
    train_in(Path(sys.argv[1]))
