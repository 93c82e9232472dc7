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
from typing import Dict, List, Tuple

import numpy as np

from daian_tf.core.config import TaobaoConfig

DENSE_SVD_MAX_CELLS = 4_000_000  # below this many matrix cells the exact SVD is used
OVERSAMPLE = 10  # extra columns of the randomized SVD's sketch
BLOCK_ROWS = 100_000  # rows per block of the sketch's products in float64
RANK_TOL = 1e-10  # relative eigenvalue below which a sketch direction is dropped


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
                 prices: np.ndarray, cooc: List[np.ndarray]) -> Tuple[np.ndarray, dict]:
    """The (N, d_m) float32 unit vectors of the N catalog items, and statistics.

    Args:
      cfg: the converter's settings (dims, weights, seed, SVD).
      categories: (N,) int64 category id per item.
      brands: (N,) int64 brand id per item, -1 when unknown.
      prices: (N,) float64 price per item (>= 0).
      cooc: [items, users, weights], the train-period (item index, user index,
        impression_weight * impressions + click_weight * clicks) triples, one per
        distinct (item, user) pair; emptied here, so that the arrays are freed as
        soon as they are used (they are the largest thing the converter holds).
    """
    n = len(categories)
    cooc_part, stats = cooccurrence_part(cooc, n, cfg)
    parts = [
        cfg.cooccurrence_weight * cooc_part,
        cfg.category_weight * _id_part("category", categories, cfg.category_dim,
                                       cfg.seed),
        cfg.brand_weight * _id_part("brand", brands, cfg.brand_dim, cfg.seed),
        cfg.price_weight * _price_part(prices, cfg.price_dim, cfg.seed),
    ]
    vectors = _unit_rows(np.concatenate(parts, axis=1, dtype=np.float32))
    stats["zero_vectors"] = int((~np.any(vectors != 0, axis=1)).sum())
    stats["layout"] = {k: list(v) for k, v in layout(cfg).items()}
    return vectors, stats


def cooccurrence_part(cooc: List[np.ndarray], n_items: int, cfg: TaobaoConfig
                      ) -> Tuple[np.ndarray, dict]:
    """(n_items, cooccurrence_dim) unit rows (zero for items left out); statistics.
    `cooc` ([items, users, weights], see item_vectors) is emptied."""
    items, users, weights = cooc
    cooc.clear()
    dim = cfg.cooccurrence_dim
    out = np.zeros((n_items, dim), dtype=np.float32)
    stats = {"pairs_train": int(len(items))}
    # the pairs are distinct, so bincounts are distinct users per item and items per
    # user; ids are compact (catalog and user indices), so no sort is needed
    keep = np.bincount(items, minlength=n_items)[items] >= cfg.cooccurrence_min_users
    items, users, weights = items[keep], users[keep], weights[keep]
    keep = np.bincount(users)[users] >= 2 if len(users) else keep[:0]
    items, users, weights = items[keep], users[keep], weights[keep]
    del keep
    kept_items = np.flatnonzero(np.bincount(items, minlength=n_items))
    row, n_rows = _compact(items, n_items)
    col, n_cols = _compact(users, int(users.max()) + 1 if len(users) else 0)
    stats.update(matrix_items=n_rows, matrix_users=n_cols, matrix_nonzeros=len(items))
    if dim == 0 or n_rows < 2:
        stats.update(items_with_cooccurrence=0, singular_values=[])
        return out, stats
    from scipy import sparse

    # Â = D_i^-1/2 A D_u^-1/2 (D: A's row and column sums), scaled on the triples
    # before the one CSR matrix is built
    data = np.log1p(weights).astype(np.float32)
    del items, users, weights
    d_i = np.bincount(row, weights=data, minlength=n_rows)
    d_u = np.bincount(col, weights=data, minlength=n_cols)
    data /= np.sqrt(d_i).astype(np.float32)[row]
    data /= np.sqrt(d_u).astype(np.float32)[col]
    del d_i, d_u
    a = sparse.csr_matrix((data, (row, col)), shape=(n_rows, n_cols))
    del data, row, col
    u, s = top_left_singular(a, dim + 1, cfg.svd_power_iterations, cfg.seed)
    part = u[:, 1:] * s[1:].astype(np.float32)  # drop the trivial sqrt(degree) one
    out[kept_items, :part.shape[1]] = _unit_rows(part)
    stats.update(items_with_cooccurrence=int(np.any(out != 0, axis=1).sum()),
                 singular_values=[round(float(v), 4) for v in s])
    return out, stats


def _compact(ids: np.ndarray, size: int) -> Tuple[np.ndarray, int]:
    """`ids` renumbered 0.. in id order (int32), and how many distinct there are."""
    present = np.zeros(size, dtype=bool)
    present[ids] = True
    code = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
    return code[ids], int(present.sum())


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
    q = _orthonormal(a @ rng.standard_normal((n, width), dtype=np.float32))
    for _ in range(power_iterations):
        q = _orthonormal(a @ _orthonormal(a.T @ q))
    bt = a.T @ q  # (n, width') float32 = Bᵀ with B = Qᵀ A
    eigval, eigvec = np.linalg.eigh(_gram(bt))  # B Bᵀ = U_b S² U_bᵀ, ascending
    del bt
    order = np.argsort(eigval)[::-1][:k]
    s = np.sqrt(np.maximum(eigval[order], 0.0))
    return _times(q, eigvec[:, order]), s


def _gram(y: np.ndarray) -> np.ndarray:
    """yᵀy in float64, accumulated over row blocks of float32 `y`."""
    gram = np.zeros((y.shape[1], y.shape[1]))
    for lo in range(0, len(y), BLOCK_ROWS):
        block = y[lo:lo + BLOCK_ROWS].astype(np.float64)
        gram += block.T @ block
    return gram


def _times(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """y @ m (float32), by row blocks."""
    out = np.empty((len(y), m.shape[1]), dtype=np.float32)
    m = m.astype(np.float32)
    for lo in range(0, len(y), BLOCK_ROWS):
        out[lo:lo + BLOCK_ROWS] = y[lo:lo + BLOCK_ROWS] @ m
    return out


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's columns (float32), by two rounds of the Gram
    eigen-decomposition (CholeskyQR2 with eigh, which also drops directions of a
    rank-deficient y): memory about twice y's, where numpy's QR (computed in float64)
    takes about seven times."""
    for _ in range(2):
        eigval, eigvec = np.linalg.eigh(_gram(y))
        keep = eigval > eigval.max() * RANK_TOL
        y = _times(y, eigvec[:, keep] / np.sqrt(eigval[keep]))
    return y


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): a well-spread hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def seeded_units(kind: str, ids: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(N, dim) random unit vectors, one per non-negative integer id of part `kind`:
    Gaussian entries (Box-Muller) from a counter-based hash of (seed, kind, id,
    entry), so an id's vector is the same whatever other ids exist."""
    digest = hashlib.blake2b(f"{seed}:{kind}".encode(), digest_size=8).digest()
    base = np.uint64(int.from_bytes(digest, "little"))
    with np.errstate(over="ignore"):
        counter = (_mix(ids.astype(np.uint64)[:, None] ^ base) * np.uint64(2 * dim)
                   + np.arange(2 * dim, dtype=np.uint64))
        bits = _mix(counter + np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(11)
    u = bits.astype(np.float64) * 2.0**-53  # uniform in [0, 1)
    v = (np.sqrt(-2.0 * np.log1p(-u[:, :dim])) * np.cos(2 * np.pi * u[:, dim:]))
    return _unit_rows(v)


def _id_part(kind: str, ids: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(N, dim) float32: the seeded unit vector of each id; zero where the id is -1."""
    if dim == 0 or len(ids) == 0:
        return np.zeros((len(ids), dim), dtype=np.float32)
    uniq, inverse = np.unique(ids, return_inverse=True)
    table = np.zeros((len(uniq), dim), dtype=np.float32)
    known = uniq >= 0
    table[known] = seeded_units(kind, uniq[known], dim, seed)
    return table[inverse]


def _price_part(prices: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(N, dim): log2-price interpolated between its two bucket vectors."""
    if dim == 0:
        return np.zeros((len(prices), 0), dtype=np.float32)
    x = np.log2(1.0 + np.maximum(prices, 0.0))
    low = np.floor(x).astype(np.int64)
    frac = (x - low).astype(np.float32)[:, None]
    return _unit_rows((1 - frac) * _id_part("price", low, dim, seed)
                      + frac * _id_part("price", low + 1, dim, seed))
