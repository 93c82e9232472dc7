"""Hybrid Similarity Enhancer of SEIN (DAIAN.md §5.1, Eq. 11–14, [I-8]).

- semantic similarity `s_sem = sim(tr, tg) = cos(m_tr, m_tg)` (Eq. 11);
- `z_i = P(sg(e_id(i)))`: a trainable MLP projects the stop-gradient ID embeddings into
  the multimodal space (Eq. 12), so the projection does not disturb the ID embeddings;
- collaborative similarity vector `e_col = z_tr ⊙ z_tg`;
- `e_sem = T_sim[bin(s_sem)]`, equal-width bins over the same `[lo, hi]` as the intent
  levels (I-2), values outside clipped into the end bins;
- norm-ratio fusion (Eq. 13–14): `r = ‖sg(e_col)‖ / (‖sg(e_col)‖ + ‖sg(e_sem)‖ + ε)`,
  `e_sim = r · e_col + (1 − r) · e_sem`.
[I-8]: an optional alignment loss `λ_align · mean(1 − cos(z_i, m_i))` over the
trigger and target rows that have a multimodal vector teaches `P` what the multimodal
space is.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from daian_tf.core.similarity_range import level_index
from daian_tf.layers.catalog import cosine


def similarity_bin(similarity, lo: float, hi: float, num_bins: int):
    """Equal-width bin of `similarity` over `[lo, hi]`, outside values in the end bins
    (the rule of `daian_tf.core.similarity_range`, in `keras.ops`).

    Args:
        similarity: float tensor of any shape.
        lo, hi: the similarity range.
        num_bins: `n`.

    Returns:
        int32 tensor of `similarity`'s shape, in `[0, num_bins)`.
    """
    index = level_index(ops.cast(similarity, "float32"), lo, hi, num_bins, xp=ops)
    return ops.cast(index, "int32")


def norm_ratio_fusion(e_col, e_sem, epsilon: float = 1e-8):
    """Norm-ratio fusion of Eq. 13–14.

    `r = ‖sg(e_col)‖ / (‖sg(e_col)‖ + ‖sg(e_sem)‖ + ε)`, `(B, 1)`; the ratio carries no
    gradient, the two vectors do.

    Args:
        e_col: `(B, d)` collaborative similarity vector.
        e_sem: `(B, d)` semantic similarity embedding.
        epsilon: keeps `r` finite when both vectors are zero.

    Returns:
        `(B, d)`: `r · e_col + (1 − r) · e_sem`.
    """
    col_norm = ops.sqrt(ops.sum(ops.square(ops.stop_gradient(e_col)), -1, keepdims=True))
    sem_norm = ops.sqrt(ops.sum(ops.square(ops.stop_gradient(e_sem)), -1, keepdims=True))
    r = col_norm / (col_norm + sem_norm + epsilon)
    return r * e_col + (1.0 - r) * e_sem


def alignment_loss(z, m, epsilon: float = 1e-8):
    """Mean of `1 − cos(z_i, m_i)` over the rows whose `m_i` is non-zero ([I-8]).

    Args:
        z: `(N, d)` projected ID embeddings; normalised as `z / max(‖z‖, ε)`, so a zero
            row has finite gradients.
        m: `(N, d)` unit-or-zero multimodal vectors (catalog rows).
        epsilon: the smallest norm `z` is divided by.

    Returns:
        scalar; 0 when no row has a multimodal vector.
    """
    has_vector = ops.cast(ops.any(ops.not_equal(m, 0.0), axis=-1), z.dtype)  # (N,)
    squared = ops.maximum(ops.sum(ops.square(z), axis=-1, keepdims=True), epsilon ** 2)
    cos = cosine(z * ops.rsqrt(squared), ops.cast(m, z.dtype))
    return (ops.sum((1.0 - cos) * has_vector)
            / ops.maximum(ops.sum(has_vector), 1.0))


@keras.saving.register_keras_serializable(package="daian")
class HybridSimilarityEnhancer(keras.layers.Layer):
    """Collaborative and semantic trigger–target similarity, fused (Eq. 11–14).

    Example:

    ```python
    enhancer = HybridSimilarityEnhancer(num_bins=10, sim_range=(lo, hi))
    e_sim, s_sem = enhancer(e_id_tr, e_id_tg, catalog(tr_ids), catalog(tg_ids))
    ```

    Args:
        num_bins: `n_sim`, bins of `s_sem` (rows of `T_sim`).
        sim_range: `(lo, hi)`, the range binned (I-2's range).
        projection_units: hidden ReLU widths of `P`; its last layer is linear, of
            width `d_m`. May be empty (then `P` is one linear map).
        align_weight: `λ_align` of [I-8]; 0 turns the alignment loss off. The loss is
            added (`self.losses`) only when `training` is true.
        epsilon: `ε` of Eq. 13 and of the alignment loss's normalisation.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        trigger_id_emb: `(B, D)` trigger ID embedding `e_id(tr)`.
        target_id_emb: `(B, D)` target ID embedding `e_id(tg)`.
        trigger_mm: `(B, d_m)` trigger multimodal vector, unit or zero.
        target_mm: `(B, d_m)` target multimodal vector, unit or zero.
        training: whether the alignment loss is added.

    Returns:
        `(e_sim, s_sem)`: `(B, d_m)` the fused similarity vector and `(B, 1)` the
        semantic similarity.
    """

    def __init__(self,
                 num_bins: int,
                 sim_range: Sequence[float],
                 projection_units: Sequence[int] = (64,),
                 align_weight: float = 0.1,
                 epsilon: float = 1e-8,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_bins) < 1:
            raise ValueError(f"`num_bins` must be >= 1, got {num_bins}")
        sim_range = tuple(float(v) for v in sim_range)
        if len(sim_range) != 2 or sim_range[0] > sim_range[1]:
            raise ValueError(f"`sim_range` must be (lo, hi) with lo <= hi, got "
                             f"{sim_range}")
        projection_units = tuple(int(u) for u in projection_units)
        if any(u <= 0 for u in projection_units):
            raise ValueError("`projection_units` must be positive integers, got "
                             f"{projection_units}")
        if float(align_weight) < 0.0:
            raise ValueError(f"`align_weight` must be >= 0, got {align_weight}")
        if float(epsilon) <= 0.0:
            raise ValueError(f"`epsilon` must be > 0, got {epsilon}")
        self.num_bins = int(num_bins)
        self.sim_range = sim_range
        self.projection_units = projection_units
        self.align_weight = float(align_weight)
        self.epsilon = float(epsilon)

    def build(self, trigger_id_emb_shape, target_id_emb_shape, trigger_mm_shape,
              target_mm_shape):
        if trigger_id_emb_shape[-1] != target_id_emb_shape[-1]:
            raise ValueError("trigger and target ID embeddings must have the same width "
                             f"(they share the projection P), got {trigger_id_emb_shape}"
                             f" and {target_id_emb_shape}")
        if trigger_mm_shape[-1] != target_mm_shape[-1]:
            raise ValueError("trigger and target multimodal vectors must have the same "
                             f"width d_m, got {trigger_mm_shape} and {target_mm_shape}")
        mm_dim = trigger_mm_shape[-1]
        width = trigger_id_emb_shape[-1]
        self.projection_layers = []
        for i, units in enumerate(self.projection_units + (mm_dim,)):
            last = i == len(self.projection_units)
            layer = keras.layers.Dense(
                units, activation=None if last else "relu", dtype=self.dtype_policy,
                name="projection_out" if last else f"projection_{i}")
            layer.build((None, width))
            self.projection_layers.append(layer)
            width = units
        self.bin_table = keras.layers.Embedding(self.num_bins, mm_dim,
                                                dtype=self.dtype_policy,
                                                name="sim_bin_table")
        self.bin_table.build((None,))
        self.built = True

    def project(self, id_emb):
        """`z = P(sg(id_emb))`, `(B, D)` → `(B, d_m)` (Eq. 12), of a built layer."""
        z = ops.stop_gradient(id_emb)
        for layer in self.projection_layers:
            z = layer(z)
        return z

    def call(self, trigger_id_emb, target_id_emb, trigger_mm, target_mm,
             training=None):
        s_sem = ops.expand_dims(cosine(trigger_mm, target_mm), -1)  # (B, 1)
        z_tr = self.project(trigger_id_emb)
        z_tg = self.project(target_id_emb)
        e_col = z_tr * z_tg
        lo, hi = self.sim_range
        e_sem = self.bin_table(similarity_bin(s_sem[:, 0], lo, hi, self.num_bins))
        e_sim = norm_ratio_fusion(e_col, e_sem, self.epsilon)
        if training and self.align_weight > 0.0:
            self.add_loss(self.align_weight * alignment_loss(
                ops.concatenate([z_tr, z_tg], axis=0),
                ops.concatenate([trigger_mm, target_mm], axis=0), self.epsilon))
        return e_sim, s_sem

    def compute_output_shape(self, trigger_id_emb_shape, target_id_emb_shape,
                             trigger_mm_shape, target_mm_shape):
        batch = trigger_mm_shape[0]
        return (batch, trigger_mm_shape[-1]), (batch, 1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "num_bins": self.num_bins,
            "sim_range": list(self.sim_range),
            "projection_units": list(self.projection_units),
            "align_weight": self.align_weight,
            "epsilon": self.epsilon,
        })
        return config
