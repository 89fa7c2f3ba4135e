"""Offline MiniLM features, layer by layer, and the random-weights control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainhead.features import (
    extract_layer_features,
    read_features,
    resolve_model_path,
    write_features,
)

TEXTS = ["The baker carried a box.", "A dog slept.", "When the pilot laughed, the nurse waited."]


@pytest.fixture(scope="module")
def trained():
    return extract_layer_features(TEXTS, "minilm")


def test_shapes_and_layers(trained):
    assert trained.shape == (7, 3, 384) and trained.dtype == np.float32
    assert np.isfinite(trained).all()
    # layers differ from each other
    assert not np.allclose(trained[0], trained[6])


def test_matches_sentence_transformers_pooling(trained):
    """Mean-pooled last layer equals the packaged model's (unnormalised) embedding."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path("minilm")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    net = AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(TEXTS[1:2], return_tensors="pt")
    with torch.inference_mode():
        last = net(**enc).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(trained[6, 1], last, rtol=1e-4, atol=1e-5)


def test_padding_does_not_change_features(trained):
    alone = extract_layer_features(TEXTS[1:2], "minilm")
    np.testing.assert_allclose(alone[:, 0], trained[:, 1], rtol=1e-4, atol=1e-5)


def test_random_control_is_seeded_and_different(trained):
    r1 = extract_layer_features(TEXTS, "minilm", random_init=True, seed=1)
    r2 = extract_layer_features(TEXTS, "minilm", random_init=True, seed=1)
    r3 = extract_layer_features(TEXTS, "minilm", random_init=True, seed=2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, r3)
    assert not np.allclose(r1[3], trained[3])


def test_last_token_pooling(trained):
    last = extract_layer_features(TEXTS, "minilm", pooling="last")
    assert last.shape == trained.shape and not np.allclose(last, trained)
    with pytest.raises(ValueError, match="pooling"):
        extract_layer_features(TEXTS, "minilm", pooling="max")


def test_unknown_model_is_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model_path("bert-base-uncased")
    with pytest.raises(ValueError, match="empty"):
        extract_layer_features([], "minilm")


def test_write_and_read(tmp_path):
    stim = tmp_path / "stimuli.tsv"
    pd.DataFrame({"stim_id": ["a", "b"], "text": TEXTS[:2]}).to_csv(stim, sep="\t", index=False)
    out = write_features(stim, {"name": "minilm", "path": "minilm", "pooling": "mean"},
                         tmp_path / "features" / "minilm.h5", seed=0)
    feats, ids, attrs = read_features(out)
    assert ids.tolist() == ["a", "b"]
    assert feats["trained"].shape == feats["random"].shape == (7, 2, 384)
    assert attrs["brainhead_step"] == "features" and attrs["model"] == "minilm"
