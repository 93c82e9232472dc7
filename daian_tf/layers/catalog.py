"""The frozen multimodal catalog: raw item id → unit vector (DAIAN.md §0, §5.1).

Every item has a frozen pre-trained multimodal embedding `m_i ∈ R^{d_m}` and
`sim(a, b) = cos(m_a, m_b)`. The table lives inside the model and is keyed by the RAW
item id string, not by the Transform vocabulary, so that an item never seen in training
but present in the catalog still gets its vector (cold start) and serving requests carry
ids only. Rows are stored L2-normalised, so a cosine is a plain dot product (`cosine`).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops


def cosine(a, b):
    """Cosine similarity of unit-or-zero vectors along the last axis.

    The catalog's rows are unit vectors, or zero for unknown ids and padding, so the
    cosine is just their dot product, and a zero vector gives similarity 0 (not NaN).
    Do not use it for vectors that are not unit-or-zero.

    Args:
        a: `(..., d)` unit-or-zero vectors.
        b: `(..., d)` unit-or-zero vectors.

    Returns:
        `(...)` the cosines, in `[-1, 1]`; 0 where either vector is zero.
    """
    return ops.sum(a * b, axis=-1)


@keras.saving.register_keras_serializable(package="daian")
class MultimodalCatalog(keras.layers.Layer):
    """Frozen lookup of multimodal item vectors by raw item id string.

    Index 0 is the out-of-vocabulary row, all zeros: an unknown id and the padding id
    `""` both give the zero vector (and so similarity 0 to anything). The table is a
    NON-trainable weight `vectors` of shape `(len(item_ids) + 1, d_m)`: it is restored by
    weight loading and never updated by an optimizer. The config holds the ids, not the
    vectors.

    Example:

    ```python
    catalog = MultimodalCatalog(["a", "b"], vectors=np.eye(2, 3))
    catalog(tf.constant([["a", ""], ["zz", "b"]]))  # (2, 2, 3)
    ```

    Args:
        item_ids: the raw item ids, unique and non-empty strings.
        vectors: `(len(item_ids), d_m)` finite vectors, row i for `item_ids[i]`; each
            row is L2-normalised on the way in (a zero row stays zero). None: zeros,
            to be filled by `set_weights` or weight loading (what `from_config` does).
        embedding_dim: `d_m`; required when `vectors` is None, otherwise it must equal
            `vectors.shape[1]` (or be None).
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        ids: string tensor of any shape, e.g. `(B,)` or `(B, T)`.

    Returns:
        float32 `(..., d_m)`: the unit vector of each known id, zeros otherwise.
    """

    def __init__(self,
                 item_ids: Sequence[str],
                 vectors: Optional[np.ndarray] = None,
                 embedding_dim: Optional[int] = None,
                 **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        item_ids = [str(i) for i in item_ids]
        if not item_ids:
            raise ValueError("MultimodalCatalog needs at least one item id, got an "
                             "empty `item_ids`")
        if "" in item_ids:
            raise ValueError("`item_ids` must not contain the empty string: it is the "
                             "padding id")
        duplicates = [i for i, count in Counter(item_ids).items() if count > 1]
        if duplicates:
            raise ValueError(f"`item_ids` must be unique, got duplicates "
                             f"{duplicates[:5]}")
        if vectors is None:
            if embedding_dim is None or int(embedding_dim) <= 0:
                raise ValueError("`embedding_dim` must be a positive integer when "
                                 f"`vectors` is None, got {embedding_dim}")
            table = np.zeros((len(item_ids), int(embedding_dim)), "float32")
        else:
            table = np.asarray(vectors, dtype="float64")
            if table.ndim != 2:
                raise ValueError("`vectors` must be 2-D (num_items, d_m), got shape "
                                 f"{table.shape}")
            if table.shape[0] != len(item_ids):
                raise ValueError(f"`vectors` has {table.shape[0]} rows but `item_ids` "
                                 f"has {len(item_ids)} ids")
            if embedding_dim is not None and int(embedding_dim) != table.shape[1]:
                raise ValueError(f"`embedding_dim`={embedding_dim} does not match "
                                 f"`vectors` of width {table.shape[1]}")
            if not np.all(np.isfinite(table)):
                bad = np.flatnonzero(~np.all(np.isfinite(table), axis=1))
                raise ValueError("`vectors` must be finite; rows of ids "
                                 f"{[item_ids[i] for i in bad[:5]]} are not")
            norms = np.linalg.norm(table, axis=1, keepdims=True)
            table = np.where(norms > 0, table / np.where(norms > 0, norms, 1.0), 0.0)
        self.item_ids = item_ids
        self.embedding_dim = int(table.shape[1])
        self.lookup = keras.layers.StringLookup(
            vocabulary=item_ids, num_oov_indices=1, mask_token=None,
            name="item_id_lookup")
        # Row 0: the out-of-vocabulary (and padding) row, zeros. The table's shape and
        # values do not depend on the inputs, so it is created here, eagerly: a first
        # call inside a tf.function must not be what fills it.
        initial = np.concatenate([np.zeros((1, self.embedding_dim)), table])
        self.vectors = self.add_weight(
            name="vectors", shape=initial.shape, trainable=False, dtype="float32",
            initializer="zeros")
        self.vectors.assign(initial.astype("float32"))
        self.built = True

    def call(self, ids):
        return ops.take(self.vectors, self.lookup(ids), axis=0)

    def compute_output_shape(self, ids_shape):
        return tuple(ids_shape) + (self.embedding_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"item_ids": list(self.item_ids),
                       "embedding_dim": self.embedding_dim})
        return config
