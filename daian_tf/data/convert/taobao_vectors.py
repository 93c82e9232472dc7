"""Item vectors for the Taobao/Alimama converter (`taobao`), which has no text or image.

An item's vector is four parts side by side, each unit-length (or zero) times its weight
(`TaobaoConfig.*_weight`), then unit-normalised, so that the cosine of two items is the
weighted mean of the parts' cosines, `sum_k w_k^2 cos_k / sum_k w_k^2` when every part is
present:

- **co-occurrence** (`cooccurrence_dim`): a spectral embedding of the train-period
  item x user matrix. Entry `A[i, u] = log(1 + impression_weight * impressions(u, i)
  + click_weight * clicks(u, i))`, counted only from impressions before the eval cut
  (no leakage). Items with fewer than `cooccurrence_min_users` distinct users, then
  users with fewer than two of the remaining items, are left out (one user or one item
  carries no co-occurrence). `Â = D_i^-1/2 A D_u^-1/2` (D: row and column sums), and the
  item part is `U_k S_k` of its truncated SVD without the first component — the
  eigenvectors of the normalised co-occurrence matrix `Â Âᵀ` (items shown to / clicked
  by the same users), computed without forming it; the first one is the trivial
  `sqrt(degree)` direction (singular value 1), which would add popularity to every
  cosine. Randomized SVD (Halko, Martinsson & Tropp 2011; `svd_power_iterations`
  power iterations, seeded), or the exact dense SVD for small matrices. Items without
  enough train users get a zero part.
- **category** (`category_dim`) and **brand** (`brand_dim`): a seeded random unit vector
  per id (seed = hash of `seed`, the part and the id, so an id's vector does not depend
  on which other ids exist): the same category gives cosine 1, different ones about
  0 +- 1/sqrt(dim). An unknown brand (`NULL`) gets a zero part, not a shared "NULL"
  vector.
- **price** (`price_dim`): `x = log2(1 + price)`, interpolated linearly between the
  random unit vectors of buckets `floor(x)` and `floor(x) + 1`, unit-normalised: prices
  within a factor of about 2 are similar, far apart ones are not.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Tuple

import numpy as np

from daian_tf.core.config import TaobaoConfig

DENSE_SVD_MAX_CELLS = 4_000_000  # below this many matrix cells the exact SVD is used
OVERSAMPLE = 10  # extra columns of the randomized SVD's sketch


def layout(cfg: TaobaoConfig) -> Dict[str, Tuple[int, int]]:
    """[start, end) of each part in the vector, in order."""
    out, start = {}, 0
    for name, dim in (("cooccurrence", cfg.cooccurrence_dim),
                      ("category", cfg.category_dim), ("brand", cfg.brand_dim),
                      ("price", cfg.price_dim)):
        out[name] = (start, start + dim)
        start += dim
    return out


def item_vectors(cfg: TaobaoConfig, categories: np.ndarray, brands: np.ndarray,
                 prices: np.ndarray, cooc_items: np.ndarray, cooc_users: np.ndarray,
                 cooc_weights: np.ndarray) -> Tuple[np.ndarray, dict]:
    """The (N, d_m) float32 unit vectors of the N catalog items, and statistics.

    Args:
      cfg: the converter's settings (dims, weights, seed, SVD).
      categories: (N,) int64 category id per item.
      brands: (N,) int64 brand id per item, -1 when unknown.
      prices: (N,) float64 price per item (>= 0).
      cooc_items, cooc_users, cooc_weights: the train-period (item index, user index,
        impression_weight * impressions + click_weight * clicks) triples, one per
        distinct (item, user) pair.
    """
    n = len(categories)
    cooc, stats = cooccurrence_part(cooc_items, cooc_users, cooc_weights, n, cfg)
    parts = [
        cfg.cooccurrence_weight * cooc,
        cfg.category_weight * _id_part("category", categories, cfg.category_dim,
                                       cfg.seed),
        cfg.brand_weight * _id_part("brand", brands, cfg.brand_dim, cfg.seed),
        cfg.price_weight * _price_part(prices, cfg.price_dim, cfg.seed),
    ]
    vectors = _unit_rows(np.concatenate(parts, axis=1))
    stats["zero_vectors"] = int((~np.any(vectors != 0, axis=1)).sum())
    stats["layout"] = {k: list(v) for k, v in layout(cfg).items()}
    return vectors.astype(np.float32), stats


def cooccurrence_part(items: np.ndarray, users: np.ndarray, weights: np.ndarray,
                      n_items: int, cfg: TaobaoConfig) -> Tuple[np.ndarray, dict]:
    """(n_items, cooccurrence_dim) unit rows (zero for items left out); statistics."""
    dim = cfg.cooccurrence_dim
    out = np.zeros((n_items, dim), dtype=np.float32)
    stats = {"pairs_train": int(len(items))}
    degree = np.bincount(items, minlength=n_items)
    keep = degree[items] >= cfg.cooccurrence_min_users
    items, users, weights = items[keep], users[keep], weights[keep]
    _, user_code, user_degree = np.unique(users, return_inverse=True, return_counts=True)
    keep = user_degree[user_code] >= 2
    items, users, weights = items[keep], users[keep], weights[keep]
    kept_items, row = np.unique(items, return_inverse=True)
    _, col = np.unique(users, return_inverse=True)
    stats.update(matrix_items=int(len(kept_items)), matrix_users=int(col.max() + 1)
                 if len(col) else 0, matrix_nonzeros=int(len(items)))
    if dim == 0 or len(kept_items) < 2:
        stats.update(items_with_cooccurrence=0, singular_values=[])
        return out, stats
    from scipy import sparse

    a = sparse.csr_matrix((np.log1p(weights).astype(np.float32), (row, col)),
                          shape=(len(kept_items), int(col.max()) + 1))
    d_i = np.asarray(a.sum(axis=1)).ravel()
    d_u = np.asarray(a.sum(axis=0)).ravel()
    a = (sparse.diags((1 / np.sqrt(d_i)).astype(np.float32)) @ a
         @ sparse.diags((1 / np.sqrt(d_u)).astype(np.float32))).tocsr()
    u, s = top_left_singular(a, dim + 1, cfg.svd_power_iterations, cfg.seed)
    part = u[:, 1:] * s[1:]  # drop the trivial sqrt(degree) direction
    out[kept_items, :part.shape[1]] = _unit_rows(part)
    stats.update(items_with_cooccurrence=int(np.any(out != 0, axis=1).sum()),
                 singular_values=[round(float(v), 4) for v in s])
    return out, stats


def top_left_singular(a, k: int, power_iterations: int, seed: int
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """The top `k` (or fewer, if the matrix is smaller) left singular vectors (m, k')
    and values (k',) of sparse `a`, largest first: exact for small matrices, else
    randomized (Halko et al. 2011, Alg. 4.4 with QR between power iterations)."""
    m, n = a.shape
    k = min(k, m, n)
    if m * n <= DENSE_SVD_MAX_CELLS:
        u, s, _ = np.linalg.svd(a.toarray().astype(np.float64), full_matrices=False)
        return u[:, :k], s[:k]
    rng = np.random.default_rng(seed)
    width = min(k + OVERSAMPLE, m, n)
    q, _ = np.linalg.qr(a @ rng.standard_normal((n, width)).astype(np.float32))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ q)
    bt = (a.T @ q).astype(np.float64)  # (n, width) = Bᵀ with B = Qᵀ A
    eigval, eigvec = np.linalg.eigh(bt.T @ bt)  # B Bᵀ = U_b S² U_bᵀ, ascending
    order = np.argsort(eigval)[::-1][:k]
    s = np.sqrt(np.maximum(eigval[order], 0.0))
    return q.astype(np.float64) @ eigvec[:, order], s


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def seeded_unit(kind: str, key: int, dim: int, seed: int) -> np.ndarray:
    """The random unit vector of id `key` of part `kind`: the same for the same
    (seed, kind, key, dim) whatever other ids exist."""
    digest = hashlib.blake2b(f"{seed}:{kind}:{key}".encode(), digest_size=8).digest()
    v = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(dim)
    return v / np.linalg.norm(v)


def _id_part(kind: str, ids: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(N, dim): the seeded unit vector of each id; zero where the id is -1."""
    out = np.zeros((len(ids), dim), dtype=np.float64)
    if dim == 0:
        return out
    uniq, inverse = np.unique(ids, return_inverse=True)
    table = np.stack([np.zeros(dim) if key < 0 else seeded_unit(kind, int(key), dim, seed)
                      for key in uniq.tolist()]) if len(uniq) else np.zeros((0, dim))
    out[:] = table[inverse]
    return out


def _price_part(prices: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(N, dim): log2-price interpolated between its two bucket vectors."""
    if dim == 0:
        return np.zeros((len(prices), 0))
    x = np.log2(1.0 + np.maximum(prices, 0.0))
    low = np.floor(x).astype(np.int64)
    frac = (x - low)[:, None]
    return _unit_rows((1 - frac) * _id_part("price", low, dim, seed)
                      + frac * _id_part("price", low + 1, dim, seed))
