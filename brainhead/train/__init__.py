"""Training machinery shared by every model family, on Lightning.

- :mod:`~brainhead.train.trainer`: one run (:func:`fit_run`): device ``auto`` (CUDA when
  present, else CPU), bf16-mixed on CUDA and fp32 on the CPU, a checkpoint every epoch,
  resume after a kill, early stopping on a validation split of training stimuli, seeded
  and deterministic on the CPU; several GPUs or nodes through Lightning's strategies.
- :mod:`~brainhead.train.checkpoints`: atomic checkpoint writes, ``weights_only`` reads.
- :mod:`~brainhead.train.data`: response tables as per-stimulus training rows, and
  seeded batch plans with target sampling (memory bounded whatever the brain size).
- :mod:`~brainhead.train.modules`: LightningModules around the ``encoders`` models.
- :mod:`~brainhead.train.experiment`: joint folds and splits shared by every family.
- :mod:`~brainhead.train.voxel`: the cross-subject voxel encoder of a study (scores on
  the alignment folds, layer profiles, new-subject transfer, crowd effect).
- :mod:`~brainhead.train.adapters`: subject adapters and a shared decoder (retrieval per
  layer with its controls, reset-tuning of a new subject).
- :mod:`~brainhead.train.memory`: memory RNNs with learnable timescales: the paper's
  curricula on N-parity and N-DMS (:mod:`~brainhead.train.tasks`), and memory-depth
  curves of neural streams.
- :mod:`~brainhead.train.electrode`: electrode multi-head attention as a scikit-learn
  classifier of trials of electrode tokens (the decoding stage's model).

Folds come from :mod:`brainhead.splits`, the same as ridge encoding's.

Importing this package is cheap (the workflow reads :data:`FAMILIES` when it builds the
DAG); torch and Lightning load with the first attribute that needs them.
"""

from importlib import import_module

#: Model families that ``train.families`` may name.
FAMILIES = ("voxel_xattn", "adapters", "memory_rnn")

_LAZY = {"CheckpointError": "checkpoints", "SafeCheckpointIO": "checkpoints",
         "load_checkpoint": "checkpoints", "save_checkpoint": "checkpoints",
         "TrainConfig": "trainer", "epoch_seed": "trainer", "fit_run": "trainer",
         "resolve_device": "trainer", "train_family": "jobs",
         "train_voxel_encoder": "voxel", "train_adapter_decoder": "adapters",
         "train_memory_decoder": "memory", "run_curriculum": "memory",
         "ElectrodeAttentionClassifier": "electrode", "ElectrodeTrials": "electrode"}

__all__ = ["FAMILIES", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
