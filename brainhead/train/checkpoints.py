"""Checkpoints that are written atomically and read without unpickling code.

Lightning writes a checkpoint every epoch through :class:`SafeCheckpointIO`: the file is
written beside its destination, flushed to disk and renamed into place, so a job killed
at any point (also in the middle of a write) leaves either the previous complete
checkpoint or the new complete one, never a half-written file that a rerun would resume
from. Reading goes through :func:`load_checkpoint`, which uses
``torch.load(..., weights_only=True)``: tensors, containers and plain values only. A
checkpoint that carries any other pickled object (which could run code when loaded) is
refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

__all__ = ["CheckpointError", "SafeCheckpointIO", "load_checkpoint", "save_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded safely (or at all)."""


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fid:
            torch.save(checkpoint, fid)
            fid.flush()
            os.fsync(fid.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, or holds objects other than tensors,
        containers and plain values (such an object could run code when unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as fid:
        magic = fid.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch zip archive; "
                              "truncated or another kind of file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "GLOBAL" in text or "weights_only" in text.lower() or "global" in text:
            first = next((line for line in text.splitlines() if "GLOBAL" in line),
                         text.strip().splitlines()[0] if text.strip() else "")
            raise CheckpointError(
                f"{path}: refused to load: the checkpoint holds objects other than tensors "
                f"and plain values, which could run code when unpickled (weights_only=True). "
                f"brainhead never loads such files; retrain instead. Detail: {first}"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    except Exception as err:  # noqa: BLE001 - any failure of torch's reader is one error
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(err).__name__}: {err})") from None


class SafeCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O: atomic writes, ``weights_only`` reads."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path, map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
